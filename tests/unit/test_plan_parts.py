"""The parts of a plan run that need no box: require: ranges and the on-box probe (run in a real shell here),
the budget's arithmetic, the reuse of earlier work, and the store's claim of an orphaned plan."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from server.plans import budget, globs, require
from server.plans.board import PlanBoard, TaskBoard
from server.plans.scheduler import _earlier_work, _restart, owner_alive, this_process
from server.plans.validate import PlanInvalid, check_plan, parse_plan, topo_order
from server.store.sqlite import Store

PLAN = {"name": "p", "boxes": {"agent": "custom"}, "tasks": [
    {"id": "api", "branch": "feat/api", "prompt": "x"},
    {"id": "ui", "branch": "feat/ui", "prompt": "y"},
    {"id": "e2e", "branch": "feat/e2e", "prompt": "z", "depends_on": ["api", "ui"]}]}


@pytest.mark.parametrize(("tool", "wanted", "words"), [
    ("node", "banana", "'banana' is not a version range"),
    ("no de", ">=20", "'no de' is not a tool name"),
    ("node;rm", ">=20", "is not a tool name"),
])
def test_bad_requirements_are_refused_naming_the_fix(tool: str, wanted: str, words: str) -> None:
    with pytest.raises(PlanInvalid) as caught:
        parse_plan({**PLAN, "require": {tool: wanted}})
    assert words in str(caught.value) and "require" in str(caught.value)


def _probe(tmp_path: Path, wanted: dict[str, str]) -> list[str]:
    """The probe command run by a real sh whose PATH holds stand-in tools (and the real python3)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in {"node": "v18.19.0", "go": "go version go1.22.4 linux/amd64", "weird": "no numbers"}.items():
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\necho '{text}'\n")
        tool.chmod(0o755)
    path = f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin"
    out = subprocess.run(["sh", "-c", require.probe_command(wanted)], capture_output=True, text=True,
                         env={"PATH": path}, timeout=30, check=True).stdout
    return require.unmet(wanted, out)


def test_require_probe_reads_versions_on_a_real_shell(tmp_path: Path) -> None:
    assert _probe(tmp_path, {"node": ">=18", "go": "^1.22", "python3": ">=3.8"}) == []
    assert _probe(tmp_path, {"node": ">=20", "go": "1.21.x", "cargo-nope": "*", "weird": ">=1"}) == [
        "node is 18.19.0, wanted >=20", "go is 1.22.4, wanted 1.21.x", "cargo-nope is not installed (wanted *)",
        "weird printed no version ('no numbers'; wanted >=1)"]


def test_budget_reserves_each_box_ttl_and_refuses_the_box_that_could_exceed_it() -> None:
    now = 10_000.0
    box = budget.Spend("a", hourly=0.5, monthly=None, ttl_s=90 * 60, created_at=now)
    assert box.ceiling() == 1.0  # 90 min = two started hours
    assert budget.refusal([], box, budget=1.0, now=now) is None
    live = [box]
    second = budget.Spend("b", 0.5, None, 90 * 60, now)
    why = budget.refusal(live, second, budget=1.5, now=now)
    assert why is not None and "budget 1.5 reached" in why and "stopped forging" in why
    box.burned_at = now + 600  # burned after 10 min: one started hour, 0.5
    assert budget.spent(live, now + 700) == 0.5
    assert budget.refusal(live, second, budget=1.5, now=now + 700) is None
    capped = budget.Spend("c", 1.0, monthly=2.0, ttl_s=24 * 3600, created_at=now)
    assert capped.ceiling() == 2.0  # the monthly cap
    assert budget.load(budget.dump(live)) == live and budget.spent([]) is None


def _done(plan: dict, plan_id: str, **changes: str) -> dict:
    parsed = parse_plan(plan)
    return {"plan": parsed.model_dump(mode="json"), "board": {"plan_id": plan_id, "tasks": [
        {"id": t.id, "branch": t.branch, "state": changes.get(t.id, "succeeded"), "content_hash": t.content_hash(),
         "ref": f"refs/boxforge/x/{t.branch}"} for t in parsed.tasks]}}


