"""How a Hetzner box's size is chosen, against the fake's catalog through the real hcloud library.

The drift check: the default pick and every preset resolve, in every location the fake sells in, to a type
the fake itself would accept (orderable there, not deprecated, big enough, the image's architecture). A
catalog change that breaks this (Hetzner retiring a line, a stock-out) fails here before it fails a user.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hcloud import APIException, Client

from providers.base import (
    SIZE_PRESETS,
    BoxSpec,
    CapacityError,
    ProviderContext,
    ProviderError,
    SizePreset,
    box_labels,
)
from providers.hetzner import HetznerProvider, HetznerSettings
from providers.hetzner.catalog import choose
from providers.hetzner.servers import to_box
from providers.local.boxdir import current_user
from server.keys import create_box_keys
from tests.fakes.hetzner_api import FakeHetzner, running_fake
from tests.fakes.hetzner_catalog import LOCATIONS

OWNER = "ocat" + secrets.token_hex(3)
FLOOR = SizePreset(cores=2, memory_gb=4)


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHetzner]:
    with running_fake(tmp_path_factory.mktemp("catalog") / "boxes") as started:
        yield started


@pytest.fixture
def catalog_of(fake: FakeHetzner) -> Iterator[FakeHetzner]:
    """The module's fake with its catalog restored after the test (tests announce deprecations)."""
    saved = [(t, t.deprecation, set(t.sold_out), dict(t.deprecated_in)) for t in fake.server_types]
    yield fake
    for server_type, deprecation, sold_out, deprecated_in in saved:
        server_type.deprecation, server_type.sold_out, server_type.deprecated_in = deprecation, sold_out, deprecated_in


def provider(fake: FakeHetzner, **options: object) -> HetznerProvider:
    return HetznerProvider(fake.token, endpoint=fake.url, ssh_user=current_user(), ssh_port=fake.ssh_port,
                           poll_interval_s=0.02, **options)  # type: ignore[arg-type]


def spec(tmp_path: Path, **fields: object) -> BoxSpec:
    request_id = "r" + secrets.token_hex(6)
    keys = create_box_keys(tmp_path / "keys", request_id)
    return BoxSpec(name="cat", request_id=request_id,
                   labels=box_labels(owner=OWNER, name="cat", request_id=request_id, expires_at=time.time() + 600),
                   host_key_private=keys.host_private, host_key_public=keys.host_public,
                   authorized_key=keys.client_public, **fields)  # type: ignore[arg-type]


def selling(fake: FakeHetzner) -> list[str]:
    return [loc["name"] for loc in LOCATIONS if any(t.orderable_in(loc["name"]) for t in fake.server_types)]


async def test_default_and_every_preset_resolve_to_an_orderable_current_type_everywhere(fake: FakeHetzner) -> None:
    prov = provider(fake)
    sizes: list[tuple[str | None, SizePreset]] = [(None, FLOOR), *SIZE_PRESETS.items()]
    for location in selling(fake):
        for size, wanted in sizes:
            choice = await prov.catalog.choose(size=size, location=location, image="ubuntu-24.04", floor=FLOOR)
            picked = fake.server_type(choice.server_type)
            assert picked is not None and picked.orderable_in(location), (size, location, choice)
            assert picked.deprecation is None and choice.warnings == ()
            assert picked.architecture == "x86" and picked.cores >= wanted.cores and picked.memory >= wanted.memory_gb
    await prov.aclose()


async def test_the_default_is_the_cheapest_fitting_x86_type_of_the_location(fake: FakeHetzner) -> None:
    prov = provider(fake)
    picks = {loc: (await prov.catalog.choose(size=None, location=loc, image="ubuntu-24.04", floor=FLOOR)).server_type
             for loc in ("fsn1", "hel1", "ash")}
    # fsn1: cx23; hel1 has cx23 sold out and cax11 is ARM: cx33; the US sells no cx line: cpx22
    assert picks == {"fsn1": "cx23", "hel1": "cx33", "ash": "cpx22"}
    medium = await prov.catalog.choose(size="medium", location="ash", image="ubuntu-24.04", floor=FLOOR)
    assert medium.server_type == "cpx32"
    await prov.aclose()


