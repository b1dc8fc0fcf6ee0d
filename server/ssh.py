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
- ``channel_run`` runs a script over a persistent control channel instead of a new SSH session
  (see below); it falls back to ``run`` whenever a channel cannot serve the call.
- Callers only ever see ``ForgeError`` subclasses (``HostKeyMismatch``, ``BoxUnreachable``,
  ``BoxTimeout``), never asyncssh exceptions.

Control channels. A new SSH session costs a channel open, a fork on the server and a shell start
per call; a control channel is one long-lived session per lane running a small POSIX sh loop on the
box (``server/onbox/sh/channel.sh``: sh and coreutils only) that reads framed requests from its stdin and writes framed
responses, so a call costs one channel round trip plus the script itself. Framing (all lengths
in bytes, every line ASCII):

- request  ``<seq> B <script_len> <stdin_len>\n<script><stdin>``: a command line, run like
  ``sh -c`` (eval in a subshell), stdout and stderr captured to files;
  ``<seq> L <library_len> 0\n<library>``: shell function definitions, eval'd in the loop itself
  once per channel (the answer is an empty response);
  ``<seq> T <lines> <stdin_len>\n<private lines><call>\n<stdin>``: one line calling a library
  function, after ``<lines>`` lines of private assignments (``ShellCall.private``: read by the
  loop's builtin ``read``, never a command line or a pipe); its stdout must be text without NUL
  (captured without a file where the shell counts bytes), binary output goes to fd 3 and follows
  the text.
- response ``<seq> <exit> <text_len> <bin_len> <err_len>\n<text><bin><stderr>``; stdout is
  text + bin. An exit status is a number (a signal shows as 128+n, as ``sh`` reports it).

stdin reaches the script through a pipe (``head -c``), never a file or a command line. One request
is in flight per channel. Each box has two lanes of channels, taken from the session budget
(``max_sessions``): ``short`` (calls that return at once; a caller waits for a free channel) and
``long`` (``ShellCall.long`` or ``channel_run(long=True)``: long-polls and scripts that may run for
minutes, so they never hold up short calls; when all are busy the call goes over exec). Background
long calls that overflow onto exec may take all but ``FOREGROUND_RESERVE`` exec sessions: the rest are
kept for ``ShellCall.foreground`` calls (a foreground command waiting for its own end, whose caller holds
a deadline), so no number of long-polls can make a foreground command miss its ``timeout_s``. Waiting for
a free channel or exec session counts inside the caller's timeout; a call with a ``deadline`` waits for a
session only until just before it (then ``BoxBusy``), and says on the box how long is left once sent.
A channel that breaks mid-call (its loop killed, the connection dropped) is closed and
the call is retried once over exec (calls
marked ``idempotent=False`` raise instead); the next call opens a new channel, reconnecting if
needed. ``drop``/``aclose`` send EOF to every
channel, which makes the box-side loop remove its scratch dir and exit.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import socket
import time
import weakref
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from server.errors import BoxBusy, BoxTimeout, BoxUnreachable, HostKeyMismatch
from server.lazy import lazy_import
from server.onbox import scripts
from server.transport.channel import (
    CHANNEL_HELLO,
    CHANNEL_OPEN_TIMEOUT_S,
    STREAM_ERRORS,
    Channel,
    ChannelBroken,
    read_hello,
)
from server.transport.channel import reason as _reason
from server.transport.retry import Reconnect, reconnect_once
from server.transport.types import DEADLINE_MARGIN_S, ExecResult, ShellCall

if TYPE_CHECKING:
    import asyncssh
else:
    asyncssh = lazy_import("asyncssh")  # loaded by the first connection, not by `boxforge ls`

__all__ = ["CHANNEL_HELLO", "ExecResult", "SSHPool", "SSHTarget", "ShellCall"]

log = logging.getLogger(__name__)

# OpenSSH refuses more than MaxSessions (default 10) channels per connection.
DEFAULT_MAX_SESSIONS = 8

DEFAULT_SHORT_CHANNELS = 2
DEFAULT_LONG_CHANNELS = 2
FOREGROUND_RESERVE = 2  # exec sessions background long-polls never take (while more than one is left to them)



@cache
def _drop_errors() -> tuple[type[BaseException], ...]:
    return (asyncssh.DisconnectError, asyncssh.ChannelOpenError, BrokenPipeError, ConnectionResetError)


@cache
def _channel_errors() -> tuple[type[BaseException], ...]:
    return (asyncssh.Error, *STREAM_ERRORS)


# The box side of a control channel (sh/channel.sh), started with exec so it is the session's process.
_LOOP_COMMAND = "exec /bin/sh -c " + shlex.quote(scripts.text("channel.sh"))


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


class _SSHStream:
    """An SSH session's stdin and stdout, as ``transport.channel.Stream``."""

    def __init__(self, proc: asyncssh.SSHClientProcess[bytes]) -> None:
        self.proc = proc

    @property
    def usable(self) -> bool:
        return not self.proc.is_closing() and self.proc.exit_status is None and self.proc.exit_signal is None

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)

    async def drain(self) -> None:
        await self.proc.stdin.drain()

    def write_eof(self) -> None:
        self.proc.stdin.write_eof()

    async def readline(self) -> bytes:
        return await self.proc.stdout.readline()

    async def readexactly(self, n: int) -> bytes:
        return await self.proc.stdout.readexactly(n)

    def close(self) -> None:
        self.proc.close()


