"""Box lifecycle after the create: find, describe, list, extend and destroy boxes; reconcile the store
with what the providers still have."""

from __future__ import annotations

import logging
import posixpath
import sqlite3
import time

import anyio

from providers.base import LABEL_EXPIRES_AT, LABEL_NAME, LABEL_READY, LABEL_REQUEST, Box, Provider, ProviderError, owner_labels
from providers.capabilities import HasBackstop, OnboxCall
from server.config import Settings
from server.domain.durations import check_ttl_within, format_duration, iso
from server.domain.hints import Hint, HintKind
from server.domain.states import BoxStatus
from server.errors import ForgeError, InvalidInput, NotOwned, ProviderFailure, UnknownServer
from server.schemas import DestroyResult, ServerInfo, ServerList
from server.service.access import BoxAccess
from server.service import onbox
from server.service.creators import CREATOR, creator_alive
from server.service.harvest import Harvester
from server.service.providers import ProviderSet
from server.service.secrets import Secrets
from server.service.views import server_info
from server.service.wakeup import Wakeup
from server.store import BoxRecord, Repository

log = logging.getLogger("boxforge.fleet")
FAILED_SHOWN_S = 3600.0
POOL_DATA = "pool"  # key of BoxRecord.data: a warm pool's waiting box (server/service/pool.py)
LABEL_POOL = "boxforge-pool"  # its schedule label: the profile it waits in (dropped when a create takes it)
REBUILT = "rebuilt"  # key of BoxRecord.data: the record was rebuilt from provider labels
HOME_PROBE = OnboxCall("home.sh")  # list_servers shows creates that failed this recently


def ended_text(rec: BoxRecord, harvest: dict[str, object] | None, now: float) -> str:
    """What became of a box that is no longer live: expired or burned (when), its work harvested or not, or
    its create failed."""
    name = rec.name
    ended_at = rec.destroyed_at or rec.expires_at
    when = f"{iso(ended_at)} ({format_duration(now - ended_at)} ago)"
    if rec.state == BoxStatus.FAILED:
        return f"server {name!r} failed to create ({when}): {rec.error or 'no reason recorded'}; it was burned"
    expired = rec.expires_at <= ended_at + 1
    head = (f"server {name!r} expired at {iso(rec.expires_at)} ({format_duration(now - rec.expires_at)} ago) and "
            f"was burned" if expired else f"server {name!r} was burned at {when}")
    if harvest is None:
        work = ("it had no repo to bring home" if rec.repo is None and rec.base_commit is None
                else "its work was not harvested before the burn (no orchestrator was there to do it)")
    elif harvest["kind"] == "harvest":
        detail = str(harvest["detail"] or "")
        work = "its work " + detail.split(": ", 1)[-1]
    else:
        work = f"its work was NOT harvested: {str(harvest['detail'] or '').split(': ', 1)[-1]}"
    return f"{head}; {work}"


