"""The ``boxforge`` entry point. Every command takes --json (one JSON document on stdout), except ``mcp``,
which serves MCP. Progress and hints go to stderr; errors go to stderr with exit status 1; usage errors
exit 2; ``run`` and ``ssh`` exit with the remote command's status."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Sequence

import anyio

from providers.base import ProviderError
from server.cli import commands, gitwork
from server.cli.parser import build_parser
from server.cli.plans import cmd_plan_cancel, cmd_plan_check, cmd_plan_land, cmd_plan_run, cmd_plan_status
from server.cli.render import err, error_line, error_text
from server.cli.secrets import cmd_secret
from server.cli.up import cmd_demo, cmd_image, cmd_up
from server.config import Settings, load_settings
from server.errors import ForgeError
from server.service import Fleet, open_fleet

COMMANDS: dict[str, Callable[[Fleet, argparse.Namespace], Awaitable[int]]] = {
    "up": cmd_up, "run": commands.cmd_run, "jobs": commands.cmd_jobs, "job": commands.cmd_job,
    "ls": commands.cmd_ls, "extend": commands.cmd_extend, "burn": commands.cmd_burn, "reap": commands.cmd_reap,
    "demo": cmd_demo, "image": cmd_image, "logs": commands.cmd_logs, "ssh": commands.cmd_ssh, "diff": gitwork.cmd_diff,
    "agent": commands.cmd_agent, "fetch": gitwork.cmd_fetch, "compare": gitwork.cmd_compare,
    "land": gitwork.cmd_land, "push": gitwork.cmd_push, "forward": commands.cmd_forward,
    "fork": commands.cmd_fork, "pool": commands.cmd_pool,
}

PLAN_COMMANDS: dict[str, Callable[[Fleet, argparse.Namespace], Awaitable[int]]] = {
    "status": cmd_plan_status, "land": cmd_plan_land, "cancel": cmd_plan_cancel}


def cmd_mcp(settings: Settings, args: argparse.Namespace) -> int:
    from server.mcp.app import build_server, configure_logging

    if not args.http and sys.stdin.isatty():
        err.print("boxforge mcp speaks MCP on stdio: an MCP client starts it, e.g. register it with\n"
                  "  claude mcp add boxforge -- boxforge mcp\n"
                  "(or serve HTTP with boxforge mcp --http). Ctrl-C ends it.")

    configure_logging(settings)
    if not args.http:
        build_server(settings).run("stdio")
        return 0
    from server.board.hub import BoardHub
    from server.mcp.http import serve

    hub = None if args.no_board else BoardHub()
    server = build_server(settings, board=hub)
    anyio.run(lambda: serve(server, host=args.host, port=args.port, env=os.environ, board_hub=hub))
    return 0


def cmd_board(settings: Settings, args: argparse.Namespace) -> int:
    from server.board.serve import serve_board

    anyio.run(lambda: serve_board(settings, host=args.host, port=args.port, no_auth=args.no_auth, env=os.environ))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if args.verb == "run":  # an option of the command's own (ls -la) read as one of run's
            parser.error(f"unrecognized arguments: {' '.join(unknown)}; quote the command "
                         f"(boxforge run NAME '{' '.join(args.command + unknown)}') or put it after --")
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.verb is None:
        parser.print_help()
        return 0
    try:
        settings = load_settings()
        if args.verb == "mcp":
            return cmd_mcp(settings, args)
        if args.verb == "board":
            return cmd_board(settings, args)
        if args.verb == "secret":
            return cmd_secret(settings, args)
        if args.verb == "plan" and args.plan_verb == "check":
            return cmd_plan_check(args)  # forges nothing: no fleet
        if args.verb == "plan" and args.plan_verb == "run":
            return anyio.run(cmd_plan_run, settings, args)  # its fleet gets a task group for the plan

        async def run() -> int:
            async with open_fleet(settings) as fleet:
                if args.verb == "plan":
                    return await PLAN_COMMANDS[args.plan_verb](fleet, args)
                return await COMMANDS[args.verb](fleet, args)

        return anyio.run(run)
    except (ForgeError, ProviderError) as exc:
        err.print(error_line(error_text(exc)))
        return 1
    except KeyboardInterrupt:
        return 130
