"""Boxes on this machine: one SSH server per box on a loopback address.

Each box is a directory under ``root`` plus a detached supervisor (providers.local.supervisor)
that runs the box's SSH server, burns the box at its TTL and outlives the orchestrator.
The directories are the truth: labels live in them, so ``list`` works from a fresh process
and the reaper keeps working after the orchestrator's state is lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import anyio
import anyio.to_thread

from providers.base import (
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
from providers.capabilities import (
    BuildsImages,
    CanFork,
    InstallsPackages,
    Isolated,
    Isolation,
    NearOrchestrator,
    OnboxCall,
    PinsHostKey,
    SeesLocalPaths,
)
from providers.local import boxdir, burn, cgroup, fork, image, launch, network, procs, servers
from providers.local.settings import BOXES_DIR_NAME, LocalSettings, ServerChoice
from providers.probe import probe_ssh

DESTROY_TIMEOUT_S = 10.0
READY_POLL_S = 0.01
READY_BRISK_S = 2.0
READY_SLOW_POLL_S = 0.2
LOCK_FILE = ".create.lock"


@contextlib.contextmanager
def _root_lock(root: Path) -> Iterator[None]:
    """Serialize creates on one root across threads and processes (request-id idempotency)."""
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


async def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM a process (not necessarily our child) and wait up to ``timeout`` for it to exit."""
    try:
        pidfd = os.pidfd_open(pid)  # a pidfd cannot hit a recycled pid, and is readable at exit
    except ProcessLookupError:
        return
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        with anyio.move_on_after(timeout):
            await anyio.wait_readable(pidfd)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


def box_from_dir(box_dir: Path) -> Box | None:
    """The Box a directory describes, or None when it is gone (or not a box)."""
    info = boxdir.read_box_info(box_dir)
    labels = boxdir.read_labels(box_dir)
    if info is None or labels is None:
        return None
    if procs.supervisor_pid(box_dir) is not None:
        state = BoxState.RUNNING if (box_dir / boxdir.READY_FILE).exists() else BoxState.PENDING
    elif (box_dir / boxdir.SUPERVISOR_PID_FILE).exists():
        state = BoxState.ERROR  # its supervisor died: nothing watches or serves this box
    else:
        state = BoxState.PENDING
    isolated = info.get("isolation") == "full"
    return Box(
        id=box_dir.name,
        name=info["name"],
        state=state,
        host=info["host"],
        ssh_port=int(info["port"]),
        ssh_user=info["user"],
        labels=labels,
        created_at=float(info["created_at"]),
        data={
            "box_dir": str(box_dir),
            "home": "/root" if isolated else str(box_dir / boxdir.HOME_DIR),
            "server": info["server"],
            "isolation": "full" if isolated else "none",
        },
        size=info.get("size"),
        warnings=() if isolated else (UNISOLATED_WARNING,),
    )


UNISOLATED_WARNING = ("this local box is NOT isolated (BOXFORGE_LOCAL_ISOLATION=none): it runs as the "
                      "orchestrator's user and can read the orchestrator's files, keys and processes")


