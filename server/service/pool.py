"""Warm pools: boxes booted ahead of time per profile (base image, agent installed, no repo), so that a
``create_server`` whose request matches a profile takes a ready box and only seeds the repo.

Config (``[pool.<profile>]`` tables of the config file)::

    [pool.claude-small]
    count = 2            # ready boxes to keep
    size = "small"
    agent = "claude"
    ttl = "4h"           # a pooled box's own expiry while it waits (reaped like any box)
    # provider = "hetzner", cloud = true, max_cost_per_hour = 0.05   # cloud pools: off unless both are set

A pooled box is an ordinary box of this owner (owner labels, TTL, the reaper) named ``pool-<profile>-<hex>``
with a ``boxforge-pool`` label and ``pool`` in its record's data; list_servers leaves it out. A create takes
one by a compare-and-set on its record (``Store.claim_box``: ready and still its pool name), so two creates
never get the same box; then its labels get the user's name and expiry (the pool label dropped). The decisions
(``matching``, ``shortfall``, ``cloud_refusal``) are pure; ``PoolFiller`` is the loop that acts on them.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from providers.capabilities import HasPricing, Price
from server.config import Settings
from server.domain.durations import parse_ttl
from server.domain.states import BoxStatus, CreateStep
from server.errors import ForgeError, InvalidInput
from server.schemas import PoolProfileStatus, PoolStatus
from server.service import boxes
from server.store import BoxRecord, Repository

log = logging.getLogger("boxforge.pool")
LABEL_POOL = boxes.LABEL_POOL  # schedule label: the profile a waiting box belongs to (dropped when taken)
POOL_DATA = boxes.POOL_DATA  # key of BoxRecord.data: the profile of a waiting pooled box
FROM_POOL = "from_pool"  # key of BoxRecord.data: the profile a create took its box from
MIN_LEFT_S = 600  # a pooled box with less time left than this is not handed out (the reaper may be at it)
REFILL_EVERY_S = 30.0
PROFILE_RE = r"^[a-z0-9][a-z0-9-]{0,29}$"


class PoolProfile(BaseModel):
    """One pool profile: what its boxes are, and how many to keep ready."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=0, le=20)
    provider: str | None = None
    size: str | None = None
    image: str | None = None
    location: str | None = None
    agent: str = "none"
    agent_version: str | None = None
    agent_install: str | None = None
    agent_command: str | None = None
    ttl: int = Field(default_factory=lambda: parse_ttl("2h"))
    cloud: bool = False  # a priced (cloud) provider's pool runs only with this and a ceiling
    max_cost_per_hour: float | None = Field(None, gt=0)

    @field_validator("ttl", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        return parse_ttl(value)


def load_profiles(file_values: Mapping[str, Any]) -> dict[str, PoolProfile]:
    """The config file's ``[pool.<profile>]`` tables; InvalidInput names the profile and field at fault."""
    raw = file_values.get("pool") or {}
    if not isinstance(raw, Mapping):
        raise InvalidInput("the config file's pool must be a table of profiles: [pool.<profile>]")
    profiles = {}
    for name, table in raw.items():
        if not re.fullmatch(PROFILE_RE, str(name)):
            raise InvalidInput(f"pool profile name {name!r}: use 1-30 of a-z, 0-9 and -, starting with a letter "
                               "or digit")
        try:
            profiles[str(name)] = PoolProfile.model_validate(table)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise InvalidInput(f"pool profile {name!r} is invalid: {problems}") from None
    return profiles


def matching(profiles: Mapping[str, PoolProfile], default_provider: str, *, provider: str, size: str | None,
             image: str | None, location: str | None, agent: str, agent_version: str | None,
             agent_install: str | None, agent_command: str | None) -> str | None:
    """The profile whose boxes are what this create would make (first by name), or None."""
    wanted = (provider, size, image, location, agent, agent_version, agent_install, agent_command)
    for name in sorted(profiles):
        p = profiles[name]
        if (p.provider or default_provider, p.size, p.image, p.location, p.agent, p.agent_version,
                p.agent_install, p.agent_command) == wanted:
            return name
    return None


def shortfall(profile: PoolProfile, waiting: int) -> int:
    """How many boxes to start now: up to ``count`` waiting (ready or on the way)."""
    return max(0, profile.count - waiting)


def cloud_refusal(profile: PoolProfile, price: Price | None, priced: bool) -> str | None:
    """Why a profile's pool stays off (None: it may run). A priced provider's pool is off by default and
    needs ``cloud = true`` and a ``max_cost_per_hour`` its count of boxes stays within."""
    if not priced:
        return None
    if not profile.cloud:
        return "off: a cloud pool costs money while it waits; set cloud = true and max_cost_per_hour to run it"
    if profile.max_cost_per_hour is None:
        return "off: a cloud pool needs max_cost_per_hour (the ceiling for count x the hourly price)"
    if price is None:
        return "off: the provider could not price this profile's box, so the ceiling cannot be checked"
    total = price.hourly * profile.count
    if total > profile.max_cost_per_hour:
        return (f"off: {profile.count} x {price.hourly:.4f} {price.currency}/h = {total:.4f} is over "
                f"max_cost_per_hour {profile.max_cost_per_hour:g}")
    return None


def pool_name(profile: str) -> str:
    return f"pool-{profile}-{secrets.token_hex(3)}"


def waiting_of(recs: list[BoxRecord], profile: str) -> list[BoxRecord]:
    return [r for r in recs if (r.data or {}).get(POOL_DATA) == profile]


class WarmPool:
    """The profiles and the hand-out of waiting boxes (no creating here: see PoolFiller)."""

    def __init__(self, settings: Settings, repo: Repository) -> None:
        self.settings = settings
        self.repo = repo
        self.profiles = load_profiles(settings.file_values)
        self.taken = anyio.Event()  # set when a box was handed out: the filler refills at once

    async def take(self, profile: str, name: str, ttl_s: int, changes: Mapping[str, Any]) -> BoxRecord | None:
        """Hand one ready box of ``profile`` to the create of ``name`` (renamed, its expiry reset, its record
        provisioning again); None when none is ready. Exactly one create wins each box."""
        now = time.time()
        for rec in waiting_of(await self.repo.live_boxes(), profile):
            if rec.state != BoxStatus.READY or rec.expires_at - now < MIN_LEFT_S:
                continue
            data = {k: v for k, v in (rec.data or {}).items() if k != POOL_DATA}
            data[FROM_POOL] = profile
            data.update(changes.get("data") or {})
            won = await self.repo.claim_box(
                rec.request_id, rec.name, **{**changes, "name": name, "state": BoxStatus.PROVISIONING,
                                             "step": CreateStep.SSH, "expires_at": now + ttl_s, "data": data,
                                             "created_at": now, "ready_at": None})
            if won:
                self.taken.set()
                claimed = await self.repo.box_by_request(rec.request_id)
                assert claimed is not None
                return claimed
        return None

    async def status(self, price_of: Any) -> PoolStatus:
        """Per profile: wanted, ready, on the way, and why it is off (cloud without a ceiling)."""
        recs = await self.repo.live_boxes()
        shown = []
        for name, profile in sorted(self.profiles.items()):
            waiting = waiting_of(recs, name)
            ready = [r.name for r in waiting if r.state == BoxStatus.READY]
            shown.append(PoolProfileStatus(
                profile=name, provider=profile.provider or self.settings.provider, count=profile.count,
                ready=len(ready), starting=len(waiting) - len(ready), boxes=[r.name for r in waiting],
                off=await price_of(profile)))
        return PoolStatus(profiles=shown)


class PoolFiller:
    """Keeps every profile's count of boxes waiting: creates the missing ones (as ordinary creates with the
    pool label), again after each hand-out and every REFILL_EVERY_S. Runs in the lifespan's task group."""

    def __init__(self, pool: WarmPool, create: Any, providers: Any) -> None:
        self.pool = pool
        self.create = create  # Forge.create_server
        self.providers = providers

    async def refusal(self, profile: PoolProfile) -> str | None:
        try:
            prov = self.providers.get(profile.provider or self.pool.settings.provider)
        except ForgeError as exc:
            return f"off: {exc}"
        priced = isinstance(prov, HasPricing)
        price = await prov.quote(profile.size, profile.location, profile.image) if priced else None
        return cloud_refusal(profile, price, priced)

    async def fill_once(self) -> list[str]:
        """Start the missing boxes of every enabled profile and wait for them; the names that became ready."""
        recs = await self.pool.repo.live_boxes()
        made: list[str] = []

        async def one(profile_name: str, profile: PoolProfile) -> None:
            name = pool_name(profile_name)
            try:
                await self.create(name, ttl_s=profile.ttl, agent=profile.agent, agent_install=profile.agent_install,
                                  agent_command=profile.agent_command, agent_version=profile.agent_version,
                                  size=profile.size, image=profile.image, location=profile.location,
                                  provider=profile.provider, pool=profile_name)
                made.append(name)
            except ForgeError as exc:
                log.warning("pool %s: a box failed to start: %s", profile_name, exc)

        async with anyio.create_task_group() as tg:
            for profile_name, profile in sorted(self.pool.profiles.items()):
                missing = shortfall(profile, len(waiting_of(recs, profile_name)))
                if missing and await self.refusal(profile) is None:
                    for _ in range(missing):
                        tg.start_soon(one, profile_name, profile)
        return made

    async def run_forever(self) -> None:
        if not self.pool.profiles:
            return
        while True:
            try:
                await self.fill_once()
            except Exception:
                log.exception("pool: filling failed; retrying in %ss", REFILL_EVERY_S)
            with anyio.move_on_after(REFILL_EVERY_S):
                await self.pool.taken.wait()
            self.pool.taken = anyio.Event()
