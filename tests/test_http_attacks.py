"""Issue 12, HTTP transport: the attacks a hostile reviewer ran from outside, replayed against a real
uvicorn server on loopback (127.0.0.1, and 127.0.0.2 for "any other loopback")."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import resource
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from server.mcp.app import build_server
from server.mcp.http import choose_token, http_app
from tests.support import REPO_ROOT, cli_env, eventually, make_settings

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@asynccontextmanager
async def serving(tmp_path: Path, host: str, token: str | None,
                  env: dict[str, str] | None = None) -> AsyncIterator[int]:
    """The boxforge HTTP app on host:<free port>, built as `boxforge mcp --http` builds it; yields the port."""
    app = http_app(build_server(make_settings(tmp_path / "state")), host=host, token=token, env=env or {})
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=0, lifespan="on", log_level="warning"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        await eventually(lambda: server.started, what="uvicorn to start")
        try:
            yield server.servers[0].sockets[0].getsockname()[1]
        finally:
            server.should_exit = True


def test_only_127_0_0_1_and_ipv6_loopback_go_without_a_token() -> None:
    """Attack 1a: `--host 127.0.0.2` (or localhost, which may resolve anywhere) ran with no token."""
    assert choose_token("127.0.0.1", {}) == (None, False)
    assert choose_token("::1", {}) == (None, False)
    for host in ("127.0.0.2", "localhost", "127.1", "0.0.0.0", "::", "::ffff:127.0.0.1"):
        token, generated = choose_token(host, {})
        assert generated and token and len(token) >= 32, host


def test_the_app_refuses_to_be_built_without_a_token_off_exact_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="token"):
        http_app(build_server(make_settings(tmp_path / "state")), host="127.0.0.2", token=None, env={})


async def test_dns_rebinding_on_another_loopback_is_refused(tmp_path: Path) -> None:
    """Attack 1b: `Host: evil.example:PORT` + `Origin: http://evil.example:PORT` on 127.0.0.2 reached the tools."""
    auth = {"Authorization": "Bearer rebind-token"}
    async with serving(tmp_path, "127.0.0.2", "rebind-token") as port, httpx2.AsyncClient() as http:
        url = f"http://127.0.0.2:{port}/mcp"
        evil = {**MCP_HEADERS, **auth, "Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
        refused = await http.post(url, json=INIT, headers=evil)
        assert refused.status_code == 421
        assert "evil.example" in refused.json()["error"] and "BOXFORGE_HTTP_ALLOWED_HOSTS" in refused.json()["error"]
        wrong_port = await http.post(url, json=INIT, headers={**MCP_HEADERS, **auth, "Host": "127.0.0.2:1"})
        assert wrong_port.status_code == 421
        bad_origin = await http.post(url, json=INIT, headers={**MCP_HEADERS, **auth,
                                                              "Origin": f"http://evil.example:{port}"})
        assert bad_origin.status_code == 403
        ok = await http.post(url, json=INIT, headers={**MCP_HEADERS, **auth, "Origin": f"http://127.0.0.2:{port}"})
        assert ok.status_code == 200


async def test_origin_and_host_match_exactly_on_127_0_0_1(tmp_path: Path) -> None:
    """Attack 1c: the SDK's prefix match let `Origin: http://localhost:1@evil.example` through."""
    async with serving(tmp_path, "127.0.0.1", None) as port, httpx2.AsyncClient() as http:
        url = f"http://127.0.0.1:{port}/mcp"
        for origin in ("http://localhost:1@evil.example", f"http://localhost:{port}@evil.example",
                       f"http://localhost:{port}.evil.example", f"http://127.0.0.1:{port}/x", "null"):
            answer = await http.post(url, json=INIT, headers={**MCP_HEADERS, "Origin": origin})
            assert answer.status_code == 403, origin
        for host in (f"localhost:{port}@evil.example", f"127.0.0.1:{port}.evil.example", f"127.0.0.1.evil:{port}"):
            answer = await http.post(url, json=INIT, headers={**MCP_HEADERS, "Host": host})
            assert answer.status_code == 421, host
        for origin in (f"http://localhost:{port}", f"http://127.0.0.1:{port}"):
            answer = await http.post(url, json=INIT, headers={**MCP_HEADERS, "Origin": origin,
                                                              "Host": f"localhost:{port}"})
            assert answer.status_code == 200, origin


