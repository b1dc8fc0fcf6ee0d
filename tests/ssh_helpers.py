"""Helpers for the SSH pool and job protocol tests: a pool target for a local box, and a count
of the TCP connections this machine holds open to an address."""

from __future__ import annotations

import socket
from pathlib import Path

from server.ssh import SSHTarget
from tests.conftest import BoxHandle


def target_for(handle: BoxHandle, **changes: object) -> SSHTarget:
    box = handle.box
    assert box.host is not None
    fields: dict[str, object] = {
        "key": box.name,
        "host": box.host,
        "port": box.ssh_port,
        "user": box.ssh_user,
        "client_key_path": handle.client_key_path,
        "host_public_key": handle.host_public,
    }
    fields.update(changes)
    return SSHTarget(**fields)  # type: ignore[arg-type]


def established_connections_to(host: str, port: int) -> int:
    """Established IPv4 TCP connections whose remote end is ``host:port`` (Linux /proc)."""
    remote = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2] == remote and fields[3] == "01":
            count += 1
    return count


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, read back, released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
