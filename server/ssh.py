"""The SSH connection pool: one cached asyncssh connection per box, pinned host key, keepalive,
transparent reconnect.

Contract:
- The host key in ``SSHTarget.host_public_key`` is the only key accepted (never trust on first
  use); no known_hosts file is read or written, no ssh agent and no ``~/.ssh/config`` is used.
- ``connection`` returns one shared connection per ``target.key``; concurrent callers wait on a
  per-key lock and share a single connect. A closed connection, or a target whose address or
  keys changed, is replaced.
- ``run`` is binary safe and retries exactly once when a cached connection turns out to have
  dropped; it never retries after a timeout.
- Callers only ever see ``ForgeError`` subclasses (``HostKeyMismatch``, ``BoxUnreachable``,
  ``BoxTimeout``), never asyncssh exceptions.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from server.errors import BoxTimeout, BoxUnreachable, HostKeyMismatch

log = logging.getLogger(__name__)

# OpenSSH refuses more than MaxSessions (default 10) channels per connection.
DEFAULT_MAX_SESSIONS = 8

_DROP_ERRORS = (asyncssh.DisconnectError, asyncssh.ChannelOpenError, BrokenPipeError, ConnectionResetError)


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to reach one box."""

    key: str
    host: str
    port: int
    user: str
    client_key_path: Path
    host_public_key: str

    @property
    def where(self) -> str:
        return f"box '{self.key}' at {self.host}:{self.port}"


@dataclass(frozen=True)
class ExecResult:
    """A finished remote command. ``exit_status`` is None when the process died of a signal."""

    exit_status: int | None
    stdout: bytes
    stderr: bytes


@dataclass
class _Entry:
    target: SSHTarget
    conn: asyncssh.SSHClientConnection
    sessions: asyncio.Semaphore


