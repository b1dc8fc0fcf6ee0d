"""The reaper's alarm clock: creates and extends in this process ring it so the reaper looks again now."""

from __future__ import annotations

import anyio


class Wakeup:
    """A wake-up that is never lost: ``arm`` before a pass, ``ring`` at any time, ``wait`` after the pass."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def arm(self) -> None:
        self._event = anyio.Event()

    def ring(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            await self._event.wait()
