"""A box's container on Docker: what it is made of (the create arguments, the sshd files copied in before
start), how an inspected container reads back as a ``Box``, and how it and its network go.

Functions here take the SDK client and run in the engine's worker thread; none keeps state.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from providers.base import LABEL_CREATE_DEADLINE, LABEL_NAME, LABEL_READY, Box, BoxSpec, BoxState
from providers.docker import network
from providers.docker.settings import SIZES, Size

BOX_PREFIX = "boxforge-"
LABEL_SIZE = "boxforge-size"
MOUNT_POINT = "/run/boxforge"
SSH_PORT = "22/tcp"
PUBLISH_HOST = "127.0.0.1"
STATES = {
    "created": BoxState.PENDING,
    "restarting": BoxState.PENDING,
    "running": BoxState.RUNNING,
    "paused": BoxState.ERROR,
    "exited": BoxState.ERROR,  # stopped by its watchdog or killed: nothing serves it any more
    "dead": BoxState.ERROR,
    "removing": BoxState.GONE,
}

SSHD_CONFIG = """\
Port 22
HostKey /etc/ssh/boxforge/ssh_host_ed25519_key
AuthorizedKeysFile /etc/ssh/boxforge/authorized_keys
PidFile /run/sshd-boxforge.pid
AllowUsers root
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
AcceptEnv LANG LC_*
MaxSessions 200
MaxStartups 200
LoginGraceTime 30
Subsystem sftp internal-sftp
LogLevel ERROR
"""


def box_id_of(spec: BoxSpec) -> str:
    """The container's (and its network's) name: a retried create finds the first one."""
    return f"{BOX_PREFIX}{spec.name}-{spec.request_id}"


@dataclass(frozen=True)
class Shape:
    """What a box's container is given: its image, size and the orchestrator-side mount of its init."""

    image: str
    size_name: str
    size: Size
    cpus: float
    mount_dir: Path


def create_and_start(client: Any, box_id: str, spec: BoxSpec, shape: Shape) -> Any:
    """Create the container on the box's network, copy sshd's files in, start it; returns it reloaded.
    The keys reach the box only as files (never env or labels)."""
    identity = {k: v for k, v in spec.labels.items() if k not in (LABEL_READY, LABEL_CREATE_DEADLINE)}
    container = client.containers.create(
        shape.image, name=box_id, hostname=spec.name[:63], entrypoint=["/bin/sh", f"{MOUNT_POINT}/init.sh"],
        command=[], labels={**identity, LABEL_SIZE: shape.size_name}, network=box_id,
        ports={SSH_PORT: (PUBLISH_HOST, None)}, init=True,
        volumes={str(shape.mount_dir): {"bind": MOUNT_POINT, "mode": "ro"}},
        mem_limit=shape.size.memory_bytes, memswap_limit=shape.size.memory_bytes, nano_cpus=int(shape.cpus * 1e9),
        pids_limit=shape.size.pids, cap_drop=["NET_RAW", "MKNOD"], security_opt=["no-new-privileges"],
        environment={}, stdin_open=False, tty=False, detach=True,
    )
    container.put_archive("/", _tar({
        "etc/ssh/boxforge/sshd_config": (SSHD_CONFIG.encode(), 0o644),
        "etc/ssh/boxforge/ssh_host_ed25519_key": (spec.host_key_private.encode(), 0o600),
        "etc/ssh/boxforge/ssh_host_ed25519_key.pub": (spec.host_key_public.encode() + b"\n", 0o644),
        "etc/ssh/boxforge/authorized_keys": (spec.authorized_key.encode() + b"\n", 0o600),
    }))
    container.start()
    container.reload()
    return container


def box_of(container: Any, labels: Mapping[str, str], warnings: tuple[str, ...]) -> Box:
    """The Box an inspected container is, with ``labels`` as the provider keeps them."""
    attrs = container.attrs
    status = attrs.get("State", {}).get("Status", "")
    state = STATES.get(status, BoxState.PENDING)
    bindings = (attrs.get("NetworkSettings", {}).get("Ports") or {}).get(SSH_PORT) or []
    port = next((int(b["HostPort"]) for b in bindings if b.get("HostPort")), 0)
    size_name = container_labels(container).get(LABEL_SIZE)
    return Box(
        id=container.name, name=labels.get(LABEL_NAME, container.name), state=state,
        host=PUBLISH_HOST if port and state is BoxState.RUNNING else None, ssh_port=port or 22,
        ssh_user="root", labels={k: v for k, v in labels.items() if k != LABEL_SIZE},
        created_at=_created_at(attrs.get("Created", "")),
        data={"container_id": container.id, "status": status, "bridge": network.bridge_name(container.name),
              "image": attrs.get("Config", {}).get("Image", "")},
        size=size_name, warnings=warnings + _cpu_warning(size_name, attrs),
    )


def container_labels(container: Any) -> dict[str, str]:
    return dict(container.attrs.get("Config", {}).get("Labels") or {})


def logs_tail(client: Any, box_id: str) -> str:
    try:
        return client.containers.get(box_id).logs(tail=20).decode(errors="replace")
    except Exception:
        return "(no log)"


def remove_with_network(client: Any, box_id: str) -> None:
    """Remove the container (killed, with its volumes) and its network; either gone already: silent."""
    from docker.errors import APIError
    from docker.errors import NotFound as SDKNotFound

    try:
        client.api.remove_container(box_id, force=True, v=True)
    except SDKNotFound:
        pass
    for attempt in range(3):
        try:
            client.api.remove_network(box_id)
            return
        except SDKNotFound:
            return
        except APIError as exc:  # an endpoint still detaching: once more, briefly
            if attempt == 2 or exc.status_code not in (403, 409):
                raise
            time.sleep(0.2)


def _tar(files: Mapping[str, tuple[bytes, int]]) -> bytes:
    """A tar of ``path -> (content, mode)`` owned by root, with its parent directories (0700)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs = sorted({str(Path(p).parent) for p in files})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o700, int(time.time())
            tar.addfile(info)
        for path, (content, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(content), mode, int(time.time())
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _cpu_warning(size_name: str | None, attrs: Mapping[str, Any]) -> tuple[str, ...]:
    """A warning when the daemon's machine has fewer CPUs than the size preset gives."""
    if size_name not in SIZES:
        return ()
    given = (attrs.get("HostConfig", {}).get("NanoCpus") or 0) / 1e9
    wanted = SIZES[size_name].cpus
    if given and given < wanted:
        return (f"size {size_name} gives {wanted:g} CPUs; the Docker host has {given:g}, so the box got {given:g}",)
    return ()


def _created_at(raw: str) -> float:
    """Docker's RFC 3339 ``Created`` (nanoseconds, Z) as unix seconds."""
    from datetime import datetime

    if not raw:
        return time.time()
    head, _, frac = raw.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head + "+00:00").timestamp()
    return stamp + (float("0." + frac[:6]) if frac else 0.0)
