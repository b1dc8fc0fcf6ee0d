"""What a provider can do beyond the base contract, declared by inheriting these classes.

Core code (``server/service``, ``server/workflow``) asks ``isinstance(provider, HasPricing)``,
never ``provider.name == "hetzner"``. Each capability is small; a provider mixes in the ones it
offers and implements their methods. Shell that a capability wants run on the box is named as an
``OnboxCall`` (a script of ``server/onbox/sh`` plus quoted parameters), never as a shell string.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from providers.base import Box, BoxSpec


@dataclass(frozen=True)
class OnboxCall:
    """A box-side script (a file name under ``server/onbox/sh``) and its parameters.

    The transport passes ``params`` as quoted shell assignments before the script runs; values are
    data, never code."""

    script: str
    params: Mapping[str, str] = field(default_factory=dict)
    sudo: bool = False  # run as root on boxes whose SSH user is not root (cloud boxes)


@dataclass(frozen=True)
class Price:
    """What a box costs: gross per hour and the monthly cap, in ``currency``."""

    hourly: float
    monthly: float | None = None
    currency: str = "EUR"


@dataclass(frozen=True)
class Isolation:
    """What a box is isolated from; ``warning`` is set when it is not a real sandbox."""

    summary: str
    warning: str | None = None


class PinsHostKey(ABC):  # noqa: B024 - a marker: the provider honours spec.host_key_* (no TOFU)
    """The box presents the host key pair the orchestrator put in the ``BoxSpec``."""


class SeesLocalPaths(ABC):  # noqa: B024 - a marker
    """The box can read the orchestrator's filesystem, so a repo given as a local path clones directly."""


class NearOrchestrator(ABC):  # noqa: B024 - a marker
    """The box runs on this machine or next to it: bytes the orchestrator sends it cost less than the box
    downloading them, so the create serves its bootstrap the orchestrator's npm cache (``server/npmcache.py``)."""


class WaitsForBoot(ABC):
    """The machine's own boot setup (cloud-init) must finish before bootstrap; a call that waits."""

    @abstractmethod
    def boot_wait(self, box: Box) -> OnboxCall: ...


class HasBackstop(ABC):
    """The box powers itself off at its expiry on its own (a timer on the box); extend moves it."""

    @abstractmethod
    def backstop_move(self, box: Box, expires_at: int) -> OnboxCall: ...


class HasPricing(ABC):
    """The provider knows what a box costs (for cost columns and plan budgets)."""

    @abstractmethod
    def price(self, box: Box) -> Price | None: ...

    async def quote(self, size: str | None, location: str | None, image: str | None) -> Price | None:
        """What a box of ``size`` would cost before it is forged (a plan's budget); None when unknown."""
        return None


class InstallsPackages(ABC):
    """The box can install distribution packages (needs root or sudo), e.g. Node.js for an agent."""

    @abstractmethod
    def package_install(self, packages: tuple[str, ...]) -> OnboxCall: ...


class Isolated(ABC):
    """The provider describes what its boxes are isolated from (shown in docs and results)."""

    @abstractmethod
    def isolation(self, box: Box | None = None) -> Isolation: ...


class BuildsImages(ABC):
    """The provider boots boxes from an image it builds and caches here (local boxes' Debian root)."""

    @abstractmethod
    def cached_images(self) -> list[dict[str, object]]: ...

    @abstractmethod
    def image_ready(self) -> bool: ...

    @abstractmethod
    def build_image(self, progress: Callable[[str], None], force: bool = False) -> dict[str, object]:
        """Blocking: build (or unpack) the image now if missing, or always with ``force``."""


class CanFork(ABC):
    """New boxes can start as a copy of a running box's filesystem at the moment of the call.

    ``fork`` makes one box per spec (each with its own labels, keys and expiry, as ``create`` does, and
    idempotent by each spec's request id) and returns them, possibly PENDING: the caller runs ``wait_ready``
    on each. What runs on the source (its processes, its jobs) is not copied; its files are. All or none:
    when one fork cannot be made, the ones this call made are destroyed before the error is raised. Anything
    the provider makes on the way (a cloud's snapshot image) must carry our owner labels and be deleted
    before ``fork`` returns."""

    @abstractmethod
    async def fork(self, source: Box, specs: Sequence[BoxSpec]) -> list[Box]: ...


def capabilities(provider: object) -> list[str]:
    """The names of the capabilities a provider declares (for docs, ``boxforge providers``)."""
    return [cap.__name__ for cap in (PinsHostKey, SeesLocalPaths, WaitsForBoot, HasBackstop, HasPricing,
                                     InstallsPackages, Isolated, CanFork, BuildsImages, NearOrchestrator)
            if isinstance(provider, cap)]