def test_earlier_work_of_the_same_content_is_reused_and_a_changed_prerequisite_reruns_its_dependents() -> None:
    plan = parse_plan(PLAN)
    reused = _earlier_work([_done(PLAN, "p-1")], plan)
    assert sorted(reused) == ["api", "e2e", "ui"] and "done in plan p-1" in (reused["api"].reason or "")
    changed = {**PLAN, "tasks": [{**PLAN["tasks"][0], "prompt": "x2"}, *PLAN["tasks"][1:]]}
    assert sorted(_earlier_work([_done(PLAN, "p-1")], parse_plan(changed))) == ["ui"]  # e2e starts from a new api
    assert sorted(_earlier_work([_done(PLAN, "p-1", ui="failed")], plan)) == ["api"]
    other_base = {**PLAN, "base": "develop"}
    assert _earlier_work([_done(PLAN, "p-1")], parse_plan(other_base)) == {}


def test_a_dead_owner_is_seen_and_one_claim_of_an_orphan_wins(tmp_path: Path) -> None:
    me = this_process()
    assert owner_alive(me) and not owner_alive(None) and not owner_alive({})
    child = subprocess.Popen(["true"])
    child.wait()
    assert not owner_alive({**me, "pid": child.pid})
    assert not owner_alive({**me, "since": "1"})  # the pid now names another process
    assert owner_alive({**me, "pid": 1, "host": "elsewhere"})  # another host's process: not ours to judge
    store = Store(tmp_path / "state.db")
    dead = {**me, "pid": child.pid, "token": "t-dead"}
    store.save_plan("p-0000000001", "k", "p", "running", {"board": {"repo": "/r"}, "owner": dead})
    first, second = {**me, "token": "t-1"}, {**me, "token": "t-2"}
    assert store.claim_plan("p-0000000001", "t-dead", first)
    assert not store.claim_plan("p-0000000001", "t-dead", second)
    state, doc = store.plan("p-0000000001") or ("", {})
    assert state == "running" and doc["owner"]["token"] == "t-1" and doc["owner"]["pid"] == os.getpid()
    assert [d["board"]["repo"] for d in store.plans_of_repo("/r")] == ["/r"] and store.plans_of_repo("/x") == []


def test_conflicts_found_through_the_path_index_are_those_of_every_pair() -> None:
    rng = random.Random(14)
    parts = ["a", "b", "c", "*", "**", "a*", "x.py"]
    tasks = []
    for i in range(60):
        owns = ["/".join(rng.choice(parts) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 3))]
        tasks.append({"id": f"t{i}", "branch": f"b{i}", "command": "true", "owns": owns,
                      **({"depends_on": [f"t{i - 1}"]} if i % 7 else {})})
    plan = parse_plan({"name": "random", "allow_overlap": True, "tasks": tasks})
    found = {(c.a, c.b) for c in check_plan(plan).conflicts}
    order = [t.id for t in plan.tasks]
    chain = {t.id: i // 7 for i, t in enumerate(plan.tasks)}  # tasks of one chain of 7 depend on each other
    brute = {(x.id, y.id) for i, x in enumerate(plan.tasks) for y in plan.tasks[i + 1:]
             if chain[x.id] != chain[y.id] and any(globs.overlap(globs.segments(p), globs.segments(q))
                                                   for p in x.owns for q in y.owns)}
    assert found == brute and len(brute) > 20 and order == topo_order(plan)


def test_a_taken_over_board_keeps_work_in_flight_and_restarts_the_rest() -> None:
    states = {"done": ("succeeded", "b1"), "agent": ("running", "b2"), "check": ("checking", "b3"),
              "forging": ("starting", "b4"), "queued": ("waiting_box", None), "later": ("pending", None)}
    board = PlanBoard(plan_id="p-0000000001", name="p", state="running", repo="/r", started_at=0.0, tasks=[
        TaskBoard(id=tid, branch=f"b/{tid}", state=state, box=box) for tid, (state, box) in states.items()])
    assert _restart(board) == ["b4"]  # the box of the attempt that starts over is burned
    assert {t.id: t.state for t in board.tasks} == {"done": "succeeded", "agent": "running", "check": "checking",
                                                    "forging": "pending", "queued": "pending", "later": "pending"}
    assert board.boxes_in_use == 2
