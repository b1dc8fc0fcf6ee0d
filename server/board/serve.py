"""``boxforge board``: the board on its own server (loopback by default), with a fleet of its own.

It prints one URL holding a one-time login token (the first browser to open it gets the session cookie);
``--no-auth`` lets any page on this machine in and is refused off loopback. The server runs no reaper (the
MCP server or ``boxforge reap --loop`` does): it shows and acts."""

from __future__ import annotations

import secrets
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from server.board.app import BOARD_PATH, board_app
from server.board.auth import BoardAuth
from server.board.hub import BoardHub
from server.config import Settings
from server.errors import InvalidInput
from server.mcp.http import HostGuard, allowed_host_names, is_loopback
from server.service import Fleet, open_resources


def board_url(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{BOARD_PATH}/" + (f"login?token={token}" if token else "")


async def serve_board(settings: Settings, *, host: str, port: int, no_auth: bool, env: Mapping[str, str]) -> None:
    """Serve until interrupted; the URL goes to stdout once the port is bound (port 0: a free one)."""
    import uvicorn

    from server.mcp.http import guarded_protocol

    if no_auth and not is_loopback(host):
        raise InvalidInput(f"--no-auth serves the board to anyone who reaches {host}: only on a loopback address")
    token = None if no_auth else secrets.token_urlsafe(32)
    hub = BoardHub()

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        async with open_resources(settings) as res:
            fleet = Fleet(res)
            await fleet.recover()
            async with hub.serving(fleet):
                print(f"boxforge board: {board_url(host, bound, token)}", flush=True)
                if token:
                    print("boxforge: the URL's token works once (it becomes this browser's session); Ctrl-C stops "
                          "the board", file=sys.stderr, flush=True)
                yield

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)  # connections wait in the backlog while the fleet opens
    bound = sock.getsockname()[1]
    app = HostGuard(board_app(hub, BoardAuth(token, one_time=True), lifespan=lifespan),
                    allowed_host_names(host, env), wildcard=host in ("0.0.0.0", "::", ""))
    config = uvicorn.Config(app, lifespan="on", http=guarded_protocol(10.0, 256), log_level="warning")
    await uvicorn.Server(config).serve(sockets=[sock])
