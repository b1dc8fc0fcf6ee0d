"""Boxes as Docker containers (``provider="docker"``), over the Docker Engine API with the ``docker`` SDK.

The SDK (extra ``docker``) is imported only when a daemon is first contacted, so a missing SDK disables
this provider alone. Files: ``settings`` (DockerSettings, size presets), ``client`` (the SDK behind worker
threads, errors translated), ``network`` (a network per box, the host guard), ``image`` (the base image),
``boxinit.sh`` (the container's init: sshd plus the TTL watchdog), ``provider`` (DockerProvider).
"""

from providers.docker.provider import DockerProvider
from providers.docker.settings import DockerSettings

__all__ = ["DockerProvider", "DockerSettings"]
