"""The CLI in the shell, as subprocesses on one shared box: exit codes (``run --timeout`` exits 124 with the
job id and the output so far, ``--kill-on-timeout`` says killed, ``job`` and ``logs --follow`` exit with the
job's code), an unquoted command's words passed as typed (or "quote the command"), Rich markup shown as
typed, expiry warnings in ``ls`` and ``run``, ``extend`` refusing to shorten without ``--shorten``, empty
``ls`` and ``burn --all`` saying so, and ``run`` on a box that expired saying when and what came home.

The box is forged with ``--agent claude`` and a stand-in for Claude Code that refuses
``--dangerously-skip-permissions`` as root unless ``IS_SANDBOX=1``, as the real one does (issue 10's
last test): the preset runs as root inside the isolated box, which is not root on the host."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from server.config import Settings
from server.service import open_fleet
from tests.support import (
    assert_cli_words,
    boxforge_cmd,
    cli_env,
    cli_in_process,
    git,
    local_boxes_dir,
    make_repo,
    make_settings,
)

BOX = "shell1"
JOB_ID = re.compile(r"j-[0-9a-f]{12}")
REFUSAL = "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons"
STAND_IN_CLAUDE = f"""#!/bin/sh
# A stand-in for Claude Code's CLI: its root check, then what it was given and who it runs as.
for arg in "$@"; do [ "$arg" = --dangerously-skip-permissions ] && skip=1; done
if [ -n "${{skip:-}}" ] && [ "$(id -u)" = 0 ] && [ "${{IS_SANDBOX:-}}" != 1 ]; then
  echo "{REFUSAL}" >&2; exit 1
fi
echo "args: $*"
echo "uid in the box: $(id -u)"
echo "host uid of the box's root: $(awk '$1 == 0 {{print $2}}' /proc/self/uid_map)"
echo "prompt: $(cat)"
"""


def boxforge(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return assert_cli_words(subprocess.run([*boxforge_cmd(), *args], env=cli_env(settings), capture_output=True,
                                           text=True, timeout=timeout))


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One box for the module, with 9 minutes to live: inside the expiry warning from the start."""
    home = tmp_path_factory.mktemp("shell")
    settings = make_settings(home / "state")
    repo = make_repo(home / "repo")
    (repo / "claude").write_text(STAND_IN_CLAUDE)
    git(repo, "add", "claude")
    git(repo, "commit", "-qm", "a stand-in for Claude Code")
    up = boxforge(settings, "up", "--name", BOX, "--repo", str(repo), "--ttl", "9m", "--agent", "claude",
                  "--agent-install", "install -m 755 claude /usr/local/bin/claude")
    assert up.returncode == 0, up.stderr
    yield settings
    boxforge(settings, "burn", "--all", "--yes", "--no-harvest")


def test_the_claude_preset_runs_as_root_in_the_box_with_permission_prompts_off_and_not_as_root_on_the_host(
        settings: Settings) -> None:
    followed = boxforge(settings, "agent", BOX, "fix the flaky test", "--follow")
    assert followed.returncode == 0, followed.stderr
    lines = dict(line.split(": ", 1) for line in followed.stdout.splitlines())
    assert lines["args"] == "-p --dangerously-skip-permissions" and lines["prompt"] == "fix the flaky test"
    assert lines["uid in the box"] == "0"
    assert int(lines["host uid of the box's root"]) > 0
    # and from the host: the box's processes run under that uid, not root
    (box_dir,) = local_boxes_dir(settings).glob("lb-*")
    server_pid = int((box_dir / "server.pid").read_text())
    host_uid = int(Path(f"/proc/{server_pid}/status").read_text().split("\nUid:")[1].split()[0])
    assert host_uid == int(lines["host uid of the box's root"])
    # without IS_SANDBOX=1 (which the box sets) the stand-in refuses, as Claude Code does
    refused = boxforge(settings, "run", BOX, "env -u IS_SANDBOX claude -p --dangerously-skip-permissions </dev/null")
    assert refused.returncode == 1 and REFUSAL in refused.stderr


def test_run_takes_an_unquoted_commands_words_as_typed(settings: Settings) -> None:
    ran = boxforge(settings, "run", BOX, "printf", "%s|", "two words", "$HOME")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "two words|$HOME|"
    assert "box expires in" in ran.stderr  # 9 minutes left: run warns
    dashed = boxforge(settings, "run", BOX, "--", "ls", "-d", "/")
    assert dashed.returncode == 0 and dashed.stdout == "/\n"


