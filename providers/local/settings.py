"""The local provider's own settings (env BOXFORGE_LOCAL_*, the config file's [providers.local] table)."""

from __future__ import annotations

from typing import ClassVar, Literal

from providers.base import ProviderSettings

ServerChoice = Literal["auto", "openssh", "embedded"]
IsolationChoice = Literal["auto", "full", "none"]
EgressChoice = Literal["nat", "none"]

BOXES_DIR_NAME = "local-boxes"  # under the orchestrator's state dir, as in the first edition


class LocalSettings(ProviderSettings):
    """``isolation``: ``full`` (namespaces, own uid range, cgroup, netns: needs root), ``none`` (the old SSH
    server as the orchestrator's user, every result warns), ``auto`` (= full). ``egress``: ``nat`` (outbound
    internet through NAT) or ``none``. ``image``: a rootfs directory or tarball instead of the built Debian
    image. ``sshd``/``watchdog_grace_s`` as before; legacy ``local_*`` keys are read too."""

    env_prefix: ClassVar[str] = "BOXFORGE_LOCAL_"
    legacy_prefix: ClassVar[str] = "local_"
    sshd: ServerChoice = "auto"
    watchdog_grace_s: float = 5.0
    isolation: IsolationChoice = "auto"
    egress: EgressChoice = "nat"
    image: str = ""
