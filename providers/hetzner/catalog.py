"""What Hetzner sells where, and which server type a box gets.

The catalog (server types with per-location prices, availability and ``deprecation`` objects; locations;
image architectures) is read from the live API and cached for ``CATALOG_TTL_S``. The choice of a size is a
pure function of that catalog (``choose``), so it is tested without the API:

- no size: the cheapest type orderable in the location, not deprecated, of the image's architecture, with at
  least the settings' floor (2 vCPUs and 4 GB unless set otherwise);
- a preset (``providers.base.SIZE_PRESETS``: small, medium, large): the same pick with the preset's floor;
- a server type by name: used as given; deprecated but still orderable works with a warning naming its
  ``unavailable_after`` date; retired or sold out is a clear error listing what is orderable there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from providers.base import SIZE_PRESETS, CapacityError, ProviderError, SizePreset
from providers.hetzner.api import HetznerApi

CATALOG_TTL_S = 600.0
SHOWN_OFFERS = 12


@dataclass(frozen=True)
class Deprecation:
    """Hetzner's deprecation object: when it was announced, after when the type can no longer be ordered."""

    announced: str | None
    unavailable_after: str | None

    def passed(self, now: datetime) -> bool:
        when = _when(self.unavailable_after)
        return when is not None and when <= now

    def day(self) -> str:
        return (self.unavailable_after or "an unannounced date")[:10]


@dataclass(frozen=True)
class Offer:
    """A server type as sold in one location."""

    name: str
    cores: int
    memory_gb: float
    architecture: str
    price_hourly: float | None
    price_monthly: float | None
    deprecation: Deprecation | None

    def fits(self, floor: SizePreset, architecture: str) -> bool:
        return self.architecture == architecture and self.cores >= floor.cores and self.memory_gb >= floor.memory_gb

    def shown(self) -> str:
        price = "" if self.price_hourly is None else f", {self.price_hourly:.4f}/h"
        return f"{self.name} ({self.cores} vCPU, {self.memory_gb:g} GB, {self.architecture}{price})"


@dataclass(frozen=True)
class Choice:
    """The server type picked for a box and what the person or agent should know about it."""

    server_type: str
    warnings: tuple[str, ...] = ()