def test_run_with_an_option_of_the_command_says_quote_it(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    refused = cli_in_process(settings, monkeypatch, capsys, "run", BOX, "ls", "-la")
    assert refused.returncode == 2
    assert "quote the command" in refused.stderr and "boxforge run NAME 'ls -la'" in refused.stderr


def test_run_past_its_timeout_prints_the_output_so_far_and_exits_124_then_job_and_logs_exit_with_its_code(
        settings: Settings) -> None:
    # it waits for a release file the test makes once run has given up on it: no race with its end; 3 s are
    # what the first echo gets to land, however loaded the machine
    ran = boxforge(settings, "run", BOX, "echo first; until [ -e released ]; do sleep 0.1; done; echo second; exit 7",
                   "--timeout", "3")
    assert ran.returncode == 124, ran.stderr
    assert ran.stdout == "first\n"
    job_id = JOB_ID.search(ran.stderr)
    assert job_id, ran.stderr
    assert f"boxforge logs {job_id[0]} --follow" in ran.stderr
    assert boxforge(settings, "run", BOX, "touch released").returncode == 0
    followed = boxforge(settings, "logs", job_id[0], "--follow")
    assert followed.returncode == 7 and followed.stdout == "first\nsecond\n"
    shown = boxforge(settings, "job", job_id[0])
    assert shown.returncode == 7 and "(exit 7)" in shown.stderr


def test_kill_on_timeout_says_killed_and_exits_124(settings: Settings) -> None:
    ran = boxforge(settings, "run", BOX, "echo started; sleep 60", "--timeout", "3", "--kill-on-timeout")
    assert ran.returncode == 124, ran.stderr
    assert ran.stdout == "started\n" and "killed" in ran.stderr


def test_markup_in_commands_and_output_shows_as_typed(settings: Settings) -> None:
    typed = "echo '[bootstrap] [red]not red[/red] [bold]'"
    ran = boxforge(settings, "run", BOX, typed)
    assert ran.stdout == "[bootstrap] [red]not red[/red] [bold]\n"
    jobs = boxforge(settings, "jobs")
    assert jobs.returncode == 0
    assert typed in jobs.stdout  # piped: the whole command, uncut, markup as typed
    assert "[bootstrap]" in jobs.stdout  # the create's own job


def test_ls_warns_of_the_near_expiry(settings: Settings) -> None:
    listed = boxforge(settings, "ls")
    assert listed.returncode == 0 and BOX in listed.stdout
    assert f"{BOX}: box expires in" in listed.stderr and "boxforge extend NAME TTL" in listed.stderr


def test_extend_that_would_shorten_the_expiry_is_refused_without_shorten(settings: Settings) -> None:
    refused = boxforge(settings, "extend", BOX, "2m")
    assert refused.returncode == 1 and "--shorten" in refused.stderr and "would shorten" in refused.stderr
    assert boxforge(settings, "extend", BOX, "8m", "--shorten").returncode == 0


def test_run_on_a_box_that_expired_says_when_and_where_its_work_went(settings: Settings) -> None:
    async def expire_and_reap() -> list[str]:
        async with open_fleet(settings) as fleet:
            rec = await fleet.repo.live_box(BOX)
            assert rec is not None
            await fleet.repo.update_box(rec.request_id, expires_at=time.time() - 5)  # the reaper takes the earlier
            burned, _ = await fleet.reap_once()
            return burned

    assert anyio.run(expire_and_reap) == [BOX]
    ran = boxforge(settings, "run", BOX, "true")
    assert ran.returncode == 1
    assert f"server {BOX!r} expired at " in ran.stderr and "ago) and was burned" in ran.stderr
    assert f"came home as refs/boxforge/{BOX}/" in ran.stderr
    assert "unknown server" not in ran.stderr


def test_empty_ls_and_burn_all_say_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    empty = make_settings(tmp_path / "state")
    listed = cli_in_process(empty, monkeypatch, capsys, "ls")
    assert listed.returncode == 0 and listed.stdout == "" and "no live boxes" in listed.stderr
    burned = cli_in_process(empty, monkeypatch, capsys, "burn", "--all", "--yes")
    assert burned.returncode == 0 and "no live boxes to burn" in burned.stderr
