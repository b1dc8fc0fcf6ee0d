"""sh/bootstrap.sh, sh/agent-run.sh and sh/boxfile-setup.sh under each local shell, without SSH:
checkouts and base commits, prompt-free SSH clones, the agent install paths, the agent-run file."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from server.agents import plan_agent
from server.bootstrap import base_commit_from, bootstrap_script, parse_repo
from server.boxfile import parse_boxfile, setup_script
from server.errors import InvalidInput
from tests.support import git, make_repo

TOOLS = ("mkdir", "date", "chmod", "cat", "cksum", "git", "sh", "head", "printf", "echo")


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A PATH of just the tools the bootstrap needs: no npm, no bash, nothing of this machine's agents."""
    path = tmp_path / "bin"
    path.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            (path / tool).symlink_to(found)
    return path


def run(shell: tuple[str, ...], script: str, home: Path, bin_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*shell, "-c", script], capture_output=True, text=True, timeout=120, cwd=home,
                          env={"HOME": str(home), "PATH": str(bin_dir), **env})


def test_clone_checks_out_a_new_branch_and_records_the_base(shell, home, bin_dir, tmp_path) -> None:
    repo = make_repo(tmp_path / "repo")
    script = bootstrap_script(project_dir=str(home / "project"), repo=parse_repo(str(repo)), branch="feat/new")
    done = run(shell, script, home, bin_dir)
    assert done.returncode == 0, done.stderr
    tip = git(repo, "rev-parse", "main")
    assert done.stdout.splitlines()[0] == "BOXFORGE_STEP=clone"
    assert "BOXFORGE_STEP=agent" in done.stdout and base_commit_from(done.stdout) == tip
    assert git(home / "project", "branch", "--show-current") == "feat/new"
    assert (home / ".boxforge" / "base").read_text() == tip + "\n"
    # a rerun clones nothing and keeps the base, even after the agent's own commit
    (home / "project" / "NEW.md").write_text("x")
    git(home / "project", "add", ".")
    git(home / "project", "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "agent work")
    again = run(shell, script, home, bin_dir)
    assert "already cloned" in again.stdout and base_commit_from(again.stdout) == tip


def test_an_existing_branch_is_checked_out(shell, home, bin_dir, tmp_path) -> None:
    repo = make_repo(tmp_path / "repo")
    script = bootstrap_script(project_dir=str(home / "p"), repo=parse_repo(str(repo)), branch="feat/existing")
    assert run(shell, script, home, bin_dir).returncode == 0
    assert (home / "p" / "FEATURE.md").exists()
    assert base_commit_from(run(shell, script, home, bin_dir).stdout) == git(repo, "rev-parse", "feat/existing")


def test_an_ssh_clone_never_prompts(shell, home, bin_dir, tmp_path) -> None:
    calls = tmp_path / "ssh-calls"
    (bin_dir / "ssh").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {calls}\nexit 1\n')
    (bin_dir / "ssh").chmod(0o755)
    script = bootstrap_script(project_dir=str(home / "p"), repo=parse_repo("git@git.invalid:org/repo.git"),
                              branch=None)
    done = run(shell, script, home, bin_dir)
    assert done.returncode != 0
    assert "-o BatchMode=yes -o StrictHostKeyChecking=accept-new" in calls.read_text()


def test_a_seeded_checkout_is_not_cloned_and_keeps_its_base(shell, home, bin_dir) -> None:
    (home / "p").mkdir()
    (home / ".boxforge").mkdir()
    (home / ".boxforge" / "base").write_text("0123abc\n")
    script = bootstrap_script(project_dir=str(home / "p"), repo=parse_repo("https://github.com/org/repo.git"),
                              branch="b", seeded=True)
    done = run(shell, script, home, bin_dir)
    assert done.returncode == 0, done.stderr
    assert "BOXFORGE_STEP=clone" not in done.stdout and base_commit_from(done.stdout) == "0123abc"


def test_a_repo_token_never_reaches_a_bootstrap() -> None:
    with pytest.raises(InvalidInput, match="never goes to a box"):
        bootstrap_script(project_dir="/p", repo=parse_repo("https://ghp_secretTOKEN@github.com/org/r.git"),
                         branch=None)


def test_an_npm_agent_without_npm_fails_clearly_where_the_provider_cannot_install(shell, home, bin_dir) -> None:
    script = bootstrap_script(project_dir=str(home / "p"), repo=None, branch=None, agent="claude")
    done = run(shell, script, home, bin_dir)
    assert done.returncode == 3 and "npm is needed to install the claude agent" in done.stderr


def test_an_npm_agent_without_npm_runs_the_providers_package_install(shell, home, bin_dir, tmp_path) -> None:
    script = bootstrap_script(project_dir=str(home / "p"), repo=None, branch=None, agent="claude",
                              package_install=f"echo installing node > {tmp_path}/installed; exit 9")
    done = run(shell, script, home, bin_dir)
    assert done.returncode == 9 and (tmp_path / "installed").read_text() == "installing node\n"


def test_a_custom_agent_installs_once_and_its_run_file_passes_args_and_stdin(shell, home, bin_dir) -> None:
    plan = plan_agent("custom", install="echo installed >> ~/count", command='cat; printf "[%s]"')
    script = bootstrap_script(project_dir=str(home / "p"), repo=None, branch=None, agent=plan)
    for _ in range(2):
        done = run(shell, script, home, bin_dir)
        assert done.returncode == 0, done.stderr
    assert (home / "count").read_text() == "installed\n" and "already installed" in done.stdout
    agent_run = home / ".boxforge" / "agent-run"
    assert os.access(agent_run, os.X_OK)
    ran = subprocess.run([str(agent_run), "a b", "c"], input="the prompt\n", capture_output=True, text=True,
                         env={"HOME": str(home), "PATH": str(bin_dir)}, timeout=30)
    assert ran.stdout == "the prompt\n[a b][c]"


def test_setup_runs_each_command_and_stops_at_the_first_failure(shell, home, bin_dir) -> None:
    recipe = parse_boxfile("setup:\n  - echo one \"$0\" >/dev/null; echo one\n  - echo \"it's two\"; exit 7\n"
                           "  - echo never\n")
    done = run(shell, setup_script(recipe), home, bin_dir)
    assert done.returncode == 7
    assert done.stdout.splitlines() == ["[boxforge] setup 1/3: echo one \"$0\" >/dev/null; echo one", "one",
                                        "[boxforge] setup 2/3: echo \"it's two\"; exit 7", "it's two"]
    assert "[boxforge] failed: setup 2/3: echo \"it's two\"; exit 7 (exit 7)" in done.stderr
