"""Fan-out and fan-in end to end on real local boxes: seeding from a smart-HTTP server that demands a
token (the canary never reaches the box: files, env of every box process, job output), vm_compare's
overlaps, ``boxforge land`` of two clean branches and a conflicting one (stops with the repo clean),
push with the orchestrator's credentials to that server and to a local bare repo, and the CLI verbs."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

from server.service import open_fleet
from tests.git.http_git import smart_git_server
from tests.support import (
    assert_cli_words,
    box_pids,
    boxforge_cmd,
    call,
    cli_env,
    git,
    local_boxes_dir,
    make_repo,
    make_settings,
)
from tests.workflow_support import session

CANARY = "canarytok3n7f1d2e9"
COMMIT = "git -c user.name=agent -c user.email=a@x commit -qam"


def _box_sees(settings, canary: str) -> list[str]:
    """Where on the box (its files, the env and command line of every box process) the canary shows."""
    found = []
    for box_dir in local_boxes_dir(settings).glob("lb-*"):
        for path in box_dir.rglob("*"):
            try:
                if path.is_file() and not path.is_symlink() and canary.encode() in path.read_bytes():
                    found.append(str(path))
            except OSError:
                continue
        for pid in box_pids(box_dir.name):
            for what in ("environ", "cmdline"):
                try:
                    if canary.encode() in Path(f"/proc/{pid}/{what}").read_bytes():
                        found.append(f"pid {pid} {what}")
                except OSError:
                    continue
    return found


def cli(settings, *args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**cli_env(settings), **(env_extra or {})}
    done = subprocess.run([*boxforge_cmd(), *args], env=env, capture_output=True, text=True, timeout=180)
    return assert_cli_words(done)


async def test_a_token_repo_seeds_boxes_that_never_see_the_token_and_push_goes_back(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    settings = dataclasses.replace(settings, env={**settings.env, "BOXFORGE_GIT_TOKEN": CANARY})
    repo = make_repo(tmp_path / "repo")
    with smart_git_server(repo, CANARY) as (url, bare, seen):
        async with session(settings) as client:
            made = await call(client, "create_server", name="tok", repo=url.replace("//", f"//{CANARY}@", 1),
                              branch="feat/pushme", agent="custom", agent_install='env > "$HOME/install-env"',
                              agent_command="cat")
            assert made["repo"] == url and made["base_commit"] == git(repo, "rev-parse", "main")
            job = await call(client, "vm_bash", server="tok", background=True,
                             command="env; cat .git/config; git remote -v; sleep 1")
            status = await call(client, "vm_job_status", job_id=job["job_id"], wait_s=20)
            await call(client, "vm_bash", server="tok", command=f"echo pushed > p.txt && git add p.txt && {COMMIT} p")
            assert CANARY not in json.dumps([made, status]) and url in status["stdout"]
            assert _box_sees(settings, CANARY) == []
            pushed = await call(client, "vm_push", server="tok")
            assert git(bare, "rev-parse", "refs/heads/feat/pushme") == pushed["commit"]
            assert CANARY not in json.dumps(pushed)
            burned = await call(client, "destroy_server", name="tok")  # a URL source: a bundle is kept too
            assert burned["harvested"] and "bundle" in burned["harvest"]
    (bundle,) = (settings.home / "harvests").glob("tok-*.bundle")
    assert "refs/boxforge/tok/feat/pushme" in git(tmp_path, "bundle", "list-heads", str(bundle))
    assert any(seen)  # the orchestrator authenticated (Basic auth) for the seed and the push
    assert CANARY.encode() not in settings.db_path.read_bytes()


async def test_fan_out_compare_land_and_push_through_mcp_and_the_cli(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_repo(tmp_path / "repo")
    backup = tmp_path / "backup.git"
    git(tmp_path, "init", "-q", "--bare", str(backup))
    git(repo, "remote", "add", "backup", str(backup))
    work = {"one": "echo one > one.txt && git add one.txt && " + COMMIT + " one",
            "two": "echo two > two.txt && git add two.txt && " + COMMIT + " two",
            "three": "echo mine > one.txt && git add one.txt && " + COMMIT + " three"}
    async with session(settings) as client:
        for name, command in work.items():
            await call(client, "create_server", name=name, repo=str(repo), branch=f"feat/{name}")
            await call(client, "vm_bash", server=name, command=command)
        compared = await call(client, "vm_compare", servers=["one", "two", "three"])
        assert [b["ahead"] for b in compared["boxes"]] == [1, 1, 1]
        assert compared["overlaps"] == [{"servers": ["one", "three"], "files": ["one.txt"]}]
        assert "vm_fetch" in compared["hint"]

        shown = cli(settings, "compare", "one", "two", "three")
        assert shown.returncode == 0 and "overlap one and three: one.txt" in shown.stdout
        fetched = cli(settings, "fetch", "two", "--json")
        assert json.loads(fetched.stdout)["ref"] == "refs/boxforge/two/feat/two"
        (repo / "untracked-of-mine.txt").write_text("the user's\n")
        landed = cli(settings, "land", "one", "two", "three", "--into", "main")
        assert landed.returncode == 1, landed.stdout + landed.stderr
        assert "stopped at three: one.txt conflict with one" in landed.stdout
        assert git(repo, "status", "--porcelain") == "?? untracked-of-mine.txt"
        assert not (repo / ".git" / "MERGE_HEAD").exists()
        assert git(repo, "show", "main:one.txt") == "one" and git(repo, "show", "main:two.txt") == "two"
        assert (repo / "two.txt").read_text() == "two\n"  # the checked-out main moved with its tree

        pushed = cli(settings, "push", "two", "--remote", "backup")
        assert pushed.returncode == 0, pushed.stderr
        assert git(backup, "rev-parse", "refs/heads/feat/two") == git(repo, "rev-parse", "refs/boxforge/two/feat/two")
        burned = cli(settings, "burn", "--all", "--yes")
        assert burned.returncode == 0 and "came home" in burned.stdout
    async with open_fleet(settings) as fleet:
        harvests = [e for e in fleet.store.events() if e["kind"] == "harvest"]
    assert {e["box_name"] for e in harvests} >= {"one", "two", "three"}
