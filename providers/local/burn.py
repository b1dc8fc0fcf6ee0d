"""Burning a local box: kill every process of the box, take down its netns, veth and cgroup, remove its
directory. Idempotent and safe from any process: the supervisor burns at expiry or on a signal, its
undertaker when the supervisor died, the provider as a fallback when the supervisor is dead or stuck.
Never kills the calling process or its ancestors. Blocking (up to ``timeout`` while processes die).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from providers.local import cgroup, network
from providers.local.boxdir import (
    BOX_ID_RE,
    HOME_DIR,
    LOG_FILE,
    READY_FILE,
    SERVER_PID_FILE,
    SSHD_PID_FILE,
    log_tail,
    read_box_info,
    read_pid,
    write_atomic,
)
from providers.local.procs import box_processes, kill, kill_until_gone, running_job_groups, supervisor_pid


def burn_box(box_dir: Path, *, timeout: float = 5.0) -> None:
    """Stop the box's SSH server, kill every process of the box, remove its directory.

    An isolated box burns through its cgroup and netns (``burn_isolated``).
    """
    box_dir = Path(box_dir).resolve()
    box_id = box_dir.name
    info = read_box_info(box_dir) or {}
    if info.get("isolation") == "full":
        burn_isolated(box_dir, info, timeout=timeout)
        return
    if any(d.exists() for d in cgroup.dirs(box_id)) or any(
            network.exists(network.names(box_id, flag)[0]) for flag in (True, False)):
        burn_leftover(box_id, timeout)  # an isolated box whose box.json is already gone
    not_before = float(info.get("created_at", 0)) - 2.0
    roots = _stop_roots(box_dir)
    job_groups = running_job_groups(box_dir / HOME_DIR)
    deadline = time.monotonic() + timeout
    while True:
        victims = box_processes(box_id, job_groups, roots, not_before)
        if not victims or time.monotonic() > deadline:
            break
        for pid in victims:
            kill(pid)
        roots |= victims
        time.sleep(0.02)
    shutil.rmtree(box_dir, ignore_errors=True)


def _stop_roots(box_dir: Path) -> set[int]:
    """Kill the box's supervisor (first, so it cannot restart the server behind our back) and return it with
    the pids its files name: where the search for the box's processes starts."""
    roots = set()
    sup = supervisor_pid(box_dir)
    if sup is not None and sup != os.getpid():
        kill(sup)
        roots.add(sup)
    for name in (SERVER_PID_FILE, SSHD_PID_FILE):
        pid = read_pid(box_dir / name)
        if pid is not None:
            roots.add(pid)
    return roots


def _remove_cgroup(box_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:  # a cgroup can be removed once its last (killed) process is reaped
        cgroup.remove(box_id)
        if not any(d.exists() for d in cgroup.dirs(box_id)) or time.monotonic() > deadline:
            return
        time.sleep(0.01)


def burn_leftover(box_id: str, timeout: float = 5.0) -> None:
    """What a box whose dir is gone may have left: processes in its cgroup or netns, the netns, the cgroup."""
    if not BOX_ID_RE.match(box_id):
        return
    netnses = [network.names(box_id, flag)[0] for flag in (True, False)]
    kill_until_gone(lambda: cgroup.pids(box_id) | {p for ns in netnses for p in network.netns_pids(ns)}, timeout)
    network.teardown(box_id)
    _remove_cgroup(box_id, timeout)


def burn_isolated(box_dir: Path, info: Mapping[str, Any], *, timeout: float = 5.0) -> None:
    """Kill the supervisor, then every process in the box's cgroup and netns, then remove the netns, veth,
    cgroup and dirs. The box's mounts live only in its own mount namespace: they go with its last process."""
    box_id = box_dir.name
    sup = supervisor_pid(box_dir)
    if sup is not None and sup != os.getpid():
        kill(sup)
    netns = str(info.get("netns", ""))
    kill_until_gone(lambda: cgroup.pids(box_id) | network.netns_pids(netns), timeout)
    network.teardown(box_id, bool(info.get("egress")))
    if not (box_dir / READY_FILE).exists() and (box_dir / LOG_FILE).exists():
        # a box that never came up: keep why, for the create that waits on it (wait_ready reports it)
        with contextlib.suppress(OSError):
            write_atomic(box_dir.parent / f".failed-{box_id}.log", log_tail(box_dir))
    _remove_cgroup(box_id, timeout)
    shutil.rmtree(box_dir, ignore_errors=True)
    if "index" in info:
        network.release(int(info["index"]), box_dir)
