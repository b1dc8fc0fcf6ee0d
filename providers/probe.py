"""Helpers every provider may use, with no provider behind them: is an SSH server answering there?"""

from __future__ import annotations

import anyio


async def probe_ssh(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when ``host:port`` accepts a TCP connection and greets with an SSH banner."""
    try:
        with anyio.fail_after(timeout):
            async with await anyio.connect_tcp(host, port) as stream:
                data = b""
                while b"\n" not in data and len(data) < 256:
                    data += await stream.receive(256)
                # Identify ourselves too, so sshd does not log every probe as an error.
                await stream.send(b"SSH-2.0-boxforge-probe\r\n")
                return data.startswith(b"SSH-")
    except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError):
        return False
