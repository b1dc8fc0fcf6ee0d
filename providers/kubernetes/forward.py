"""Reach a box's sshd through the API server: a loopback listener per box whose every connection is one
port-forward websocket (``v4.channel.k8s.io``) to the Pod's port 22, as ``kubectl port-forward`` does.

The orchestrator needs no route into the cluster's Pod network, and the SSH session on top still pins
the box's host key, so the API server and the network in between see only ciphertext. A listener lives
as long as the provider that opened it (this process); another process opens its own.

Wire format (per port index i): channel 2i carries data, 2i+1 errors; the server's first frame on each
channel is the port number (2 bytes, little-endian); every frame starts with its channel byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from providers.kubernetes.api import KubeApi

log = logging.getLogger(__name__)

DATA_CHANNEL = 0
ERROR_CHANNEL = 1
READ_CHUNK = 64 * 1024


class Forwards:
    """One loopback listener per box; ``address`` starts it on first use."""

    def __init__(self, api: KubeApi, host: str = "127.0.0.1") -> None:
        self.api = api
        self.host = host
        self._servers: dict[str, asyncio.Server] = {}
        self._conns: dict[str, set[asyncio.StreamWriter]] = {}

    async def address(self, box_id: str, port: int) -> tuple[str, int]:
        server = self._servers.get(box_id)
        if server is None:
            server = await asyncio.start_server(
                lambda r, w: self._serve(box_id, port, r, w), self.host, 0)
            self._servers[box_id] = server
        return self.host, server.sockets[0].getsockname()[1]

    async def _serve(self, box_id: str, port: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        conns = self._conns.setdefault(box_id, set())
        conns.add(writer)
        try:
            async with self.api.portforward(box_id, port) as ws:
                if not await _handshake(ws):
                    return
                await _pump(ws, reader, writer)
        except Exception as exc:  # the Pod went away, the API refused: the SSH client sees a closed socket
            log.info("port-forward to %s ended: %s", box_id, type(exc).__name__)
        finally:
            conns.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self, box_id: str) -> None:
        server = self._servers.pop(box_id, None)
        if server is not None:
            server.close()
        for writer in list(self._conns.pop(box_id, ())):
            writer.close()
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def aclose(self) -> None:
        for box_id in list(self._servers):
            await self.close(box_id)


async def _handshake(ws: Any) -> bool:
    """Read the server's two port frames; False when it reports an error instead."""
    seen: set[int] = set()
    while seen != {DATA_CHANNEL, ERROR_CHANNEL}:
        msg = await ws.receive()
        data = msg.data if isinstance(msg.data, bytes) else None
        if not data:
            return False
        channel = data[0]
        if channel == ERROR_CHANNEL and len(data) > 3:
            log.info("port-forward error: %s", data[3:].decode(errors="replace")[:200])
            return False
        seen.add(channel)
    return True


async def _pump(ws: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async def up() -> None:
        while chunk := await reader.read(READ_CHUNK):
            await ws.send_bytes(bytes([DATA_CHANNEL]) + chunk)
        await ws.close()

    async def down() -> None:
        async for msg in ws:
            data = msg.data
            if not isinstance(data, bytes) or not data:
                continue
            if data[0] == DATA_CHANNEL:
                writer.write(data[1:])
                await writer.drain()
            elif data[0] == ERROR_CHANNEL and len(data) > 1:
                log.info("port-forward error: %s", data[1:].decode(errors="replace")[:200])
                break

    tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