def _when(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _stamp(value: Any) -> str | None:
    """An ISO 8601 string (hcloud may hand over a datetime)."""
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


def prices(server_type: Any, location: str) -> tuple[float | None, float | None]:
    """Gross (hourly, monthly) price of ``server_type`` in ``location``; None where it has none."""
    for price in server_type.prices or []:
        if price.get("location") == location:
            hourly = (price.get("price_hourly") or {}).get("gross")
            monthly = (price.get("price_monthly") or {}).get("gross")
            return (float(hourly) if hourly is not None else None, float(monthly) if monthly is not None else None)
    return None, None


def _entry(server_type: Any, location: str) -> Any | None:
    return next((e for e in server_type.locations or [] if e.location.name == location), None)


def deprecation(server_type: Any, location: str) -> Deprecation | None:
    """The type's deprecation in ``location``: ``locations[].deprecation`` (the type-wide ``deprecation``
    is phased out since the 2025-09-24 changelog entry "per-location server types")."""
    entry = _entry(server_type, location)
    info = entry.deprecation if entry is not None else None  # an hcloud DeprecationInfo
    if info is None or not (info.announced or info.unavailable_after):
        return None
    return Deprecation(_stamp(info.announced), _stamp(info.unavailable_after))


def orderable(server_type: Any, location: str, now: datetime) -> bool:
    """Whether the type can be ordered in ``location`` now: listed there as available and not past its
    ``unavailable_after`` (without per-location data: where it has a price)."""
    if server_type.locations is not None:
        entry = _entry(server_type, location)
        if entry is None or entry.available is False:
            return False
    elif prices(server_type, location) == (None, None):
        return False
    gone = deprecation(server_type, location)
    return gone is None or not gone.passed(now)


def offer(server_type: Any, location: str) -> Offer:
    return Offer(server_type.name, int(server_type.cores or 0), float(server_type.memory or 0),
                 server_type.architecture or "x86", *prices(server_type, location), deprecation(server_type, location))


def offers(types: Sequence[Any], location: str, now: datetime) -> list[Offer]:
    """What can be ordered in ``location`` now, cheapest first."""
    found = [offer(t, location) for t in types if orderable(t, location, now)]
    return sorted(found, key=lambda o: (o.price_hourly is None, o.price_hourly or 0.0, o.name))


def pick(types: Sequence[Any], location: str, floor: SizePreset, architecture: str, now: datetime) -> Offer | None:
    """The cheapest orderable, non-deprecated type of ``architecture`` meeting ``floor`` in ``location``."""
    return next((o for o in offers(types, location, now) if o.deprecation is None and o.fits(floor, architecture)),
                None)


def current(types: Sequence[Any], location: str, now: datetime) -> str:
    """The orderable, non-deprecated offers of a location, for messages."""
    shown = [o.shown() for o in offers(types, location, now) if o.deprecation is None]
    return ", ".join(shown[:SHOWN_OFFERS]) or "none"


def where_orderable(types: Sequence[Any], name: str, now: datetime, locations: Sequence[str]) -> list[str]:
    server_type = next((t for t in types if t.name == name), None)
    return [] if server_type is None else [loc for loc in locations if orderable(server_type, loc, now)]


def unavailable(types: Sequence[Any], locations: Sequence[str], size: str, location: str, now: datetime,
                reason: str | None = None) -> CapacityError:
    """The error for a type that cannot be ordered in ``location``: retired, or sold out there."""
    server_type = next((t for t in types if t.name == size), None)
    gone = deprecation(server_type, location) if server_type is not None else None
    if gone is not None and gone.passed(now):
        announced = f"deprecated {gone.announced[:10]}, " if gone.announced else ""
        return CapacityError(f"server type {size} is no longer sold ({announced}unavailable after {gone.day()}); "
                             f"orderable in {location}: {current(types, location, now)}. Pass one of these, a "
                             "preset (small, medium, large), or no size for the cheapest fitting type.")
    message = f"server type {size} is unavailable in {location}"
    if reason:
        message += f" ({reason})"
    message += f"; available there: {current(types, location, now)}"
    elsewhere = where_orderable(types, size, now, locations)
    if elsewhere:
        message += f"; {size} is available in: {', '.join(elsewhere)}"
    return CapacityError(message + ". Pass another size or location to create_server.")


def choose(types: Sequence[Any], locations: Sequence[str], *, size: str | None, location: str, architecture: str,
           floor: SizePreset, now: datetime | None = None) -> Choice:
    """The server type for a box (see the module docstring); ProviderError / CapacityError say what to pass."""
    now = now or datetime.now(UTC)
    if location not in locations:
        raise ProviderError(f"unknown Hetzner location {location!r}; locations: {', '.join(locations)}")
    if size is None or size in SIZE_PRESETS:
        wanted = floor if size is None else SIZE_PRESETS[size]
        found = pick(types, location, wanted, architecture, now)
        if found is None:
            what = "the default size" if size is None else f"size {size}"
            raise CapacityError(
                f"no {architecture} server type with at least {wanted.cores} vCPUs and {wanted.memory_gb:g} GB "
                f"({what}) is orderable in {location} now; orderable there: {current(types, location, now)}. "
                "Pass one of these as size, or another location.")
        return Choice(found.name)
    server_type = next((t for t in types if t.name == size), None)
    if server_type is None:
        raise ProviderError(f"unknown Hetzner server type {size!r}; available in {location}: "
                            f"{current(types, location, now)}; or a preset: {', '.join(SIZE_PRESETS)}")
    if not orderable(server_type, location, now):
        raise unavailable(types, locations, size, location, now)
    gone = deprecation(server_type, location)
    if gone is None:
        return Choice(size)
    fits = offer(server_type, location)
    successor = pick(types, location, SizePreset(fits.cores, fits.memory_gb), fits.architecture, now)
    return Choice(size, (deprecated_text(size, gone, successor.name if successor is not None else None),))


def warnings_of(server_type: Any, location: str | None) -> tuple[str, ...]:
    """What a box of this type should say about it (a deprecated type still running)."""
    if server_type is None or location is None:
        return ()
    gone = deprecation(server_type, location)
    if gone is None:
        return ()
    return (deprecated_text(server_type.name, gone),)


def deprecated_text(name: str, gone: Deprecation, successor: str | None = None) -> str:
    instead = f"; a current type like it there: {successor}" if successor else ""
    if gone.passed(datetime.now(UTC)):  # a box made before its type was retired
        return f"server type {name} is retired by Hetzner (not orderable after {gone.day()}){instead}"
    return f"server type {name} is deprecated by Hetzner and can be ordered only until {gone.day()}{instead}"


class Catalog:
    """The live catalog, cached for ``ttl_s``: server types, location names, image architectures."""

    def __init__(self, api: HetznerApi, ttl_s: float = CATALOG_TTL_S) -> None:
        self.api = api
        self.ttl_s = ttl_s
        self._cached: tuple[float, list[Any], list[str]] | None = None
        self._architectures: dict[str, str] = {}

    def invalidate(self) -> None:
        """Availability changed under us (a create was refused): read it again next time."""
        self._cached = None

    async def get(self) -> tuple[list[Any], list[str]]:
        """(server types, sorted location names)."""
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > self.ttl_s:
            client = self.api.client
            types = await self.api.call("list server types", client.server_types.get_all)
            locations = await self.api.call("list locations", client.locations.get_all)
            self._cached = (now, types, sorted(loc.name for loc in locations))
        return self._cached[1], self._cached[2]

    async def architecture(self, image: str) -> str:
        """x86 unless every image of that name is built for another architecture (an ARM-only snapshot)."""
        if image not in self._architectures:
            images = await self.api.call(f"look up image {image}", self.api.client.images.get_all, name=image)
            kinds = {i.architecture for i in images if i.architecture}
            self._architectures[image] = "x86" if not kinds or "x86" in kinds else sorted(kinds)[0]
        return self._architectures[image]

    async def choose(self, *, size: str | None, location: str, image: str, floor: SizePreset) -> Choice:
        types, locations = await self.get()
        architecture = await self.architecture(image)
        return choose(types, locations, size=size, location=location, architecture=architecture, floor=floor)

    async def unavailable(self, size: str, location: str, reason: str | None) -> CapacityError:
        self.invalidate()
        types, locations = await self.get()
        return unavailable(types, locations, size, location, datetime.now(UTC), reason)
