"""The `boxforge` command line: the same Fleet as the MCP server, for people and scripts.

Every command that reports takes --json (one JSON document on stdout). Errors go to
stderr with exit status 1; usage errors exit 2; `run` exits with the command's status.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from pydantic import BaseModel, TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table

from providers.base import ProviderError
from server.config import Settings, load_settings
from server.errors import ForgeError, InvalidInput
from server.fleet import Fleet, open_fleet
from server.schemas import JobId, ServerInfo, ServerName, TtlSeconds

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

_names = TypeAdapter(ServerName)
_ttls = TypeAdapter(TtlSeconds)
_job_ids = TypeAdapter(JobId)


def _valid(adapter: TypeAdapter[Any], value: Any) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise InvalidInput("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None


def name_from_branch(branch: str) -> str:
    """'feat/Login_page' -> 'feat-login-page' (an RFC 1123 label)."""
    name = re.sub(r"[^a-z0-9-]+", "-", branch.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)[:63].strip("-")
    return _valid(_names, name or "box")


def _dump(data: BaseModel | list[BaseModel] | dict[str, Any]) -> None:
    if isinstance(data, BaseModel):
        payload: Any = data.model_dump(mode="json")
    elif isinstance(data, list):
        payload = [d.model_dump(mode="json") for d in data]
    else:
        payload = data
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def _servers_table(servers: Sequence[ServerInfo], title: str | None = None) -> Table:
    table = Table(title=title)
    priced = any(s.price_per_hour is not None for s in servers)  # cloud boxes: show what they cost
    for col in ("name", "state", "address", "branch", "time left", "project dir", *(("€/h", "cost") if priced else ())):
        table.add_column(col)
    for s in servers:
        left = s.time_left or "-"
        if s.warning and s.state == "ready":
            left = f"[yellow]{left}[/]"
        state = s.state if not s.error else f"{s.state}: {s.error[:60]}"
        row = [s.name, state, s.address or "-", s.branch or "-", left, s.project_dir or "-"]
        if priced:
            row += [f"{s.price_per_hour:.4f}" if s.price_per_hour is not None else "-",
                    f"{s.cost_so_far:.4f}" if s.cost_so_far is not None else "-"]
        table.add_row(*row)
    return table


# commands


async def cmd_up(fleet: Fleet, args: argparse.Namespace) -> int:
    specs: list[tuple[str, str | None]] = []
    if args.name:
        if len(args.branches) > 1:
            raise InvalidInput("--name works with at most one branch; drop it to derive names from branches")
        specs.append((_valid(_names, args.name), args.branches[0] if args.branches else None))
    else:
        if not args.branches:
            raise InvalidInput("give one or more branches (boxforge up feat/a feat/b --repo .) or --name NAME")
        specs = [(name_from_branch(b), b) for b in args.branches]
    if len({n for n, _ in specs}) != len(specs):
        raise InvalidInput("two branches map to the same box name; use distinct branches")
    ttl = _valid(_ttls, args.ttl) if args.ttl else None
    results: dict[str, ServerInfo | str] = {}
    limiter = anyio.CapacityLimiter(fleet.settings.max_parallel_creates)
    started = time.monotonic()

    async def one(name: str, branch: str | None) -> None:
        async def progress(step: str, index: int, total: int) -> None:
            if not args.json:
                err.print(f"[dim]{time.monotonic() - started:6.1f}s[/] {name}: {step}")

        async with limiter:
            try:
                results[name] = await fleet.create_server(
                    name, ttl_s=ttl, repo=args.repo, branch=branch, agent=args.agent, provider=args.provider,
                    progress=progress,
                )
            except (ForgeError, ProviderError) as exc:
                results[name] = str(exc)

    async with anyio.create_task_group() as tg:
        for name, branch in specs:
            tg.start_soon(one, name, branch)
    made = [r for r in results.values() if isinstance(r, ServerInfo)]
    failed = {n: r for n, r in results.items() if isinstance(r, str)}
    if args.json:
        _dump({"servers": [m.model_dump(mode="json") for m in made], "failed": failed})
    else:
        out.print(_servers_table(made, title=f"{len(made)} box(es) up in {time.monotonic() - started:.1f}s"))
        for name, message in failed.items():
            err.print(f"[red]{name}[/]: {message}")
    return 1 if failed else 0


async def cmd_run(fleet: Fleet, args: argparse.Namespace) -> int:
    result = await fleet.run(
        _valid(_names, args.name), args.command, background=args.background, timeout_s=args.timeout,
        cwd=args.cwd, kill_on_timeout=args.kill_on_timeout,
    )
    if args.json:
        _dump(result)
    elif args.background or result.state == "running":
        out.print(result.job_id)
        err.print(result.hint or "")
    else:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        sys.stdout.flush()
    if result.state == "running":
        return 0
    return result.exit_code if result.exit_code is not None else 1


async def cmd_jobs(fleet: Fleet, args: argparse.Namespace) -> int:
    result = await fleet.list_jobs(_valid(_names, args.server) if args.server else None)
    if args.json:
        _dump(result)
        return 0
    table = Table()
    for col in ("job", "server", "state", "exit", "duration", "command"):
        table.add_column(col)
    for j in result.jobs:
        table.add_row(j.job_id, j.server, j.state, "-" if j.exit_code is None else str(j.exit_code),
                      f"{j.duration_s:.1f}s" if j.duration_s is not None else "-", j.command[:60])
    out.print(table)
    for name in result.unreachable:
        err.print(f"[yellow]{name}[/]: unreachable, its jobs are not listed")
    return 0


async def cmd_job(fleet: Fleet, args: argparse.Namespace) -> int:
    job_id = _valid(_job_ids, args.job_id)
    status = await fleet.job_status(job_id, wait_s=0)
    if args.json and not args.follow:
        _dump(status)
        return 0
    sys.stdout.write(status.stdout)
    sys.stderr.write(status.stderr)
    while args.follow and (status.state == "running" or status.more):
        status = await fleet.job_status(job_id, stdout_offset=status.stdout_offset,
                                        stderr_offset=status.stderr_offset, wait_s=0 if status.more else 2.0)
        sys.stdout.write(status.stdout)
        sys.stderr.write(status.stderr)
        sys.stdout.flush()
    if args.json:
        _dump(status.model_copy(update={"stdout": "", "stderr": ""}))
    else:
        err.print(f"[dim]{job_id}: {status.state}"
                  f"{'' if status.exit_code is None else f' (exit {status.exit_code})'}[/]")
    return 0


async def cmd_ls(fleet: Fleet, args: argparse.Namespace) -> int:
    result = await fleet.list_servers()
    if args.json:
        _dump(result)
    else:
        out.print(_servers_table(result.servers))
    return 0


async def cmd_extend(fleet: Fleet, args: argparse.Namespace) -> int:
    info = await fleet.extend_server(_valid(_names, args.name), _valid(_ttls, args.ttl))
    if args.json:
        _dump(info)
    else:
        out.print(f"{info.name} now expires at {info.expires_at} ({info.time_left} left)")
    return 0


async def cmd_burn(fleet: Fleet, args: argparse.Namespace) -> int:
    if args.all:
        if not args.yes:
            raise InvalidInput("burn --all destroys every live box of this owner; add --yes to confirm")
        names = [s.name for s in (await fleet.list_servers()).servers]
    else:
        if not args.names:
            raise InvalidInput("give box names to burn, or --all --yes")
        names = [_valid(_names, n) for n in args.names]
    results = []

    async def one(name: str) -> None:
        results.append(await fleet.destroy_server(name))

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(one, name)
    if args.json:
        _dump({"results": [r.model_dump(mode="json") for r in results]})
    else:
        for r in results:
            out.print(r.message)
    return 0


async def cmd_reap(fleet: Fleet, args: argparse.Namespace) -> int:
    from server.reaper import Reaper

    reaper = Reaper(fleet, max_sleep_s=fleet.settings.reaper_max_sleep_s)
    if args.loop:
        await reaper.run_forever()
        return 0
    burned = await reaper.run_once()
    if args.json:
        _dump({"burned": burned})
    else:
        out.print(f"burned {len(burned)} expired box(es){': ' + ', '.join(burned) if burned else ''}")
    return 0


async def cmd_demo(fleet: Fleet, args: argparse.Namespace) -> int:
    """Forge N local boxes in parallel, run a job on each, poll to completion, print a table, burn them."""
    names = [f"demo-{i + 1}" for i in range(args.boxes)]
    started = time.monotonic()
    rows: dict[str, dict[str, Any]] = {}

    async def one(name: str) -> None:
        t0 = time.monotonic()
        info = await fleet.create_server(name, ttl_s=15 * 60, provider="local")
        ready = time.monotonic() - t0
        job = await fleet.run(name, "for i in 1 2 3; do echo step $i on $(hostname) as $(whoami); sleep 0.2; done;"
                                    " echo done", background=True)
        status = await fleet.job_status(job.job_id, wait_s=60)
        rows[name] = {"address": info.address, "ready_s": ready, "job": job.job_id, "state": status.state,
                      "exit": status.exit_code, "last": status.stdout.strip().splitlines()[-1:] or [""]}

    try:
        out.print(f"forging {len(names)} local boxes in parallel...")
        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(one, name)
        table = Table(title=f"boxforge demo: {len(names)} boxes, {time.monotonic() - started:.1f}s")
        for col in ("box", "address", "ready in", "job", "state", "exit", "last line"):
            table.add_column(col)
        for name in names:
            r = rows[name]
            table.add_row(name, r["address"], f"{r['ready_s']:.2f}s", r["job"], r["state"], str(r["exit"]),
                          r["last"][0])
        out.print(table)
    finally:
        with anyio.CancelScope(shield=True):
            for name in names:
                await fleet.destroy_server(name)
        out.print(f"burned {len(names)} boxes")
    return 0 if all(r["state"] == "succeeded" for r in rows.values()) and len(rows) == len(names) else 1


def cmd_mcp(settings: Settings, args: argparse.Namespace) -> int:
    from server.app import build_server, configure_logging

    configure_logging(settings)
    build_server(settings).run("stdio")
    return 0


COMMANDS: dict[str, Callable[[Fleet, argparse.Namespace], Awaitable[int]]] = {
    "up": cmd_up, "run": cmd_run, "jobs": cmd_jobs, "job": cmd_job, "ls": cmd_ls, "extend": cmd_extend,
    "burn": cmd_burn, "reap": cmd_reap, "demo": cmd_demo,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="boxforge", description="Forge, drive and burn boxes for coding agents.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print one JSON document")
        return p

    p = add("up", "forge boxes, one per branch, in parallel")
    p.add_argument("branches", nargs="*", help="branches to check out (box names derive from them)")
    p.add_argument("--repo", help="git URL or local path to clone")
    p.add_argument("--ttl", help="time to live: 90m, 2h, 1d (default 2h)")
    p.add_argument("--name", help="box name (single box)")
    p.add_argument("--agent", default="none", help="agent to install: none, claude, codex")
    p.add_argument("--provider", help="local or hetzner")

    p = add("run", "run a command on a box")
    p.add_argument("name")
    p.add_argument("command")
    p.add_argument("--background", action="store_true", help="start it and print the job id")
    p.add_argument("--timeout", type=float, help="seconds to wait before leaving it running (default 50)")
    p.add_argument("--cwd", help="working dir (relative to the project dir)")
    p.add_argument("--kill-on-timeout", action="store_true")

    p = add("jobs", "list jobs")
    p.add_argument("--server")
    p = add("job", "show a job's state and output")
    p.add_argument("job_id")
    p.add_argument("--follow", "-f", action="store_true", help="stream output until the job ends")
    add("ls", "list live boxes")
    p = add("extend", "push a box's expiry")
    p.add_argument("name")
    p.add_argument("ttl")
    p = add("burn", "destroy boxes")
    p.add_argument("names", nargs="*")
    p.add_argument("--all", action="store_true", help="every live box of this owner")
    p.add_argument("--yes", action="store_true", help="confirm --all")
    p = add("reap", "destroy expired boxes now (--loop: keep doing it, for systemd or cron)")
    p.add_argument("--loop", action="store_true")
    p = add("demo", "forge local boxes, run a job on each, print a table, burn them")
    p.add_argument("--boxes", type=int, default=3, choices=range(1, 11), metavar="N")
    add("mcp", "serve MCP over stdio (for Claude Code: claude mcp add boxforge -- boxforge mcp)", json_flag=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        if args.verb == "mcp":
            return cmd_mcp(settings, args)

        async def run() -> int:
            async with open_fleet(settings) as fleet:
                return await COMMANDS[args.verb](fleet, args)

        return anyio.run(run)
    except (ForgeError, ProviderError) as exc:
        err.print(f"[red]error:[/] {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
