"""The CLI verbs other than ``up`` and ``demo``: each takes the Fleet and the parsed args and returns
the exit status (``run`` and ``ssh``: the remote command's)."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from pydantic import TypeAdapter, ValidationError
from rich.table import Table

from server.cli.render import (
    column_table,
    dump,
    err,
    error_line,
    error_text,
    expiry_warnings,
    job_line,
    out,
    print_table,
    servers_table,
    table,
    valid,
    worded,
)
from server.cli.up import env_names, names_adapter, ttls_adapter
from server.domain.names import is_job_id
from server.errors import ForgeError, InvalidInput
from server.schemas import CommandResult, JobId, JobStatusResult, JobSummary, PoolStatus
from server.service import Fleet
from server.service.reaper import Reaper

job_ids_adapter = TypeAdapter(JobId)
FOLLOW_WAIT_S = 2.0
FORWARD_WATCH_S = 1.0  # how often ``forward`` looks whether its box has burned
TIMED_OUT = 124  # ``run`` whose command outlived --timeout (as timeout(1) exits)


def command_line(words: Sequence[str]) -> str:
    """``run``'s command: one argument is a shell command line as typed ('make test && echo ok'); several are
    one command's words (run NAME make test), each passed as given, as docker exec does."""
    return words[0] if len(words) == 1 else shlex.join(words)


def job_exit(status: JobStatusResult | CommandResult, *, followed: bool = True) -> int:
    """The exit status a command that showed a job returns: the job's own exit code once it ended; 0 for a job
    still running that was not followed; 1 when it could not be known (lost, box unreachable)."""
    if status.state == "running":
        return 1 if followed else 0
    if status.exit_code is not None:
        return status.exit_code
    return 0 if status.state == "succeeded" else 1


async def cmd_run(fleet: Fleet, args: argparse.Namespace) -> int:
    result = worded(await fleet.run(
        valid(names_adapter, args.name), command_line(args.command), background=args.background,
        timeout_s=args.timeout, cwd=args.cwd, kill_on_timeout=args.kill_on_timeout, env_from=env_names(args.env),
    ))
    timed_out = not args.background and (result.state == "running" or (args.kill_on_timeout
                                                                        and result.state == "killed"))
    if args.json:
        dump(result)
    elif args.background:
        out.print(result.job_id)
        err.print(result.hint or "")
    else:
        sys.stdout.write(result.stdout)  # what the command wrote so far, also when it goes on as a job
        sys.stderr.write(result.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        if result.state == "running":
            err.print(f"{result.job_id}: {result.hint}", style="yellow")
        elif timed_out:
            err.print(f"{result.job_id}: killed after {result.duration_s or 0:.0f}s (--kill-on-timeout)",
                      style="yellow")
    if result.warning and not args.json:
        err.print(result.warning, style="yellow")
    if args.background:
        return 0
    return TIMED_OUT if timed_out else job_exit(result)


_JOB_COLUMNS: dict[str, Callable[[JobSummary], str]] = {
    "job": lambda j: j.job_id,
    "server": lambda j: j.server,
    "state": lambda j: j.state,
    "exit": lambda j: "-" if j.exit_code is None else str(j.exit_code),
    "duration": lambda j: f"{j.duration_s:.1f}s" if j.duration_s is not None else "-",
    "command": lambda j: j.command,
}


async def cmd_jobs(fleet: Fleet, args: argparse.Namespace) -> int:
    result = await fleet.list_jobs(valid(names_adapter, args.server) if args.server else None)
    if args.json:
        dump(result)
        return 0
    if not result.jobs and not result.unreachable:
        err.print("no jobs" + (f" on {args.server}" if args.server else "") + "; start one with boxforge run")
        return 0

    print_table(column_table(result.jobs, _JOB_COLUMNS, ("duration",), whole=("job", "state")))
    for name in result.unreachable:
        err.print(f"{name}: unreachable, its jobs are not listed", style="yellow")
    return 0


async def read_job(fleet: Fleet, job_id: str, *, follow: bool, echo: bool) -> tuple[JobStatusResult, str, str]:
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
                                        stderr_offset=status.stderr_offset, wait_s=0 if status.more else FOLLOW_WAIT_S)
        outs.append(status.stdout)
        errs.append(status.stderr)
        show(status)
    return worded(status), "".join(outs), "".join(errs)


async def cmd_job(fleet: Fleet, args: argparse.Namespace) -> int:
    job_id = valid(job_ids_adapter, args.job_id)
    status, stdout, stderr = await read_job(fleet, job_id, follow=args.follow, echo=not args.json)
    if args.json:
        dump(status.model_copy(update={"stdout": stdout, "stderr": stderr}))
    else:
        err.print(job_line(job_id, status))
    return job_exit(status, followed=args.follow)


