"""The board over real HTTP on loopback (uvicorn in this process, no browser): the one-time login, sessions,
exact Host/Origin, CSRF and content type on every action, clear errors for bad input, box-originated text made
safe in the JSON, the security headers, and the board at /board of `boxforge mcp --http` behind its bearer token."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from server.board.app import board_app
from server.board.auth import BoardAuth
from server.board.hub import BoardHub
from server.board.serve import serve_board
from server.errors import InvalidInput
from server.mcp.app import build_server
from server.mcp.http import HostGuard, allowed_host_names, http_app
from server.service import open_fleet
from tests.board.records import add_box, add_job
from tests.board.support import served
from tests.support import eventually, make_settings

TOKEN = "login-token-0123456789abcdef"
HOSTILE = "<script>window.pwned=1</script>\x1b[31mred\x1b[0m\x07" + "y" * 50_000


@asynccontextmanager
async def board_on(tmp_path: Path) -> AsyncIterator[tuple[str, Any]]:
    """A board over a fleet whose store holds one box with hostile text in its error, job command and output.
    (A context, not a fixture: its task groups must open and close in the test's own task.)"""
    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as fleet:
        box = add_box(fleet.store, "hostile", error=HOSTILE)
        add_job(fleet.store, box, "echo " + HOSTILE, out_tail="first\n" + HOSTILE + "\n")
        hub = BoardHub(first_probe_s=3600)  # no box behind the records: no probe, no reconcile
        app = HostGuard(board_app(hub, BoardAuth(TOKEN, one_time=True)), allowed_host_names("127.0.0.1", {}),
                        wildcard=False)
        async with hub.serving(fleet), served(app) as url:
            yield url, fleet


async def login(client: httpx2.AsyncClient, url: str) -> str:
    answer = await client.get(f"{url}/board/login", params={"token": TOKEN})
    assert answer.status_code == 303 and answer.headers["location"] == "/board/"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/board" in cookie
    return (await client.get(f"{url}/board/api/session")).json()["csrf"]


async def test_the_login_token_works_once_and_becomes_a_session(tmp_path: Path) -> None:
    async with board_on(tmp_path) as (url, _):
        async with httpx2.AsyncClient() as anonymous:
            assert (await anonymous.get(f"{url}/board/api/fleet")).status_code == 401
            assert (await anonymous.get(f"{url}/board/")).status_code == 401
            assert (await anonymous.get(f"{url}/board/login", params={"token": "wrong"})).status_code == 401
        async with httpx2.AsyncClient() as client:
            await login(client, url)
            fleet = (await client.get(f"{url}/board/api/fleet")).json()
            assert [b["name"] for b in fleet["boxes"]] == ["hostile"]
            assert (await client.get(f"{url}/board/")).status_code == 200
        async with httpx2.AsyncClient() as second:
            spent = await second.get(f"{url}/board/login", params={"token": TOKEN})
            assert spent.status_code == 401 and "already used" in spent.text


async def test_host_and_origin_must_be_exactly_the_servers_own(tmp_path: Path) -> None:
    async with board_on(tmp_path) as (url, _):
        port = url.rsplit(":", 1)[1]
        async with httpx2.AsyncClient() as client:
            csrf = await login(client, url)
            for host in ("evil.example", f"127.0.0.1:{port}.evil.example", f"localhost.evil:{port}"):
                assert (await client.get(f"{url}/board/api/fleet", headers={"host": host})).status_code == 421
            for origin in ("http://evil.example", f"http://127.0.0.1:{port}.evil.example", "null"):
                refused = await client.post(f"{url}/board/api/actions/burn", json={"server": "hostile"},
                                            headers={"origin": origin, "x-boxforge-csrf": csrf})
                assert refused.status_code == 403
            same = await client.get(f"{url}/board/api/fleet", headers={"origin": f"http://127.0.0.1:{port}"})
            assert same.status_code == 200


async def test_every_action_needs_the_sessions_csrf_token_and_json(tmp_path: Path) -> None:
    async with board_on(tmp_path) as (url, fleet):
        async with httpx2.AsyncClient() as client:
            csrf = await login(client, url)
            body = {"server": "hostile", "ttl": "1h"}
            for headers in ({}, {"x-boxforge-csrf": "not-the-token"}, {"x-boxforge-csrf": ""}):
                refused = await client.post(f"{url}/board/api/actions/extend", json=body, headers=headers)
                assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
            as_form = await client.post(f"{url}/board/api/actions/extend", content=json.dumps(body),
                                        headers={"x-boxforge-csrf": csrf, "content-type": "text/plain"})
            assert as_form.status_code == 415
        rec = await fleet.repo.live_box("hostile")
        assert rec is not None and rec.expires_at < 2 * 3600 + rec.created_at  # nothing was extended


async def test_bad_action_input_is_a_clear_error_and_the_board_keeps_serving(tmp_path: Path) -> None:
    async with board_on(tmp_path) as (url, _):
        async with httpx2.AsyncClient() as client:
            csrf = await login(client, url)
            headers = {"x-boxforge-csrf": csrf}
            post = lambda name, body: client.post(f"{url}/board/api/actions/{name}", json=body, headers=headers)  # noqa: E731
            ttl = await post("extend", {"server": "hostile", "ttl": "forever"})
            assert ttl.status_code == 400 and "ttl" in ttl.json()["error"]
            name = await post("burn", {"server": "../etc"})
            assert name.status_code == 400 and "server" in name.json()["error"]
            extra = await post("burn", {"server": "hostile", "harvest": False})
            assert extra.status_code == 400 and "harvest" in extra.json()["error"]
            unknown = await post("reboot", {"server": "hostile"})
            assert unknown.status_code == 404 and "land" in unknown.json()["error"]
            land = await post("land", {"servers": ["hostile"]})
            assert land.status_code == 400 and "not approved" in land.json()["error"]
            job = await client.get(f"{url}/board/api/jobs/not-a-job")
            assert job.status_code == 400
            wait = await client.get(f"{url}/board/api/jobs/j-0123456789ab", params={"wait_s": "nan"})
            assert wait.status_code == 400
            assert (await client.get(f"{url}/board/api/fleet")).status_code == 200


async def test_box_text_reaches_the_page_clean_and_cut(tmp_path: Path) -> None:
    async with board_on(tmp_path) as (url, _):
        async with httpx2.AsyncClient() as client:
            await login(client, url)
            answer = await client.get(f"{url}/board/api/fleet")
            assert answer.headers["content-type"] == "application/json"
            box = answer.json()["boxes"][0]
            shown = [box["error"], box["jobs"][0]["command"], box["jobs"][0]["last_line"]]
            for text in shown:
                assert text.startswith(("<script>", "echo <script>")) and "\x1b" not in text and "\x07" not in text
                assert len(text) < 400 and "more characters]" in text
            page = await client.get(f"{url}/board/")
            assert "<script>" not in re.sub(r'<script src="[^"]+"></script>', "", page.text)  # no inline script
            csp = page.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert page.headers["x-content-type-options"] == "nosniff"


async def test_the_fleet_document_follows_the_store(tmp_path: Path) -> None:
    async with board_on(tmp_path) as (url, fleet):
        async with httpx2.AsyncClient() as client:
            await login(client, url)
            before = (await client.get(f"{url}/board/api/fleet")).json()["version"]
            add_box(fleet.store, "second")

            async def shown() -> bool:
                doc = (await client.get(f"{url}/board/api/fleet")).json()
                return doc["version"] > before and [b["name"] for b in doc["boxes"]] == ["hostile", "second"]

            await eventually(shown, timeout=10, what="the new box on the board")


async def test_no_auth_is_refused_off_loopback(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="loopback"):
        await serve_board(make_settings(tmp_path / "state"), host="0.0.0.0", port=0, no_auth=True, env={})


async def test_the_mcp_http_server_serves_the_board_behind_its_bearer_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    hub = BoardHub(first_probe_s=3600)
    bearer = "bearer-token-abcdef0123456789"
    board = board_app(hub, BoardAuth(bearer, one_time=False, bearer=bearer))
    app = http_app(build_server(settings, board=hub), host="127.0.0.1", token=bearer, env={}, board=board)
    async with served(app, lifespan="on") as url, httpx2.AsyncClient() as client:
        assert (await client.get(f"{url}/board/api/fleet")).status_code == 401
        assert (await client.post(f"{url}/mcp", json={})).status_code == 401  # MCP still needs the bearer
        authorized = await client.get(f"{url}/board/api/fleet", headers={"authorization": f"Bearer {bearer}"})
        assert authorized.status_code == 200 and authorized.json()["boxes"] == []
        for _ in range(2):  # the bearer token is a login that is not spent
            assert (await client.get(f"{url}/board/login", params={"token": bearer})).status_code == 303
        assert (await client.get(f"{url}/board/", headers={"host": "evil.example"})).status_code == 421
        with anyio.fail_after(10):
            assert (await client.get(f"{url}/board/api/session")).json()["csrf"]
