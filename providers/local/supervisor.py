"""A local box's supervisor: ``python -m providers.local.supervisor [--burn] <box_dir>``, root, on the host.

Started detached from the orchestrator (``launch.start_supervisor``), it forks away and runs the box
until it must end, then burns it (``burn.burn_box``), so a box dies on time even when no orchestrator
ever runs again:

- an unisolated box: the supervisor runs the box's SSH server (``servers``), writes ``ready.json`` once
  it answers with an SSH banner, restarts it when it dies, and watches ``labels.json`` for the TTL;
- an isolated box: the supervisor makes the netns + veth and the cgroup, forks the box's init
  (``boxinit``), becomes a child subreaper, and starts an undertaker that burns the box when the
  supervisor dies however it dies; it watches the TTL and the box's init.

Either ends at expiry (plus the watchdog grace), on SIGTERM/SIGINT, or when the box directory vanishes.
``--burn`` burns a box directory and exits (the undertaker's call).

The roles of the package's other modules: ``boxdir`` (the directory's layout and files), ``launch``
(making a box), ``servers`` (the SSH servers), ``procs`` (/proc), ``burn`` (burning).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import anyio

from providers.base import LABEL_EXPIRES_AT, expires_at_from_labels
from providers.local import boxinit, cgroup, network, syscalls
from providers.local.boxdir import (
    BOX_FILE,
    READY_FILE,
    SERVER_PID_FILE,
    SUPERVISOR_MODULE,
    SUPERVISOR_PID_FILE,
    WATCHDOG_GRACE_S,
    BoxStartError,
    read_box_info,
    read_labels,
    write_atomic,
    write_json,
)
from providers.local.burn import burn_box
from providers.local.launch import supervisor_env
from providers.local.procs import pid_alive
from providers.local.servers import Server, start_server
from providers.probe import probe_ssh

WATCH_INTERVAL_S = 0.25
ISOLATED_START_TIMEOUT_S = 120.0  # a loaded machine starting many boxes at once: wait_ready decides sooner


@dataclass
class Ending:
    """Why the box must end, once something decided it (the watch, a signal); None: nothing has yet."""

    reason: str | None = None


def _expired(box_dir: Path) -> bool:
    labels = read_labels(box_dir)
    if labels is None:
        return False
    expires_at = expires_at_from_labels(labels)
    grace = float((read_box_info(box_dir) or {}).get("watchdog_grace_s", WATCHDOG_GRACE_S))
    return expires_at is not None and expires_at + grace <= time.time()


def _must_end(box_dir: Path) -> str | None:
    """Why any box must end now (its directory vanished, it expired), or None."""
    if not (box_dir / BOX_FILE).exists():
        return "box directory vanished"
    if _expired(box_dir):
        return f"expired ({LABEL_EXPIRES_AT} reached)"
    return None


@contextlib.asynccontextmanager
async def _until_signalled(ending: Ending) -> AsyncIterator[None]:
    """Run the body until it ends or SIGTERM/SIGINT arrives; a signal cancels the body and becomes the reason."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:

            async def on_signal() -> None:
                async for signum in signals:
                    ending.reason = f"received {signal.Signals(signum).name}"
                    tg.cancel_scope.cancel()

            tg.start_soon(on_signal)
            yield
            tg.cancel_scope.cancel()


async def _watch(box_dir: Path, server: Server) -> str:
    """Return why the box must end: expiry, or its directory vanished. Restarts a dead server."""
    while True:
        reason = _must_end(box_dir)
        if reason is not None:
            return reason
        if not server.alive():
            print("SSH server died; restarting it", file=sys.stderr, flush=True)
            await server.stop()
            await server.start()
        await anyio.sleep(WATCH_INTERVAL_S)


async def supervise(box_dir: Path) -> None:
    """Run an unisolated box until it expires or is told to stop, then burn it.

    A server that never starts leaves the directory (and its log) for the provider to
    report; a box that was up is always burned on the way out.
    """
    ending = Ending()
    server: Server | None = None
    try:
        async with _until_signalled(ending):
            if _expired(box_dir):
                ending.reason = "expired before start"
            else:
                server = await start_server(box_dir)
                info = read_box_info(box_dir) or {}
                write_json(box_dir / READY_FILE, {"port": info.get("port"), "ready_at": time.time()})
                print(f"ready on {info.get('host')}:{info.get('port')}", file=sys.stderr, flush=True)
                ending.reason = await _watch(box_dir, server)
    except Exception:
        traceback.print_exc()  # into supervisor.log, where wait_ready reports it from
    finally:
        with anyio.CancelScope(shield=True):
            if server is not None:
                await server.stop()
            if ending.reason is not None or server is not None:
                print(f"burning {box_dir.name}: {ending.reason or 'supervisor failed'}", file=sys.stderr, flush=True)
                await anyio.to_thread.run_sync(burn_box, box_dir)


