"""A transport over a local process whose stdin and stdout are a shell on the box: ``sh`` itself
(tests, a box that is this machine), ``docker exec -i ID sh``, ``kubectl exec -i POD -- sh``.

Every call goes over a control channel (``channel.sh`` started in that shell, then framed
requests), so stdin stays binary safe and a call costs no process start once a channel is idle.
A channel that breaks mid-call is replaced and the call tried once more (``reconnect_once``) when
it is safe to repeat; a timeout is never retried."""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Mapping, Sequence

from server.errors import BoxUnreachable
from server.onbox import scripts
from server.transport.channel import CHANNEL_OPEN_TIMEOUT_S, Channel, ChannelBroken, read_hello, reason
from server.transport.retry import Reconnect, reconnect_once
from server.transport.types import ExecResult, ShellCall

_START = ("exec /bin/sh -c " + shlex.quote(scripts.text("channel.sh")) + "\n").encode()


class _ProcessStream:
    """A subprocess's stdin and stdout, as ``transport.channel.Stream``."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self._in, self._out = proc.stdin, proc.stdout

    @property
    def usable(self) -> bool:
        return self.proc.returncode is None and not self._in.is_closing()

    def write(self, data: bytes) -> None:
        self._in.write(data)

    async def drain(self) -> None:
        await self._in.drain()

    def write_eof(self) -> None:
        self._in.write_eof()

    async def readline(self) -> bytes:
        return await self._out.readline()

    async def readexactly(self, n: int) -> bytes:
        return await self._out.readexactly(n)

    def close(self) -> None:
        """EOF on the shell's stdin: the loop ends by itself (``ProcessExec.aclose`` reaps it)."""
        if not self._in.is_closing():
            self._in.close()


class ProcessExec:
    """A ``BoxExec`` over ``argv`` (a shell reading stdin): ``await ex(script, stdin, timeout)``.

    ``env`` is added to the local process only (never forwarded into the box). Up to ``channels``
    calls run at once, each on its own channel. Close it with ``aclose``."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, where: str = "the box",
                 channels: int = 2) -> None:
        self.argv = tuple(argv)
        self.env = {**os.environ, **(env or {})}
        self.where = where
        self._slots = asyncio.Semaphore(channels)
        self._idle: list[Channel] = []
        self._open: set[Channel] = set()
        self._procs: set[asyncio.subprocess.Process] = set()

    async def __call__(self, script: str, stdin: bytes | None = None, timeout: float | None = None,
                       *, idempotent: bool = True) -> ExecResult:
        call: str | ShellCall = getattr(script, "shell_call", script)

        async def attempt(retrying: bool) -> ExecResult:
            channel = await self._take()
            try:
                result = await channel.request(call, stdin or b"", timeout, self.where)
            except ChannelBroken as exc:
                self._open.discard(channel)
                broken = BoxUnreachable(f"the shell on {self.where} went away mid-call ({exc}); "
                                        + ("retry" if idempotent else "the command may or may not have run"))
                if retrying or not idempotent:
                    raise broken from exc
                raise Reconnect(broken) from exc
            except BaseException:
                self._open.discard(channel)
                raise
            self._idle.append(channel)
            return result

        async with self._slots:
            return await reconnect_once(attempt, f"the shell on {self.where}")

    def channel_pids(self) -> list[int]:
        """Box-side pids of the open channels (for tests and diagnostics)."""
        return sorted(ch.pid for ch in self._open if ch.usable)

    async def _take(self) -> Channel:
        while self._idle:
            channel = self._idle.pop()
            if channel.usable:
                return channel
            self._open.discard(channel)
            channel.close()
        try:
            proc = await asyncio.create_subprocess_exec(*self.argv, stdin=asyncio.subprocess.PIPE,
                                                        stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.DEVNULL, env=self.env)
        except OSError as exc:
            raise BoxUnreachable(f"cannot start {self.argv[0]!r} to reach {self.where}: {reason(exc)}") from exc
        self._procs.add(proc)
        stream = _ProcessStream(proc)
        try:
            stream.write(_START)
            async with asyncio.timeout(CHANNEL_OPEN_TIMEOUT_S):
                await stream.drain()
                pid = await read_hello(stream)
        except (TimeoutError, OSError, EOFError, asyncio.IncompleteReadError) as exc:
            stream.close()
            raise BoxUnreachable(f"{self.where} did not start a shell channel ({reason(exc)}); "
                                 "check that the box is running") from exc
        channel = Channel(stream, pid)
        self._open.add(channel)
        return channel

    async def aclose(self, grace_s: float = 5.0) -> None:
        """Close every channel (EOF: each box-side loop cleans up and exits), then reap the local
        processes, killing those that did not end within ``grace_s`` (a call that timed out)."""
        for channel in [*self._open, *self._idle]:
            channel.close()
        self._open.clear()
        self._idle = []
        procs, self._procs = list(self._procs), set()
        for proc in procs:
            if isinstance(proc.stdin, asyncio.StreamWriter) and not proc.stdin.is_closing():
                proc.stdin.close()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()
