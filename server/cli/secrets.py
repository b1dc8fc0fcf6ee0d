"""``boxforge secret set|ls|rm``: the orchestrator's secret store, which ``env_from`` reads. A value is
read from the terminal (not echoed) or from stdin, never from the command line; ``ls`` shows names only."""

from __future__ import annotations

import argparse
import getpass
import sys

from server.cli.render import err, out
from server.config import Settings
from server.errors import InvalidInput
from server.vault import check_secret_name, secret_store


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"value for {name} (not echoed): ")
    return sys.stdin.read().rstrip("\r\n")


def cmd_secret(settings: Settings, args: argparse.Namespace) -> int:
    store = secret_store(settings.config_path)
    if args.action == "ls":
        names = store.names()
        if args.json:
            out.print_json(data={"names": names})
        elif names:
            out.print("\n".join(names))
        else:
            err.print("no secrets stored; add one with boxforge secret set NAME")
        return 0
    if not args.name:
        raise InvalidInput(f"boxforge secret {args.action} needs a NAME, e.g. boxforge secret {args.action} "
                           "ANTHROPIC_API_KEY")
    check_secret_name(args.name)
    if args.action == "set":
        value = _read_value(args.name)
        if not value:
            raise InvalidInput(f"no value given for {args.name}: type it at the prompt or pipe it in "
                               f"(printf %s \"$VALUE\" | boxforge secret set {args.name})")
        store.set(args.name, value)
        err.print(f"stored {args.name} in {store.path} (0600); pass it with --env {args.name} "
                  "(boxforge up, run, agent) or env_from over MCP")
        return 0
    if store.remove(args.name):
        err.print(f"removed {args.name}")
        return 0
    err.print(f"no secret named {args.name}; boxforge secret ls lists them")
    return 1
