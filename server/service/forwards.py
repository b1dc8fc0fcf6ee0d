"""Port forwards: a TCP port of a box reached on the orchestrator's loopback, over the box's own
authenticated SSH connection (``direct-tcpip`` channels, as ``ssh -L`` does).

Each box's forwards share one SSH connection of their own (not the exec pool's, whose connections
are dropped and redialled on any fault): a pooled exec reconnect never cuts an open forward. A forward
is checked once when it is opened (a connect through the tunnel), then every local connection opens its
own channel to the box's port. Forwards live in this process; they close on ``close`` and when the box
burns (``close_box``), which also cuts the connections open through them.
"""

from __future__ import annotations

import asyncio
import errno
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from server.errors import BoxUnreachable, ForgeError, InvalidInput
from server.lazy import lazy_import
from server.schemas import ForwardInfo
from server.ssh import SSHPool, SSHTarget

if TYPE_CHECKING:
    import asyncssh
else:
    asyncssh = lazy_import("asyncssh")  # loaded on first use, not by the CLI's start

BOX_HOST = "127.0.0.1"  # the box's own loopback (IPv4: a box may resolve no names)
CHECK_TIMEOUT_S = 5.0
LOOPBACK = "127.0.0.1"
MIN_LOCAL_PORT = 1024


@dataclass
class _Forward:
    server: str
    port: int
    bind: str
    listener: asyncssh.SSHListener
    listening: bool = True
    service: str | None = None
    created_at: float = field(default_factory=time.time)

    @property
    def local_port(self) -> int:
        return self.listener.get_port()

    def info(self) -> ForwardInfo:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return ForwardInfo(server=self.server, port=self.port, local_host=self.bind, local_port=self.local_port,
                           url=f"http://{host}:{self.local_port}", created_at=self.created_at,
                           listening=self.listening, service=self.service)


class Forwards:
    """The open forwards of this process, by (box, box port)."""

    def __init__(self, pool: SSHPool) -> None:
        self.pool = pool
        self._conns: dict[str, asyncssh.SSHClientConnection] = {}
        self._forwards: dict[tuple[str, int], _Forward] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def open(self, target: SSHTarget, port: int, local_port: int | None = None,
                   bind: str = LOOPBACK, *, service: str | None = None) -> ForwardInfo:
        """Forward the box's ``port`` to ``bind:local_port`` (a free port when None). Opening the same box
        port again returns the forward already open.

        A port nothing listens on is refused, unless the forward is a ``service``'s (opened as the service
        starts, before it listens): that one opens anyway and says ``listening=False``."""
        check_ports(port, local_port)
        server = target.key
        async with self._locks.setdefault(server, asyncio.Lock()):
            existing = self._forwards.get((server, port))
            if existing is not None:
                if local_port not in (None, existing.local_port) or bind != existing.bind:
                    raise InvalidInput(
                        f"port {port} of {server!r} is already forwarded to {existing.bind}:{existing.local_port}; "
                        "close that forward first to forward the port elsewhere")
                return existing.info()
            conn = await self._connection(target)
            listening = True
            try:
                await _check_listening(conn, server, port)
            except NothingListening:
                if service is None:
                    raise
                listening = False
            try:
                listener = await conn.forward_local_port(bind, local_port or 0, BOX_HOST, port)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise InvalidInput(f"local port {local_port} on {bind} is already in use; pick another "
                                       "local_port or omit it to get a free one") from exc
                if exc.errno in (errno.EACCES, errno.EPERM):
                    raise InvalidInput(f"not allowed to listen on {bind}:{local_port} ({exc.strerror})") from exc
                raise ForgeError(f"could not listen on {bind}:{local_port}: {exc.strerror or exc}") from exc
            fwd = self._forwards[(server, port)] = _Forward(server, port, bind, listener, listening, service)
            return fwd.info()

    def known(self, server: str) -> list[ForwardInfo]:
        """The box's open forwards as last seen (no check; for ServerInfo)."""
        return [f.info() for (name, _), f in sorted(self._forwards.items()) if name == server]

    async def of_box(self, server: str) -> list[ForwardInfo]:
        """The box's open forwards, each checked again for something listening on the box's port."""
        self._prune()
        mine = sorted((f for (name, _), f in self._forwards.items() if name == server), key=lambda f: f.port)
        conn = self._conns.get(server)
        for fwd in mine:
            if conn is not None:
                try:
                    await _check_listening(conn, server, fwd.port)
                    fwd.listening = True
                except NothingListening:
                    fwd.listening = False
                except ForgeError:
                    pass  # the box did not answer: keep what was last seen
        return [f.info() for f in mine]

    async def close(self, server: str, port: int | None = None) -> list[ForwardInfo]:
        """Close one forward of the box, or all of them (port None); what was closed."""
        self._prune()
        closing = [f for (name, p), f in self._forwards.items() if name == server and port in (None, p)]
        for fwd in closing:
            del self._forwards[(fwd.server, fwd.port)]
            fwd.listener.close()
        if not any(name == server for name, _ in self._forwards):
            await self._drop_connection(server)
        return [f.info() for f in closing]

    async def close_box(self, server: str) -> None:
        """The box is burning: close its forwards and cut every connection open through them."""
        for key in [k for k in self._forwards if k[0] == server]:
            self._forwards.pop(key).listener.close()
        await self._drop_connection(server)

    async def wait_ended(self, server: str) -> None:
        """Return when the box's forwards end (closed, the box burned, or its SSH connection lost)."""
        conn = self._conns.get(server)
        if conn is not None:
            await conn.wait_closed()

    async def aclose(self) -> None:
        for server in {name for name, _ in self._forwards} | set(self._conns):
            await self.close_box(server)

    async def _connection(self, target: SSHTarget) -> asyncssh.SSHClientConnection:
        conn = self._conns.get(target.key)
        if conn is not None and not conn.is_closed():
            return conn
        conn = self._conns[target.key] = await self.pool.dial(target)
        await _interactive(conn)
        return conn

    async def _drop_connection(self, server: str) -> None:
        conn = self._conns.pop(server, None)
        if conn is not None:
            conn.close()  # aborts the channels: a client mid-connection sees its socket closed
            try:
                async with asyncio.timeout(5.0):
                    await conn.wait_closed()
            except (TimeoutError, OSError, asyncssh.Error):
                pass

    def _prune(self) -> None:
        """Forget forwards whose SSH connection died (the box went away without a burn here)."""
        for key, fwd in list(self._forwards.items()):
            conn = self._conns.get(fwd.server)
            if conn is None or conn.is_closed():
                del self._forwards[key]
                fwd.listener.close()