def isolation_problems() -> list[str]:
    """Why isolated boxes cannot run here (empty: they can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("boxforge is not running as root (isolated boxes need root for their netns, cgroup, "
                        "uid range and mounts)")
    for tool in ("bwrap", "ip", "iptables", "iptables-save", "iptables-restore"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            problems.append(f"{tool} is not installed (apt-get install bubblewrap iproute2 iptables)")
    try:
        if int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0:
            problems.append("user namespaces are disabled (sysctl user.max_user_namespaces=0)")
    except (OSError, ValueError):
        problems.append("this kernel has no user namespaces (not Linux?)")
    return problems


class LocalProvider(Provider, PinsHostKey, Isolated, InstallsPackages, BuildsImages, CanFork, NearOrchestrator):
    """Isolated boxes on this machine. See providers.base.Provider for the contract.

    Each box: its own netns and address in 10.231.0.0/16, its own host uid range (root inside a user
    namespace), its own cgroup (``size`` presets), an overlay on the cached base image, sshd inside, and a
    supervisor outside its reach that burns it at its TTL. ``isolation="none"`` gives the old unisolated box
    (``UnisolatedLocalProvider``).
    """

    name: ClassVar[str] = "local"
    Settings: ClassVar[type[ProviderSettings]] = LocalSettings

    @classmethod
    def from_settings(cls, settings: ProviderSettings, ctx: ProviderContext) -> LocalProvider:
        assert isinstance(settings, LocalSettings)
        root = ctx.home / BOXES_DIR_NAME
        if settings.isolation == "none":
            return UnisolatedLocalProvider(root, server=settings.sshd, watchdog_grace_s=settings.watchdog_grace_s)
        return cls(root, egress=settings.egress, user_image=settings.image or None,
                   image_cache=image.cache_dir(ctx.home), watchdog_grace_s=settings.watchdog_grace_s)

    def __init__(
        self,
        root: Path,
        *,
        egress: str = "nat",
        user_image: str | None = None,
        image_cache: Path | None = None,
        watchdog_grace_s: float = boxdir.WATCHDOG_GRACE_S,
        server: ServerChoice = "auto",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if server not in ("auto", "openssh", "embedded"):
            raise ProviderError(f"unknown local SSH server {server!r}; use auto, openssh or embedded")
        if egress not in ("nat", "none"):
            raise ProviderError(f"unknown egress {egress!r}; use nat or none")
        self.root = Path(root).expanduser().resolve()
        self.server = server
        self.host = host
        self.port = port
        self.egress = egress
        self.user_image = user_image
        self.image_cache = Path(image_cache) if image_cache else image.cache_dir(self.root.parent)
        self.watchdog_grace_s = watchdog_grace_s

    def isolation(self, box: Box | None = None) -> Isolation:
        return Isolation("own mount, pid, user (uid range), ipc, uts, cgroup and network namespaces; "
                         "cgroup limits; no host services, no other box; shared kernel")

    def package_install(self, packages: tuple[str, ...]) -> OnboxCall:
        return OnboxCall("apt-install.sh", {"PACKAGES": " ".join(packages)})

    def cached_images(self) -> list[dict[str, object]]:
        return [img.describe() for img in image.list_images(self.image_cache)]

    def image_ready(self) -> bool:
        return image.find_image(self.image_cache, self.user_image) is not None

    def build_image(self, progress: image.Progress, force: bool = False) -> dict[str, object]:
        try:
            if force and not self.user_image:
                return image.build_debian(self.image_cache, force=True, progress=progress).describe()
            return image.ensure_image(self.image_cache, self.user_image, progress=progress).describe()
        except image.ImageError as exc:
            raise ProviderError(str(exc)) from exc

    def ensure_image(self, progress: image.Progress = lambda _: None) -> image.Image:
        """The image boxes boot from, built (about a minute, once per cache) or unpacked now if needed."""
        try:
            return image.ensure_image(self.image_cache, self.user_image, progress=progress)
        except image.ImageError as exc:
            raise ProviderError(str(exc)) from exc

    def _box_dir(self, box_id: str) -> Path | None:
        return self.root / box_id if boxdir.BOX_ID_RE.match(box_id) else None

    def _box_dirs(self) -> list[Path]:
        try:
            return sorted(p for p in self.root.iterdir() if boxdir.BOX_ID_RE.match(p.name))
        except FileNotFoundError:
            return []

    async def verify(self) -> None:
        """Nothing to check: local boxes need no credentials."""

    async def create(self, spec: BoxSpec) -> Box:
        """Start a box (PENDING until its server answers); idempotent by ``spec.request_id``."""
        try:
            box_dir = await anyio.to_thread.run_sync(self._create_blocking, spec)
        except (boxdir.BoxStartError, network.NetworkError, ValueError, OSError) as exc:
            raise ProviderError(f"cannot create local box {spec.name!r}: {exc}") from exc
        box = box_from_dir(box_dir)
        if box is None:
            raise ProviderError(f"local box {box_dir.name} vanished while it was being created")
        return box

    def _create_blocking(self, spec: BoxSpec) -> Path:
        problems = isolation_problems()
        if problems:
            raise ProviderError(
                "isolated local boxes cannot run here: " + "; ".join(problems) + ". Run boxforge as root on "
                "Linux, or use the docker or hetzner provider (--provider), or accept an UNISOLATED box with "
                "BOXFORGE_LOCAL_ISOLATION=none")
        try:
            size, limits = cgroup.limits_for(spec.size)
        except ValueError as exc:
            raise ProviderError(str(exc)) from exc
        egress = (spec.egress or self.egress) != "none"
        rootfs = self.ensure_image().rootfs
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _root_lock(self.root):
            for box_dir in self._box_dirs():
                info = boxdir.read_box_info(box_dir)
                if info is not None and info.get("request_id") == spec.request_id:
                    return box_dir
            box_dir = launch.prepare_isolated_dir(self.root, spec, egress=egress, image=rootfs,
                                                    size=size, limits=limits, watchdog_grace_s=self.watchdog_grace_s)
        launch.start_supervisor(box_dir)
        return box_dir

    async def fork(self, source: Box, specs: Sequence[BoxSpec]) -> list[Box]:
        """New boxes (PENDING) whose files start as a copy of ``source``'s (its overlay upper dir, reflinked
        where the filesystem can), each with the spec's keys and labels and the source's size and egress."""
        made: dict[int, Box] = {}
        failures: list[ProviderError] = []

        async def one(i: int, spec: BoxSpec) -> None:
            try:
                box_dir = await anyio.to_thread.run_sync(self._fork_blocking, source.id, spec)
            except (fork.ForkError, boxdir.BoxStartError, network.NetworkError, ValueError, OSError) as exc:
                failures.append(ProviderError(f"cannot fork local box {source.name!r} into {spec.name!r}: {exc}"))
                return
            box = box_from_dir(box_dir)
            if box is None:
                failures.append(ProviderError(f"local box {box_dir.name} vanished while it was being forked"))
                return
            made[i] = box

        try:
            async with anyio.create_task_group() as tg:  # the copies run side by side, each in a thread
                for i, spec in enumerate(specs):
                    tg.start_soon(one, i, spec)
            if failures:
                raise failures[0]
        except BaseException:
            with anyio.CancelScope(shield=True):  # all or none: the forks made so far are burned
                for box in made.values():
                    await self.destroy(box.id)
            raise
        boxes = [made[i] for i in range(len(specs))]
        return boxes

    def _existing(self, request_id: str) -> Path | None:
        for box_dir in self._box_dirs():
            info = boxdir.read_box_info(box_dir)
            if info is not None and info.get("request_id") == request_id:
                return box_dir
        return None

    def _fork_blocking(self, source_id: str, spec: BoxSpec) -> Path:
        source_dir = self._box_dir(source_id)
        info = boxdir.read_box_info(source_dir) if source_dir else None
        if source_dir is None or info is None:
            raise NotFound(f"local box {source_id} does not exist (any more)")
        with _root_lock(self.root):
            existing = self._existing(spec.request_id)
            if existing is not None:
                return existing
            box_dir = self._prepare_fork(info, spec)
        try:
            self._copy_files(source_dir, box_dir)
        except BaseException:
            burn.burn_box(box_dir)
            raise
        launch.start_supervisor(box_dir)
        return box_dir

    def _prepare_fork(self, info: dict[str, object], spec: BoxSpec) -> Path:
        if info.get("isolation") != "full":
            raise ProviderError("the source box is not isolated (made with BOXFORGE_LOCAL_ISOLATION=none): fork it under that setting")
        size, limits = cgroup.limits_for(str(info["size"]))
        return launch.prepare_isolated_dir(self.root, spec, egress=bool(info["egress"]), image=Path(str(info["image"])),
                                             size=size, limits=limits, watchdog_grace_s=self.watchdog_grace_s)

    def _copy_files(self, source_dir: Path, box_dir: Path) -> None:
        fork.copy_isolated(source_dir, box_dir)

    async def wait_ready(self, box_id: str, *, timeout: float) -> Box:
        """Poll until the box's server greets with an SSH banner; RUNNING box or ReadyTimeout."""
        box_dir = self._box_dir(box_id)
        started = time.monotonic()
        deadline = started + timeout
        while True:
            box = box_from_dir(box_dir) if box_dir else None
            if box is None:
                failed = self.root / f".failed-{box_id}.log"
                if failed.exists():
                    why = failed.read_text(errors="replace")
                    failed.unlink(missing_ok=True)
                    raise ProviderError(f"local box {box_id} failed to start and was burned; its log ends "
                                        f"with:\n{why}")
                raise NotFound(f"local box {box_id} does not exist (any more)")
            if box.state is BoxState.RUNNING and await probe_ssh(box.host or "", box.ssh_port):
                return box
            if box.state is BoxState.ERROR:
                assert box_dir is not None
                raise ProviderError(
                    f"local box {box_id} is dead: its supervisor exited. "
                    f"supervisor.log ends with:\n{boxdir.log_tail(box_dir)}"
                )
            if time.monotonic() >= deadline:
                raise ReadyTimeout(f"local box {box_id} did not answer SSH within {timeout:g}s")
            # a box normally answers within ~150 ms: poll briskly (cheap local checks), then back off
            delay = READY_POLL_S if time.monotonic() - started < READY_BRISK_S else READY_SLOW_POLL_S
            await anyio.sleep(min(delay, max(0.0, deadline - time.monotonic())))

    async def get(self, box_id: str) -> Box | None:
        box_dir = self._box_dir(box_id)
        return box_from_dir(box_dir) if box_dir else None

    async def list(self, labels: Mapping[str, str]) -> list[Box]:
        """Boxes under ``root`` whose labels contain every given pair."""
        boxes = [box for box_dir in self._box_dirs() if (box := box_from_dir(box_dir)) is not None]
        return [box for box in boxes if all(box.labels.get(k) == v for k, v in labels.items())]

    async def set_labels(self, box_id: str, labels: Mapping[str, str]) -> Box:
        """Replace the box's labels atomically; the box's watchdog sees a new expiry within ~1 s."""
        box_dir = self._box_dir(box_id)
        if box_dir is None or box_from_dir(box_dir) is None:
            raise NotFound(f"local box {box_id} does not exist (any more)")
        try:
            boxdir.write_labels(box_dir, labels)
        except OSError as exc:
            raise NotFound(f"local box {box_id} does not exist (any more)") from exc
        box = box_from_dir(box_dir)
        if box is None:
            raise NotFound(f"local box {box_id} does not exist (any more)")
        return box

    async def destroy(self, box_id: str) -> None:
        """Burn the box: ask its supervisor, then burn whatever is left. Gone already is success."""
        box_dir = self._box_dir(box_id)
        if box_dir is None or not box_dir.exists():
            return
        pid = procs.supervisor_pid(box_dir)
        if pid is not None:
            await _terminate(pid, DESTROY_TIMEOUT_S)
        # Fallback for a dead or stuck supervisor; a no-op after a clean burn.
        await anyio.to_thread.run_sync(burn.burn_box, box_dir)

    async def aclose(self) -> None:
        """Nothing to release: boxes outlive this object on purpose."""


