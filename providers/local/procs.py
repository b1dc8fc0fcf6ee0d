"""Processes of local boxes, read from Linux /proc: is a pid alive, which processes are a box's, kill them.

Pids from files may have been reused by the time anyone reads them; the rules here decide what still
belongs to a box (``box_processes``) and never kill the calling process or its ancestors.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from providers.local.boxdir import BOX_ENV_VAR, SUPERVISOR_MODULE, SUPERVISOR_PID_FILE, read_pid

# How far a process's start (boot-relative ticks) and a file's mtime may disagree on one instant.
CLOCK_SLACK_S = 0.1
DEAD_STATES = ("Z", "X")


class Proc(NamedTuple):
    """One process as /proc/<pid>/stat tells it, with its start as wall-clock time."""

    state: str
    ppid: int
    pgrp: int
    born: float


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, start ticks) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def _proc_cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _proc_has_env(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _boot_time() -> float:
    """The wall-clock time of boot, to 10 ms (``btime`` in /proc/stat is truncated to the second)."""
    return time.time() - float(Path("/proc/uptime").read_text().split()[0])


def process_table() -> dict[int, Proc]:
    """Every live process of this machine (pid namespace) as it is now."""
    boot, ticks = _boot_time(), os.sysconf("SC_CLK_TCK")
    stats = {pid: stat for pid in _all_pids() if (stat := _proc_stat(pid)) is not None}
    return {pid: Proc(state, ppid, pgrp, boot + start / ticks) for pid, (state, ppid, pgrp, start) in stats.items()}


def pid_alive(pid: int | None, marker: str | None = None) -> bool:
    """True when ``pid`` runs (zombies are dead) and its command line contains ``marker``."""
    if not pid:
        return False
    stat = _proc_stat(pid)
    if stat is None or stat[0] in DEAD_STATES:
        return False
    return marker is None or any(marker in arg for arg in _proc_cmdline(pid))


def supervisor_pid(box_dir: Path) -> int | None:
    """The pid of the box's supervisor when it is alive, else None."""
    pid = read_pid(box_dir / SUPERVISOR_PID_FILE)
    return pid if pid_alive(pid, str(box_dir)) and pid_alive(pid, SUPERVISOR_MODULE) else None


def ancestors(pid: int) -> set[int]:
    """``pid`` and its parents up to (not including) init: the processes a burn must spare."""
    chain = set()
    while pid > 1 and pid not in chain:
        chain.add(pid)
        stat = _proc_stat(pid)
        if stat is None:
            break
        pid = stat[1]
    return chain


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def kill_until_gone(pids_of: Callable[[], set[int]], timeout: float) -> None:
    """SIGKILL what ``pids_of`` names until it names no live process or ``timeout`` passed; spares the
    calling process and its ancestors."""
    spare = ancestors(os.getpid())
    deadline = time.monotonic() + timeout
    while True:
        victims = {pid for pid in pids_of() - spare if pid_alive(pid)}
        if not victims or time.monotonic() > deadline:
            return
        for pid in victims:
            kill(pid)
        time.sleep(0.01)


def proven_job_groups(table: Mapping[int, Proc], job_groups: Mapping[int, float], roots: set[int],
                      not_before: float) -> set[int]:
    """The job groups (pgid -> mtime of the job's pid file) that are still the box's: one of the group's
    members already lived when the job's leader wrote its pid (a group that has had members ever since
    cannot have been reused), or its leader is a root."""
    proven = {proc.pgrp for proc in table.values()
              if proc.pgrp in job_groups and not_before <= proc.born <= job_groups[proc.pgrp] + CLOCK_SLACK_S}
    return proven | (roots & set(job_groups))


def descendants(table: Mapping[int, Proc], starts: Iterable[int]) -> set[int]:
    """``starts`` and every process below them."""
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    found: set[int] = set()
    todo = list(starts)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def box_processes(box_id: str, job_groups: Mapping[int, float], roots: set[int], not_before: float) -> set[int]:
    """Live processes of the box: the roots, the members of its running jobs' process groups, all
    their descendants, and anything carrying ``BOXFORGE_BOX=<box_id>`` in its environment.

    Pids from files may have been reused, and a job's pgid too once the job's group died. So a
    process older than the box (born before ``not_before``) is never the box's, and a job group counts
    only when ``proven_job_groups`` says so (a root's group: found in an earlier pass of ``burn_box``).
    """
    table = process_table()
    fresh = {pid for pid, proc in table.items() if proc.born >= not_before}
    proven = proven_job_groups(table, job_groups, roots, not_before)
    starts = (roots & fresh) | {pid for pid in fresh if table[pid].pgrp in proven}
    needle = f"{BOX_ENV_VAR}={box_id}".encode()
    found = descendants(table, starts) | {pid for pid in table if _proc_has_env(pid, needle)}
    spare = ancestors(os.getpid())
    return {pid for pid in found if pid not in spare and table[pid].state not in DEAD_STATES}


def running_job_groups(home: Path) -> dict[int, float]:
    """pgid -> mtime of the pid file, for the jobs without an ``exit`` file: a finished job's pid
    may belong to anyone by now."""
    groups = {}
    for pid_file in (home / ".boxforge" / "jobs").glob("*/pid"):
        if (pid_file.parent / "exit").exists():
            continue
        pid = read_pid(pid_file)
        with contextlib.suppress(OSError):
            if pid and pid > 1:
                groups[pid] = pid_file.stat().st_mtime
    return groups
