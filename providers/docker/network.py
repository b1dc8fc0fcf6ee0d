"""A Docker network per box, and the host guard.

Each box gets its own bridge network (``bfd-<hash>``, a /28 of the provider's subnet, inter-container
traffic off), so boxes never share a segment; Docker's own isolation chains drop traffic between its
bridges. What Docker does not stop is a box opening connections to the host itself (through its
gateway) or to addresses it routes to, such as local boxes: the guard adds two iptables rules per box
bridge (INPUT: new connections from the bridge, TCP by its SYN; DOCKER-USER: forwarding to boxforge's box ranges) and
removes them with the box. The guard needs root on the daemon's host; without it, boxes carry a warning.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from providers.base import ProviderError

BRIDGE_PREFIX = "bfd-"
SUBNET_PREFIXLEN = 28
# Other boxes live here: local boxes (10.231.0.0/16) and Docker boxes (10.232.0.0/16).
BOX_RANGES = ("10.231.0.0/16", "10.232.0.0/16")
IPTABLES_TIMEOUT_S = 10.0


def bridge_name(box_id: str) -> str:
    """The bridge of a box's network: at most 15 characters (IFNAMSIZ), derived from the box id."""
    return BRIDGE_PREFIX + hashlib.sha256(box_id.encode()).hexdigest()[:11]


def host_routes() -> list[ipaddress.IPv4Network]:
    """The IPv4 routes of this host (to avoid a subnet that is in use outside Docker)."""
    routes = []
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or fields[1] == "00000000":
            continue
        dest = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
        mask = ipaddress.IPv4Address(bytes.fromhex(fields[7])[::-1])
        routes.append(ipaddress.IPv4Network(f"{dest}/{mask}", strict=False))
    return routes


def free_subnets(pool: str, taken: Iterable[ipaddress.IPv4Network]) -> Iterable[ipaddress.IPv4Network]:
    """The /28s of ``pool`` that overlap nothing in ``taken``, in order."""
    used = list(taken)
    for candidate in ipaddress.IPv4Network(pool).subnets(new_prefix=SUBNET_PREFIXLEN):
        if not any(candidate.overlaps(net) for net in used):
            yield candidate


def guard_possible() -> bool:
    return sys.platform == "linux" and os.geteuid() == 0 and shutil.which("iptables") is not None


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True, check=False,
                          timeout=IPTABLES_TIMEOUT_S)


def _guard_rules(bridge: str) -> list[tuple[str, ...]]:
    # TCP by its SYN, not by conntrack state: a reply of a host-initiated connection (the published SSH
    # port) whose conntrack entry was flushed is picked up as NEW and must not be dropped mid-session.
    return [("INPUT", "-i", bridge, "-p", "tcp", "--syn", "-j", "DROP"),
            ("INPUT", "-i", bridge, "!", "-p", "tcp", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP")] + [
        ("DOCKER-USER", "-i", bridge, "-d", dest, "-j", "DROP") for dest in BOX_RANGES]


def add_guard(bridge: str) -> None:
    """Insert the box bridge's guard rules (idempotent). Raises OSError when iptables refuses."""
    if _iptables("-S", "DOCKER-USER").returncode != 0:
        _iptables("-N", "DOCKER-USER")  # dockerd makes it at start; an --iptables=false daemon does not
    for chain, *spec in _guard_rules(bridge):
        if _iptables("-C", chain, *spec).returncode != 0:
            result = _iptables("-I", chain, "1", *spec)
            if result.returncode != 0:
                raise OSError(f"iptables -I {chain} failed: {result.stderr.strip()}")


def remove_guard(bridge: str) -> None:
    """Delete the bridge's guard rules, every copy; absent rules are fine."""
    for chain, *spec in _guard_rules(bridge):
        while _iptables("-D", chain, *spec).returncode == 0:
            pass


def guard_rules_present(bridge: str) -> bool:
    """True when any guard rule of ``bridge`` is installed (for tests and leak checks)."""
    return any(bridge in _iptables("-S", chain).stdout for chain in ("INPUT", "DOCKER-USER"))


def ensure_network(client: Any, box_id: str, labels: Mapping[str, str], pool: str, *, local: bool) -> None:
    """The box's own bridge network (named ``box_id``), made on the first free /28 of ``pool`` unless it is
    there already; ``local``: the daemon runs on this machine, so its routes are taken too."""
    from docker.errors import NotFound as SDKNotFound
    from docker.types import IPAMConfig, IPAMPool

    try:
        client.networks.get(box_id)
        return
    except SDKNotFound:
        pass
    taken = [ipaddress.IPv4Network(cfg["Subnet"]) for net in client.api.networks()
             for cfg in (net.get("IPAM") or {}).get("Config") or [] if "." in cfg.get("Subnet", "")]
    if local:
        taken += host_routes()
    options = {"com.docker.network.bridge.name": bridge_name(box_id),
               "com.docker.network.bridge.enable_icc": "false"}
    for subnet in free_subnets(pool, taken):
        ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet), gateway=str(subnet[1]))])
        try:
            client.networks.create(box_id, driver="bridge", options=options, ipam=ipam, labels=dict(labels),
                                   check_duplicate=True)
            return
        except Exception as exc:
            if "overlap" not in str(exc).lower():
                raise
    raise ProviderError(f"no free /28 left in the Docker provider's subnet {pool}; "
                        "destroy boxes or set BOXFORGE_DOCKER_SUBNET to a larger range")
