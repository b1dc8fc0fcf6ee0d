"""The Hetzner fake's catalog: locations, server types and images as the API documents them now.

Server types (docs.hetzner.cloud, server types; changelog entries listed in ``tests/fakes/hetzner_api.py``):
the cost-optimized ``cx23``/``cx33``/``cx43``/``cx53`` (shared Intel/AMD x86, EU locations only), the
regular-performance ``cpx22``...``cpx62`` (shared AMD x86, EU and US/Singapore), the ``cax`` line (shared
Ampere ARM64, EU only) and the ``ccx`` line (dedicated AMD x86, everywhere). The types deprecated on
2025-10-16 (``cx22``...``cx52``, ``cpx11``...``cpx51``) are still listed, as the API lists them for the
servers that still run them, with ``deprecation`` objects and ``available: false`` everywhere.

Prices are gross EUR per hour and only roughly today's: tests rely on their order, not their amounts.
``hel1`` has ``cx23`` sold out (as the API reports a stock-out: listed, ``available: false``), so the
default pick there must fall back to the next cheapest fitting type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EU = ("fsn1", "nbg1", "hel1")
EVERYWHERE = (*EU, "ash", "hil", "sin")

LOCATIONS = [
    {"id": 1, "name": "fsn1", "description": "Falkenstein DC Park 1", "country": "DE", "city": "Falkenstein",
     "latitude": 50.47612, "longitude": 12.370071, "network_zone": "eu-central"},
    {"id": 2, "name": "nbg1", "description": "Nuremberg DC Park 1", "country": "DE", "city": "Nuremberg",
     "latitude": 49.452102, "longitude": 11.076665, "network_zone": "eu-central"},
    {"id": 3, "name": "hel1", "description": "Helsinki DC Park 1", "country": "FI", "city": "Helsinki",
     "latitude": 60.169855, "longitude": 24.938379, "network_zone": "eu-central"},
    {"id": 4, "name": "ash", "description": "Ashburn, VA", "country": "US", "city": "Ashburn, VA",
     "latitude": 39.045821, "longitude": -77.487073, "network_zone": "us-east"},
    {"id": 5, "name": "hil", "description": "Hillsboro, OR", "country": "US", "city": "Hillsboro, OR",
     "latitude": 45.54222, "longitude": -122.951924, "network_zone": "us-west"},
    {"id": 6, "name": "sin", "description": "Singapore", "country": "SG", "city": "Singapore",
     "latitude": 1.283333, "longitude": 103.833333, "network_zone": "ap-southeast"},
]

RETIRED = {"announced": "2025-10-16T09:00:00Z", "unavailable_after": "2025-12-31T23:59:59Z"}


@dataclass
class FakeType:
    """One server type: where it is sold (gross hourly price per location), where it is sold out, and
    its deprecation (type-wide) if any. Tests may change ``sold_out`` and ``deprecation`` at any time."""

    name: str
    id: int
    cores: int
    memory: float
    disk: int
    cpu_type: str
    architecture: str
    category: str
    hourly: dict[str, str]
    sold_out: set[str] = field(default_factory=set)
    deprecation: dict[str, str] | None = None
    deprecated_in: dict[str, dict[str, str]] = field(default_factory=dict)  # location -> its own deprecation

    def deprecation_in(self, location: str) -> dict[str, str] | None:
        return self.deprecated_in.get(location, self.deprecation)

    def json(self, locations: list[dict[str, Any]] = LOCATIONS) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "description": self.name.upper(), "category": self.category,
            "cores": self.cores, "memory": self.memory, "disk": self.disk, "storage_type": "local",
            "cpu_type": self.cpu_type, "architecture": self.architecture,
            "deprecated": self.deprecation is not None, "deprecation": self.deprecation,
            "prices": [
                {"location": loc, "price_hourly": {"net": f"{float(p) / 1.19:.4f}", "gross": p},
                 "price_monthly": {"net": f"{float(p) * 720 / 1.19:.4f}", "gross": f"{float(p) * 720:.4f}"},
                 "included_traffic": 21990232555520, "price_per_tb_traffic": {"net": "1.0000", "gross": "1.1900"}}
                for loc, p in self.hourly.items()
            ],
            "locations": [
                {"id": loc["id"], "name": loc["name"], "deprecation": self.deprecation_in(loc["name"]),
                 "available": self.orderable_in(loc["name"]), "recommended": self.orderable_in(loc["name"])}
                for loc in locations if loc["name"] in self.hourly
            ],
        }

    def orderable_in(self, location: str) -> bool:
        """Sold there, not sold out, and not past its ``unavailable_after``."""
        if location not in self.hourly or location in self.sold_out:
            return False
        until = (self.deprecation_in(location) or {}).get("unavailable_after")
        return until is None or datetime.fromisoformat(until) > datetime.now(UTC)


def _line(prefix: str, rows: list[tuple[str, int, int, float, int, str]], cpu: str, arch: str, category: str,
          where: tuple[str, ...], deprecation: dict[str, str] | None = None) -> list[FakeType]:
    return [FakeType(f"{prefix}{suffix}", type_id, cores, memory, disk, cpu, arch, category,
                     dict.fromkeys(where, price), deprecation=deprecation)
            for suffix, type_id, cores, memory, disk, price in rows]


def server_types() -> list[FakeType]:
    """A fresh copy of the catalog (each fake has its own, so tests can change it)."""
    types = [
        *_line("cx", [("23", 114, 2, 4.0, 40, "0.0067"), ("33", 115, 4, 8.0, 80, "0.0106"),
                      ("43", 116, 8, 16.0, 160, "0.0186"), ("53", 117, 16, 32.0, 320, "0.0341")],
               "shared", "x86", "cost_optimized", EU),
        *_line("cpx", [("22", 118, 2, 4.0, 80, "0.0134"), ("32", 119, 4, 8.0, 160, "0.0230"),
                       ("42", 120, 8, 16.0, 320, "0.0421"), ("52", 121, 12, 24.0, 480, "0.0595"),
                       ("62", 122, 16, 32.0, 640, "0.0790")],
               "shared", "x86", "regular_purpose", EVERYWHERE),
        *_line("cax", [("11", 45, 2, 4.0, 40, "0.0071"), ("21", 93, 4, 8.0, 80, "0.0117"),
                       ("31", 94, 8, 16.0, 160, "0.0229"), ("41", 95, 16, 32.0, 320, "0.0457")],
               "shared", "arm", "cost_optimized", EU),
        *_line("ccx", [("13", 96, 2, 8.0, 80, "0.0230"), ("23", 97, 4, 16.0, 160, "0.0450"),
                       ("33", 98, 8, 32.0, 240, "0.0899")],
               "dedicated", "x86", "general_purpose", EVERYWHERE),
        *_line("cx", [("22", 104, 2, 4.0, 40, "0.0071"), ("32", 105, 4, 8.0, 80, "0.0127"),
                      ("42", 106, 8, 16.0, 160, "0.0304"), ("52", 107, 16, 32.0, 320, "0.0590")],
               "shared", "x86", "cost_optimized", EU, RETIRED),
        *_line("cpx", [("11", 22, 2, 2.0, 40, "0.0082"), ("21", 23, 3, 4.0, 80, "0.0148"),
                       ("31", 24, 4, 8.0, 160, "0.0268"), ("41", 25, 8, 16.0, 240, "0.0495"),
                       ("51", 26, 16, 32.0, 360, "0.1034")],
               "shared", "x86", "regular_purpose", EVERYWHERE, RETIRED),
    ]
    next(t for t in types if t.name == "cx23").sold_out.add("hel1")
    return types


IMAGES = [
    {"id": 161547269, "name": "ubuntu-24.04", "description": "Ubuntu 24.04", "os_flavor": "ubuntu",
     "os_version": "24.04", "architecture": "x86"},
    {"id": 161547270, "name": "ubuntu-24.04", "description": "Ubuntu 24.04", "os_flavor": "ubuntu",
     "os_version": "24.04", "architecture": "arm"},
    {"id": 67794396, "name": "ubuntu-22.04", "description": "Ubuntu 22.04", "os_flavor": "ubuntu",
     "os_version": "22.04", "architecture": "x86"},
    {"id": 114690387, "name": "debian-12", "description": "Debian 12", "os_flavor": "debian", "os_version": "12",
     "architecture": "x86"},
    {"id": 114690388, "name": "debian-12", "description": "Debian 12", "os_flavor": "debian", "os_version": "12",
     "architecture": "arm"},
    # An image published for ARM only (as a custom snapshot would be): boxes of it get an ARM type.
    {"id": 190000001, "name": "boxforge-arm-only", "description": "ARM-only test image", "os_flavor": "debian",
     "os_version": "12", "architecture": "arm"},
]
