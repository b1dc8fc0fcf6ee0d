"""The Docker provider's settings and its size presets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import field_validator

from providers.base import ProviderError, ProviderSettings

DEFAULT_HOST = "unix:///var/run/docker.sock"
# Debian 12's docker.io 20.10 speaks Engine API 1.41; newer daemons accept it too.
API_VERSION = "1.41"
DEFAULT_SUBNET = "10.232.0.0/16"


@dataclass(frozen=True)
class Size:
    """What a size preset gives a box: CPUs, memory (no swap beyond it) and a process cap."""

    cpus: float
    memory_bytes: int
    pids: int


GIB = 1024**3
SIZES: dict[str, Size] = {
    # the floors the same words give Hetzner boxes; CPUs are capped at what the daemon's machine has
    "small": Size(cpus=2.0, memory_bytes=4 * GIB, pids=2048),
    "medium": Size(cpus=4.0, memory_bytes=8 * GIB, pids=4096),
    "large": Size(cpus=8.0, memory_bytes=16 * GIB, pids=8192),
}
DEFAULT_SIZE = "small"


def size_preset(name: str | None) -> tuple[str, Size]:
    """The preset named ``name`` (default small); ProviderError lists the choices otherwise."""
    key = (name or DEFAULT_SIZE).lower()
    if key not in SIZES:
        raise ProviderError(f"unknown docker size {name!r}; use one of {', '.join(SIZES)}")
    return key, SIZES[key]


class DockerSettings(ProviderSettings):
    """``DOCKER_HOST`` (the daemon, as the docker CLI finds it), ``BOXFORGE_DOCKER_IMAGE`` (an image the
    daemon has; empty: the boxforge base image, imported from a Debian rootfs built in
    ``BOXFORGE_IMAGE_CACHE``), ``BOXFORGE_DOCKER_SUBNET`` (where per-box networks are carved, /28 each),
    ``BOXFORGE_DOCKER_GUARD_HOST`` (auto/on/off: drop new connections from boxes to the host and to other
    boxes with iptables; auto does it when this process can, i.e. root on the daemon's host),
    ``BOXFORGE_DOCKER_WATCHDOG_GRACE_S`` (the container stops itself this long after its expiry) and
    ``BOXFORGE_DOCKER_API_TIMEOUT_S``."""

    env_prefix: ClassVar[str] = "BOXFORGE_DOCKER_"
    env_aliases: ClassVar[dict[str, str]] = {"host": "DOCKER_HOST", "image_cache": "BOXFORGE_IMAGE_CACHE"}

    host: str = DEFAULT_HOST
    image: str = ""
    image_cache: str = ""
    subnet: str = DEFAULT_SUBNET
    guard_host: Literal["auto", "on", "off"] = "auto"
    watchdog_grace_s: float = 10.0
    api_timeout_s: float = 60.0

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str) -> str:
        import ipaddress

        net = ipaddress.ip_network(value, strict=True)
        if net.version != 4 or net.prefixlen > 28:
            raise ValueError("must be an IPv4 network of /28 or larger, e.g. 10.232.0.0/16")
        return str(net)

    @field_validator("watchdog_grace_s", "api_timeout_s")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value
