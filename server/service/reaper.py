"""The TTL reaper: a pure ``ReapPolicy`` (which boxes to burn, when to look again) and the small parts
that act on it (``Reaping.reap_once``) and repeat it (``Reaper``).

Boxes are found through provider labels alone, so the reaper works with the store lost. It never
touches a machine without our owner label, and it looks at a box again under the box's lock before
burning it (an extend may just have saved it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import anyio

from providers.base import LABEL_EXPIRES_AT, Box, Provider, ProviderError, owner_labels
from providers.capabilities import HasBackstop
from server import jobs
from server.config import Settings
from server.domain.durations import iso
from server.domain.states import BoxStatus, JobState
from server.errors import ForgeError
from server.service.boxes import Boxes
from server.service.providers import ProviderSet
from server.service.wakeup import Wakeup
from server.store import BoxRecord, Repository

log = logging.getLogger("boxforge.reaper")
EXPIRED = "expired"
ORPHAN = "orphan: creation never finished"
NOT_WORK_KINDS = ("bootstrap", "setup", "service")  # services run for ever: they never keep a box alive


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
    max_ttl_s: float | None = None

    def expires_at(self, box: Box, recorded: Mapping[str, float] | None = None) -> float | None:
        """When the box expires: the earlier of its label and the reaper's own record (the store, which only
        create and extend_server move); without a record, at most ``max_ttl_s`` from the provider's creation
        time. A label moved into the future by anything else buys nothing."""
        label = None if box.expires_at is None else float(box.expires_at)
        own = (recorded or {}).get(box.request_id or "")
        if own is None and self.max_ttl_s is not None:
            own = box.created_at + self.max_ttl_s
        return _earliest(label, own)

    def why_doomed(self, box: Box, now: float, in_flight: Iterable[str] = (),
                   recorded: Mapping[str, float] | None = None) -> str | None:
        if box.owner != self.owner:
            return None  # never a machine that is not ours
        expires_at = self.expires_at(box, recorded)
        if expires_at is not None and expires_at <= now:
            return EXPIRED
        if not box.ready and box.request_id not in set(in_flight) and now > box.orphan_at(self.orphan_grace_s):
            return ORPHAN
        return None

    def next_look(self, box: Box, recorded: Mapping[str, float] | None = None) -> float | None:
        """When a surviving box could next become doomed."""
        look = self.expires_at(box, recorded)
        return look if box.ready else _earliest(look, box.orphan_at(self.orphan_grace_s))

    def plan(self, boxes: Iterable[Box], now: float, in_flight: Iterable[str] = (),
             recorded: Mapping[str, float] | None = None) -> ReapPlan:
        creating = set(in_flight)
        doomed: list[tuple[Box, str]] = []
        next_look: float | None = None
        for box in boxes:
            if box.owner != self.owner:
                continue
            why = self.why_doomed(box, now, creating, recorded)
            if why is not None:
                doomed.append((box, why))
            else:
                next_look = _earliest(next_look, self.next_look(box, recorded))
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
        self.settings = settings
        self.repo = repo
        self.providers = providers
        self.boxes = boxes
        self.in_flight = in_flight
        self.policy = ReapPolicy(settings.owner, settings.orphan_grace_s,
                                 max(settings.max_ttl_s, settings.auto_extend_max_ttl_s if settings.auto_extend else 0))
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
            plan = self.policy.plan(found, now, self.in_flight, {r.request_id: r.expires_at for r in recs})
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
                rec, current, why = await self._verdict(prov, box, rec)
                if why is None:
                    return False
                if why == EXPIRED and rec is not None and current is not None and \
                        await self._extend_for_job(prov, current, rec):
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


    async def _verdict(self, prov: Provider, box: Box,
                       rec: BoxRecord | None) -> tuple[BoxRecord | None, Box | None, str | None]:
        """Look again under the box's lock (an extend may just have saved it): (record, box, why doomed)."""
        current = await prov.get(box.id)
        if box.request_id:
            rec = await self.repo.box_by_request(box.request_id)
        recorded = {rec.request_id: rec.expires_at} if rec is not None and rec.live else None
        why = None if current is None else self.policy.why_doomed(current, time.time(), self.in_flight, recorded)
        return rec, current, why

    async def _extend_for_job(self, prov: Provider, box: Box, rec: BoxRecord) -> bool:
        """A box whose command or agent job still runs at its expiry gets ``auto_extend_step_s`` more, up to
        ``auto_extend_max_ttl_s`` from its creation; recorded in the event log. Whether it was extended."""
        ceiling = rec.created_at + self.settings.auto_extend_max_ttl_s
        now = time.time()
        if not self.settings.auto_extend or now >= ceiling or rec.state != BoxStatus.READY:
            return False
        running = [j for j in await self.repo.jobs_of_box(rec.request_id)
                   if j.state == JobState.RUNNING and j.kind not in NOT_WORK_KINDS]
        alive = None
        for job in running:  # the store may lag: ask the box
            try:
                with anyio.fail_after(self.settings.probe_timeout_s):
                    st = await jobs.status(self.boxes.access.exec(rec), job.job_id, stdout_offset=1 << 40,
                                           stderr_offset=1 << 40, max_bytes=0)
            except (ForgeError, TimeoutError):
                continue
            if st.state == JobState.RUNNING:
                alive = job.job_id
                break
        if alive is None:
            return False
        expires_at = int(min(now + self.settings.auto_extend_step_s, ceiling))
        try:
            await prov.set_labels(box.id, {**box.labels, LABEL_EXPIRES_AT: str(expires_at)})
        except ProviderError:
            return False
        await self.repo.update_box(rec.request_id, expires_at=float(expires_at))
        await self.repo.merge_data(rec.request_id, auto_extended=f"{iso(expires_at)} (job {alive} was running)")
        if isinstance(prov, HasBackstop):
            await self.boxes.access.call(rec, prov.backstop_move(box, expires_at))
        await self.repo.add_event("auto-extend", box_name=rec.name, job_id=alive,
                                  detail=f"job {alive} still running: expires at {iso(expires_at)}"
                                         + (" (the max_ttl ceiling)" if expires_at >= int(ceiling) else ""))
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
