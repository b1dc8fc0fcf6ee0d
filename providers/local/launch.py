"""Making a local box: write its directory (built aside, then renamed into place) and start its detached
supervisor with a clean environment. Usable without ``LocalProvider``: a fake cloud reuses ``launch_box``
to put boxes on ``127.0.0.N`` with a fixed port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from providers.base import BoxSpec
from providers.local import boxinit, cgroup, network
from providers.local.boxdir import (
    AUTHORIZED_KEYS_FILE,
    BOX_FILE,
    DEFAULT_PATH,
    HOME_DIR,
    HOST_KEY_FILE,
    LOG_FILE,
    SUPERVISOR_MODULE,
    SUPERVISOR_PID_FILE,
    WATCHDOG_GRACE_S,
    BoxStartError,
    current_user,
    free_port,
    log_tail,
    new_box_id,
    read_pid,
    write_atomic,
    write_json,
    write_labels,
)
from providers.local.burn import burn_leftover
from providers.local.servers import ServerKind, find_sshd, resolve_server


def prepare_box_dir(
    root: Path,
    spec: BoxSpec,
    *,
    server: ServerKind,
    host: str = "127.0.0.1",
    port: int = 0,
    box_id: str | None = None,
    watchdog_grace_s: float = WATCHDOG_GRACE_S,
) -> Path:
    """Write a complete box directory (built aside, then renamed into place) and return it."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    box_id = box_id or new_box_id()
    box_dir = root / box_id
    staging = root / f".staging-{box_id}"
    staging.mkdir(mode=0o700)
    try:
        (staging / HOME_DIR).mkdir(mode=0o700)
        write_atomic(staging / HOST_KEY_FILE, spec.host_key_private.strip() + "\n")
        write_atomic(staging / AUTHORIZED_KEYS_FILE, spec.authorized_key.strip() + "\n")
        write_labels(staging, spec.labels)
        write_json(
            staging / BOX_FILE,
            {
                "id": box_id,
                "name": spec.name,
                "request_id": spec.request_id,
                "created_at": time.time(),
                "host": host,
                "port": port or free_port(host),
                "port_auto": port == 0,
                "watchdog_grace_s": watchdog_grace_s,
                "user": current_user(),
                "server": server,
                "sshd": find_sshd() if server == "openssh" else None,
            },
        )
        staging.rename(box_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return box_dir


def supervisor_env(home: Path) -> dict[str, str]:
    """A clean environment: the orchestrator's secrets must not reach a box."""
    # The supervisor must import this very code (and the same dependencies) as its creator.
    python_path = [str(Path(__file__).resolve().parents[2]), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {"PATH": os.environ.get("PATH", DEFAULT_PATH), "PYTHONPATH": os.pathsep.join(python_path)}
    env["HOME"] = str(home)
    for name in ("LANG", "LC_ALL", "TZ"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def start_supervisor(box_dir: Path) -> int:
    """Start the box's supervisor detached from this process; returns its pid. Blocking (short)."""
    box_dir = Path(box_dir)
    with open(box_dir / LOG_FILE, "ab") as log:
        launcher = subprocess.Popen(
            [sys.executable, "-m", SUPERVISOR_MODULE, str(box_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=box_dir / HOME_DIR if (box_dir / HOME_DIR).is_dir() else box_dir,
            env=supervisor_env(box_dir / HOME_DIR),
            start_new_session=True,
        )
    # The launcher forks the real supervisor and exits at once, so no zombie is left here.
    code = launcher.wait()
    pid = read_pid(box_dir / SUPERVISOR_PID_FILE)
    if code != 0 or pid is None:
        raise BoxStartError(f"the supervisor of {box_dir.name} did not start: {log_tail(box_dir)}")
    return pid


def launch_box(
    root: Path,
    spec: BoxSpec,
    *,
    server: str = "auto",
    host: str = "127.0.0.1",
    port: int = 0,
    box_id: str | None = None,
) -> Path:
    """Prepare a box directory and start its supervisor; returns the box dir. Blocking (short).

    The box becomes reachable a moment later: poll ``probe_ssh`` or ``ready.json``.
    """
    box_dir = prepare_box_dir(root, spec, server=resolve_server(server), host=host, port=port, box_id=box_id)
    start_supervisor(box_dir)
    return box_dir


def prepare_isolated_dir(root: Path, spec: BoxSpec, *, egress: bool, image: Path, size: str,
                         limits: cgroup.Limits, watchdog_grace_s: float = WATCHDOG_GRACE_S) -> Path:
    """Write an isolated box's directory (built aside, then renamed into place) and return it.

    Orchestrator-side files (box.json, labels.json, logs, pids) are root's, 0600: the box cannot see this dir
    at all (its own mount namespace), and its host uid cannot read them either."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    box_id = new_box_id()
    box_dir = root / box_id
    index = network.claim(box_dir, burn_leftover)
    staging = root / f".staging-{box_id}"
    staging.mkdir(mode=0o700)
    try:
        host_side, box_addr = network.addresses(index)
        netns, veth = network.names(box_id, egress)
        info = {
            "id": box_id, "name": spec.name, "request_id": spec.request_id, "created_at": time.time(),
            "isolation": "full", "index": index, "uid": boxinit.host_uid(index), "host": box_addr,
            "gateway": host_side, "port": 22, "port_auto": False, "user": "root", "server": "openssh",
            "netns": netns, "veth": veth, "egress": egress, "image": str(image), "size": size,
            "limits": limits.describe(), "watchdog_grace_s": watchdog_grace_s,
        }
        write_labels(staging, spec.labels)
        write_json(staging / BOX_FILE, info)
        boxinit.prepare_fs(staging, info, spec.host_key_private, spec.authorized_key)
        staging.rename(box_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        network.release(index, box_dir)
        raise
    return box_dir
