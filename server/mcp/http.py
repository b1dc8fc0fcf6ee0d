"""The MCP server over streamable HTTP, so the orchestrator can live on an always-on machine.

Off loopback a bearer token is required: ``BOXFORGE_HTTP_TOKEN``, or one generated at start and
printed once to stderr. When a token is set it is required on loopback too. The check is a small
ASGI middleware (constant-time compare) around the MCP app; the app's lifespan, which opens the
fleet and runs the reaper, runs once for the server's whole life.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import sys
from collections.abc import Mapping
from typing import Any

from mcp.server import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_ENV = "BOXFORGE_HTTP_TOKEN"
MCP_PATH = "/mcp"


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
    if is_loopback(host):
        return None, False
    return secrets.token_urlsafe(32), True


class BearerAuth:
    """Refuse HTTP requests without ``Authorization: Bearer <token>`` (401); lifespan events pass through."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": "unauthorized: send 'Authorization: Bearer <token>' "
                                    f"(the token is in {TOKEN_ENV} or was printed when the server started)"}).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"www-authenticate", b'Bearer realm="boxforge"'),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)
        return False


def http_app(mcp: MCPServer[Any], *, host: str, token: str | None) -> ASGIApp:
    """The streamable HTTP app at /mcp, behind the bearer check when there is a token."""
    app: ASGIApp = mcp.streamable_http_app(streamable_http_path=MCP_PATH, host=host)
    return BearerAuth(app, token) if token else app


async def serve(mcp: MCPServer[Any], *, host: str, port: int, env: Mapping[str, str]) -> None:
    """Serve until interrupted."""
    import uvicorn

    token, generated = choose_token(host, env)
    shown_host = f"[{host}]" if ":" in host else host
    print(f"boxforge: MCP over streamable HTTP at http://{shown_host}:{port}{MCP_PATH}", file=sys.stderr)
    if generated:
        print(f"boxforge: bearer token (shown once; set {TOKEN_ENV} to choose your own): {token}", file=sys.stderr)
    elif token is None:
        print("boxforge: no token required on loopback (set BOXFORGE_HTTP_TOKEN to require one)", file=sys.stderr)
    config = uvicorn.Config(http_app(mcp, host=host, token=token), host=host, port=port, lifespan="on",
                            log_level="warning")
    await uvicorn.Server(config).serve()
