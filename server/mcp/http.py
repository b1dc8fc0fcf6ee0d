"""The MCP server over streamable HTTP, so the orchestrator can live on an always-on machine.

A bearer token is required unless the bind address is exactly 127.0.0.1 or ::1:
``BOXFORGE_HTTP_TOKEN``, or one generated at start and printed once to stderr. When a token is set it
is required on loopback too. The check is a small ASGI middleware (constant-time compare) around the
MCP app; the app's lifespan, which opens the fleet and runs the reaper, runs once for the server's
whole life.

Every request, on every bind address, passes our own Host/Origin allow-list first (DNS rebinding):
the Host header must be exactly one of the names the server answers to, with the port it listens on,
and an Origin, when sent, must be exactly ``http(s)://`` one of those. No prefix or wildcard matching.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import socket
import sys
from collections.abc import Mapping
from typing import Any

from mcp.server import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_ENV = "BOXFORGE_HTTP_TOKEN"
ALLOWED_HOSTS_ENV = "BOXFORGE_HTTP_ALLOWED_HOSTS"
MCP_PATH = "/mcp"
NO_TOKEN_BINDS = ("127.0.0.1", "::1")  # exactly these; any other loopback name or address needs a token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def choose_token(host: str, env: Mapping[str, str]) -> tuple[str | None, bool]:
    """(the token to require, whether it was generated here). None: no auth (loopback without a token)."""
    token = env.get(TOKEN_ENV, "").strip()
    if token:
        return token, False
    if host in NO_TOKEN_BINDS:
        return None, False
    return secrets.token_urlsafe(32), True


def _bracketed(name: str) -> str:
    return f"[{name}]" if ":" in name and not name.startswith("[") else name


def allowed_host_names(host: str, env: Mapping[str, str]) -> frozenset[str]:
    """The names (as written in a Host header, without the port) the server at ``host`` answers to.

    A specific address answers to itself (and loopback to ``localhost``); a wildcard bind (0.0.0.0,
    ::) answers to the address each connection arrived on (checked per request), this machine's
    hostname and ``localhost``. ``BOXFORGE_HTTP_ALLOWED_HOSTS`` (comma-separated) adds names, e.g. the
    DNS name clients use in front of a wildcard bind."""
    names = {_bracketed(host.lower())}
    if is_loopback(host):
        names.add("localhost")
    if host == "localhost":
        names |= {"127.0.0.1", "[::1]"}
    if host in ("0.0.0.0", "::", ""):
        names |= {"localhost", "127.0.0.1", "[::1]", socket.gethostname().lower()}
    names |= {_bracketed(n.strip().lower()) for n in env.get(ALLOWED_HOSTS_ENV, "").split(",") if n.strip()}
    return frozenset(names)


class HostGuard:
    """Refuse a Host header (421) or Origin (403) that is not exactly one the server answers to."""

    def __init__(self, app: ASGIApp, names: frozenset[str], *, wildcard: bool) -> None:
        self.app = app
        self._names = names
        self._wildcard = wildcard

    def _hosts(self, scope: Scope) -> set[str]:
        server = scope.get("server") or ("", 0)
        port = server[1]
        names = set(self._names)
        if self._wildcard and server[0]:
            names.add(_bracketed(str(server[0]).lower()))
        hosts = {f"{name}:{port}" for name in names}
        if port == 80:
            hosts |= names
        return hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {name: value.decode("latin-1") for name, value in scope.get("headers", [])}
        hosts = self._hosts(scope)
        given_host = headers.get(b"host", "").lower()
        if given_host not in hosts:
            await _refuse(scope, send, 421, f"Host header {given_host!r} is not one this server answers to "
                          f"({', '.join(sorted(hosts))}); add the name clients use to {ALLOWED_HOSTS_ENV}")
            return
        origin = headers.get(b"origin")
        if origin is not None and origin.lower() not in {f"{scheme}://{h}" for h in hosts for scheme in
                                                         ("http", "https")}:
            await _refuse(scope, send, 403, f"Origin {origin!r} is not allowed: only pages served from "
                          f"{', '.join(sorted(hosts))} may call this server")
            return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, send: Send, status: int, message: str,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


class BearerAuth:
    """Refuse HTTP requests without ``Authorization: Bearer <token>`` (401); lifespan events pass through."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        await _refuse(scope, send, 401, "unauthorized: send 'Authorization: Bearer <token>' "
                      f"(the token is in {TOKEN_ENV} or was printed when the server started)",
                      [(b"www-authenticate", b'Bearer realm="boxforge"')])

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)
        return False


def http_app(mcp: MCPServer[Any], *, host: str, token: str | None, env: Mapping[str, str]) -> ASGIApp:
    """The streamable HTTP app at /mcp, behind the Host/Origin allow-list and the bearer check."""
    if token is None and host not in NO_TOKEN_BINDS:
        raise ValueError(f"a bearer token is required when binding {host!r} (only 127.0.0.1 and ::1 go without)")
    app: ASGIApp = mcp.streamable_http_app(streamable_http_path=MCP_PATH, host=host)
    if token:
        app = BearerAuth(app, token)
    return HostGuard(app, allowed_host_names(host, env), wildcard=host in ("0.0.0.0", "::", ""))


async def serve(mcp: MCPServer[Any], *, host: str, port: int, env: Mapping[str, str]) -> None:
    """Serve until interrupted."""
    import uvicorn

    token, generated = choose_token(host, env)
    shown_host = f"[{host}]" if ":" in host else host
    print(f"boxforge: MCP over streamable HTTP at http://{shown_host}:{port}{MCP_PATH}", file=sys.stderr)
    if generated:
        print(f"boxforge: bearer token (shown once; set {TOKEN_ENV} to choose your own): {token}", file=sys.stderr)
    elif token is None:
        print(f"boxforge: no token required on {host} (set BOXFORGE_HTTP_TOKEN to require one)", file=sys.stderr)
    config = uvicorn.Config(http_app(mcp, host=host, token=token, env=env), host=host, port=port, lifespan="on",
                            log_level="warning")
    await uvicorn.Server(config).serve()