def _daemonize(box_dir: Path) -> None:
    """Fork: the parent records the child's pid and exits, the child carries on detached."""
    child = os.fork()
    if child:
        with contextlib.suppress(OSError):  # the child may already have burned an expired box
            write_atomic(box_dir / SUPERVISOR_PID_FILE, f"{child}\n")
        os._exit(0)


def _start_isolated(box_dir: Path) -> int:
    """Network, cgroup, then the box itself (a child of this, the supervisor). Blocking, main thread only."""
    info = read_box_info(box_dir)
    if info is None:
        raise BoxStartError("box.json is missing")
    raw = info["limits"]
    cgroup.create(box_dir.name, cgroup.Limits(int(raw["cores"]), int(raw["memory_mib"]) << 20, int(raw["pids"])))
    network.setup(box_dir.name, int(info["index"]), egress=bool(info["egress"]))
    pid = boxinit.spawn(box_dir, info)
    write_atomic(box_dir / SERVER_PID_FILE, f"{pid}\n")
    return pid


def _spawn_undertaker(box_dir: Path) -> None:
    """A small shell that burns the box when this supervisor dies however it dies (SIGKILL included): it
    waits for EOF on a pipe only the supervisor holds."""
    read_end, write_end = os.pipe()
    env = supervisor_env(box_dir)
    subprocess.Popen(["/bin/sh", "-c", 'cat >/dev/null; exec "$0" -m "$1" --burn "$2"', sys.executable,
                      SUPERVISOR_MODULE, str(box_dir)],
                     stdin=read_end, stdout=subprocess.DEVNULL, stderr=None, env=env, start_new_session=True)
    os.close(read_end)
    os.set_inheritable(write_end, False)  # kept open, never passed on: its EOF is this process's death


async def _watch_isolated(box_dir: Path, box_pid: int) -> str:
    """Return why the isolated box must end: expiry, its directory vanished, its init exited."""
    while True:
        reason = _must_end(box_dir) or (None if pid_alive(box_pid) else "the box's init exited")
        if reason is not None:
            return reason
        await anyio.sleep(WATCH_INTERVAL_S)


async def supervise_isolated(box_dir: Path, box_pid: int) -> None:
    """Watch an isolated box until it expires, is told to stop, or its pid 1 dies; then burn it."""
    ending = Ending()
    info = read_box_info(box_dir) or {}
    try:
        async with _until_signalled(ending):
            with anyio.fail_after(ISOLATED_START_TIMEOUT_S):
                while not await probe_ssh(info["host"], 22, timeout=0.5):
                    if not pid_alive(box_pid):
                        raise BoxStartError("the box's init exited before its SSH server answered")
                    await anyio.sleep(0.005)
            write_json(box_dir / READY_FILE, {"port": 22, "ready_at": time.time()})
            print(f"ready on {info['host']}:22", file=sys.stderr, flush=True)
            ending.reason = await _watch_isolated(box_dir, box_pid)
    except Exception:
        traceback.print_exc()
    finally:
        with anyio.CancelScope(shield=True):
            print(f"burning {box_dir.name}: {ending.reason or 'supervisor failed'}", file=sys.stderr, flush=True)
            await anyio.to_thread.run_sync(burn_box, box_dir)


def main(argv: Iterable[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "--burn":
        burn_box(Path(args[1]).resolve())
        return
    if len(args) != 1:
        sys.exit("usage: python -m providers.local.supervisor [--burn] <box_dir>")
    box_dir = Path(args[0]).resolve()
    if not (box_dir / BOX_FILE).is_file():
        sys.exit(f"{box_dir} is not a box directory")
    _daemonize(box_dir)
    if (read_box_info(box_dir) or {}).get("isolation") != "full":
        anyio.run(supervise, box_dir)
        return
    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
    _spawn_undertaker(box_dir)
    try:
        if _expired(box_dir):
            raise BoxStartError("expired before start")
        box_pid = _start_isolated(box_dir)
    except Exception:
        traceback.print_exc()
        burn_box(box_dir)
        return
    anyio.run(supervise_isolated, box_dir, box_pid)


if __name__ == "__main__":
    main()
