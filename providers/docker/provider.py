"""DockerProvider: a box is a container on its own network, reached by SSH on a loopback-published port.

What a box is on Docker (box id ``boxforge-<name>-<request id>``, which is also the container's and the
network's name, so a retried create finds the first one):

- a bridge network of its own (``network.py``), a /28 of the provider's subnet, inter-container traffic off;
- a container of the base image (or the image the user named) whose init (docker-init, then
  ``boxinit.sh``) runs sshd with the orchestrator's host key and the box's client key (copied in before
  start, never in env or labels) and stops the container at its deadline;
- port 22 published on 127.0.0.1 only; CPU, memory (no swap beyond it) and a pids cap from the size preset;
  NET_RAW and MKNOD dropped, no-new-privileges;
- identity labels on the container (Docker labels cannot change). The schedule labels (expiry, ready,
  create deadline) live in ``<home>/docker/labels/<id>.json``, out of the box's reach; the container's
  own ``boxforge-expires-at`` label is the create-time deadline, which the reaper trusts when that file is
  lost (it never burns later than the box was first given). The watchdog's deadline is the one file of a
  read-only mount, ``<home>/docker/mounts/<id>/stop-at``, rewritten on extend.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import shutil
import tarfile
import threading
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import anyio

from providers.base import (
    LABEL_CREATE_DEADLINE,
    LABEL_EXPIRES_AT,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_OWNER,
    LABEL_READY,
    LABEL_REQUEST,
    MANAGED_BY_VALUE,
    Box,
    BoxSpec,
    BoxState,
    NotFound,
    Provider,
    ProviderContext,
    ProviderError,
    ProviderSettings,
    ReadyTimeout,
)
from providers.capabilities import Isolated, Isolation, NearOrchestrator, PinsHostKey
from providers.docker import image as base_image
from providers.docker import network
from providers.docker.client import Engine, ping
from providers.docker.settings import SIZES, DockerSettings, size_preset
from providers.probe import probe_ssh

SCHEDULE_LABELS = (LABEL_EXPIRES_AT, LABEL_READY, LABEL_CREATE_DEADLINE)
IDENTITY_LABELS = (LABEL_MANAGED_BY, LABEL_OWNER, LABEL_NAME, LABEL_REQUEST)
LABEL_SIZE = "boxforge-size"
BOX_PREFIX = "boxforge-"
MOUNT_POINT = "/run/boxforge"
SSH_PORT = "22/tcp"
PUBLISH_HOST = "127.0.0.1"
CONFIGURED_PING_S = 2.0
READY_POLL_S = 0.05
DESTROY_TIMEOUT_S = 10
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


class DockerProvider(Provider, PinsHostKey, Isolated, NearOrchestrator):
    """Boxes as Docker containers. See providers.base.Provider for the contract."""

    name: ClassVar[str] = "docker"
    Settings: ClassVar[type[ProviderSettings]] = DockerSettings

    @classmethod
    def configured(cls, settings: ProviderSettings) -> bool:
        """True when a Docker daemon answers at the configured host (a missing socket: no, at once)."""
        assert isinstance(settings, DockerSettings)
        if settings.host.startswith("unix://") and not Path(settings.host.removeprefix("unix://")).exists():
            return False
        return ping(settings.host, CONFIGURED_PING_S)

    @classmethod
    def from_settings(cls, settings: ProviderSettings, ctx: ProviderContext) -> DockerProvider:
        assert isinstance(settings, DockerSettings)
        cache = Path(settings.image_cache).expanduser() if settings.image_cache else ctx.home / "images"
        return cls(settings, state_dir=ctx.home / "docker", image_cache=cache)

    def __init__(self, settings: DockerSettings, *, state_dir: Path, image_cache: Path) -> None:
        self.settings = settings
        self.state_dir = Path(state_dir)
        self.image_cache = Path(image_cache)
        self.engine = Engine(settings.host, settings.api_timeout_s)
        self._create_lock = threading.Lock()  # one create at a time picks a subnet and checks the request id
        self._userns: bool | None = None
        self._daemon_cpus = 0
        local = settings.host.startswith("unix://")
        self.guarded = settings.guard_host == "on" or (settings.guard_host == "auto" and local
                                                       and network.guard_possible())

    # --- the orchestrator-side state: schedule labels and the watchdog's mount ---

    def _labels_file(self, box_id: str) -> Path:
        return self.state_dir / "labels" / f"{box_id}.json"

    def _mount_dir(self, box_id: str) -> Path:
        return self.state_dir / "mounts" / box_id

    def _read_schedule(self, box_id: str) -> dict[str, str] | None:
        try:
            data = json.loads(self._labels_file(box_id).read_text())
        except (OSError, ValueError):
            return None
        return {k: str(v) for k, v in data.items() if k in SCHEDULE_LABELS} if isinstance(data, dict) else None

    def _write_schedule(self, box_id: str, labels: Mapping[str, str]) -> None:
        schedule = {k: labels[k] for k in SCHEDULE_LABELS if k in labels}
        path = self._labels_file(box_id)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(schedule))
        tmp.chmod(0o600)
        tmp.replace(path)
        expires = schedule.get(LABEL_EXPIRES_AT, "")
        stop_at = str(int(expires) + int(self.settings.watchdog_grace_s)) if expires.isdigit() else ""
        mount = self._mount_dir(box_id)
        mount.mkdir(parents=True, exist_ok=True)
        mount.chmod(0o755)  # readable by a remapped container root; the box cannot write through the mount
        (mount / "stop-at.tmp").write_text(stop_at + "\n")
        (mount / "stop-at.tmp").chmod(0o644)
        (mount / "stop-at.tmp").replace(mount / "stop-at")

    def _prepare_mount(self, box_id: str) -> None:
        mount = self._mount_dir(box_id)
        mount.mkdir(parents=True, exist_ok=True)
        init = resources.files("providers.docker").joinpath("boxinit.sh").read_bytes()
        (mount / "init.sh").write_bytes(init)
        (mount / "init.sh").chmod(0o755)

    # --- records ---

    def _box(self, container: Any) -> Box:
        attrs = container.attrs
        labels = dict(attrs.get("Config", {}).get("Labels") or {})
        schedule = self._read_schedule(container.name)
        if schedule is not None:  # ours, out of the box's reach; else the create-time label stands
            labels = {k: v for k, v in labels.items() if k not in SCHEDULE_LABELS} | schedule
        labels.pop(LABEL_SIZE, None)
        status = attrs.get("State", {}).get("Status", "")
        state = STATES.get(status, BoxState.PENDING)
        bindings = (attrs.get("NetworkSettings", {}).get("Ports") or {}).get(SSH_PORT) or []
        port = next((int(b["HostPort"]) for b in bindings if b.get("HostPort")), 0)
        created = attrs.get("Created", "")
        size_name = (attrs.get("Config", {}).get("Labels") or {}).get(LABEL_SIZE)
        return Box(
            id=container.name, name=labels.get(LABEL_NAME, container.name), state=state,
            host=PUBLISH_HOST if port and state is BoxState.RUNNING else None, ssh_port=port or 22,
            ssh_user="root", labels=labels, created_at=_created_at(created),
            data={"container_id": container.id, "status": status, "bridge": network.bridge_name(container.name),
                  "image": attrs.get("Config", {}).get("Image", "")},
            size=size_name, warnings=self._warnings() + _cpu_warning(size_name, attrs),
        )

    def _warnings(self) -> tuple[str, ...]:
        warnings = []
        if self._userns is False:
            warnings.append("the Docker daemon runs without user-namespace remapping: root in the box is root "
                            "on the host's kernel (Docker's default seccomp profile and capabilities apply)")
        if not self.guarded:
            warnings.append("the box can open connections to services listening on the Docker host's "
                            "addresses (the host guard needs root on the daemon's host)")
        return tuple(warnings)

    def isolation(self, box: Box | None = None) -> Isolation:
        summary = ("a container on its own bridge network (no traffic to other boxes), CPU/memory/pids "
                   "limits, SSH on a loopback port" + (", user namespace remapped" if self._userns else ""))
        warnings = self._warnings()
        return Isolation(summary, "; ".join(warnings) or None)

    # --- the contract ---

    async def verify(self) -> None:
        await self.engine.run(self._daemon_info)

    def _daemon_info(self) -> None:
        if self._userns is None:
            info = self.engine.client.info()
            self._userns = any("userns" in opt for opt in info.get("SecurityOptions") or [])
            self._daemon_cpus = int(info.get("NCPU") or 0)

    async def create(self, spec: BoxSpec) -> Box:
        """Make the network and start the container (PENDING until sshd answers); idempotent by request id."""
        size_preset(spec.size)  # refuse an unknown size before anything is made
        return await self.engine.run(self._create_blocking, spec)

    def _create_blocking(self, spec: BoxSpec) -> Box:
        from docker.errors import NotFound as SDKNotFound

        self._daemon_info()
        box_id = f"{BOX_PREFIX}{spec.name}-{spec.request_id}"
        client = self.engine.client
        with self._create_lock:
            try:
                return self._box(client.containers.get(box_id))
            except SDKNotFound:
                pass
            size_name, size = size_preset(spec.size)
            cpus = min(size.cpus, self._daemon_cpus) if self._daemon_cpus else size.cpus  # Docker refuses more
            image = self._ensure_image(spec.image or self.settings.image)
            try:
                self._ensure_network(box_id, spec)
                if self.guarded:
                    network.add_guard(network.bridge_name(box_id))
                self._prepare_mount(box_id)
                self._write_schedule(box_id, spec.labels)
                identity = {k: v for k, v in spec.labels.items() if k not in (LABEL_READY, LABEL_CREATE_DEADLINE)}
                container = client.containers.create(
                    image, name=box_id, hostname=spec.name[:63], entrypoint=["/bin/sh", f"{MOUNT_POINT}/init.sh"],
                    command=[], labels={**identity, LABEL_SIZE: size_name}, network=box_id,
                    ports={SSH_PORT: (PUBLISH_HOST, None)}, init=True,
                    volumes={str(self._mount_dir(box_id)): {"bind": MOUNT_POINT, "mode": "ro"}},
                    mem_limit=size.memory_bytes, memswap_limit=size.memory_bytes, nano_cpus=int(cpus * 1e9),
                    pids_limit=size.pids, cap_drop=["NET_RAW", "MKNOD"], security_opt=["no-new-privileges"],
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
            except BaseException:
                self._burn_blocking(box_id)
                raise
            return self._box(container)

    def _ensure_image(self, name: str | None) -> str:
        """``name`` when the daemon has it (pulled if a registry serves it), else the boxforge base image."""
        from docker.errors import ImageNotFound

        if not name:
            return self._ensure_base_image()
        try:
            self.engine.client.images.get(name)
        except ImageNotFound:
            try:
                self.engine.client.images.pull(name)
            except Exception as exc:
                raise ProviderError(f"image {name!r} is not on the Docker daemon and could not be pulled "
                                    f"({type(exc).__name__}); load it (docker load / docker import) or name another; "
                                    "it needs sh and OpenSSH's sshd") from None
        return name

    def _ensure_base_image(self) -> str:
        from docker.errors import ImageNotFound

        tag = base_image.base_tag()
        try:
            self.engine.client.images.get(tag)
            return tag
        except ImageNotFound:
            pass
        try:
            tarball = base_image.build_rootfs_tarball(self.image_cache)
        except base_image.ImageError as exc:
            raise ProviderError(str(exc)) from None
        repo, _, key = tag.partition(":")
        self.engine.client.api.import_image_from_file(str(tarball), repository=repo, tag=key)
        return tag

    def _ensure_network(self, box_id: str, spec: BoxSpec) -> None:
        from docker.errors import NotFound as SDKNotFound
        from docker.types import IPAMConfig, IPAMPool

        client = self.engine.client
        try:
            client.networks.get(box_id)
            return
        except SDKNotFound:
            pass
        taken = [ipaddress.IPv4Network(cfg["Subnet"]) for net in client.api.networks()
                 for cfg in (net.get("IPAM") or {}).get("Config") or [] if "." in cfg.get("Subnet", "")]
        if self.settings.host.startswith("unix://"):
            taken += network.host_routes()
        options = {"com.docker.network.bridge.name": network.bridge_name(box_id),
                   "com.docker.network.bridge.enable_icc": "false"}
        identity = {k: v for k, v in spec.labels.items() if k in IDENTITY_LABELS}
        for subnet in network.free_subnets(self.settings.subnet, taken):
            ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet), gateway=str(subnet[1]))])
            try:
                client.networks.create(box_id, driver="bridge", options=options, ipam=ipam, labels=identity,
                                       check_duplicate=True)
                return
            except Exception as exc:
                if "overlap" not in str(exc).lower():
                    raise
        raise ProviderError(f"no free /28 left in the Docker provider's subnet {self.settings.subnet}; "
                            "destroy boxes or set BOXFORGE_DOCKER_SUBNET to a larger range")

    async def wait_ready(self, box_id: str, *, timeout: float) -> Box:
        """Poll until the container runs and its sshd greets on the published port; else ReadyTimeout."""
        deadline = time.monotonic() + timeout
        while True:
            box = await self.get(box_id)
            if box is None:
                raise NotFound(f"docker box {box_id} does not exist (any more)")
            if box.state is BoxState.ERROR:
                logs = await self.engine.run(self._logs_tail, box_id)
                raise ProviderError(f"docker box {box_id} stopped ({box.data.get('status')}); its log ends:\n{logs}")
            if box.state is BoxState.RUNNING and box.host and await probe_ssh(box.host, box.ssh_port):
                return box
            if time.monotonic() >= deadline:
                raise ReadyTimeout(f"docker box {box_id} did not answer SSH within {timeout:g}s")
            await anyio.sleep(min(READY_POLL_S, max(0.0, deadline - time.monotonic())))

    def _logs_tail(self, box_id: str) -> str:
        try:
            return self.engine.client.containers.get(box_id).logs(tail=20).decode(errors="replace")
        except Exception:
            return "(no log)"

    async def get(self, box_id: str) -> Box | None:
        """The container named (or with the id) ``box_id``, ours or not; None when there is none."""
        try:
            return await self.engine.run(lambda: self._box(self.engine.client.containers.get(box_id)))
        except NotFound:
            return None

    async def list(self, labels: Mapping[str, str]) -> list[Box]:
        """Containers carrying every given label (schedule labels as this provider keeps them)."""
        identity = [f"{k}={v}" for k, v in labels.items() if k not in SCHEDULE_LABELS]

        def run() -> list[Box]:
            found = self.engine.client.containers.list(all=True, filters={"label": identity or [LABEL_MANAGED_BY]})
            return [self._box(c) for c in found if c.name.startswith(BOX_PREFIX)]

        boxes = await self.engine.run(run)
        return [b for b in boxes if b.state is not BoxState.GONE and all(b.labels.get(k) == v
                                                                        for k, v in labels.items())]

    async def set_labels(self, box_id: str, labels: Mapping[str, str]) -> Box:
        """Keep the schedule labels (expiry, ready, create deadline) and move the watchdog's deadline.
        Identity labels are fixed at create and ignored here."""
        box = await self.get(box_id)
        if box is None:
            raise NotFound(f"docker box {box_id} does not exist (any more)")
        await anyio.to_thread.run_sync(self._write_schedule, box_id, labels)
        box = await self.get(box_id)
        if box is None:
            raise NotFound(f"docker box {box_id} does not exist (any more)")
        return box

    async def destroy(self, box_id: str) -> None:
        """Kill and remove the container, its network, its guard rules and its files; gone already: silent.
        A container without ``managed-by=boxforge`` is refused (ProviderError) and left alone."""
        await self.engine.run(self._destroy_blocking, box_id)

    def _destroy_blocking(self, box_id: str) -> None:
        from docker.errors import NotFound as SDKNotFound

        try:
            container = self.engine.client.containers.get(box_id)
        except SDKNotFound:
            container = None
        if container is not None:
            labels = container.attrs.get("Config", {}).get("Labels") or {}
            if labels.get(LABEL_MANAGED_BY) != MANAGED_BY_VALUE or not container.name.startswith(BOX_PREFIX):
                raise ProviderError(f"container {box_id} is not managed by boxforge; refusing to destroy it")
            box_id = container.name
        elif not box_id.startswith(BOX_PREFIX):
            return
        self._burn_blocking(box_id)

    def _burn_blocking(self, box_id: str) -> None:
        from docker.errors import APIError
        from docker.errors import NotFound as SDKNotFound

        client = self.engine.client
        try:
            client.api.remove_container(box_id, force=True, v=True)
        except SDKNotFound:
            pass
        for attempt in range(3):
            try:
                client.api.remove_network(box_id)
                break
            except SDKNotFound:
                break
            except APIError as exc:  # an endpoint still detaching: once more, briefly
                if attempt == 2 or exc.status_code not in (403, 409):
                    raise
                time.sleep(0.2)
        if self.guarded:
            network.remove_guard(network.bridge_name(box_id))
        shutil.rmtree(self._mount_dir(box_id), ignore_errors=True)
        try:
            os.unlink(self._labels_file(box_id))
        except FileNotFoundError:
            pass

    async def aclose(self) -> None:
        self.engine.close()


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