class UnisolatedLocalProvider(LocalProvider, SeesLocalPaths):
    """The first edition's local box (BOXFORGE_LOCAL_ISOLATION=none): an SSH server as the orchestrator's own
    user with another HOME. Not a sandbox: every box it makes carries a warning saying so."""

    def isolation(self, box: Box | None = None) -> Isolation:
        return Isolation("none: the orchestrator's user, filesystem, processes and network", UNISOLATED_WARNING)

    def _create_blocking(self, spec: BoxSpec) -> Path:
        server = servers.resolve_server(self.server)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _root_lock(self.root):
            for box_dir in self._box_dirs():
                info = boxdir.read_box_info(box_dir)
                if info is not None and info.get("request_id") == spec.request_id:
                    return box_dir
            box_dir = launch.prepare_box_dir(self.root, spec, server=server, host=self.host, port=self.port,
                                               watchdog_grace_s=self.watchdog_grace_s)
        launch.start_supervisor(box_dir)
        return box_dir

    def _prepare_fork(self, info: dict[str, object], spec: BoxSpec) -> Path:
        if info.get("isolation") == "full":
            raise ProviderError("the source box is isolated: fork it without BOXFORGE_LOCAL_ISOLATION=none")
        return launch.prepare_box_dir(self.root, spec, server=servers.resolve_server(str(info["server"])),
                                        host=self.host, port=self.port, watchdog_grace_s=self.watchdog_grace_s)

    def _copy_files(self, source_dir: Path, box_dir: Path) -> None:
        fork.copy_unisolated(source_dir, box_dir)
