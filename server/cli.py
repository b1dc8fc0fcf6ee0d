"""The `boxforge` command line: the same Fleet as the MCP server, for people and scripts.

Every command takes --json (one JSON document on stdout), except `mcp`, which serves MCP.
Progress and hints go to stderr; errors go to stderr with exit status 1; usage errors exit 2;
`run` and `ssh` exit with the remote command's status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from pydantic import BaseModel, TypeAdapter, ValidationError
from rich.console import Console, RenderableType
from rich.live import Live
from rich.table import Table

from providers.base import ProviderError
from server.config import Settings, load_settings
from server.errors import ForgeError, InvalidInput
from server.fleet import CREATE_STEPS, Fleet, open_fleet
from server.schemas import JOB_ID_RE, JobId, JobStatusResult, ServerInfo, ServerName, TtlSeconds

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


@dataclass
class _Row:
    """One box of `boxforge up`: the step it is in and since when."""

    name: str
    branch: str | None
    started: float = field(default_factory=time.monotonic)
    step: str = "queued"
    state: str = "waiting"  # waiting | working | ready | failed
    finished: float | None = None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started


class _UpProgress:
    """The live table of `boxforge up`: one row per box, redrawn by rich.Live as steps arrive."""

    def __init__(self, rows: list[_Row]) -> None:
        self.rows = rows

    def __rich__(self) -> RenderableType:
        table = Table(title="forging boxes", title_justify="left")
        for col in ("box", "branch", "step", "", "elapsed"):
            table.add_column(col)
        for row in self.rows:
            index = CREATE_STEPS.index(row.step) + 1 if row.step in CREATE_STEPS else 0
            bar = "■" * index + "□" * (len(CREATE_STEPS) - index)
            style = {"ready": "green", "failed": "red", "waiting": "dim"}.get(row.state, "cyan")
            table.add_row(row.name, row.branch or "-", f"[{style}]{row.step}[/]", f"[{style}]{bar}[/]",
                          f"{row.elapsed:5.1f}s")
        return table


def _env_from_names(names: Sequence[str]) -> dict[str, str]:
    """--env NAME copies NAME from this environment (values never go on a command line)."""
    env = {}
    for name in names:
        if "=" in name:
            raise InvalidInput(f"--env takes a variable name, not NAME=VALUE (values on a command line leak into "
                               f"ps and shell history): export {name.split('=')[0]} and pass --env "
                               f"{name.split('=')[0]}")
        if name not in os.environ:
            raise InvalidInput(f"--env {name}: {name} is not set in this environment")
        env[name] = os.environ[name]
    return env


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
    env = _env_from_names(args.env)
    results: dict[str, ServerInfo | str] = {}
    limiter = anyio.CapacityLimiter(fleet.settings.max_parallel_creates)
    started = time.monotonic()
    rows = {name: _Row(name, branch) for name, branch in specs}
    live = err.is_terminal and not args.json

    async def one(name: str, branch: str | None) -> None:
        row = rows[name]

        async def progress(step: str, index: int, total: int) -> None:
            row.step, row.state = step, "working"
            if not args.json and not live:
                err.print(f"[dim]{time.monotonic() - started:6.1f}s[/] {name}: {step}")

        async with limiter:
            row.started, row.state = time.monotonic(), "working"
            try:
                results[name] = await fleet.create_server(
                    name, ttl_s=ttl, repo=args.repo, branch=branch, agent=args.agent, agent_install=args.agent_install,
                    agent_command=args.agent_command, env=env, provider=args.provider, progress=progress,
                )
                row.state, row.step = "ready", "ready"
            except (ForgeError, ProviderError) as exc:
                results[name] = str(exc)
                row.state = "failed"
            row.finished = time.monotonic()

    with Live(_UpProgress(list(rows.values())), console=err, refresh_per_second=8, transient=True) if live \
            else contextlib.nullcontext():
        async with anyio.create_task_group() as tg:
            for name, branch in specs:
                tg.start_soon(one, name, branch)
    made = [r for r in results.values() if isinstance(r, ServerInfo)]
    failed = {n: r for n, r in results.items() if isinstance(r, str)}
    if args.json:
        _dump({"servers": [m.model_dump(mode="json") for m in made], "failed": failed})
    else:
        table = Table(title=f"{len(made)} of {len(specs)} box(es) up in {time.monotonic() - started:.1f}s")
        for col in ("name", "state", "took", "address", "branch", "agent", "time left", "project dir"):
            table.add_column(col)
        for name, _ in specs:
            result, row = results.get(name), rows[name]
            if isinstance(result, ServerInfo):
                table.add_row(name, "[green]ready[/]", f"{row.elapsed:.1f}s", result.address or "-",
                              result.branch or "-", result.agent or "-", result.time_left or "-",
                              result.project_dir or "-")
            else:
                table.add_row(name, "[red]failed[/]", f"{row.elapsed:.1f}s", "-", row.branch or "-", "-", "-", "-")
        out.print(table)
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


async def _read_job(fleet: Fleet, job_id: str, *, follow: bool, echo: bool) -> tuple[JobStatusResult, str, str]:
    """A job's output from the start (to its end with ``follow``): the last status and all stdout/stderr read."""
    status = await fleet.job_status(job_id, wait_s=0)
    outs, errs = [status.stdout], [status.stderr]

    def show(st: JobStatusResult) -> None:
        if echo:
            sys.stdout.write(st.stdout)
            sys.stderr.write(st.stderr)
            sys.stdout.flush()

    show(status)
    while status.more or (follow and status.state == "running" and status.box_reachable):
        status = await fleet.job_status(job_id, stdout_offset=status.stdout_offset,
                                        stderr_offset=status.stderr_offset, wait_s=0 if status.more else 2.0)
        outs.append(status.stdout)
        errs.append(status.stderr)
        show(status)
    return status, "".join(outs), "".join(errs)