@dataclass
class _Lane:
    """Channels for one kind of call: at most ``permits`` at once, idle ones kept for reuse."""

    permits: asyncio.Semaphore
    idle: list[Channel] = field(default_factory=list)


@dataclass
class _Entry:
    target: SSHTarget
    conn: asyncssh.SSHClientConnection
    sessions: asyncio.Semaphore
    short: _Lane
    long: _Lane
    overflow: asyncio.Semaphore  # exec sessions background long calls may hold: all but the foreground reserve
    channels: set[Channel] = field(default_factory=set)
    channels_off: bool = False  # the box could not start a channel loop: exec only, on this connection


class SSHPool:
    """A cache of SSH connections keyed by box name. Close it with ``aclose``."""

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        keepalive_interval: float = 15.0,
        keepalive_count_max: int = 3,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        short_channels: int = DEFAULT_SHORT_CHANNELS,
        long_channels: int = DEFAULT_LONG_CHANNELS,
    ) -> None:
        if short_channels < 0 or long_channels < 0 or max_sessions - short_channels - long_channels < 1:
            raise ValueError("channels must leave at least one of max_sessions for exec")
        self._connect_timeout = connect_timeout
        self._keepalive_interval = keepalive_interval
        self._keepalive_count_max = keepalive_count_max
        self._max_sessions = max_sessions
        self._short_channels = short_channels
        self._long_channels = long_channels
        self._entries: dict[str, _Entry] = {}
        self._dialled: weakref.WeakSet[asyncssh.SSHClientConnection] = weakref.WeakSet()
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    async def connection(self, target: SSHTarget) -> asyncssh.SSHClientConnection:
        """The live connection for ``target.key``, connecting (once, shared) if needed."""
        entry, _fresh = await self._entry(target)
        return entry.conn

    async def dial(self, target: SSHTarget) -> asyncssh.SSHClientConnection:
        """A new connection of the caller's own (not pooled, never redialled): the caller closes it, and
        ``aclose`` closes what is still open."""
        if self._closed:
            raise RuntimeError("SSHPool is closed")
        conn = await self._connect(target)
        self._dialled.add(conn)
        return conn

    async def run(
        self,
        target: SSHTarget,
        command: str | ShellCall,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run ``command`` through the box's login shell and collect its output as bytes.

        ``stdin`` is fed then closed (an empty stdin is closed at once). ``timeout`` bounds the
        command, not the connect; on expiry the channel is closed and ``BoxTimeout`` raised.
        """
        async def attempt(retrying: bool) -> ExecResult:
            entry, fresh = await self._entry(target)
            try:
                return await self._exec(entry, command, stdin, timeout)
            except _drop_errors() as exc:
                if not _is_drop(entry.conn, exc):
                    raise BoxUnreachable(
                        f"{target.where} refused to open an SSH session ({_reason(exc)}); retry shortly"
                    ) from exc
                await self._discard(target.key, entry)
                lost = BoxUnreachable(
                    f"lost the SSH connection to {target.where} ({_reason(exc)}); "
                    "check that the box is still running (list_servers) and retry"
                )
                if fresh or retrying:
                    raise lost from exc
                raise Reconnect(lost) from exc
            except (asyncssh.Error, OSError) as exc:
                raise BoxUnreachable(f"SSH to {target.where} failed ({_reason(exc)}); retry") from exc

        return await reconnect_once(attempt, f"SSH to {target.where}")

    async def channel_run(
        self,
        target: SSHTarget,
        script: str | ShellCall,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        idempotent: bool = True,
        long: bool = False,
    ) -> ExecResult:
        """Like ``run``, over one of the box's control channels when one can serve the call.

        A command line runs under /bin/sh (not the login shell), and must not leave a background
        process writing to its stdout or stderr (an exec session would wait for it; the channel
        answers when the script ends). When the channel breaks mid-call, the call is retried once
        over exec if ``idempotent`` (else ``BoxUnreachable``: it may have run); a timeout is never
        retried. Without a usable channel the call simply goes over exec. ``long`` (like
        ``ShellCall.long``) sends a call that may take a while down the long lane. ``timeout``
        covers waiting for a free channel as well as the command.
        """
        call = script if isinstance(script, ShellCall) else None
        entry, _fresh = await self._entry(target)
        lane = entry.long if long or (call is not None and call.long) else entry.short
        foreground = call is not None and call.foreground
        # all long channels busy: exec, so that neither short calls nor this one wait on long-polls
        busy_long = lane is entry.long and lane.permits.locked()
        if not entry.channels_off and not busy_long:
            result = await self._over_channel(target, entry, lane, script, stdin, timeout, call, idempotent)
            if result is not None:
                return result
        if busy_long and not foreground:  # a background long-poll leaves the foreground reserve alone
            left = await _acquire(entry.overflow, timeout, target.where)
            try:
                return await self.run(target, script, stdin=stdin, timeout=left)
            finally:
                entry.overflow.release()
        return await self.run(target, script, stdin=stdin, timeout=timeout)

    async def _over_channel(self, target: SSHTarget, entry: _Entry, lane: _Lane, script: str | ShellCall,
                            stdin: bytes | None, timeout: float | None, call: ShellCall | None,
                            idempotent: bool) -> ExecResult | None:
        """One try over a control channel of ``lane``: its result, or None when no channel could serve the call
        (none usable, or one broke under an idempotent call): the caller then goes over exec."""
        left = await _acquire(lane.permits, timeout, target.where, _wait_budget(call, timeout))
        try:
            channel = await self._take_channel(entry, lane)
            if channel is None:
                return None
            try:
                result = await channel.request(script, stdin or b"", left, target.where)
            except ChannelBroken as exc:
                entry.channels.discard(channel)
                if entry.conn.is_closed():
                    await self._discard(target.key, entry)
                if not idempotent:
                    raise BoxUnreachable(
                        f"the control channel to {target.where} broke mid-call ({exc}); the command "
                        "may or may not have run — check before retrying"
                    ) from exc
                log.info("control channel to %s broke (%s); retrying over exec", target.where, exc)
                return None
            except BaseException:
                entry.channels.discard(channel)
                raise
            lane.idle.append(channel)
            return result
        finally:
            lane.permits.release()

    def channel_pids(self, key: str) -> list[int]:
        """Box-side pids of the open control channels of ``key`` (for tests and diagnostics)."""
        entry = self._entries.get(key)
        return sorted(ch.pid for ch in entry.channels if ch.usable) if entry else []

    async def drop(self, key: str) -> None:
        """Close and forget the connection for ``key`` (the next use reconnects)."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            await _close_entry(entry)

    async def aclose(self) -> None:
        """Close every connection; the pool cannot be used afterwards."""
        self._closed = True
        entries, self._entries = list(self._entries.values()), {}
        await asyncio.gather(*(_close_entry(entry) for entry in entries))
        dialled, self._dialled = list(self._dialled), weakref.WeakSet()
        await asyncio.gather(*(_close(conn) for conn in dialled))

    async def _take_channel(self, entry: _Entry, lane: _Lane) -> Channel | None:
        """An idle channel of ``lane``, else a new one; None when none can be opened (use exec)."""
        while lane.idle:
            channel = lane.idle.pop()
            if channel.usable:
                return channel
            entry.channels.discard(channel)
            channel.close()
        if entry.conn.is_closed():
            return None
        try:
            proc = await entry.conn.create_process(_LOOP_COMMAND, encoding=None)
        except (asyncssh.Error, OSError) as exc:
            log.info("cannot open a control channel to %s (%s); using exec", entry.target.where, _reason(exc))
            return None
        try:
            async with asyncio.timeout(CHANNEL_OPEN_TIMEOUT_S):
                pid = await read_hello(_SSHStream(proc))
        except (TimeoutError, *_channel_errors()) as exc:
            proc.close()
            if not entry.conn.is_closed():
                entry.channels_off = True
                log.warning("%s cannot run a control channel (%s); using exec for it", entry.target.where,
                            _reason(exc) or type(exc).__name__)
            return None
        except BaseException:
            proc.close()
            raise
        channel = Channel(_SSHStream(proc), pid, _channel_errors())
        entry.channels.add(channel)
        return channel

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
                await _close_entry(entry)
            conn = await self._connect(target)
            if self._closed:
                await _close(conn)
                raise RuntimeError("SSHPool is closed")
            execs = self._max_sessions - self._short_channels - self._long_channels
            entry = _Entry(
                target,
                conn,
                asyncio.Semaphore(execs),
                _Lane(asyncio.Semaphore(self._short_channels)),
                _Lane(asyncio.Semaphore(self._long_channels)),
                asyncio.Semaphore(max(1, execs - FOREGROUND_RESERVE)),
                channels_off=self._short_channels == 0,
            )
            self._entries[target.key] = entry
            return entry, True

    async def _discard(self, key: str, entry: _Entry) -> None:
        if self._entries.get(key) is entry:
            del self._entries[key]
        await _close_entry(entry)

    async def _exec(self, entry: _Entry, command: str | ShellCall, stdin: bytes | None,
                    timeout: float | None) -> ExecResult:
        call = command if isinstance(command, ShellCall) else None
        left = await _acquire(entry.sessions, timeout, entry.target.where, _wait_budget(call, timeout))
        if call is not None:
            command = call.command_line()  # after the wait for a session: the deadline's time left is now
        try:
            proc = await entry.conn.create_process(command, encoding=None)
            try:
                if stdin:
                    proc.stdin.write(stdin)
                proc.stdin.write_eof()
                try:
                    stdout, stderr = await asyncio.wait_for(proc.communicate(), left)
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
        finally:
            entry.sessions.release()

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
                    client_factory=_prompt_acks(),
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


@cache
def _prompt_acks() -> type[asyncssh.SSHClient]:
    """The client class (made on first use: it subclasses asyncssh's, loaded lazily)."""

    class _PromptAcks(asyncssh.SSHClient):
        """Acknowledge the server's post-auth messages at once.

        OpenSSH answers auth with small packets (success, debug notes, then its host keys) while
        Nagle is still on for the connection; left to the delayed-ACK timer, the held packets and the
        first session's confirmation wait ~40 ms. Setting TCP_QUICKACK sends the pending ACK now.
        """

        def __init__(self) -> None:
            self._conn: asyncssh.SSHClientConnection | None = None

        def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
            self._conn = conn

        def auth_completed(self) -> None:
            self._ack_now()

        def debug_msg_received(self, msg: str, lang: str, always_display: bool) -> None:
            self._ack_now()

        def _ack_now(self) -> None:
            sock = self._conn.get_extra_info("socket") if self._conn is not None else None
            quickack = getattr(socket, "TCP_QUICKACK", None)  # Linux only
            if sock is not None and quickack is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
                except OSError:
                    pass

    return _PromptAcks


def _is_drop(conn: asyncssh.SSHClientConnection, exc: BaseException) -> bool:
    """The connection is dead, as opposed to the box refusing one more session on a live one."""
    if not isinstance(exc, asyncssh.ChannelOpenError):
        return True
    # asyncssh reports its own closed (or aborting) connection as OPEN_CONNECT_FAILED
    return conn.is_closed() or exc.code == asyncssh.OPEN_CONNECT_FAILED


def _wait_budget(call: ShellCall | None, timeout: float | None) -> float | None:
    """How long a call may wait for a free channel or session: its timeout, and for a call with a deadline
    only until just before the deadline (so that it can still say so in time)."""
    if call is None or call.deadline is None:
        return timeout
    until = max(call.deadline - DEADLINE_MARGIN_S - time.monotonic(), 0.0)
    return until if timeout is None else min(until, timeout)


async def _acquire(slots: asyncio.Semaphore, timeout: float | None, where: str,
                   budget: float | None = None) -> float | None:
    """Take one of ``slots`` within ``budget`` (default: ``timeout``); returns what is left of the timeout (None:
    no limit)."""
    budget = timeout if budget is None else budget
    loop = asyncio.get_running_loop()
    started = loop.time()
    if budget is None:
        await slots.acquire()
    else:
        try:
            async with asyncio.timeout(budget):
                await slots.acquire()
        except TimeoutError as exc:
            raise BoxBusy(
                f"no SSH session to {where} came free within {budget:.3g}s: other commands hold them all; "
                "retry when they have finished"
            ) from exc
    return None if timeout is None else max(timeout - (loop.time() - started), 0.0)


async def _close_entry(entry: _Entry) -> None:
    for channel in entry.channels:
        channel.close()
    entry.channels.clear()
    await _close(entry.conn)


async def _close(conn: asyncssh.SSHClientConnection) -> None:
    conn.close()
    try:
        async with asyncio.timeout(5.0):
            await conn.wait_closed()
    except (TimeoutError, OSError, asyncssh.Error):
        conn.abort()