class SSHPool:
    """A cache of SSH connections keyed by box name. Close it with ``aclose``."""

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        keepalive_interval: float = 15.0,
        keepalive_count_max: int = 3,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._keepalive_interval = keepalive_interval
        self._keepalive_count_max = keepalive_count_max
        self._max_sessions = max_sessions
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    async def connection(self, target: SSHTarget) -> asyncssh.SSHClientConnection:
        """The live connection for ``target.key``, connecting (once, shared) if needed."""
        entry, _fresh = await self._entry(target)
        return entry.conn

    async def run(
        self,
        target: SSHTarget,
        command: str,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run ``command`` through the box's login shell and collect its output as bytes.

        ``stdin`` is fed then closed (an empty stdin is closed at once). ``timeout`` bounds the
        command, not the connect; on expiry the channel is closed and ``BoxTimeout`` raised.
        """
        retried = False
        while True:
            entry, fresh = await self._entry(target)
            try:
                return await self._exec(entry, command, stdin, timeout)
            except _DROP_ERRORS as exc:
                if not _is_drop(entry.conn, exc):
                    raise BoxUnreachable(
                        f"{target.where} refused to open an SSH session ({_reason(exc)}); retry shortly"
                    ) from exc
                await self._discard(target.key, entry)
                if fresh or retried:
                    raise BoxUnreachable(
                        f"lost the SSH connection to {target.where} ({_reason(exc)}); "
                        "check that the box is still running (list_servers) and retry"
                    ) from exc
                log.info("connection to %s dropped; reconnecting once", target.where)
                retried = True
            except (asyncssh.Error, OSError) as exc:
                raise BoxUnreachable(f"SSH to {target.where} failed ({_reason(exc)}); retry") from exc

    async def drop(self, key: str) -> None:
        """Close and forget the connection for ``key`` (the next use reconnects)."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            await _close(entry.conn)

    async def aclose(self) -> None:
        """Close every connection; the pool cannot be used afterwards."""
        self._closed = True
        entries, self._entries = list(self._entries.values()), {}
        await asyncio.gather(*(_close(entry.conn) for entry in entries))

    async def _entry(self, target: SSHTarget) -> tuple[_Entry, bool]:
        if self._closed:
            raise RuntimeError("SSHPool is closed")
        lock = self._locks.setdefault(target.key, asyncio.Lock())
        async with lock:
            entry = self._entries.get(target.key)
            if entry is not None and entry.target == target and not entry.conn.is_closed():
                return entry, False
            if entry is not None:
                del self._entries[target.key]
                await _close(entry.conn)
            conn = await self._connect(target)
            if self._closed:
                await _close(conn)
                raise RuntimeError("SSHPool is closed")
            entry = _Entry(target, conn, asyncio.Semaphore(self._max_sessions))
            self._entries[target.key] = entry
            return entry, True

    async def _discard(self, key: str, entry: _Entry) -> None:
        if self._entries.get(key) is entry:
            del self._entries[key]
        await _close(entry.conn)

    async def _exec(self, entry: _Entry, command: str, stdin: bytes | None, timeout: float | None) -> ExecResult:
        async with entry.sessions:
            proc = await entry.conn.create_process(command, encoding=None)
            try:
                if stdin:
                    proc.stdin.write(stdin)
                proc.stdin.write_eof()
                try:
                    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
                except TimeoutError as exc:
                    raise BoxTimeout(
                        f"a command on {entry.target.where} did not finish within {timeout:g}s; "
                        "the box may be overloaded or the command stuck"
                    ) from exc
            finally:
                proc.close()
            if proc.exit_status is None and proc.exit_signal is None and entry.conn.is_closed():
                raise asyncssh.ConnectionLost("connection closed while the command ran")
            exit_status = proc.exit_status if proc.exit_signal is None else None
            return ExecResult(exit_status, stdout or b"", stderr or b"")

    async def _connect(self, target: SSHTarget) -> asyncssh.SSHClientConnection:
        try:
            client_key = asyncssh.read_private_key(target.client_key_path)
        except (OSError, asyncssh.KeyImportError) as exc:
            raise BoxUnreachable(
                f"cannot read the client key for {target.where} at {target.client_key_path} "
                f"({type(exc).__name__}); the box's key files may have been removed — recreate the box"
            ) from exc
        try:
            host_key = asyncssh.import_public_key(target.host_public_key)
        except (ValueError, asyncssh.KeyImportError) as exc:
            raise BoxUnreachable(
                f"the pinned host key for {target.where} is not a valid OpenSSH public key; recreate the box"
            ) from exc
        try:
            async with asyncio.timeout(self._connect_timeout + 1.0):
                return await asyncssh.connect(
                    target.host,
                    target.port,
                    username=target.user,
                    client_keys=[client_key],
                    known_hosts=([host_key], [], []),
                    agent_path=None,
                    config=None,
                    x509_trusted_certs=None,
                    password_auth=False,
                    kbdint_auth=False,
                    host_based_auth=False,
                    gss_auth=False,
                    gss_kex=False,
                    connect_timeout=self._connect_timeout,
                    keepalive_interval=self._keepalive_interval,
                    keepalive_count_max=self._keepalive_count_max,
                )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyMismatch(
                f"{target.where} presented a host key that does not match the pinned one; "
                "refusing to connect (the box may have been replaced — destroy and recreate it)"
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise BoxUnreachable(
                f"{target.where} rejected our client key for user '{target.user}'; "
                "the box does not trust this orchestrator's key — destroy and recreate it"
            ) from exc
        except ConnectionRefusedError as exc:
            raise BoxUnreachable(
                f"{target.where} refused the SSH connection; the box may be stopped, still "
                "booting or gone — check list_servers, wait, or recreate it"
            ) from exc
        except TimeoutError as exc:
            raise BoxUnreachable(
                f"{target.where} did not complete an SSH connection within "
                f"{self._connect_timeout:g}s; the box may be booting, overloaded or gone"
            ) from exc
        except (OSError, asyncssh.Error) as exc:
            raise BoxUnreachable(
                f"could not connect to {target.where} ({_reason(exc)}); check that the box is "
                "running (list_servers) and retry"
            ) from exc


def _is_drop(conn: asyncssh.SSHClientConnection, exc: BaseException) -> bool:
    """The connection is dead, as opposed to the box refusing one more session on a live one."""
    if not isinstance(exc, asyncssh.ChannelOpenError):
        return True
    # asyncssh reports its own closed (or aborting) connection as OPEN_CONNECT_FAILED
    return conn.is_closed() or exc.code == asyncssh.OPEN_CONNECT_FAILED


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return str(text).strip()


async def _close(conn: asyncssh.SSHClientConnection) -> None:
    conn.close()
    try:
        async with asyncio.timeout(5.0):
            await conn.wait_closed()
    except (TimeoutError, OSError, asyncssh.Error):
        conn.abort()