async def _log_job_ids(fleet: Fleet, target: str) -> list[str]:
    if is_job_id(target):
        return [target]
    try:
        name = names_adapter.validate_python(target)
    except ValidationError:
        raise InvalidInput(f"{target[:60]!r} is neither a job id (j-0123456789ab) nor a box name") from None
    info = await fleet.server_info(name)
    job_ids = [j for j in (info.bootstrap_job_id, info.setup_job_id) if j]
    if not job_ids:
        raise InvalidInput(f"server {name!r} has no create logs yet (still provisioning?); try again shortly")
    return job_ids


async def cmd_logs(fleet: Fleet, args: argparse.Namespace) -> int:
    """A job's log, or a box's create logs (bootstrap, then setup) when given a box name."""
    job_ids = await _log_job_ids(fleet, args.target)
    docs = []
    codes = []
    for job_id in job_ids:
        if len(job_ids) > 1 and not args.json:
            err.print(f"== {job_id}", style="bold")
        status, stdout, stderr = await read_job(fleet, job_id, follow=args.follow, echo=not args.json)
        docs.append(status.model_copy(update={"stdout": stdout, "stderr": stderr}).model_dump(mode="json"))
        codes.append(job_exit(status, followed=args.follow))
        if not args.json:
            err.print(job_line(job_id, status))
    if args.json:
        dump({"jobs": docs})
    return next((code for code in codes if code != 0), 0)  # the first job that failed (bootstrap before setup)


async def cmd_ls(fleet: Fleet, args: argparse.Namespace) -> int:
    result = worded(await fleet.list_servers())
    if args.json:
        dump(result)
        return 0
    if result.servers:
        print_table(servers_table(result.servers))
    else:
        err.print("no live boxes; create one with boxforge up")
    for line in expiry_warnings(result.servers):
        err.print(line, style="yellow")
    return 0


async def cmd_extend(fleet: Fleet, args: argparse.Namespace) -> int:
    info = worded(await fleet.extend_server(valid(names_adapter, args.name), valid(ttls_adapter, args.ttl),
                                            shorten=args.shorten))
    if args.json:
        dump(info)
    else:
        out.print(f"{info.name} now expires at {info.expires_at} ({info.time_left} left)")
        if info.warning:
            err.print(info.warning, style="yellow")
    return 0


async def cmd_fork(fleet: Fleet, args: argparse.Namespace) -> int:
    names = [valid(names_adapter, n) for n in args.names]
    result = worded(await fleet.fork_server(valid(names_adapter, args.source), names, branches=args.branches,
                                            ttl_s=valid(ttls_adapter, args.ttl) if args.ttl else None))
    if args.json:
        dump(result)
    else:
        if result.forks:
            out.print(servers_table(result.forks, title=f"forks of {result.source}"))
        for failure in result.failed:
            err.print(f"[red]fork {failure.name} failed:[/] {failure.error}")
        if result.jobs_not_copied:
            err.print(f"not copied (running on {result.source}): jobs {', '.join(result.jobs_not_copied)}")
        err.print(result.note)
    return 1 if result.failed else 0


def pool_table(status: PoolStatus) -> Table:
    """One row per warm pool profile; ``boxes`` says why a pool is off instead of naming its boxes."""
    return table(("profile", "provider", "count", "ready", "starting", "boxes"),
                 ((p.profile, p.provider, str(p.count), str(p.ready), str(p.starting),
                   p.off or (", ".join(p.boxes) or "-")) for p in status.profiles), title="warm pools")


async def cmd_pool(fleet: Fleet, args: argparse.Namespace) -> int:
    made = await fleet.fill_pools() if args.pool_verb == "fill" else []
    status = await fleet.pool_status()
    if args.json:
        dump(status)
        return 0
    if not status.profiles:
        err.print("no warm pools: add [pool.<profile>] tables (count, size, agent, ttl) to the config file")
        return 0
    print_table(pool_table(status))
    if made:
        err.print(f"started {len(made)}: {', '.join(made)}")
    return 0


async def cmd_burn(fleet: Fleet, args: argparse.Namespace) -> int:
    if args.all:
        if not args.yes:
            raise InvalidInput("burn --all destroys every live box of this owner; add --yes to confirm")
        names = [s.name for s in (await fleet.list_servers()).servers]
        if not names:
            if args.json:
                dump({"results": [], "refused": []})
            else:
                err.print("no live boxes to burn")
            return 0
    else:
        if not args.names:
            raise InvalidInput("give box names to burn, or --all --yes")
        names = [valid(names_adapter, n) for n in args.names]
    results = []
    refused: list[str] = []

    async def one(name: str) -> None:
        try:
            results.append(await fleet.destroy_server(name, harvest=not args.no_harvest))
        except ForgeError as exc:  # one box that cannot be harvested does not stop the others
            refused.append(error_text(exc))

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(one, name)
    if args.json:
        dump({"results": [r.model_dump(mode="json") for r in results], "refused": refused})
    else:
        for r in results:
            out.print(r.message)
    for text in refused:
        err.print(error_line(text))
    return 1 if refused else 0


