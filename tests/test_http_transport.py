"""`boxforge mcp --http`: the streamable HTTP app behind its bearer check, on a real uvicorn server
bound to port 0 on loopback, driven by the real MCP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from server.mcp.app import build_server
from server.mcp.http import choose_token, http_app, is_loopback
from tests.support import eventually, make_settings

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@asynccontextmanager
async def serving(tmp_path: Path, token: str | None) -> AsyncIterator[str]:
    """The boxforge HTTP app on 127.0.0.1:<free port>; yields its /mcp URL."""
    app = http_app(build_server(make_settings(tmp_path / "state")), host="127.0.0.1", token=token, env={})
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        await eventually(lambda: server.started, what="uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            server.should_exit = True


async def test_with_a_token_requests_without_it_get_401(tmp_path: Path) -> None:
    async with serving(tmp_path, "s3cret-token") as url, httpx2.AsyncClient() as http:
        missing = await http.post(url, json=INIT, headers=MCP_HEADERS)
        wrong = await http.post(url, json=INIT, headers={**MCP_HEADERS, "Authorization": "Bearer nope"})
        basic = await http.post(url, json=INIT, headers={**MCP_HEADERS, "Authorization": "Basic s3cret-token"})
        assert [r.status_code for r in (missing, wrong, basic)] == [401, 401, 401]
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert "BOXFORGE_HTTP_TOKEN" in missing.json()["error"]
        authed = await http.post(url, json=INIT, headers={**MCP_HEADERS, "Authorization": "Bearer s3cret-token"})
        assert authed.status_code == 200


async def test_the_mcp_client_works_over_http_with_the_token(tmp_path: Path) -> None:
    async with serving(tmp_path, "s3cret-token") as url:
        http = httpx2.AsyncClient(headers={"Authorization": "Bearer s3cret-token"}, timeout=30)
        async with http, Client(streamable_http_client(url, http_client=http)) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"create_server", "vm_read", "vm_diff", "run_agent"} <= tools
            listed = await client.call_tool("list_servers", {})  # the fleet from the app's lifespan answers
            assert not listed.is_error and listed.structured_content["count"] == 0


async def test_loopback_without_a_token_needs_no_header(tmp_path: Path) -> None:
    async with serving(tmp_path, None) as url, Client(url) as client:
        listed = await client.call_tool("list_servers", {})
        assert not listed.is_error


def test_off_loopback_a_token_is_generated_unless_one_is_set() -> None:
    assert choose_token("127.0.0.1", {}) == (None, False)
    assert choose_token("::1", {}) == (None, False)
    token, generated = choose_token("0.0.0.0", {})
    assert generated and token and len(token) >= 32
    assert choose_token("0.0.0.0", {"BOXFORGE_HTTP_TOKEN": "mine"}) == ("mine", False)
    assert choose_token("127.0.0.1", {"BOXFORGE_HTTP_TOKEN": "mine"}) == ("mine", False)
    assert not is_loopback("192.168.1.5") and is_loopback("127.0.0.2") and not is_loopback("example.com")