async def test_an_arm_only_image_gets_an_arm_type(fake: FakeHetzner) -> None:
    prov = provider(fake)
    choice = await prov.catalog.choose(size="small", location="fsn1", image="boxforge-arm-only", floor=FLOOR)
    assert choice.server_type == "cax11"
    with pytest.raises(CapacityError, match=r"no arm server type with at least 2 vCPUs and 4 GB \(size small\) "
                                            r"is orderable in ash now; orderable there: cpx22"):
        await prov.catalog.choose(size="small", location="ash", image="boxforge-arm-only", floor=FLOOR)
    await prov.aclose()


async def test_the_settings_floor_and_a_pinned_type_decide_the_default(fake: FakeHetzner, tmp_path: Path) -> None:
    bigger = provider(fake, floor=SizePreset(cores=4, memory_gb=16))
    assert (await bigger.catalog.choose(size=None, location="fsn1", image="ubuntu-24.04",
                                        floor=bigger.floor)).server_type == "cx43"
    await bigger.aclose()
    pinned = provider(fake, server_type="ccx13")
    box = await pinned.create(spec(tmp_path))
    assert box.size == "ccx13" and box.warnings == ()
    await pinned.destroy(box.id)
    await pinned.aclose()
    stale = provider(fake, server_type="cx22")  # a pin from before the 2025-10-16 deprecation
    with pytest.raises(CapacityError, match=r"cx22 is no longer sold .* pinned by BOXFORGE_HETZNER_SERVER_TYPE"):
        await stale.create(spec(tmp_path))
    await stale.aclose()
    assert fake.live_servers(**{"boxforge-owner": OWNER}) == []


def test_the_floor_and_the_pin_come_from_the_settings(tmp_path: Path) -> None:
    env = {"HCLOUD_TOKEN": "t", "BOXFORGE_HETZNER_MIN_CORES": "4", "BOXFORGE_HETZNER_MIN_MEMORY_GB": "16"}
    built = HetznerProvider.from_settings(HetznerSettings.load(env, {"providers": {"hetzner": {
        "server_type": "medium"}}}, "hetzner"), ProviderContext(tmp_path, OWNER))
    assert built.floor == SizePreset(4, 16) and built.server_type == "medium"
    with pytest.raises(ProviderError, match="setting min_cores is invalid"):
        HetznerSettings.load({**env, "BOXFORGE_HETZNER_MIN_CORES": "0"}, {}, "hetzner")


async def test_a_deprecated_type_skipped_by_default_and_warned_about_when_asked_for(
    catalog_of: FakeHetzner, tmp_path: Path
) -> None:
    fake = catalog_of
    deprecation = fake.deprecate("cx23", days=30)
    prov = provider(fake)
    default = await prov.catalog.choose(size=None, location="fsn1", image="ubuntu-24.04", floor=FLOOR)
    assert default.server_type == "cx33" and default.warnings == ()
    box = await prov.create(spec(tmp_path, size="cx23"))
    day = deprecation["unavailable_after"][:10]
    assert box.size == "cx23"
    assert box.warnings == (f"server type cx23 is deprecated by Hetzner and can be ordered only until {day}; "
                            "a current type like it there: cx33",)
    ready = await prov.wait_ready(box.id, timeout=20)  # a box read back later says so too
    assert ready.size == "cx23" and any(day in w and "deprecated" in w for w in ready.warnings)
    await prov.destroy(box.id)
    await prov.aclose()
    assert fake.live_servers(**{"boxforge-owner": OWNER}) == []


