"""A Hetzner server as boxforge sees it: its name, its address and the ``Box`` it is."""

from __future__ import annotations

import ipaddress
import re
import time
from typing import Any

from providers.base import LABEL_NAME, Box, BoxSpec, BoxState
from providers.hetzner import catalog

SERVER_NAME_MAX = 63

STATES = {
    "running": BoxState.RUNNING,
    "initializing": BoxState.PENDING,
    "starting": BoxState.PENDING,
    "migrating": BoxState.PENDING,
    "rebuilding": BoxState.PENDING,
    "unknown": BoxState.PENDING,
    "stopping": BoxState.ERROR,
    "off": BoxState.ERROR,  # powered off (e.g. by the backstop) but still billed until deleted
    "deleting": BoxState.GONE,
}


def server_name(spec: BoxSpec) -> str:
    """``<name>-<request id>``: unique per create, a valid hostname of at most 63 characters."""
    suffix = re.sub(r"[^a-z0-9-]", "", spec.request_id.lower()) or "r"
    head = spec.name[: SERVER_NAME_MAX - len(suffix) - 1].rstrip("-")
    return f"{head}-{suffix}"


def server_host(server: Any, ipv6_only: bool) -> str | None:
    """The public IPv4, or the ``::1`` address of the server's /64 when it has none (or IPv6 is wanted)."""
    net = server.public_net
    if net is None:
        return None
    if net.ipv4 is not None and net.ipv4.ip and not ipv6_only:
        return net.ipv4.ip
    if net.ipv6 is not None and net.ipv6.ip:
        return str(ipaddress.IPv6Network(net.ipv6.ip, strict=False).network_address + 1)
    return None


def to_box(server: Any, *, ssh_port: int, ssh_user: str, ipv6_only: bool, choice: catalog.Choice | None) -> Box:
    """The Box of an hcloud server: size is its server type; warnings those of the choice made at create, else
    what its type's deprecation says."""
    labels = dict(server.labels or {})
    location = server.location.name if server.location is not None else None
    server_type = server.server_type
    hourly, monthly = (None, None)
    if server_type is not None and location:
        hourly, monthly = catalog.prices(server_type, location)
    host = server_host(server, ipv6_only)
    warnings = choice.warnings if choice is not None else catalog.warnings_of(server_type, location)
    return Box(
        id=str(server.id),
        name=labels.get(LABEL_NAME, server.name),
        state=STATES.get(server.status, BoxState.PENDING),
        host=host,
        ssh_port=ssh_port,
        ssh_user=ssh_user,
        labels=labels,
        created_at=server.created.timestamp() if server.created else time.time(),
        data={
            "server_id": server.id,
            "server_name": server.name,
            "status": server.status,
            "ip": host,
            "ipv6_only": server.public_net is not None and server.public_net.ipv4 is None,
            "server_type": server_type.name if server_type is not None else None,
            "location": location,
            "price_hourly": hourly,
            "price_monthly": monthly,
        },
        size=server_type.name if server_type is not None else None,
        warnings=warnings,
    )
