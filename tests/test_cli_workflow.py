"""The CLI of the agent workflow as a user runs it (subprocesses on a temp state dir): every command's
--json is one parseable document, `ssh` goes through the system ssh client with the pinned key only,
`logs` follows a box's create logs, `agent` runs the box's agent, `diff` reviews it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from server.config import Settings
from server.keys import HOST_PUB_FILE, generate_keypair
from tests.support import assert_cli_words, boxforge_cmd, cli_env, make_settings
from tests.workflow_support import make_agent_repo

KEY = "cli-agent-key-0123456789"


def boxforge(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cli_env(settings), "AGENT_KEY": KEY}
    return assert_cli_words(subprocess.run([*boxforge_cmd(), *args], env=env, capture_output=True, text=True,
                                           timeout=120))


def as_json(settings: Settings, *args: str) -> Any:
    result = boxforge(settings, *args, "--json")
    assert result.returncode == 0, (args, result.stderr)
    return json.loads(result.stdout)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "state")


def test_every_command_prints_one_json_document(settings: Settings, tmp_path: Path) -> None:
    repo = make_agent_repo(tmp_path / "repo", boxfile="setup:\n  - echo set up from yml\n")
    up = as_json(settings, "up", "feat/cli", "--repo", str(repo), "--agent", "custom", "--agent-install",
                 "./tools/install-agent.sh", "--agent-command", "stub-agent", "--env", "AGENT_KEY", "--ttl", "20m")
    assert [s["name"] for s in up["servers"]] == ["feat-cli"] and up["failed"] == {}
    box = up["servers"][0]
    assert box["agent"] == "custom" and box["bootstrap_job_id"] and box["setup_job_id"]

    run = as_json(settings, "run", "feat-cli", "echo ran")
    assert run["stdout"] == "ran\n"
    assert as_json(settings, "job", run["job_id"])["state"] == "succeeded"
    assert run["job_id"] in {j["job_id"] for j in as_json(settings, "jobs")["jobs"]}
    logs = as_json(settings, "logs", "feat-cli")
    assert [j["job_id"] for j in logs["jobs"]] == [box["bootstrap_job_id"], box["setup_job_id"]]
    assert "set up from yml" in logs["jobs"][1]["stdout"]
    assert as_json(settings, "logs", run["job_id"], "--follow")["jobs"][0]["stdout"] == "ran\n"

    agent = as_json(settings, "agent", "feat-cli", "take notes", "--follow")
    assert agent["status"]["state"] == "succeeded"
    assert "prompt:take notes" in agent["status"]["stdout"] and KEY not in agent["status"]["stdout"]
    assert f"key-length:{len(KEY)}" in agent["status"]["stdout"]
    diff = as_json(settings, "diff", "feat-cli")
    assert {f["path"] for f in diff["files"]} == {"README.md", "agent-notes.txt"}

    ssh = as_json(settings, "ssh", "feat-cli")
    assert ssh["port"] == int(box["address"].rsplit(":", 1)[1])
    assert ssh["known_hosts_line"].startswith("boxforge-feat-cli ssh-ed25519 ")
    assert as_json(settings, "ls")["count"] == 1
    assert as_json(settings, "extend", "feat-cli", "1h")["time_left_s"] > 50 * 60
    assert as_json(settings, "reap")["burned"] == []
    assert [r["name"] for r in as_json(settings, "burn", "feat-cli")["results"]] == ["feat-cli"]

    demo = as_json(settings, "demo", "--boxes", "1")
    assert [b["state"] for b in demo["boxes"]] == ["succeeded"]


def test_up_reports_each_step_when_stderr_is_not_a_terminal(settings: Settings, tmp_path: Path) -> None:
    result = boxforge(settings, "up", "--name", "steps", "--ttl", "10m")
    assert result.returncode == 0, result.stderr
    steps = [line.split(": ")[-1] for line in result.stderr.splitlines() if "steps: " in line]
    assert steps == ["provision", "ssh", "clone", "agent", "setup", "ready"]
    assert "1 of 1 box(es) up" in result.stdout
    boxforge(settings, "burn", "steps")


def test_env_values_are_never_taken_from_the_command_line(settings: Settings) -> None:
    result = boxforge(settings, "up", "--name", "leak", "--env", "AGENT_KEY=visible-in-ps")
    assert result.returncode == 1 and "not NAME=VALUE" in result.stderr


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client")
def test_ssh_uses_the_pinned_host_key_only(settings: Settings, tmp_path: Path) -> None:
    assert boxforge(settings, "up", "--name", "shell", "--ttl", "10m").returncode == 0
    try:
        ran = boxforge(settings, "ssh", "shell", "--", "pwd")
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.splitlines()[0].endswith("/project")  # /root/project in an isolated box
        (key_dir,) = settings.keys_dir.iterdir()
        (key_dir / HOST_PUB_FILE).write_text(generate_keypair("impostor")[1] + "\n")
        refused = boxforge(settings, "ssh", "shell", "--", "echo", "should-not-run")
        assert refused.returncode == 255 and "should-not-run" not in refused.stdout
        assert "host key" in refused.stderr.lower()
    finally:
        boxforge(settings, "burn", "shell")