async def test_a_type_past_its_unavailable_after_is_refused_listing_what_is_orderable(
    catalog_of: FakeHetzner, tmp_path: Path
) -> None:
    fake = catalog_of
    fake.deprecate("cx33", days=-1)
    prov = provider(fake)
    with pytest.raises(CapacityError) as caught:
        await prov.create(spec(tmp_path, size="cx33", location="nbg1"))
    message = str(caught.value)
    assert re.match(r"server type cx33 is no longer sold \(deprecated \d{4}-\d\d-\d\d, unavailable after "
                    r"\d{4}-\d\d-\d\d\); orderable in nbg1: cx23 \(2 vCPU, 4 GB, x86, 0\.0067/h\), cax11", message)
    assert not re.search(r"\bcx33\b.*\bcx33\b", message)  # named once: as the refused type, not as a choice
    assert "preset (small, medium, large)" in message
    with pytest.raises(ProviderError, match=r"unknown Hetzner server type 'huge'; .*or a preset: small, medium"):
        await prov.create(spec(tmp_path, size="huge"))
    await prov.aclose()
    assert fake.live_servers(**{"boxforge-owner": OWNER}) == []


async def test_a_deprecation_in_one_location_changes_the_pick_there_only(catalog_of: FakeHetzner) -> None:
    fake = catalog_of
    fake.deprecate("cx23", days=30, location="nbg1")  # per-location deprecation (changelog 2025-09-24)
    prov = provider(fake)
    picks = {loc: (await prov.catalog.choose(size=None, location=loc, image="ubuntu-24.04", floor=FLOOR))
             for loc in ("fsn1", "nbg1")}
    assert {loc: c.server_type for loc, c in picks.items()} == {"fsn1": "cx23", "nbg1": "cx33"}
    asked = await prov.catalog.choose(size="cx23", location="nbg1", image="ubuntu-24.04", floor=FLOOR)
    assert asked.server_type == "cx23" and "deprecated" in asked.warnings[0]
    plain = await prov.catalog.choose(size="cx23", location="fsn1", image="ubuntu-24.04", floor=FLOOR)
    assert plain.warnings == ()
    await prov.aclose()


def test_choice_is_a_pure_function_of_the_catalog_and_the_time(catalog_of: FakeHetzner) -> None:
    fake = catalog_of
    until = fake.deprecate("cx22", days=10)["unavailable_after"]
    client = Client(token=fake.token, api_endpoint=fake.url)
    types, locations = client.server_types.get_all(), [loc.name for loc in client.locations.get_all()]
    old = choose(types, locations, size="cx22", location="fsn1", architecture="x86", floor=FLOOR)
    assert old.server_type == "cx22" and f"can be ordered only until {until[:10]}" in old.warnings[0]
    later = datetime.fromisoformat(until) + timedelta(seconds=1)
    with pytest.raises(CapacityError, match="no longer sold"):
        choose(types, locations, size="cx22", location="fsn1", architecture="x86", floor=FLOOR, now=later)
    assert choose(types, locations, size=None, location="fsn1", architecture="x86", floor=FLOOR,
                  now=later).server_type == "cx23"
    with pytest.raises(ProviderError, match=r"unknown Hetzner location 'mars1'"):
        choose(types, locations, size=None, location="mars1", architecture="x86", floor=FLOOR)


def test_a_box_of_a_retired_type_says_so_when_listed(fake: FakeHetzner) -> None:
    server = fake.add_server("old-cx22", {"team": "web"}, server_type="cx22")
    try:
        client = Client(token=fake.token, api_endpoint=fake.url)
        box = to_box(client.servers.get_by_id(server.id), ssh_port=22, ssh_user="u", ipv6_only=False, choice=None)
        assert box.size == "cx22"
        assert box.warnings == ("server type cx22 is retired by Hetzner (not orderable after 2025-12-31)",)
    finally:
        with fake._lock:
            fake.servers.pop(server.id)


def test_the_fake_answers_datacenters_with_410_and_servers_carry_no_datacenter(fake: FakeHetzner) -> None:
    client = Client(token=fake.token, api_endpoint=fake.url)
    with pytest.warns(DeprecationWarning, match="datacenters"), pytest.raises(APIException) as caught:
        client.datacenters.get_all()  # hcloud itself warns: changelog 2026-06-02 "datacenters deprecated"
    assert caught.value.code == "gone"
    server = fake.add_server("foreign-dc-check", {"team": "web"})
    try:
        raw = fake._server_json(server)
        assert "datacenter" not in raw and raw["location"]["name"] == "fsn1"
        assert client.servers.get_by_id(server.id).location.name == "fsn1"
    finally:
        with fake._lock:
            fake.servers.pop(server.id)
