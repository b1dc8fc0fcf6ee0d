"""Warm pool decisions, pure: profiles from the config file, which create matches which profile, how many
boxes to start, and when a cloud pool stays off."""

from __future__ import annotations

import pytest

from providers.capabilities import Price
from server.errors import InvalidInput
from server.service.pool import PoolProfile, cloud_refusal, load_profiles, matching, shortfall

ASK = {"provider": "local", "size": None, "image": None, "location": None, "agent": "none", "agent_version": None,
       "agent_install": None, "agent_command": None}


def test_profiles_are_read_from_pool_tables_with_their_ttl() -> None:
    profiles = load_profiles({"pool": {"warm": {"count": 2, "ttl": "4h"}, "big": {"count": 1, "size": "large"}}})
    assert profiles["warm"].count == 2 and profiles["warm"].ttl == 4 * 3600 and profiles["warm"].agent == "none"
    assert profiles["big"].size == "large" and profiles["big"].ttl == 2 * 3600
    assert load_profiles({}) == {}


@pytest.mark.parametrize(("pool", "said"), [
    ({"Bad_Name": {"count": 1}}, "pool profile name 'Bad_Name'"),
    ({"warm": {"count": 21}}, "pool profile 'warm' is invalid: count"),
    ({"warm": {"count": 1, "colour": "red"}}, "colour"),
    ({"warm": {"count": 1, "ttl": "forever"}}, "ttl"),
    ({"warm": {}}, "count"),
    ("two", "table of profiles"),
])
def test_a_bad_profile_is_refused_naming_it_and_the_field(pool: object, said: str) -> None:
    with pytest.raises(InvalidInput, match=said):
        load_profiles({"pool": pool})


def test_a_create_matches_the_profile_that_makes_what_it_asks_for() -> None:
    profiles = {"plain": PoolProfile(count=1), "claude": PoolProfile(count=1, agent="claude", size="small")}
    assert matching(profiles, "local", **ASK) == "plain"
    assert matching(profiles, "local", **{**ASK, "agent": "claude", "size": "small"}) == "claude"
    assert matching(profiles, "local", **{**ASK, "agent": "claude"}) is None  # another size: a cold create
    assert matching(profiles, "local", **{**ASK, "provider": "docker"}) is None
    assert matching(profiles, "local", **{**ASK, "agent_version": "1.2.3"}) is None
    assert matching({"h": PoolProfile(count=1, provider="hetzner")}, "local", **{**ASK, "provider": "hetzner"}) == "h"


def test_the_filler_starts_only_what_is_missing() -> None:
    assert [shortfall(PoolProfile(count=3), waiting) for waiting in (0, 2, 3, 5)] == [3, 1, 0, 0]


def test_a_cloud_pool_is_off_unless_enabled_and_within_its_cost_ceiling() -> None:
    price = Price(hourly=0.01)
    assert cloud_refusal(PoolProfile(count=5), None, priced=False) is None  # local boxes cost nothing
    assert "cloud = true" in (cloud_refusal(PoolProfile(count=2), price, priced=True) or "")
    assert "max_cost_per_hour" in (cloud_refusal(PoolProfile(count=2, cloud=True), price, priced=True) or "")
    assert cloud_refusal(PoolProfile(count=2, cloud=True, max_cost_per_hour=0.05), price, priced=True) is None
    over = cloud_refusal(PoolProfile(count=6, cloud=True, max_cost_per_hour=0.05), price, priced=True)
    assert over is not None and "over max_cost_per_hour" in over
    assert "could not price" in (cloud_refusal(PoolProfile(count=1, cloud=True, max_cost_per_hour=1), None,
                                               priced=True) or "")
