"""Plans end to end on real local boxes with the stand-in agent (tests/plans/agent.sh), through the MCP
client and the CLI."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import yaml

from tests.plans.support import plan_repo, three_tasks
from tests.support import boxforge_cmd, call, call_error, cli_env, git, make_settings
from tests.workflow_support import session


async def test_three_tasks_with_a_dependency_through_mcp(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = plan_repo(tmp_path / "repo")
    async with session(settings) as client:
        started = await call(client, "plan_start", plan=three_tasks(repo))
        plan_id = started["plan_id"]
        assert started["state"] == "running" and "plan_status" in started["hint"]
        again = await call(client, "plan_start", plan=three_tasks(repo))  # the same plan is not run twice
        assert again["plan_id"] == plan_id
        deadline = time.monotonic() + 600
        board = started
        while board["state"] == "running":
            assert time.monotonic() < deadline, board
            board = await call(client, "plan_status", plan_id=plan_id, wait_s=30)
        tasks = {t["id"]: t for t in board["tasks"]}
        assert board["state"] == "succeeded", board
        assert board["done"] == 3 and board["failed"] == board["blocked"] == 0 and board["boxes_in_use"] == 0
        assert tasks["api"]["check"] == "passed" and tasks["e2e"]["check"] == "passed"
        assert tasks["ui"].get("check") is None and all(t["attempts"] == 1 for t in tasks.values())
        # e2e started after both prerequisites succeeded, from their merged work
        assert tasks["e2e"]["started_at"] >= max(tasks["api"]["finished_at"], tasks["ui"]["finished_at"]) - 1
        assert tasks["e2e"]["last_line"] == "agent done"
        assert git(repo, "show", "feat/e2e:server/api.txt") == "the api"
        assert git(repo, "show", "feat/e2e:web/ui.txt") == "the ui"
        assert git(repo, "show", "feat/e2e:e2e/e2e.txt") == "both"
        assert git(repo, "ls-tree", "-r", "--name-only", "feat/ui").splitlines() == [
            "README.md", "tools/agent.sh", "web/ui.txt"]
        assert tasks["api"]["ref"].startswith("refs/boxforge/") and git(repo, "rev-parse", tasks["api"]["ref"])
        listed = await call(client, "list_servers")
        assert listed["servers"] == []  # every box of the plan was burned
        assert (await call(client, "plan_status", plan_id=plan_id))["state"] == "succeeded"
        assert "no plan 'p-0000000000'" in await call_error(client, "plan_status", plan_id="p-0000000000")
        # the same tasks in another plan: done before, not run again (no box forged)
        resent = await call(client, "plan_start", plan=three_tasks(repo, name="three-again"))
        assert resent["plan_id"] != plan_id and resent["state"] == "running"
        resent = await call(client, "plan_status", plan_id=resent["plan_id"], wait_s=30)
        assert resent["state"] == "succeeded" and resent["boxes_in_use"] == 0, resent
        assert {t["id"]: t["ref"] for t in resent["tasks"]} == {t: tasks[t]["ref"] for t in tasks}
        assert all(f"done in plan {plan_id}" in t["reason"] for t in resent["tasks"])
        refused = await call_error(client, "plan_start", plan={**three_tasks(repo), "boxes": {"max": 0}})
        assert "pool of at least 1 box" in refused


def test_plan_run_and_status_through_the_cli(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = plan_repo(tmp_path / "repo")
    plan = three_tasks(repo, pool=2, name="cli-plan")
    plan["repo"] = "repo"  # relative to the plan file
    plan["tasks"] = plan["tasks"][:2]
    (tmp_path / "plan.yml").write_text(yaml.safe_dump(plan))
    env = cli_env(settings)
    ran = subprocess.run([*boxforge_cmd(), "plan", "run", str(tmp_path / "plan.yml"), "--json"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    board = json.loads(ran.stdout)
    assert board["state"] == "succeeded" and [t["state"] for t in board["tasks"]] == ["succeeded", "succeeded"]
    assert "api: running on cli-plan-api-" in ran.stderr
    assert git(repo, "show", "feat/api:server/api.txt") == "the api"
    shown = subprocess.run([*boxforge_cmd(), "plan", "status", board["plan_id"]], env=env, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "succeeded - 2 done" in shown.stdout and "feat/ui" in shown.stdout
    landed = subprocess.run([*boxforge_cmd(), "plan", "land", board["plan_id"], "--into", "main", "--json"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert landed.returncode == 0, landed.stderr
    assert json.loads(landed.stdout)["landed"] == ["api", "ui"]
    assert (repo / "server" / "api.txt").read_text() == "the api\n" and (repo / "web" / "ui.txt").exists()


async def test_a_failing_check_blocks_its_dependents_only(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = plan_repo(tmp_path / "repo")
    plan = three_tasks(repo, pool=2, name="failing")
    plan["tasks"][0]["check"] = "echo 'api tests: 2 failed' && exit 1"
    plan["tasks"].append({"id": "after-e2e", "branch": "feat/after", "depends_on": ["e2e"], "command": "true"})
    async with session(settings) as client:
        board = await call(client, "plan_start", plan=plan)
        deadline = time.monotonic() + 600
        while board["state"] == "running":
            assert time.monotonic() < deadline, board
            board = await call(client, "plan_status", plan_id=board["plan_id"], wait_s=30)
        tasks = {t["id"]: t for t in board["tasks"]}
        assert board["state"] == "failed" and (board["done"], board["failed"], board["blocked"]) == (1, 1, 2)
        assert tasks["api"]["state"] == "failed" and tasks["api"]["check"] == "failed"
        assert "check" in tasks["api"]["reason"] and "api tests: 2 failed" in tasks["api"]["reason"]
        assert tasks["ui"]["state"] == "succeeded"  # independent: it went on
        assert tasks["e2e"]["state"] == "blocked" and tasks["e2e"]["reason"] == "api failed"
        assert tasks["after-e2e"]["state"] == "blocked" and tasks["after-e2e"]["reason"] == "e2e blocked"
        assert tasks["e2e"].get("box") is None  # never forged
        assert git(repo, "show", "feat/ui:web/ui.txt") == "the ui"
        assert (await call(client, "list_servers"))["servers"] == []
        # the failed task's work was harvested at the burn, not lost
        assert git(repo, "for-each-ref", "--format=%(refname)", "refs/boxforge/").count("feat/api") == 1
