"""Box lifecycle after the create: find, describe, list, extend and destroy boxes; reconcile the store
with what the providers still have."""

from __future__ import annotations

import time

import anyio

from providers.base import LABEL_EXPIRES_AT, LABEL_REQUEST, Box, Provider, ProviderError, owner_labels
from providers.capabilities import HasBackstop
from server.config import Settings
from server.domain.durations import check_ttl_within, iso
from server.domain.hints import Hint, HintKind
from server.domain.states import BoxStatus
from server.errors import ForgeError, InvalidInput, NotOwned, ProviderFailure, UnknownServer
from server.schemas import DestroyResult, ServerInfo, ServerList
from server.service.access import BoxAccess
from server.service.git import Harvester
from server.service.providers import ProviderSet
from server.service.secrets import Secrets
from server.service.views import server_info
from server.service.wakeup import Wakeup
from server.store import BoxRecord, Repository

FAILED_SHOWN_S = 3600.0  # list_servers shows creates that failed this recently


class Boxes:
    def __init__(self, settings: Settings, repo: Repository, providers: ProviderSet, access: BoxAccess,
                 secrets: Secrets, wakeup: Wakeup, in_flight: set[str], harvester: Harvester) -> None:
        self.settings = settings
        self.harvester = harvester  # brings a box's work home before any burn
        self.repo = repo
        self.providers = providers
        self.access = access
        self.secrets = secrets
        self.wakeup = wakeup
        self.in_flight = in_flight  # request ids of creates running in this process
        self._locks: dict[str, anyio.Lock] = {}

    def lock(self, name: str) -> anyio.Lock:
        return self._locks.setdefault(name, anyio.Lock())

    def info(self, rec: BoxRecord, now: float | None = None) -> ServerInfo:
        try:
            prov: Provider | None = self.providers.get(rec.provider)
        except ForgeError:
            prov = None  # a provider unavailable here still lets its records be shown
        return server_info(rec, prov, now, self.settings.expiry_warn_s)

    async def live(self, name: str) -> BoxRecord:
        rec = await self.repo.live_box(name)
        if rec is None:
            names = await self.repo.live_names()
            raise UnknownServer(f"unknown server {name!r}; live servers: {', '.join(names) if names else 'none'}",
                                hint=None if names else Hint(HintKind.NO_BOXES))
        return rec

    async def ready(self, name: str) -> BoxRecord:
        rec = await self.live(name)
        if rec.state != BoxStatus.READY:
            raise ForgeError(f"server {name!r} is still provisioning (step: {rec.step}); try again shortly")
        if rec.expires_at <= time.time():
            raise ForgeError(f"server {name!r} has expired and is being burned; create a new one")
        return rec

    def check_owner(self, name: str, box: Box | None) -> None:
        """Refuse to act on a machine whose labels name another owner (a shared cloud project)."""
        if box is not None and box.owner != self.settings.owner:
            raise NotOwned(f"server {name!r} ({box.id}) carries owner label {box.owner!r}, not this orchestrator's "
                           f"{self.settings.owner!r}; boxforge only touches its own machines")

    async def forget(self, rec: BoxRecord) -> None:
        """A box has ended: drop its keys and what this process remembered of it."""
        self.secrets.forget(rec)
        await self.access.forget(rec)

    async def destroy_box(self, prov: Provider, rec: BoxRecord | None, box_id: str | None) -> None:
        """Destroy the machine at the provider and forget it; the record's state is the caller's to set."""
        if rec is not None:
            await self.access.drop(rec.name)
            box_id = box_id or rec.box_id
            if box_id is None:  # create may have reached the provider before we learned the id
                found = await prov.list({LABEL_REQUEST: rec.request_id})
                box_id = found[0].id if found else None
        if box_id is not None:
            try:
                await prov.destroy(box_id)
            except ProviderError as exc:
                raise ProviderFailure(f"could not destroy box {box_id}: {exc}; the reaper will retry") from exc
        if rec is not None:
            await self.forget(rec)

    async def destroy_server(self, name: str, *, harvest: bool = True) -> DestroyResult:
        """Burn a box, first bringing home what has not come home (unless ``harvest`` is false). A harvest
        that fails (box unreachable, repo gone on the box) refuses the burn: nothing is lost by accident."""
        async with self.lock(name):  # a fetch in progress finishes first
            rec = await self.repo.live_box(name)
            if rec is None:
                return DestroyResult(name=name, destroyed=False,
                                     message=f"no live server named {name!r}; nothing to burn")
            prov = self.providers.get(rec.provider)
            if rec.box_id is not None:
                self.check_owner(name, await prov.get(rec.box_id))
            harvested, said = (None, "harvest skipped (harvest=false)")
            if harvest and rec.state == BoxStatus.READY:
                harvested, said = await self.harvester.before_burn(rec, "destroy")
                if harvested is False:
                    raise ForgeError(f"server {name!r} was not burned: its work could not be brought home: {said}",
                                     hint=Hint(HintKind.BURN_UNHARVESTED, server=name))
            await self.destroy_box(prov, rec, rec.box_id)
            await self.repo.end_box(rec.request_id, BoxStatus.DESTROYED)
            await self.repo.add_event("destroy", box_name=name, detail=said)
        message = f"server {name!r} burned" + (f"; its work {said}" if harvested else "")
        return DestroyResult(name=name, destroyed=True, message=message, harvested=harvested,
                             harvest=said if harvested is not None or not harvest else None)

    async def extend_server(self, name: str, ttl_s: int) -> ServerInfo:
        """Set the box to expire ``ttl_s`` from now (its label, and its own backstop where it has one)."""
        refused = check_ttl_within(ttl_s, self.settings.max_ttl_s)
        if refused:
            raise InvalidInput(refused)
        async with self.lock(name):
            rec = await self.ready(name)
            prov = self.providers.get(rec.provider)
            box = await prov.get(rec.box_id) if rec.box_id else None
            if box is None:
                raise UnknownServer(f"server {name!r} is gone (expired or destroyed outside boxforge)")
            self.check_owner(name, box)
            expires_at = int(time.time() + ttl_s)
            try:
                await prov.set_labels(box.id, {**box.labels, LABEL_EXPIRES_AT: str(expires_at)})
            except ProviderError as exc:
                raise ProviderFailure(f"could not extend {name!r}: {exc}") from exc
            await self.repo.update_box(rec.request_id, expires_at=float(expires_at))
            await self.repo.add_event("extend", box_name=name, detail=str(ttl_s))
            moved = not isinstance(prov, HasBackstop) or await self.access.call(
                rec, prov.backstop_move(box, expires_at))
        self.wakeup.ring()
        info = self.info(await self.live(name))
        if not moved:
            info.suggest("warning", Hint(HintKind.EXTEND_AGAIN, server=name),
                         prefix="the expiry label was pushed, but the box could not be reached to move its own "
                                "power-off backstop; ")
        return info

    async def list_servers(self) -> ServerList:
        """Live boxes, each probed over SSH (in parallel) so unreachable ones show with their last-seen time."""
        await self.reconcile()
        recs = await self.repo.live_boxes()
        reachable: dict[str, bool] = {}

        async def probe(rec: BoxRecord) -> None:
            reachable[rec.name] = await self.access.answers(rec)

        async with anyio.create_task_group() as tg:
            for rec in recs:
                if rec.state == BoxStatus.READY:
                    tg.start_soon(probe, rec)
        now = time.time()
        infos = [self._probed(self.info(rec, now), reachable.get(rec.name)) for rec in recs]
        failed = await self.repo.failed_since(now - FAILED_SHOWN_S)
        return ServerList(servers=infos, count=len(infos), failed=[self.info(r, now) for r in failed])

    def _probed(self, info: ServerInfo, reachable: bool | None) -> ServerInfo:
        info.reachable = reachable
        if reachable is False:
            info.last_seen = iso(self.access.last_seen(info.name))
            info.say("warning", f"not answering over SSH (last seen {info.last_seen or 'never by this process'}); "
                                "boxforge reconnects when it answers again")
        return info

    async def reconcile(self) -> None:
        """Mark ready boxes the provider no longer has (burned by a box-side watchdog, say) as destroyed,
        and provisioning records whose create died with its process as failed."""
        recs = await self.repo.live_boxes()
        for provider_name in {r.provider for r in recs}:
            try:
                alive = {b.id for b in await self.providers.get(provider_name).list(owner_labels(self.settings.owner))}
            except (ProviderError, ForgeError):
                continue  # a provider that cannot answer now tells nothing about its boxes
            for rec in recs:
                if rec.provider == provider_name and rec.box_id not in alive:
                    await self._reconcile_gone(rec)

    async def _reconcile_gone(self, rec: BoxRecord) -> None:
        if rec.state == BoxStatus.READY:
            await self.access.drop(rec.name)
            await self.repo.update_box(rec.request_id, state=BoxStatus.DESTROYED, destroyed_at=time.time(),
                                       error="gone at the provider (expired or removed)")
            await self.forget(rec)
        elif self._abandoned(rec):
            await self.repo.end_box(rec.request_id, BoxStatus.FAILED,
                                    error="creation was interrupted (orchestrator stopped)")
            await self.forget(rec)

    def _abandoned(self, rec: BoxRecord) -> bool:
        """A provisioning record no running create owns: its process died mid-create."""
        return (rec.state == BoxStatus.PROVISIONING and rec.request_id not in self.in_flight
                and time.time() - rec.created_at > self.settings.orphan_grace_s)
