"""The TTL reaper: a pure ``ReapPolicy`` (which boxes to burn, when to look again) and the small parts
that act on it (``Reaping.reap_once``) and repeat it (``Reaper``).

Boxes are found through provider labels alone, so the reaper works with the store lost. It never
touches a machine without our owner label, and it looks at a box again under the box's lock before
burning it (an extend may just have saved it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from providers.base import Box, Provider, ProviderError, is_expired, owner_labels
from server.config import Settings
from server.domain.states import BoxStatus
from server.errors import ForgeError
from server.service.boxes import Boxes
from server.service.providers import ProviderSet
from server.service.wakeup import Wakeup
from server.store import Repository

log = logging.getLogger("boxforge.reaper")
EXPIRED = "expired"
ORPHAN = "orphan: creation never finished"


def _earliest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


@dataclass(frozen=True)
class ReapPlan:
    """The boxes to burn, each with why, and when the survivors next need a look (None: no deadline known)."""

    doomed: tuple[tuple[Box, str], ...]
    next_look: float | None


@dataclass(frozen=True)
class ReapPolicy:
    """Which of an owner's boxes must go: expired ones, and ones that never became ready and are past
    their creator's deadline plus ``orphan_grace_s`` (unless a create in this process still owns them)."""

    owner: str
    orphan_grace_s: float

    def why_doomed(self, box: Box, now: float, in_flight: Iterable[str] = ()) -> str | None:
        if box.owner != self.owner:
            return None  # never a machine that is not ours
        if is_expired(box, now):
            return EXPIRED
        if not box.ready and box.request_id not in set(in_flight) and now > box.orphan_at(self.orphan_grace_s):
            return ORPHAN
        return None

    def next_look(self, box: Box) -> float | None:
        """When a surviving box could next become doomed."""
        look = None if box.expires_at is None else float(box.expires_at)
        return look if box.ready else _earliest(look, box.orphan_at(self.orphan_grace_s))

    def plan(self, boxes: Iterable[Box], now: float, in_flight: Iterable[str] = ()) -> ReapPlan:
        creating = set(in_flight)
        doomed: list[tuple[Box, str]] = []
        next_look: float | None = None
        for box in boxes:
            if box.owner != self.owner:
                continue
            why = self.why_doomed(box, now, creating)
            if why is not None:
                doomed.append((box, why))
            else:
                next_look = _earliest(next_look, self.next_look(box))
        return ReapPlan(tuple(doomed), next_look)


def sleep_before_next_pass(next_look: float | None, now: float, *, max_sleep_s: float, min_sleep_s: float) -> float:
    """How long the loop sleeps: until the next known deadline (a little after), within the bounds."""
    if next_look is None:
        return max_sleep_s
    return min(max_sleep_s, max(min_sleep_s, next_look - now + 0.05))


class Reaping:
    """One reap pass over every swept provider: list by owner label, plan, burn what the plan says."""

    def __init__(self, settings: Settings, repo: Repository, providers: ProviderSet, boxes: Boxes,
                 in_flight: set[str]) -> None:
        self.repo = repo
        self.providers = providers
        self.boxes = boxes
        self.in_flight = in_flight
        self.policy = ReapPolicy(settings.owner, settings.orphan_grace_s)
        self.owner = settings.owner

    async def reap_once(self) -> tuple[list[str], float | None]:
        """Destroy this owner's doomed boxes; the names burned and when to look again."""
        now = time.time()
        burned: list[str] = []
        next_look: float | None = None
        recs = await self.repo.live_boxes()
        for provider_name in self.providers.swept(r.provider for r in recs):
            try:
                prov = self.providers.get(provider_name)
                found = await prov.list(owner_labels(self.owner))
            except (ProviderError, ForgeError):
                continue  # a provider that cannot answer now is looked at next pass
            plan = self.policy.plan(found, now, self.in_flight)
            next_look = _earliest(next_look, plan.next_look)
            for box, _ in plan.doomed:
                if await self._burn(prov, box):
                    burned.append(box.name)
        await self.boxes.reconcile()
        return burned, next_look

    async def _burn(self, prov: Provider, box: Box) -> bool:
        rec = await self.repo.box_by_request(box.request_id) if box.request_id else None
        try:
            async with self.boxes.lock(box.name):
                current = await prov.get(box.id)  # again under the lock: an extend may just have saved it
                why = None if current is None else self.policy.why_doomed(current, time.time(), self.in_flight)
                if why is None:
                    return False
                said = None
                if why == EXPIRED and rec is not None and rec.state == BoxStatus.READY:
                    # Harvest first, within its time limit; the TTL burns the box whatever the harvest says.
                    _, said = await self.boxes.harvester.before_burn(rec, "ttl")
                await self.boxes.destroy_box(prov, rec, box.id)
        except (ForgeError, ProviderError):
            return False
        if rec is not None:
            await self.repo.end_box(rec.request_id, BoxStatus.DESTROYED, error=why + (f"; work {said}" if said else ""))
        await self.repo.add_event("reap", box_name=box.name, detail=f"{box.id}: {why}" + (f"; {said}" if said else ""))
        return True


class Reaper:
    """The loop: a pass, then sleep until the next known deadline (at most ``max_sleep_s``, to notice boxes
    made by other orchestrators of the owner), or until a create or extend here rings the wakeup."""

    def __init__(self, reaping: Reaping, wakeup: Wakeup, *, max_sleep_s: float = 30.0,
                 min_sleep_s: float = 0.2) -> None:
        self.reaping = reaping
        self.wakeup = wakeup
        self.max_sleep_s = max_sleep_s
        self.min_sleep_s = min_sleep_s

    def wake(self) -> None:
        self.wakeup.ring()

    async def run_once(self) -> list[str]:
        burned, _ = await self.reaping.reap_once()
        return burned

    async def run_forever(self) -> None:
        while True:
            self.wakeup.arm()  # before the pass, so a ring during it is not lost
            try:
                burned, next_look = await self.reaping.reap_once()
            except Exception:  # the reaper must outlive any one bad pass
                log.exception("reaper pass failed")
                burned, next_look = [], None
            for name in burned:
                log.info("reaped expired box %s", name)
            await self.wakeup.wait(sleep_before_next_pass(next_look, time.time(), max_sleep_s=self.max_sleep_s,
                                                          min_sleep_s=self.min_sleep_s))