async def test_vm_write_reaches_its_4_mib_over_http_and_a_bigger_body_is_a_clear_tool_error(tmp_path: Path) -> None:
    """Attack 3: the 4 MiB HTTP body cap (JSON and base64 included) kept vm_write from its documented 4 MiB,
    and the client saw an opaque error."""
    async with serving(tmp_path, "127.0.0.1", "w-token") as port:
        http = httpx2.AsyncClient(headers={"Authorization": "Bearer w-token"}, timeout=120)
        url = f"http://127.0.0.1:{port}/mcp"
        async with http, Client(streamable_http_client(url, http_client=http)) as client:
            made = await client.call_tool("create_server", {"name": "big-write"})
            assert not made.is_error, made.content
            try:
                data = os.urandom(4 * 1024 * 1024)
                wrote = await client.call_tool("vm_write", {"server": "big-write", "path": "blob.bin",
                                                            "content": base64.b64encode(data).decode(),
                                                            "encoding": "base64"})
                assert not wrote.is_error, wrote.content
                sums = await client.call_tool("vm_bash", {"server": "big-write", "command": "sha256sum blob.bin"})
                assert sums.structured_content["stdout"].split()[0] == hashlib.sha256(data).hexdigest()
                with pytest.raises(MCPError, match="over the 8 MiB limit.*vm_write takes at most 4 MiB"):
                    await client.call_tool("vm_write", {"server": "big-write", "path": "x.txt",
                                                        "content": "\x01" * (2 * 1024 * 1024)})  # 12 MiB of JSON
                ok = await client.call_tool("list_servers", {})  # the session goes on
                assert ok.structured_content["count"] == 1
            finally:
                await client.call_tool("destroy_server", {"name": "big-write"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FLOOD_FD_LIMIT, FLOOD_FD_LIMIT))


FLOOD_FD_LIMIT = 256
FLOOD_CONNECTIONS = 400


async def test_a_slow_header_flood_cannot_wedge_the_server_and_it_recovers(tmp_path: Path) -> None:
    """Attack 2: 1000 half-open connections with slow headers, unauthenticated, took the process to its fd
    limit and the accept loop never recovered. Here: `ulimit -n 256`, 400 slow clients held open."""
    settings = make_settings(tmp_path / "state")
    port = _free_port()
    env = {**cli_env(settings), "BOXFORGE_HTTP_TOKEN": "flood-token", "BOXFORGE_HTTP_HEADER_TIMEOUT_S": "1"}
    err_log = (tmp_path / "server.err").open("w")  # a file, not a pipe: a full pipe would stall the server
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "mcp", "--http", "--port", str(port)], env=env,
                            cwd=REPO_ROOT, stderr=err_log, text=True, preexec_fn=_low_fd_limit)
    url = f"http://127.0.0.1:{port}/mcp"
    headers = {**MCP_HEADERS, "Authorization": "Bearer flood-token"}
    slow: list[socket.socket] = []
    try:
        async with httpx2.AsyncClient(timeout=5) as http:
            async def answers() -> bool:
                try:
                    return (await http.post(url, json=INIT, headers=headers)).status_code == 200
                except httpx2.HTTPError:
                    return False

            await eventually(answers, timeout=60, interval=0.2, what="the HTTP server to start")
            most_fds = 0
            for _ in range(FLOOD_CONNECTIONS):
                s = socket.socket()
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError, OSError):
                    s.connect(("127.0.0.1", port))
                with contextlib.suppress(OSError):
                    s.send(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and never the rest
                slow.append(s)
            for _ in range(20):
                most_fds = max(most_fds, len(os.listdir(f"/proc/{proc.pid}/fd")))
                await anyio.sleep(0.05)  # sampling the fd count while the flood is held, not waiting for state
            # the flood is still held open by the attacker; the server must answer again anyway
            await eventually(answers, timeout=20, interval=0.2, what="an authed request during the held flood")
            assert proc.poll() is None
            assert most_fds < FLOOD_FD_LIMIT - 16, most_fds
    finally:
        for s in slow:
            s.close()
        proc.terminate()
        proc.wait(timeout=30)
        err_log.close()


async def test_sessions_per_token_are_capped_and_room_frees_as_they_end(tmp_path: Path) -> None:
    """Attack 2, rest: one token could open sessions without bound (the SDK's default cap is 10 000, each holding
    a task and memory). Here the cap is lowered to 3: the 4th session is refused with a clear JSON-RPC error,
    the open ones go on serving, and a session that ends makes room."""
    auth = {**MCP_HEADERS, "Authorization": "Bearer cap-token"}
    async with serving(tmp_path, "127.0.0.1", "cap-token", {"BOXFORGE_HTTP_MAX_SESSIONS": "3"}) as port, \
            httpx2.AsyncClient(timeout=30) as http:
        url = f"http://127.0.0.1:{port}/mcp"
        ids = []
        for _ in range(3):
            opened = await http.post(url, json=INIT, headers=auth)
            assert opened.status_code == 200, opened.text
            ids.append(opened.headers["mcp-session-id"])
        refused = await http.post(url, json=INIT, headers=auth)
        assert refused.status_code == 503
        message = refused.json()["error"]["message"]
        assert "3 MCP sessions" in message and "BOXFORGE_HTTP_MAX_SESSIONS" in message, message
        session = {**auth, "mcp-session-id": ids[0], "mcp-protocol-version": "2025-06-18"}
        await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
        listed = await http.post(url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=session)
        assert listed.status_code == 200 and "create_server" in listed.text  # the open sessions go on
        ended = await http.delete(url, headers={**auth, "mcp-session-id": ids[1], "mcp-protocol-version": "2025-06-18"})
        assert ended.status_code == 200
        await eventually(lambda: _opens(http, url, auth), timeout=10, what="room for a new session after one ended")


async def _opens(http: httpx2.AsyncClient, url: str, headers: dict[str, str]) -> bool:
    return (await http.post(url, json=INIT, headers=headers)).status_code == 200
