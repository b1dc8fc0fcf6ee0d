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
from typing import TYPE_CHECKING, Any

from mcp.server import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from server.board.hub import BoardHub

TOKEN_ENV = "BOXFORGE_HTTP_TOKEN"
ALLOWED_HOSTS_ENV = "BOXFORGE_HTTP_ALLOWED_HOSTS"
MCP_PATH = "/mcp"
# One request's body: room for vm_write's 4 MiB of content as base64 (5.4 MiB) or 6 MiB of plain text, in JSON.
MAX_BODY_BYTES = 8 * 1024 * 1024
DRAIN_BYTES = 64 * 1024 * 1024  # an oversize body read and dropped before the 413; beyond, the connection closes
NO_TOKEN_BINDS = ("127.0.0.1", "::1")  # exactly these; any other loopback name or address needs a token
MAX_SESSIONS_ENV = "BOXFORGE_HTTP_MAX_SESSIONS"
DEFAULT_MAX_SESSIONS = 256  # open MCP sessions per token (the server has one token: per server)
SESSION_IDLE_ENV = "BOXFORGE_HTTP_SESSION_IDLE_S"
DEFAULT_SESSION_IDLE_S = 1800.0  # a session with no request in flight for this long ends (the SDK's default)


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


class BodyLimit:
    """Refuse a request whose Content-Length is over ``MAX_BODY_BYTES`` with a JSON-RPC error the MCP client shows
    as the tool call's error (413), instead of a bare status. The SDK's own limit (same size) catches a chunked
    body that grows past it."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope.get("headers", [])).get(b"content-length", b"0")
            if length.isdigit() and int(length) > self.limit:
                message = (f"the request is {int(length)} bytes, over the {self.limit // (1024 * 1024)} MiB limit of one "
                           "HTTP request: vm_write takes at most 4 MiB of content (as text or base64); for bigger "
                           "files use vm_upload, or write the file in parts")
                body = json.dumps({"jsonrpc": "2.0", "id": None,
                                   "error": {"code": -32600, "message": message}}).encode()
                # read what the client is sending (up to a bound), so it reads the answer instead of a reset
                drained, more = 0, True
                while more and drained <= DRAIN_BYTES:
                    event = await receive()
                    drained += len(event.get("body", b""))
                    more = event.get("more_body", False) and event["type"] == "http.request"
                await send({"type": "http.response.start", "status": 413, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    *([(b"connection", b"close")] if more else [])]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class BoardRoute:
    """Requests under /board go to the board (its own login: session cookie or the bearer token), the rest to
    the MCP app; lifespan events go to the MCP app, whose lifespan also runs the board's hub."""

    def __init__(self, mcp_app: ASGIApp, board: ASGIApp) -> None:
        self.mcp_app = mcp_app
        self.board = board

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] in ("http", "websocket") else ""
        if path == "/board" or path.startswith("/board/"):
            await self.board(scope, receive, send)
        else:
            await self.mcp_app(scope, receive, send)


