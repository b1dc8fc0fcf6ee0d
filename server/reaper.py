"""The TTL reaper: burns this owner's expired boxes, found through provider labels alone.

It sleeps until the next known expiry (or at most ``max_sleep_s``, to notice boxes made
by other orchestrators sharing the owner), and wakes early when a box is created or
extended in this process. It never touches a machine without our owner label: the
fleet's ``reap_once`` lists by owner label and checks it again before destroying.
"""

from __future__ import annotations

import logging
import time

import anyio

from server.fleet import Fleet

log = logging.getLogger("boxforge.reaper")


class Reaper:
    def __init__(self, fleet: Fleet, *, max_sleep_s: float = 30.0, min_sleep_s: float = 0.2) -> None:
        self.fleet = fleet
        self.max_sleep_s = max_sleep_s
        self.min_sleep_s = min_sleep_s
        self._wake = anyio.Event()
        fleet.on_schedule_change = self.wake

    def wake(self) -> None:
        self._wake.set()

    async def run_once(self) -> list[str]:
        burned, _ = await self.fleet.reap_once()
        return burned

    async def run_forever(self) -> None:
        while True:
            self._wake = anyio.Event()  # before the pass, so a wake() during it is not lost
            try:
                burned, next_expiry = await self.fleet.reap_once()
            except Exception:  # the reaper must outlive any one bad pass
                log.exception("reaper pass failed")
                burned, next_expiry = [], None
            for name in burned:
                log.info("reaped expired box %s", name)
            sleep = self.max_sleep_s
            if next_expiry is not None:
                sleep = min(sleep, max(self.min_sleep_s, next_expiry - time.time() + 0.05))
            with anyio.move_on_after(sleep):
                await self._wake.wait()
