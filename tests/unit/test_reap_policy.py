"""The reap policy as a pure function of boxes, owner, now and in-flight creates: no box, no provider."""

from __future__ import annotations

from providers.base import LABEL_CREATE_DEADLINE, LABEL_READY, Box, BoxState, box_labels
from server.service.reaper import EXPIRED, ORPHAN, ReapPolicy, sleep_before_next_pass

OWNER = "o1"
POLICY = ReapPolicy(owner=OWNER, orphan_grace_s=100.0)


def box(name: str, *, expires_at: float, ready: bool = True, owner: str = OWNER, created_at: float = 0.0,
        deadline: int | None = None, request_id: str | None = None) -> Box:
    labels = box_labels(owner=owner, name=name, request_id=request_id or f"r-{name}", expires_at=expires_at)
    if ready:
        labels[LABEL_READY] = "1"
    if deadline is not None:
        labels[LABEL_CREATE_DEADLINE] = str(deadline)
    return Box(id=f"id-{name}", name=name, state=BoxState.RUNNING, host="127.0.0.1", ssh_port=22, ssh_user="u",
               labels=labels, created_at=created_at)


def test_an_expired_box_of_ours_is_doomed_and_a_live_one_sets_the_next_look() -> None:
    plan = POLICY.plan([box("old", expires_at=500), box("young", expires_at=2000)], now=1000)
    assert [(b.name, why) for b, why in plan.doomed] == [("old", EXPIRED)]
    assert plan.next_look == 2000


def test_another_owners_box_is_never_doomed_nor_watched() -> None:
    plan = POLICY.plan([box("theirs", expires_at=1, owner="o2")], now=1000)
    assert plan.doomed == () and plan.next_look is None


def test_a_never_ready_box_is_an_orphan_after_its_deadline_plus_grace() -> None:
    early = POLICY.plan([box("half", expires_at=9999, ready=False, deadline=800)], now=850)
    assert early.doomed == () and early.next_look == 900  # deadline + grace comes before the expiry
    late = POLICY.plan([box("half", expires_at=9999, ready=False, deadline=800)], now=901)
    assert [why for _, why in late.doomed] == [ORPHAN]


def test_without_a_deadline_label_the_orphan_clock_starts_at_creation() -> None:
    assert POLICY.why_doomed(box("half", expires_at=9999, ready=False, created_at=10), now=111) == ORPHAN
    assert POLICY.why_doomed(box("half", expires_at=9999, ready=False, created_at=10), now=109) is None


def test_a_create_still_running_here_is_spared_from_the_orphan_sweep_but_not_from_expiry() -> None:
    half = box("half", expires_at=9999, ready=False, deadline=0, request_id="r-mine")
    assert POLICY.why_doomed(half, now=5000, in_flight={"r-mine"}) is None
    expired = box("half", expires_at=10, ready=False, deadline=0, request_id="r-mine")
    assert POLICY.why_doomed(expired, now=5000, in_flight={"r-mine"}) == EXPIRED


def test_the_loop_sleeps_until_the_next_look_within_its_bounds() -> None:
    assert sleep_before_next_pass(None, 0, max_sleep_s=30, min_sleep_s=0.2) == 30
    assert sleep_before_next_pass(10, 0, max_sleep_s=30, min_sleep_s=0.2) == 10.05
    assert sleep_before_next_pass(0, 5, max_sleep_s=30, min_sleep_s=0.2) == 0.2
    assert sleep_before_next_pass(100, 0, max_sleep_s=30, min_sleep_s=0.2) == 30


def test_a_label_moved_past_the_reapers_own_record_is_ignored() -> None:
    """Attack 10: an expiry label moved far into the future by anything but extend_server kept the box alive."""
    policy = ReapPolicy(owner=OWNER, orphan_grace_s=100.0, max_ttl_s=3600.0)
    moved = box("moved", expires_at=10**10, created_at=0)
    assert policy.why_doomed(moved, now=1000, recorded={"r-moved": 900.0}) == EXPIRED  # our record: 900
    assert policy.why_doomed(moved, now=1000, recorded={"r-moved": 2000.0}) is None
    assert policy.plan([moved], now=1000, recorded={"r-moved": 2000.0}).next_look == 2000.0
    # no record (the store was lost): max_ttl from the provider's own creation time
    assert policy.why_doomed(moved, now=3599) is None and policy.why_doomed(moved, now=3601) == EXPIRED
    assert policy.plan([moved], now=1000).next_look == 3600.0
    # an earlier label still wins over a later record
    assert policy.why_doomed(box("early", expires_at=500), now=1000, recorded={"r-early": 5000.0}) == EXPIRED
