"""The SSH pool against real SSH servers (OpenSSH and the embedded asyncssh server)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from server.errors import BoxTimeout, BoxUnreachable, HostKeyMismatch
from server.keys import create_box_keys, generate_keypair
from server.ssh import SSHPool, SSHTarget
from tests.conftest import BoxHandle
from tests.ssh_helpers import established_connections_to, free_port, target_for


async def test_pinned_host_key_is_accepted(pool: SSHPool, box: BoxHandle) -> None:
    result = await pool.run(target_for(box), 'printf %s "$BOXFORGE_BOX"')
    assert result.exit_status == 0
    assert result.stdout.decode() == box.box.id


async def test_connecting_writes_no_known_hosts_file(pool: SSHPool, box: BoxHandle) -> None:
    known_hosts = Path.home() / ".ssh" / "known_hosts"
    before = known_hosts.stat().st_mtime_ns if known_hosts.exists() else None
    await pool.run(target_for(box), "true")
    after = known_hosts.stat().st_mtime_ns if known_hosts.exists() else None
    assert after == before


async def test_run_is_binary_safe_on_stdin_stdout_and_stderr(pool: SSHPool, box: BoxHandle) -> None:
    data = bytes(range(256)) * 64
    result = await pool.run(target_for(box), "cat; cat >&2 < /dev/null; printf 'e\\000r' >&2", stdin=data)
    assert result.stdout == data
    assert result.stderr == b"e\x00r"


async def test_exit_status_is_reported(pool: SSHPool, box: BoxHandle) -> None:
    result = await pool.run(target_for(box), "exit 42")
    assert result.exit_status == 42


async def test_wrong_pinned_host_key_raises_host_key_mismatch(pool: SSHPool, box: BoxHandle) -> None:
    _, other_public = generate_keypair("not-the-box")
    target = target_for(box, host_public_key=other_public)
    with pytest.raises(HostKeyMismatch) as err:
        await pool.run(target, "true")
    message = str(err.value)
    assert f"box '{box.box.name}' at {box.box.host}:{box.box.ssh_port}" in message
    assert "does not match the pinned one" in message
    assert "recreate" in message


async def test_client_key_the_box_does_not_trust_raises_box_unreachable(
    pool: SSHPool, box: BoxHandle, tmp_path: Path
) -> None:
    stranger = create_box_keys(tmp_path / "stranger-keys", "stranger")
    with pytest.raises(BoxUnreachable, match="rejected our client key"):
        await pool.run(target_for(box, client_key_path=stranger.client_key_path), "true")


async def test_refused_port_raises_box_unreachable(pool: SSHPool, tmp_path: Path) -> None:
    keys = create_box_keys(tmp_path / "keys", "nobody")
    target = SSHTarget("ghost", "127.0.0.1", free_port(), "root", keys.client_key_path, keys.host_public)
    with pytest.raises(BoxUnreachable, match="refused the SSH connection") as err:
        await pool.run(target, "true")
    assert not isinstance(err.value, HostKeyMismatch)


async def test_run_reconnects_after_the_connection_is_aborted_underneath(pool: SSHPool, box: BoxHandle) -> None:
    target = target_for(box)
    stale = await pool.connection(target)
    stale.abort()  # the pool still holds it and has not yet seen it die
    result = await pool.run(target, "echo again")
    assert result.stdout == b"again\n"
    assert await pool.connection(target) is not stale


async def test_run_reconnects_after_the_connection_was_closed(pool: SSHPool, box: BoxHandle) -> None:
    target = target_for(box)
    old = await pool.connection(target)
    old.close()
    await old.wait_closed()
    result = await pool.run(target, "echo again")
    assert result.stdout == b"again\n"


async def test_the_connection_socket_has_tcp_nodelay(pool: SSHPool, box: BoxHandle) -> None:
    # small request/response frames (control channels, job polls) must not wait out Nagle's delay
    conn = await pool.connection(target_for(box))
    sock = conn.get_extra_info("socket")
    assert sock.family in (socket.AF_INET, socket.AF_INET6)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_concurrent_runs_share_one_connection(pool: SSHPool, box: BoxHandle) -> None:
    target = target_for(box)
    # more than OpenSSH's default MaxSessions (10): the pool must queue, not fail
    results = await asyncio.gather(*(pool.run(target, f"sleep 0.2; echo {i}") for i in range(12)))
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(12)]
    connections = await asyncio.gather(*(pool.connection(target) for _ in range(5)))
    assert all(conn is connections[0] for conn in connections)
    assert established_connections_to(target.host, target.port) == 1


async def test_concurrent_first_connects_share_one_connect(pool: SSHPool, box: BoxHandle) -> None:
    target = target_for(box)
    connections = await asyncio.gather(*(pool.connection(target) for _ in range(8)))
    assert all(conn is connections[0] for conn in connections)
    assert established_connections_to(target.host, target.port) == 1


async def test_timeout_raises_box_timeout_and_keeps_the_connection(pool: SSHPool, box: BoxHandle) -> None:
    target = target_for(box)
    conn = await pool.connection(target)
    with pytest.raises(BoxTimeout, match=r"did not finish within 0\.3s"):  # long before the command would end
        await pool.run(target, "sleep 20", timeout=0.3)
    assert (await pool.run(target, "echo alive")).stdout == b"alive\n"
    assert await pool.connection(target) is conn


async def test_drop_closes_the_connection_and_the_next_run_reconnects(pool: SSHPool, box: BoxHandle) -> None:
    target = target_for(box)
    old = await pool.connection(target)
    await pool.drop(target.key)
    assert old.is_closed()
    assert (await pool.run(target, "echo back")).stdout == b"back\n"
    assert await pool.connection(target) is not old


async def test_pool_refuses_use_after_aclose(tmp_path: Path) -> None:
    keys = create_box_keys(tmp_path / "keys", "closed")
    pool = SSHPool()
    await pool.aclose()
    target = SSHTarget("closed", "127.0.0.1", free_port(), "root", keys.client_key_path, keys.host_public)
    with pytest.raises(RuntimeError, match="closed"):
        await pool.run(target, "true")
