"""The control-channel client, over any duplex byte stream to a box's shell (an SSH session, a
local subprocess, ``docker exec -i``): the box runs ``server/onbox/sh/channel.sh``; this side sends
framed requests and reads framed answers (the framing is described in ``server.ssh``).

A ``Channel`` serves one request at a time and is closed on any failure, since it would be out of
step; the caller decides whether to retry (``retry.reconnect_once``)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from server.errors import BoxTimeout
from server.transport.types import ExecResult, ShellCall

CHANNEL_HELLO = b"BOXFORGE-CHANNEL 1 "
CHANNEL_OPEN_TIMEOUT_S = 10.0
# private assignments up to this size go in-band, read a byte at a time by the loop's builtin ``read``
PRIVATE_INLINE_MAX = 8192
STREAM_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, asyncio.IncompleteReadError)


class Stream(Protocol):
    """The box shell's stdin and stdout, as a channel needs them."""

    @property
    def usable(self) -> bool: ...
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def write_eof(self) -> None: ...
    async def readline(self) -> bytes: ...
    async def readexactly(self, n: int) -> bytes: ...
    def close(self) -> None: ...


class ChannelBroken(Exception):
    """The channel died or answered out of step; the call may or may not have run."""


async def read_hello(stream: Stream) -> int:
    """The pid in the loop's hello line, skipping anything a login shell printed before it."""
    for _ in range(100):
        line = await stream.readline()
        if not line.endswith(b"\n"):
            raise EOFError("the channel loop ended before saying hello")
        if line.startswith(CHANNEL_HELLO) and line[len(CHANNEL_HELLO):].strip().isdigit():
            return int(line[len(CHANNEL_HELLO):])
    raise EOFError("no hello from the channel loop")


def reason(exc: BaseException) -> str:
    text = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return str(text).strip()


class Channel:
    """One control channel: ``channel.sh`` running on the box behind ``stream``."""

    def __init__(self, stream: Stream, pid: int, errors: tuple[type[BaseException], ...] = STREAM_ERRORS) -> None:
        self.stream = stream
        self.pid = pid
        self._errors = errors  # what a broken stream raises (asyncssh adds its own)
        self._libraries: set[str] = set()
        self._seq = 0

    @property
    def usable(self) -> bool:
        return self.stream.usable

    def close(self) -> None:
        """End the channel; with EOF first, so the box-side loop cleans up and exits by itself."""
        try:
            if self.stream.usable:
                self.stream.write_eof()
        except self._errors:
            pass
        self.stream.close()

    async def request(self, script: str | ShellCall, stdin: bytes, timeout: float | None, where: str) -> ExecResult:
        """One call; the channel is closed on any failure (it would be out of step)."""
        try:
            data, sent = self._frame(script, stdin)
            try:
                self.stream.write(data)
                async with asyncio.timeout(timeout):
                    await self.stream.drain()
                    for seq in sent:
                        result = await self._response(seq)
            except TimeoutError as exc:
                raise BoxTimeout(
                    f"a command on {where} did not finish within {timeout:g}s; "
                    "the box may be overloaded or the command stuck"
                ) from exc
            except self._errors as exc:
                raise ChannelBroken(reason(exc)) from exc
            if isinstance(script, ShellCall):
                self._libraries.add(script.library)
            return result
        except BaseException:
            self.close()
            raise

    def _frame(self, script: str | ShellCall, stdin: bytes) -> tuple[bytes, list[int]]:
        sent = []
        data = bytearray()
        if isinstance(script, ShellCall):
            script = script.at()  # a deadline's time left, as of now
            if "\n" in script.call:
                raise ValueError("a ShellCall's call must be one line")
            if script.library not in self._libraries:
                library = script.library.encode()
                data += self._header("L", len(library), 0) + library
                sent.append(self._seq)
            if script.private and len(script.private) <= PRIVATE_INLINE_MAX:
                # the assignments as lines the loop reads with its builtin, instead of a stdin pipe
                private = script.private.encode()
                data += self._header("T", private.count(b"\n"), 0) + private + script.call.encode() + b"\n"
            elif script.private:
                call = 'eval "$(cat)"; ' + script.call
                data += self._header("T", 0, len(script.stdin)) + call.encode() + b"\n" + script.stdin
            else:
                data += self._header("T", 0, len(stdin)) + script.call.encode() + b"\n" + stdin
        else:
            body = script.encode()
            data += self._header("B", len(body), len(stdin)) + body + stdin
        sent.append(self._seq)
        return bytes(data), sent

    def _header(self, kind: str, script_len: int, stdin_len: int) -> bytes:
        self._seq += 1
        return f"{self._seq} {kind} {script_len} {stdin_len}\n".encode()

    async def _response(self, seq: int) -> ExecResult:
        line = await self.stream.readline()
        fields = line.split()
        if not line.endswith(b"\n") or len(fields) != 5 or not all(f.isdigit() for f in fields):
            raise ChannelBroken("the channel ended" if not line else "the channel answered out of step")
        got, status, text_len, bin_len, err_len = (int(f) for f in fields)
        if got != seq:
            raise ChannelBroken("the channel answered out of step")
        size = text_len + bin_len + err_len
        payload = await self.stream.readexactly(size) if size else b""
        out = text_len + bin_len
        return ExecResult(status, payload[:out], payload[out:])
