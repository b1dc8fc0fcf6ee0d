"""A local box's directory: its layout, its id, and the small readers and writers of its files.

A local box is ``<root>/<box_id>/``, orchestrator-side (the box itself never sees it)::

    box.json              name, request_id, created_at, host, port, port_auto, user, server, sshd
                          (an isolated box: isolation, index, uid, gateway, netns, veth, egress, image, limits)
    labels.json           the labels (boxforge-expires-at drives the watchdog); rewritten atomically
    ssh_host_ed25519_key  the pinned host key from the spec (0600)
    authorized_keys       the one client key allowed in
    home/                 HOME of every session of an unisolated box (jobs live in home/.boxforge/jobs)
    sshd_config           OpenSSH only
    supervisor.pid        pid of the supervisor
    server.pid            pid of the sshd listener (an isolated box: of its init; sshd.pid is sshd's own)
    ready.json            written once the SSH server answers
    supervisor.log        stdout/stderr of the supervisor and of sshd

Nothing here starts or kills a process.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BOX_ID_PREFIX = "lb-"
BOX_ID_RE = re.compile(r"^lb-[0-9a-f]{12}$")

BOX_FILE = "box.json"
LABELS_FILE = "labels.json"
HOST_KEY_FILE = "ssh_host_ed25519_key"
AUTHORIZED_KEYS_FILE = "authorized_keys"
HOME_DIR = "home"
SSHD_CONFIG_FILE = "sshd_config"
SUPERVISOR_PID_FILE = "supervisor.pid"
SERVER_PID_FILE = "server.pid"
SSHD_PID_FILE = "sshd.pid"
READY_FILE = "ready.json"
LOG_FILE = "supervisor.log"

BOX_ENV_VAR = "BOXFORGE_BOX"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SUPERVISOR_MODULE = "providers.local.supervisor"

# The watchdog is the backstop, as the poweroff timer is on a cloud box: it fires a little after
# expiry so the orchestrator's reaper, which burns within a second, gets the first go.
WATCHDOG_GRACE_S = 5.0


class BoxStartError(Exception):
    """The box's SSH server could not be started."""


def new_box_id() -> str:
    return BOX_ID_PREFIX + secrets.token_hex(6)


def current_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def write_atomic(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Write ``path`` through a temp file and ``os.replace`` so readers never see half a file."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=1, sort_keys=True) + "\n")


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing or unreadable (a box being burned)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_box_info(box_dir: Path) -> dict[str, Any] | None:
    return read_json(box_dir / BOX_FILE)


def read_labels(box_dir: Path) -> dict[str, str] | None:
    return read_json(box_dir / LABELS_FILE)


def write_labels(box_dir: Path, labels: Mapping[str, str]) -> None:
    write_json(box_dir / LABELS_FILE, {str(k): str(v) for k, v in labels.items()})


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def log_tail(box_dir: Path, max_bytes: int = 2000) -> str:
    try:
        with open(box_dir / LOG_FILE, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            return fh.read().decode(errors="replace").strip()
    except OSError:
        return ""


def free_port(host: str) -> int:
    """A port that was free a moment ago (bind to 0, read it back, release)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