def _pool_data(box: Box) -> dict[str, str]:
    """A warm pool's waiting box stays in its pool when the store is rebuilt (its pool label says which)."""
    profile = box.labels.get(LABEL_POOL)
    return {POOL_DATA: profile} if profile else {}


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
        info = server_info(rec, prov, now, self.settings.expiry_warn_s)
        if rec.live:
            info.forwards = self.access.forwards.known(rec.name) or None
        return info

    async def live(self, name: str) -> BoxRecord:
        rec = await self.repo.live_box(name)
        if rec is None:
            names = await self.repo.live_names()
            ended = await self.repo.last_ended_box(name)
            said = ended_text(*ended, time.time()) if ended else f"unknown server {name!r}"
            raise UnknownServer(f"{said}; live servers: {', '.join(names) if names else 'none'}",
                                hint=None if names else Hint(HintKind.NO_BOXES))
        return rec

    async def ready(self, name: str) -> BoxRecord:
        rec = await self.live(name)
        if rec.state != BoxStatus.READY:
            raise ForgeError(f"server {name!r} is still provisioning (step: {rec.step}); try again shortly")
        now = time.time()
        if rec.expires_at <= now:
            raise ForgeError(f"server {name!r} expired at {iso(rec.expires_at)} "
                             f"({format_duration(now - rec.expires_at)} ago) and is being burned (its work harvested "
                             "first); create a new one")
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

    async def extend_server(self, name: str, ttl_s: int, *, shorten: bool = True) -> ServerInfo:
        """Set the box to expire ``ttl_s`` from now (its label, and its own backstop where it has one). With
        ``shorten`` false, a TTL that would bring the expiry earlier is refused."""
        refused = check_ttl_within(ttl_s, self.settings.max_ttl_s)
        if refused:
            raise InvalidInput(refused)
        async with self.lock(name):
            rec = await self.ready(name)
            left = rec.expires_at - time.time()
            if not shorten and ttl_s < left:
                raise InvalidInput(f"server {name!r} expires in {format_duration(left)} ({iso(rec.expires_at)}); "
                                   f"a ttl of {format_duration(ttl_s)} from now would shorten that: give a longer "
                                   "ttl, or add --shorten to bring the expiry earlier")
            prov = self.providers.get(rec.provider)
            box = await prov.get(rec.box_id) if rec.box_id else None
            if box is None:
                raise UnknownServer(f"server {name!r} is gone (expired or destroyed outside boxforge)")
            self.check_owner(name, box)
            expires_at = int(time.time() + ttl_s)
            # the store first: the reaper (here or in another process) takes the earlier of store and label
            await self.repo.update_box(rec.request_id, expires_at=float(expires_at))
            try:
                await prov.set_labels(box.id, {**box.labels, LABEL_EXPIRES_AT: str(expires_at)})
            except ProviderError as exc:
                await self.repo.update_box(rec.request_id, expires_at=rec.expires_at)
                raise ProviderFailure(f"could not extend {name!r}: {exc}") from exc
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
        recs = [r for r in await self.repo.live_boxes() if not (r.data or {}).get(POOL_DATA)]  # not the user's yet
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

    async def rebuild_from_labels(self) -> list[str]:
        """A fresh store (lost, emptied or moved aside): record every ready box of ours the providers have and
        the store does not know, from its labels (name, request, expiry) and the keys still in the keys dir.
        The names rebuilt. A box not ready yet is left to the orphan sweep."""
        rebuilt = []
        for provider_name in self.providers.swept([]):
            try:
                prov = self.providers.get(provider_name)
                boxes = await prov.list(owner_labels(self.settings.owner))
            except (ProviderError, ForgeError):
                log.warning("provider %s could not be listed to rebuild the store", provider_name, exc_info=True)
                continue
            for box in boxes:
                request_id, name = box.labels.get(LABEL_REQUEST), box.labels.get(LABEL_NAME)
                if box.labels.get(LABEL_READY) != "1" or not request_id or not name or box.host is None \
                        or await self.repo.box_by_request(request_id) is not None:
                    continue
                rec = BoxRecord(
                    name=name, box_id=box.id, provider=provider_name, state=BoxStatus.READY, step="ready",
                    key_id=f"{name}-{request_id}", request_id=request_id, host=box.host, ssh_port=box.ssh_port,
                    ssh_user=box.ssh_user, home=None, project_dir=None, repo=None, branch=None, base_commit=None,
                    agent=None, size=box.size, location=None, data={REBUILT: True, **_pool_data(box)}, error=None,
                    created_at=box.created_at, ready_at=box.created_at,
                    # a label says at most max_ttl from the box's creation (anyone may have moved it)
                    expires_at=min(float(box.expires_at if box.expires_at is not None else time.time()),
                                   box.created_at + self.settings.max_ttl_s), destroyed_at=None)
                try:
                    await self.repo.insert_box(rec)
                except sqlite3.IntegrityError:
                    continue  # a live record already holds the name
                await self._probe_rebuilt_home(rec)
                await self.repo.add_event("rebuilt", box_name=name, detail=provider_name)
                rebuilt.append(name)
        return rebuilt

    async def _probe_rebuilt_home(self, rec: BoxRecord) -> None:
        try:
            with anyio.fail_after(self.settings.probe_timeout_s):
                result = await onbox.run(self.access.exec(rec), HOME_PROBE, self.settings.probe_timeout_s)
        except (ForgeError, TimeoutError, OSError):
            return  # commands still run from ~ on the box
        home = result.stdout.decode(errors="replace").strip()
        if result.exit_status == 0 and home.startswith("/"):
            project = posixpath.join(home, "project")
            await self.repo.update_box(rec.request_id, home=home, project_dir=project)

    async def recover_dead_creates(self) -> list[str]:
        """Creates whose process died (its recorded creator is gone): adopted if the box had reached ready at
        the provider, else burned and failed with the step they reached. The names handled."""
        handled = []
        for rec in await self.repo.live_boxes():
            creator = (rec.data or {}).get(CREATOR)
            if rec.state != BoxStatus.PROVISIONING or rec.request_id in self.in_flight or not creator \
                    or creator_alive(creator) is not False:
                continue
            try:
                await self._end_dead_create(rec, creator)
            except (ForgeError, ProviderError):
                log.warning("could not end the dead create of %s now; the reaper retries", rec.name, exc_info=True)
                continue
            handled.append(rec.name)
        return handled

    async def _end_dead_create(self, rec: BoxRecord, creator: dict[str, object]) -> None:
        prov = self.providers.get(rec.provider)
        found = [await prov.get(rec.box_id)] if rec.box_id else await prov.list({LABEL_REQUEST: rec.request_id})
        box = next((b for b in found if b is not None), None)
        if box is not None and box.labels.get(LABEL_READY) == "1" and box.host is not None:
            await self.repo.update_box(rec.request_id, state=BoxStatus.READY, step="ready", box_id=box.id,
                                       host=box.host, ssh_port=box.ssh_port, ssh_user=box.ssh_user,
                                       ready_at=time.time())
            await self.repo.add_event("adopt", box_name=rec.name, detail=f"creator pid {creator.get('pid')} died")
            return
        self.check_owner(rec.name, box)
        await self.destroy_box(prov, rec, box.id if box is not None else None)
        await self.repo.end_box(rec.request_id, BoxStatus.FAILED,
                                error=f"the orchestrator creating it (pid {creator.get('pid')}) died at step "
                                      f"{rec.step or 'provision'}; the box was burned")
        await self.repo.add_event("create_died", box_name=rec.name, detail=rec.step)

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
