"""Issue 12, HTTP transport: the attacks a hostile reviewer ran from outside, replayed against a real
uvicorn server on loopback (127.0.0.1, and 127.0.0.2 for "any other loopback")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
import uvicorn

from server.mcp.app import build_server
from server.mcp.http import choose_token, http_app
from tests.support import eventually, make_settings

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@asynccontextmanager
async def serving(tmp_path: Path, host: str, token: str | None) -> AsyncIterator[int]:
    """The boxforge HTTP app on host:<free port>, built as `boxforge mcp --http` builds it; yields the port."""
    app = http_app(build_server(make_settings(tmp_path / "state")), host=host, token=token, env={})
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
