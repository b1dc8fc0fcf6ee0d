"""DockerProvider: a box is a container on its own network, reached by SSH on a loopback-published port.

What a box is on Docker (box id ``boxforge-<name>-<request id>``, which is also the container's and the
network's name, so a retried create finds the first one):

- a bridge network of its own (``network.py``), a /28 of the provider's subnet, inter-container traffic off;
- a container (``containers.py``: its create arguments, the files copied in, how it reads back as a Box) of
  the base image (``image.py``) or the image the user named, whose init (docker-init, then
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

import json
import os
import shutil
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
from providers.docker import containers, network
from providers.docker import image as base_image
from providers.docker.client import Engine, ping
from providers.docker.settings import DockerSettings, size_preset
from providers.probe import probe_ssh

SCHEDULE_LABELS = (LABEL_EXPIRES_AT, LABEL_READY, LABEL_CREATE_DEADLINE)
IDENTITY_LABELS = (LABEL_MANAGED_BY, LABEL_OWNER, LABEL_NAME, LABEL_REQUEST)
CONFIGURED_PING_S = 2.0
READY_POLL_S = 0.05
DESTROY_TIMEOUT_S = 10


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
        labels = containers.container_labels(container)
        schedule = self._read_schedule(container.name)
        if schedule is not None:  # ours, out of the box's reach; else the create-time label stands
            labels = {k: v for k, v in labels.items() if k not in SCHEDULE_LABELS} | schedule
        return containers.box_of(container, labels, self._warnings())

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
        box_id = containers.box_id_of(spec)
        client = self.engine.client
        with self._create_lock:
            try:
                return self._box(client.containers.get(box_id))
            except SDKNotFound:
                pass
            size_name, size = size_preset(spec.size)
            cpus = min(size.cpus, self._daemon_cpus) if self._daemon_cpus else size.cpus  # Docker refuses more
            image = base_image.ensure_image(client, spec.image or self.settings.image, self.image_cache)
            shape = containers.Shape(image, size_name, size, cpus, self._mount_dir(box_id))
            try:
                identity = {k: v for k, v in spec.labels.items() if k in IDENTITY_LABELS}
                network.ensure_network(client, box_id, identity, self.settings.subnet,
                                       local=self.settings.host.startswith("unix://"))
                if self.guarded:
                    network.add_guard(network.bridge_name(box_id))
                self._prepare_mount(box_id)
                self._write_schedule(box_id, spec.labels)
                container = containers.create_and_start(client, box_id, spec, shape)
            except BaseException:
                self._burn_blocking(box_id)
                raise
            return self._box(container)

    def _ensure_base_image(self) -> str:
        return base_image.ensure_base_image(self.engine.client, self.image_cache)

    async def wait_ready(self, box_id: str, *, timeout: float) -> Box:
        """Poll until the container runs and its sshd greets on the published port; else ReadyTimeout."""
        deadline = time.monotonic() + timeout
        while True:
            box = await self.get(box_id)
            if box is None:
                raise NotFound(f"docker box {box_id} does not exist (any more)")
            if box.state is BoxState.ERROR:
                logs = await self.engine.run(containers.logs_tail, self.engine.client, box_id)
                raise ProviderError(f"docker box {box_id} stopped ({box.data.get('status')}); its log ends:\n{logs}")
            if box.state is BoxState.RUNNING and box.host and await probe_ssh(box.host, box.ssh_port):
                return box
            if time.monotonic() >= deadline:
                raise ReadyTimeout(f"docker box {box_id} did not answer SSH within {timeout:g}s")
            await anyio.sleep(min(READY_POLL_S, max(0.0, deadline - time.monotonic())))

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
            return [self._box(c) for c in found if c.name.startswith(containers.BOX_PREFIX)]

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
            if labels.get(LABEL_MANAGED_BY) != MANAGED_BY_VALUE or not container.name.startswith(containers.BOX_PREFIX):
                raise ProviderError(f"container {box_id} is not managed by boxforge; refusing to destroy it")
            box_id = container.name
        elif not box_id.startswith(containers.BOX_PREFIX):
            return
        self._burn_blocking(box_id)

    def _burn_blocking(self, box_id: str) -> None:
        containers.remove_with_network(self.engine.client, box_id)
        if self.guarded:
            network.remove_guard(network.bridge_name(box_id))
        shutil.rmtree(self._mount_dir(box_id), ignore_errors=True)
        try:
            os.unlink(self._labels_file(box_id))
        except FileNotFoundError:
            pass

    async def aclose(self) -> None:
        self.engine.close()
