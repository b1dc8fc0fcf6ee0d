"""The CLI as a user runs it: a subprocess on a temp state dir."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from server.config import Settings
from tests.support import (
    assert_cli_words,
    boxforge_cmd,
    cli_env,
    cli_in_process,
    local_boxes_dir,
    make_repo,
    make_settings,
)


def boxforge(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return assert_cli_words(subprocess.run([*boxforge_cmd(), *args], env=cli_env(settings), capture_output=True,
                                           text=True, timeout=timeout))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "state")


def test_up_two_boxes_run_jobs_and_burn_all(settings: Settings, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    up = boxforge(settings, "up", "feat/a", "feat/b", "--repo", str(repo), "--ttl", "30m", "--json")
    assert up.returncode == 0, up.stderr
    made = json.loads(up.stdout)
    assert sorted(s["name"] for s in made["servers"]) == ["feat-a", "feat-b"]
    assert made["failed"] == {}

    run = boxforge(settings, "run", "feat-b", "git branch --show-current")
    assert run.returncode == 0, run.stderr
    assert run.stdout == "feat/b\n"

    failing = boxforge(settings, "run", "feat-a", "exit 7")
    assert failing.returncode == 7

    bg = boxforge(settings, "run", "feat-a", "echo from-background", "--background", "--json")
    job_id = json.loads(bg.stdout)["job_id"]
    follow = boxforge(settings, "job", job_id, "--follow")
    assert follow.returncode == 0 and follow.stdout == "from-background\n"

    slow = boxforge(settings, "run", "feat-a", "sleep 3", "--timeout", "0.5")
    assert slow.returncode == 124 and slow.stdout == "", slow.stderr
    assert re.search(r"boxforge logs j-[0-9a-f]{12} --follow", slow.stderr), slow.stderr

    jobs = boxforge(settings, "jobs", "--json")
    listed = json.loads(jobs.stdout)
    assert job_id in {j["job_id"] for j in listed["jobs"]}

    ls = boxforge(settings, "ls", "--json")
    assert json.loads(ls.stdout)["count"] == 2

    extend = boxforge(settings, "extend", "feat-a", "3h", "--json")
    assert json.loads(extend.stdout)["time_left_s"] > 2 * 3600

    refused = boxforge(settings, "burn", "--all")
    assert refused.returncode == 1 and "--yes" in refused.stderr

    burn = boxforge(settings, "burn", "--all", "--yes", "--json")
    assert burn.returncode == 0, burn.stderr
    assert sorted(r["name"] for r in json.loads(burn.stdout)["results"]) == ["feat-a", "feat-b"]
    assert json.loads(boxforge(settings, "ls", "--json").stdout)["count"] == 0
    assert not list(local_boxes_dir(settings).glob("lb-*"))


BAD_CLI: list[tuple[list[str], int, str]] = [
    (["run", "Not-A-Name!", "true"], 1, "invalid server name"),
    (["run", "nobox", "true"], 1, "unknown server 'nobox'"),
    (["up", "--name", "x", "--ttl", "abc"], 1, "invalid ttl"),
    (["up", "--name", "x", "--ttl", "9999d"], 1, "exceeds the maximum"),
    (["up"], 1, "give one or more branches"),
    (["up", "a/b", "a-b"], 1, "same box name"),
    (["job", "j-000000000000"], 1, "unknown job"),
    (["job", "../../etc/passwd"], 1, "invalid job id"),
    (["extend", "nobox", "soon"], 1, "invalid ttl"),
    (["burn"], 1, "give box names"),
    (["burn", "--all"], 1, "--yes"),
    (["frobnicate"], 2, "invalid choice"),
    (["run", "onlyname"], 2, "required"),
    (["demo", "--boxes", "99"], 2, "invalid choice"),
]


def test_bad_cli_input_exits_with_a_clear_message(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for i, (args, code, message) in enumerate(BAD_CLI):
        # the first as a subprocess (the entry point's wiring), the rest through main in this process
        result = boxforge(settings, *args) if i == 0 else cli_in_process(settings, monkeypatch, capsys, *args)
        assert result.returncode == code, (args, result.returncode, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr, args
