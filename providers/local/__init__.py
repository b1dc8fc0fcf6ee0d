"""Local boxes: isolated Linux environments on this machine (or, opted into, the old unisolated SSH server).

Files and their roles (imports flow downward only, no cycles):

    settings.py    LocalSettings (BOXFORGE_LOCAL_*) and the boxes dir name
    provider.py    LocalProvider (isolated) and UnisolatedLocalProvider: the Provider contract
    supervisor.py  the detached supervisor of one box (``python -m providers.local.supervisor``): TTL
                   watchdog, undertaker, burn at the end
    boxdir.py      a box's directory: its layout, id, and the readers/writers of its files
    launch.py      making a box: its directory (plain or isolated) and the start of its supervisor
    servers.py     the SSH server of an unisolated box (system sshd or the embedded one)
    procs.py       /proc: live pids, which processes are a box's, killing them
    burn.py        burning a box: its processes, netns, veth, cgroup and directory
    boxinit.py     the launch of an isolated box: userns, idmapped image, overlay, bwrap, sshd
    network.py     netns + veth + /30 in 10.231.0.0/16, and the host rules around every box
    cgroup.py      memory/pids/CPU limits from the size presets, the box's process list
    image.py       the base image: debootstrap from this machine's apt sources, cached, or the user's rootfs
    sshd.py        the embedded asyncssh server of unisolated boxes on machines without OpenSSH
    syscalls.py    unshare, setns, the new mount API and prctl through libc

The names below are imported on first use, so ``python -m providers.local.supervisor`` runs its module once.
"""

from typing import Any

from providers.local.settings import BOXES_DIR_NAME, LocalSettings

_LAZY = {"LocalProvider", "UnisolatedLocalProvider", "UNISOLATED_WARNING", "isolation_problems"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from providers.local import provider

        return getattr(provider, name)
    raise AttributeError(name)


__all__ = ["BOXES_DIR_NAME", "UNISOLATED_WARNING", "LocalProvider", "LocalSettings", "UnisolatedLocalProvider",
           "isolation_problems"]
