"""Plans under faults, on real boxes with the stand-in agent: a box burned mid-task (the task reassigned
and completed on another box), require: unmet, the orchestrator SIGKILLed mid-plan (resumed by the next
MCP server from the store, no task run twice), a budget that stops the plan (Hetzner fake's prices)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import Client

from server.config import Settings
from tests.fakes.hetzner_api import FakeHetzner, running_fake
from tests.plans.support import plan_repo
from tests.support import boxforge_cmd, call, cli_env, git, make_settings
from tests.test_hetzner import hetzner_settings
from tests.workflow_support import session

BOXES = {"ttl": "30m", "agent": "custom", "agent_command": "sh tools/agent.sh"}


async def until(client: Client, plan_id: str, done: Any, timeout: float = 300) -> dict[str, Any]:
    """The board once ``done(board)`` holds (long-polls plan_status; fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    board = await call(client, "plan_status", plan_id=plan_id)
    while not done(board):
        assert time.monotonic() < deadline, board
        assert board["state"] == "running", board
        board = await call(client, "plan_status", plan_id=plan_id, wait_s=5)
    return board


def tasks_of(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in board["tasks"]}


async def test_a_box_burned_mid_task_is_replaced_and_require_is_checked_on_every_box(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = plan_repo(tmp_path / "repo")
    plan = {"name": "faults", "repo": str(repo), "boxes": BOXES, "require": {"git": ">=2", "python3": ">=3.7"},
            "tasks": [{"id": "slow", "branch": "feat/slow", "prompt": "sleep 3\nwrite out/slow.txt made",
                       "check": "test -s out/slow.txt"}]}
    async with session(settings) as client:
        started = await call(client, "plan_start", plan=plan)
        board = await until(client, started["plan_id"], lambda b: tasks_of(b)["slow"]["state"] == "running")
        first_box = tasks_of(board)["slow"]["box"]
        await call(client, "destroy_server", name=first_box)  # the box dies under its task
        board = await until(client, started["plan_id"], lambda b: b["state"] != "running")
        slow = tasks_of(board)["slow"]
        assert board["state"] == "succeeded", board
        assert slow["attempts"] == 2 and slow["box"] != first_box and slow["check"] == "passed"
        assert slow["reason"].startswith(f"attempt 1: box {first_box} ") and "reassigned to a new box" in slow["reason"]
        assert git(repo, "show", "feat/slow:out/slow.txt") == "made"
        assert (await call(client, "list_servers"))["servers"] == []

        unmet = {**plan, "name": "unmet", "require": {"git": ">=99", "no-such-tool": "*"}}
        unmet["tasks"] = [{"id": "never", "branch": "feat/never", "prompt": "write never.txt x"}]
        board = await call(client, "plan_start", plan=unmet)
        board = await until(client, board["plan_id"], lambda b: b["state"] != "running")
        never = tasks_of(board)["never"]
        assert board["state"] == "failed" and never["state"] == "failed" and never["attempts"] == 1
        assert "does not meet require: git is 2." in never["reason"] and ", wanted >=99" in never["reason"]
        assert "no-such-tool is not installed (wanted *)" in never["reason"] and never.get("job_id") is None
        assert (await call(client, "list_servers"))["servers"] == []


def _stored(settings: Settings) -> tuple[str, dict[str, Any]] | None:
    """The one plan in the store, read as another process would (None before the store or plan exists)."""
    try:
        with sqlite3.connect(f"file:{settings.db_path}?mode=ro", uri=True, timeout=10) as db:
            row = db.execute("SELECT plan_id, doc FROM plans").fetchone()
    except sqlite3.OperationalError:  # not made yet
        return None
    return (row[0], json.loads(row[1])) if row else None


def _poll_store(settings: Settings, proc: subprocess.Popen[str], done: Any, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"boxforge plan run ended early: {proc.returncode}"
        stored = _stored(settings)
        if stored and done(stored[1]["board"]):
            return stored[1]
        assert time.monotonic() < deadline, stored
        time.sleep(0.2)  # the other process's progress, polled with a deadline


def _plan_jobs(settings: Settings, task: str) -> tuple[int, int]:
    """How many agent jobs and check jobs the task's boxes ran (every job is a row of the store)."""
    with sqlite3.connect(f"file:{settings.db_path}?mode=ro", uri=True, timeout=10) as db:
        keys = [k for (k,) in db.execute("SELECT idempotency_key FROM jobs WHERE idempotency_key LIKE ?",
                                         (f"plan.%.{task}.%",))]
    checks = sum(k.endswith(".check") for k in keys)
    return len(keys) - checks, checks


async def test_an_orchestrator_sigkilled_mid_plan_is_resumed_by_the_next_server(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = plan_repo(tmp_path / "repo")
    plan = {"name": "survive", "repo": "repo", "boxes": {**BOXES, "max": 1}, "tasks": [
        {"id": "a", "branch": "feat/a", "prompt": "write a.txt first"},
        {"id": "b", "branch": "feat/b", "depends_on": ["a"], "prompt": "sleep 4\nwrite b.txt second",
         "check": "test -s a.txt && test -s b.txt"}]}
    (tmp_path / "plan.yml").write_text(yaml.safe_dump(plan))
    proc = subprocess.Popen([*boxforge_cmd(), "plan", "run", str(tmp_path / "plan.yml"), "--json"],
                            env=cli_env(settings), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        doc = _poll_store(settings, proc, lambda b: tasks_of(b)["b"]["state"] == "running")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    before = tasks_of(doc["board"])
    assert doc["owner"]["pid"] == proc.pid and before["a"]["state"] == "succeeded" and before["b"]["job_id"]
    plan_id = doc["board"]["plan_id"]
    stored = _stored(settings)
    assert stored is not None and stored[1]["board"]["state"] == "running"  # nobody drives it now

    async with session(settings) as client:  # the next server takes the plan over at start
        board = await until(client, plan_id, lambda b: b["state"] != "running")
        after = tasks_of(board)
        assert board["state"] == "succeeded", board
        assert after["a"]["finished_at"] == before["a"]["finished_at"] and after["a"]["attempts"] == 1
        assert (after["b"]["job_id"], after["b"]["box"], after["b"]["attempts"]) == (
            before["b"]["job_id"], before["b"]["box"], 1)  # re-attached, not restarted
        assert after["b"]["check"] == "passed" and after["b"]["finished_at"] > before["b"]["started_at"]
        assert [_plan_jobs(settings, t) for t in "ab"] == [(1, 0), (1, 1)]  # each agent and check ran once
        assert git(repo, "show", "feat/b:b.txt") == "second" and git(repo, "show", "feat/b:a.txt") == "first"
        assert (await call(client, "list_servers"))["servers"] == []
        stored = _stored(settings)
        assert stored is not None and stored[1]["owner"]["pid"] == os.getpid()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeHetzner]:
    with running_fake(tmp_path / "fake-boxes") as started:
        yield started


async def test_a_budget_stops_forging_and_says_so(fake: FakeHetzner, tmp_path: Path) -> None:
    settings = hetzner_settings(tmp_path / "state", fake)
    repo = plan_repo(tmp_path / "repo")
    # cx23 costs 0.0067/h here: a box of a 30 min TTL reserves one started hour; two do not fit in 0.01
    plan = {"name": "priced", "repo": str(repo), "budget": 0.01,
            "boxes": {**BOXES, "provider": "hetzner", "size": "cx23", "location": "fsn1"},
            "tasks": [{"id": "one", "branch": "feat/one", "prompt": "write one.txt 1"},
                      {"id": "two", "branch": "feat/two", "prompt": "write two.txt 2"},
                      {"id": "three", "branch": "feat/three", "depends_on": ["two"], "prompt": "write 3.txt 3"}]}
    async with session(settings) as client:
        board = await call(client, "plan_start", plan={**plan, "boxes": {**plan["boxes"], "max": 1}})
        board = await until(client, board["plan_id"], lambda b: b["state"] != "running")
        tasks = tasks_of(board)
        assert board["state"] == "failed" and board["reason"].startswith("budget 0.01 reached")
        assert tasks["one"]["state"] == "succeeded" and git(repo, "show", "feat/one:one.txt") == "1"
        assert tasks["two"]["state"] == "blocked" and "stopped forging" in tasks["two"]["reason"]
        assert tasks["two"].get("box") is None and tasks["three"]["state"] == "blocked"
        assert board["cost_so_far"] == pytest.approx(0.0067)
        assert len(fake.user_data_seen) == 1  # the second box was never ordered
        assert (await call(client, "list_servers"))["servers"] == []