def _job_line(job_id: str, status: JobStatusResult) -> str:
    code = "" if status.exit_code is None else f" (exit {status.exit_code})"
    return f"[dim]{job_id}: {status.state}{code}[/]"


async def cmd_job(fleet: Fleet, args: argparse.Namespace) -> int:
    job_id = _valid(_job_ids, args.job_id)
    status, stdout, stderr = await _read_job(fleet, job_id, follow=args.follow, echo=not args.json)
    if args.json:
        _dump(status.model_copy(update={"stdout": stdout, "stderr": stderr}))
    else:
        err.print(_job_line(job_id, status))
    return 0


async def cmd_logs(fleet: Fleet, args: argparse.Namespace) -> int:
    """A job's log, or a box's create logs (bootstrap, then setup) when given a box name."""
    if JOB_ID_RE.fullmatch(args.target):
        job_ids = [args.target]
    else:
        try:
            name = _names.validate_python(args.target)
        except ValidationError:
            raise InvalidInput(f"{args.target[:60]!r} is neither a job id (j-0123456789ab) nor a box name") from None
        info = await fleet.server_info(name)
        job_ids = [j for j in (info.bootstrap_job_id, info.setup_job_id) if j]
        if not job_ids:
            raise InvalidInput(f"server {name!r} has no create logs yet (still provisioning?); try again shortly")
    docs = []
    for job_id in job_ids:
        if len(job_ids) > 1 and not args.json:
            err.print(f"[bold]== {job_id}[/]")
        status, stdout, stderr = await _read_job(fleet, job_id, follow=args.follow, echo=not args.json)
        docs.append(status.model_copy(update={"stdout": stdout, "stderr": stderr}).model_dump(mode="json"))
        if not args.json:
            err.print(_job_line(job_id, status))
    if args.json:
        _dump({"jobs": docs})
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


def ssh_command(target: Any, known_hosts: Path, project_dir: str | None, command: Sequence[str]) -> list[str]:
    """The system ssh command line for a box: its key only, and only its pinned host key accepted."""
    alias = f"boxforge-{target.key}"
    setup = f"cd {shlex.quote(project_dir)} 2>/dev/null; " if project_dir else ""
    setup += '[ -r "$HOME/.boxforge/env" ] && . "$HOME/.boxforge/env"; '
    remote = setup + (" ".join(command) if command else 'exec "${SHELL:-/bin/sh}" -l')
    return [
        "ssh", "-i", str(target.client_key_path), "-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", f"HostKeyAlias={alias}", "-p", str(target.port),
        *([] if command else ["-t"]), f"{target.user}@{target.host}", remote,
    ]