class NothingListening(ForgeError):
    """The connect check through the tunnel was refused: no server on the box's port yet."""


async def _interactive(conn: asyncssh.SSHClientConnection) -> None:
    """Ask for a pty on one idle session of the forwards' connection: OpenSSH's sshd then marks the whole
    connection interactive and sets TCP_NODELAY on it, so a small reply is not held back by Nagle's algorithm
    behind an unacknowledged segment (about 40 ms per forwarded request without it). A box whose server
    refuses the pty just keeps Nagle."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await conn.create_process("exec cat", term_type="dumb", stdin=asyncssh.PIPE)
    except (TimeoutError, OSError, asyncssh.Error):
        pass


def check_ports(port: int, local_port: int | None) -> None:
    if not 1 <= port <= 65535:
        raise InvalidInput(f"port {port} is not a TCP port (1-65535)")
    if local_port is not None and not MIN_LOCAL_PORT <= local_port <= 65535:
        raise InvalidInput(f"local_port {local_port} is privileged or out of range; use {MIN_LOCAL_PORT}-65535, "
                           "or omit it to get a free port")


async def _check_listening(conn: asyncssh.SSHClientConnection, server: str, port: int) -> None:
    """One connect through the tunnel, so that a port nothing listens on is said at once."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            _reader, writer = await conn.open_connection(BOX_HOST, port)
    except asyncssh.ChannelOpenError as exc:
        raise NothingListening(f"nothing listens on port {port} of {server!r} yet ({exc.reason}); start the server "
                         "on the box (in the background), then forward the port again") from exc
    except TimeoutError as exc:
        raise BoxUnreachable(f"{server!r} did not answer a connect to port {port} within "
                             f"{CHECK_TIMEOUT_S:g}s; retry") from exc
    except (OSError, asyncssh.Error) as exc:
        raise BoxUnreachable(f"the SSH connection to {server!r} failed while checking port {port}: {exc}") from exc
    writer.close()