async def cmd_reap(fleet: Fleet, args: argparse.Namespace) -> int:
    reaper = Reaper(fleet.reaping, fleet.wakeup, max_sleep_s=fleet.settings.reaper_max_sleep_s)
    if args.loop:
        await reaper.run_forever()
        return 0
    burned = await reaper.run_once()
    if args.json:
        dump({"burned": burned})
    else:
        out.print(f"burned {len(burned)} expired box(es){': ' + ', '.join(burned) if burned else ''}")
    return 0


def ssh_command(target: Any, known_hosts: Path, project_dir: str | None, command: Sequence[str]) -> list[str]:
    """The system ssh command line for a box: its key only, and only its pinned host key accepted."""
    alias = f"boxforge-{target.key}"
    setup = f"cd {shlex.quote(project_dir)} 2>/dev/null; " if project_dir else ""
    setup += '[ -r "$HOME/.boxforge/profile" ] && . "$HOME/.boxforge/profile"; '  # the agent on the PATH
    setup += '[ -r "$HOME/.boxforge/env" ] && . "$HOME/.boxforge/env"; '
    remote = setup + (" ".join(command) if command else 'exec "${SHELL:-/bin/sh}" -l')
    return [
        "ssh", "-i", str(target.client_key_path), "-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", f"HostKeyAlias={alias}", "-p", str(target.port),
        *([] if command else ["-t"]), f"{target.user}@{target.host}", remote,
    ]


async def cmd_ssh(fleet: Fleet, args: argparse.Namespace) -> int:
    target, info = await fleet.ssh_access(valid(names_adapter, args.name))
    known_line = f"boxforge-{target.key} {target.host_public_key}\n"
    if args.json:
        dump({"name": info.name, "host": target.host, "port": target.port, "user": target.user,
              "identity_file": str(target.client_key_path), "host_key": target.host_public_key,
              "known_hosts_line": known_line.strip(), "project_dir": info.project_dir})
        return 0
    if shutil.which("ssh") is None:
        raise InvalidInput("the ssh client is not installed; install openssh-client (or use boxforge run)")
    fd, path = tempfile.mkstemp(prefix="boxforge-known-hosts-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(known_line)
        argv = ssh_command(target, Path(path), info.project_dir, args.command)
        result = await anyio.to_thread.run_sync(subprocess.run, argv)
        return result.returncode
    finally:
        os.unlink(path)


async def cmd_forward(fleet: Fleet, args: argparse.Namespace) -> int:
    name = valid(names_adapter, args.name)
    fwd = await fleet.forward(name, args.port, local_port=args.local_port, bind=args.bind)
    # one line (JSON or the URL) at once, for whoever reads the output of this long-running command
    sys.stdout.write((fwd.model_dump_json() if args.json else fwd.url) + "\n")
    sys.stdout.flush()
    err.print(f"{name}:{fwd.port} -> {fwd.local_host}:{fwd.local_port}; Ctrl-C to stop", style="dim")
    stopped = False
    async with anyio.create_task_group() as tg:
        async def on_signal() -> None:
            nonlocal stopped
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    stopped = True
                    tg.cancel_scope.cancel()

        async def on_burn() -> None:  # another process (the reaper, a burn) may end the box
            while await fleet.repo.live_box(name) is not None:  # noqa: ASYNC110 (another process's store)
                await anyio.sleep(FORWARD_WATCH_S)
            tg.cancel_scope.cancel()

        tg.start_soon(on_signal)
        tg.start_soon(on_burn)
        await fleet.forward_ended(name)
        tg.cancel_scope.cancel()
    await fleet.close_forward(name)
    if stopped:
        return 0
    err.print(f"the forward ended: {name!r} burned or its SSH connection was lost", style="red")
    return 1


async def cmd_agent(fleet: Fleet, args: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    started = worded(await fleet.run_agent(valid(names_adapter, args.name), prompt, args=args.arg or None,
                                           env_from=env_names(args.env)))
    if not args.follow:
        if args.json:
            dump(started)
        else:
            out.print(started.job_id)
            err.print(started.hint)
        return 0
    status, stdout, stderr = await read_job(fleet, started.job_id, follow=True, echo=not args.json)
    if args.json:
        dump({"run": started.model_dump(mode="json"),
              "status": status.model_copy(update={"stdout": stdout, "stderr": stderr}).model_dump(mode="json")})
    else:
        err.print(job_line(started.job_id, status))
    return job_exit(status)