async def cmd_ssh(fleet: Fleet, args: argparse.Namespace) -> int:
    target, info = await fleet.ssh_access(_valid(_names, args.name))
    known_line = f"boxforge-{target.key} {target.host_public_key}\n"
    command = args.command
    if args.json:
        _dump({"name": info.name, "host": target.host, "port": target.port, "user": target.user,
               "identity_file": str(target.client_key_path), "host_key": target.host_public_key,
               "known_hosts_line": known_line.strip(), "project_dir": info.project_dir})
        return 0
    if shutil.which("ssh") is None:
        raise InvalidInput("the ssh client is not installed; install openssh-client (or use boxforge run)")
    fd, path = tempfile.mkstemp(prefix="boxforge-known-hosts-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(known_line)
        argv = ssh_command(target, Path(path), info.project_dir, command)
        result = await anyio.to_thread.run_sync(subprocess.run, argv)
        return result.returncode
    finally:
        os.unlink(path)


async def cmd_diff(fleet: Fleet, args: argparse.Namespace) -> int:
    result = await fleet.diff(_valid(_names, args.name), max_bytes=0 if args.stat else args.max_bytes)
    if args.json:
        _dump(result)
        return 0
    err.print(f"[dim]{result.server}: {result.branch or '-'} at {(result.head_commit or '-')[:12]}, "
              f"base {result.base_commit[:12]}[/]")
    for commit in result.commits:
        err.print(f"[yellow]{commit}[/]")
    out.print(result.stat or "no changes against the base commit")
    if result.diff:
        sys.stdout.write("\n" + result.diff)
    if result.truncated and not args.stat:
        err.print(f"[yellow]diff cut at {args.max_bytes} of {result.diff_bytes} bytes; raise --max-bytes[/]")
    return 0


async def cmd_agent(fleet: Fleet, args: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    started = await fleet.run_agent(_valid(_names, args.name), prompt, args=args.arg or None)
    if not args.follow:
        if args.json:
            _dump(started)
        else:
            out.print(started.job_id)
            err.print(started.hint)
        return 0
    status, stdout, stderr = await _read_job(fleet, started.job_id, follow=True, echo=not args.json)
    if args.json:
        _dump({"run": started.model_dump(mode="json"),
               "status": status.model_copy(update={"stdout": stdout, "stderr": stderr}).model_dump(mode="json")})
    else:
        err.print(_job_line(started.job_id, status))
    return 0 if status.state == "succeeded" else 1


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
        if not args.json:
            out.print(f"forging {len(names)} local boxes in parallel...")
        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(one, name)
        if args.json:
            _dump({"boxes": [{"name": n, **{k: v for k, v in rows[n].items() if k != "last"},
                              "last_line": rows[n]["last"][0]} for n in names],
                   "seconds": round(time.monotonic() - started, 3)})
            return 0 if all(r["state"] == "succeeded" for r in rows.values()) else 1
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
        if not args.json:
            out.print(f"burned {len(names)} boxes")
    return 0 if all(r["state"] == "succeeded" for r in rows.values()) and len(rows) == len(names) else 1


def cmd_mcp(settings: Settings, args: argparse.Namespace) -> int:
    from server.app import build_server, configure_logging

    configure_logging(settings)
    server = build_server(settings)
    if not args.http:
        server.run("stdio")
        return 0
    from server.httpserve import serve

    anyio.run(lambda: serve(server, host=args.host, port=args.port, env=os.environ))
    return 0


COMMANDS: dict[str, Callable[[Fleet, argparse.Namespace], Awaitable[int]]] = {
    "up": cmd_up, "run": cmd_run, "jobs": cmd_jobs, "job": cmd_job, "ls": cmd_ls, "extend": cmd_extend,
    "burn": cmd_burn, "reap": cmd_reap, "demo": cmd_demo, "logs": cmd_logs, "ssh": cmd_ssh, "diff": cmd_diff,
    "agent": cmd_agent,
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
    p.add_argument("--agent", default="none", help="agent to install: none, claude, codex, custom")
    p.add_argument("--agent-install", help="shell command that installs the agent (run in the project dir)")
    p.add_argument("--agent-command", help="command that runs the agent with the prompt on stdin (custom agents)")
    p.add_argument("--env", action="append", default=[], metavar="NAME",
                   help="copy this environment variable to the boxes (secret: a 0600 file there); repeatable")
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
    p = add("logs", "a job's output, or a box's create logs (bootstrap, setup) by box name")
    p.add_argument("target", help="job id (j-...) or box name")
    p.add_argument("--follow", "-f", action="store_true", help="stream output until the job ends")
    p = add("ssh", "open a shell on a box (its pinned host key only), or run a command: boxforge ssh NAME -- CMD")
    p.add_argument("name")
    p.add_argument("command", nargs="*", help="command to run instead of a shell, after --")
    p = add("diff", "what changed on a box since its base commit (untracked files included)")
    p.add_argument("name")
    p.add_argument("--stat", action="store_true", help="files and stat only")
    p.add_argument("--max-bytes", type=int, default=256 * 1024, help="cut the diff here (default 256 KiB)")
    p = add("agent", "run a box's agent on a prompt in the background (--follow: stream it to the end)")
    p.add_argument("name")
    p.add_argument("prompt", help="the task, or - to read it from stdin")
    p.add_argument("--arg", action="append", help="extra argument for the agent command; repeatable")
    p.add_argument("--follow", "-f", action="store_true", help="stream the agent's output until it ends")
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
    p = add("mcp", "serve MCP over stdio (for Claude Code: claude mcp add boxforge -- boxforge mcp), or over "
                   "streamable HTTP with --http", json_flag=False)
    p.add_argument("--http", action="store_true", help="serve streamable HTTP at http://HOST:PORT/mcp")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1); off loopback a "
                                                      "bearer token is required (BOXFORGE_HTTP_TOKEN or generated)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
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