class SessionCap:
    """Say what to do when the SDK refuses a new session at the cap (its bare 503 "Too many open sessions"): a
    request without ``mcp-session-id`` answered 503 gets a JSON-RPC error naming the cap and the setting."""

    def __init__(self, app: ASGIApp, limit: int, idle_s: float) -> None:
        self.app = app
        self.limit = limit
        self.idle_s = idle_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(name == b"mcp-session-id" for name, _ in scope.get("headers", [])):
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] | None = None
        replaced = False

        async def guarded(message: Any) -> None:
            nonlocal held, replaced
            if message["type"] == "http.response.start" and message["status"] == 503:
                held = message
                return
            if held is None:
                await send(message)
                return
            if replaced:  # the rest of the SDK's body
                return
            replaced = True
            text = (f"{self.limit} MCP sessions are already open for this token, the cap ({MAX_SESSIONS_ENV}): close a "
                    f"client you no longer use (its session ends when it disconnects, or after {self.idle_s:g} s "
                    f"without a request, {SESSION_IDLE_ENV}), or raise {MAX_SESSIONS_ENV}")
            body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": text}}).encode()
            headers = [(k, v) for k, v in held.get("headers", []) if k.lower() != b"content-length"]
            await send({**held, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, guarded)


def http_app(mcp: MCPServer[Any], *, host: str, token: str | None, env: Mapping[str, str],
             board: ASGIApp | None = None) -> ASGIApp:
    """The streamable HTTP app at /mcp, behind the Host/Origin allow-list and the bearer check; ``board`` (the
    board's app, with its own login) at /board behind the same Host/Origin allow-list."""
    if token is None and host not in NO_TOKEN_BINDS:
        raise ValueError(f"a bearer token is required when binding {host!r} (only 127.0.0.1 and ::1 go without)")
    max_sessions = int(env.get(MAX_SESSIONS_ENV) or DEFAULT_MAX_SESSIONS)
    idle_s = float(env.get(SESSION_IDLE_ENV) or DEFAULT_SESSION_IDLE_S)
    if max_sessions < 1 or not idle_s > 0:
        raise ValueError(f"{MAX_SESSIONS_ENV} must be at least 1 and {SESSION_IDLE_ENV} above 0")
    app: ASGIApp = BodyLimit(SessionCap(mcp.streamable_http_app(
        streamable_http_path=MCP_PATH, host=host, max_request_body_size=MAX_BODY_BYTES, max_sessions=max_sessions,
        session_idle_timeout=idle_s), max_sessions, idle_s))
    if token:
        app = BearerAuth(app, token)
    if board is not None:
        app = BoardRoute(app, board)
    return HostGuard(app, allowed_host_names(host, env), wildcard=host in ("0.0.0.0", "::", ""))


HEADER_TIMEOUT_ENV = "BOXFORGE_HTTP_HEADER_TIMEOUT_S"
DEFAULT_HEADER_TIMEOUT_S = 10.0
FD_RESERVE = 64  # descriptors kept for the store, the log, SSH to the boxes


def connection_cap(soft_fd_limit: int) -> int:
    """How many HTTP connections to hold at once: half of what the fd limit leaves after the reserve (the other
    half is for SSH to the boxes), between 16 and 1024."""
    return max(16, min(1024, (soft_fd_limit - FD_RESERVE) // 2))


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type:
    """uvicorn's h11 protocol with a header-read deadline and a connection cap: a connection that has not sent a
    whole request head within ``header_timeout_s`` (at its start, or after a response) is closed, and one over
    the cap is closed at once, so slow or half-open clients cannot take every descriptor."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.close()
                return
            self._idle_since = self.loop.time()
            self._head_timer = self.loop.call_later(header_timeout_s, self._check_head)

        def _check_head(self) -> None:
            if self.transport.is_closing():
                return
            waited = self.loop.time() - self._idle_since
            if self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete) \
                    and waited >= header_timeout_s:
                self.transport.close()
                return
            self._head_timer = self.loop.call_later(max(0.05, header_timeout_s - waited) if
                                                    self.conn.their_state is h11.IDLE else header_timeout_s,
                                                    self._check_head)

        def on_response_complete(self) -> None:
            self._idle_since = self.loop.time()
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            timer = getattr(self, "_head_timer", None)
            if timer is not None:
                timer.cancel()
            super().connection_lost(exc)

    return GuardedH11


async def serve(mcp: MCPServer[Any], *, host: str, port: int, env: Mapping[str, str],
                board_hub: BoardHub | None = None) -> None:
    """Serve until interrupted; with ``board_hub``, the board at /board (login with the bearer token, or with a
    one-time token printed here when the MCP server needs none)."""
    import resource

    import uvicorn

    token, generated = choose_token(host, env)
    shown_host = f"[{host}]" if ":" in host else host
    print(f"boxforge: MCP over streamable HTTP at http://{shown_host}:{port}{MCP_PATH}", file=sys.stderr)
    if generated:
        print(f"boxforge: bearer token (shown once; set {TOKEN_ENV} to choose your own): {token}", file=sys.stderr)
    elif token is None:
        print(f"boxforge: no token required on {host} (set BOXFORGE_HTTP_TOKEN to require one)", file=sys.stderr)
    board = None
    if board_hub is not None:
        from server.board.app import board_app
        from server.board.auth import BoardAuth

        login = token or secrets.token_urlsafe(32)
        board = board_app(board_hub, BoardAuth(login, one_time=token is None, bearer=token))
        login_path = "/board/login?token=" + ("<the bearer token>)" if token else f"{login}, a one-time login)")
        print(f"boxforge: the board at http://{shown_host}:{port}/board/ (sign in once per browser at {login_path}",
              file=sys.stderr)
    header_timeout_s = float(env.get(HEADER_TIMEOUT_ENV) or DEFAULT_HEADER_TIMEOUT_S)
    cap = connection_cap(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    app = http_app(mcp, host=host, token=token, env=env, board=board)
    config = uvicorn.Config(app, host=host, port=port, lifespan="on",
                            http=guarded_protocol(header_timeout_s, cap),
                            # asyncio accepts up to `backlog` sockets in one go: keep a burst within the fd budget
                            backlog=max(16, cap // 2),
                            log_level="warning")
    await uvicorn.Server(config).serve()
