"""sh/bootstrap.sh, sh/agent-run.sh and sh/boxfile-setup.sh under each local shell, without SSH:
checkouts and base commits, prompt-free SSH clones, the agent install paths, the agent-run file."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

import dataclasses

from server.agents import AgentPlan, plan_agent
from server.bootstrap import base_commit_from, bootstrap_script, parse_repo
from server.boxfile import parse_boxfile, setup_script
from server.errors import InvalidInput
from server.npm import AgentResolution, compile_range
from server.onbox import scripts
from tests.support import git, make_repo

TOOLS = ("mkdir", "date", "chmod", "cat", "cksum", "git", "sh", "head", "tail", "awk", "printf", "echo", "ln", "rm",
         "tar", "gzip", "uname", "tr", "curl")


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


def resolved(agent: str, version: str = "2.1.300", node_range: str = ">=18.0.0") -> AgentPlan:
    """A preset's plan as the orchestrator resolves it from the registry (fixed here: no registry needed)."""
    plan = plan_agent(agent)
    assert plan.package is not None
    return dataclasses.replace(plan, resolved=AgentResolution(plan.package, version, node_range,
                                                              compile_range(node_range), ("22.23.3",), "10.9.2"))


def test_an_npm_agent_needs_its_release_resolved_first() -> None:
    with pytest.raises(InvalidInput, match="resolved from the npm registry"):
        bootstrap_script(project_dir="/p", repo=None, branch=None, agent="claude")


def _tgz(path: Path, files: dict[str, str]) -> None:
    """A registry tarball: ``package/<name>`` for each file, executable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"package/{name}")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """A registry on disk (file:// URLs, as curl reads them): this machine's Node build and npm."""
    root = tmp_path / "registry"
    build = f"node-linux-{ {'x86_64': 'x64', 'aarch64': 'arm64'}[os.uname().machine] }"
    _tgz(root / build / "-" / f"{build}-22.23.3.tgz", {"bin/node": "#!/bin/sh\necho v22.23.3\n"})
    _tgz(root / "npm" / "-" / "npm-10.9.2.tgz", {"bin/npm-cli.js": FAKE_NPM, "bin/npx-cli.js": "#!/bin/sh\n"})
    return root


def test_a_box_without_node_gets_node_and_npm_from_the_registry_then_the_agent(shell, home, bin_dir,
                                                                                registry) -> None:
    script = bootstrap_script(project_dir=str(home / "p"), repo=None, branch=None,
                              agent=resolved("claude", node_range=">=22.0.0"), npm_registry=f"file://{registry}")
    done = run(shell, script, home, bin_dir)
    assert done.returncode == 0, done.stderr
    assert "node none without npm does not meet" in done.stdout and "installing node 22.23.3" in done.stdout
    assert "BOXFORGE_AGENT=2.1.300 22.23.3 npm" in done.stdout
    profile = (home / ".boxforge" / "profile").read_text()
    assert ".boxforge/node/bin" in profile and os.access(home / ".boxforge/node/bin/npm", os.X_OK)


def test_a_node_too_old_is_replaced_and_an_unreachable_registry_fails_with_the_log_tail(shell, home,
                                                                                         bin_dir) -> None:
    fake_npm(bin_dir)
    (bin_dir / "node").write_text("#!/bin/sh\necho v18.19.0\n")
    script = bootstrap_script(project_dir=str(home / "p"), repo=None, branch=None,
                              agent=resolved("claude", node_range=">=22.0.0"), npm_registry="file:///nonexistent")
    done = run(shell, script, home, bin_dir)
    assert done.returncode == 3
    assert "node v18.19.0 does not meet" in done.stdout
    assert "could not fetch node-linux-" in done.stderr and "the install log ends" in done.stderr
    assert not (home / ".boxforge" / "ready").exists()


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


FAKE_NODE = "#!/bin/sh\necho v22.1.0\n"
# An npm that installs what it is asked into --prefix: a claude printing its version, or nothing at all.
FAKE_NPM = """#!/bin/sh
[ "$1" = config ] && { echo /nonexistent/npmrc; exit 0; }
while [ $# -gt 0 ]; do case $1 in --prefix) prefix=$2; shift ;; @anthropic-ai/claude-code@*) want=${1##*@} ;; esac; shift; done
echo "npm: installing $want" >&2
[ -n "${BROKEN:-}" ] && exit 0
mkdir -p "$prefix/bin" && printf '#!/bin/sh\\necho "%s (Claude Code)"\\n' "$want" > "$prefix/bin/claude"
chmod +x "$prefix/bin/claude"
"""


def fake_npm(bin_dir: Path) -> None:
    for name, text in (("node", FAKE_NODE), ("npm", FAKE_NPM)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)


def test_an_agent_that_installs_but_does_not_run_fails_with_the_log_tail(shell, home, bin_dir) -> None:
    fake_npm(bin_dir)
    script = bootstrap_script(project_dir=str(home / "p"), repo=None, branch=None, agent=resolved("claude"))
    done = run(shell, script, home, bin_dir, BROKEN="1")
    assert done.returncode == 3
    assert "claude --version failed" in done.stderr and "npm: installing 2.1.300" in done.stderr
    assert not (home / ".boxforge" / "ready").exists()


def test_the_agent_is_checked_installed_once_and_put_on_the_path_of_every_job(shell, home, bin_dir) -> None:
    fake_npm(bin_dir)
    script = bootstrap_script(project_dir=str(home / "p"), repo=None, branch=None, agent=resolved("claude"))
    for _ in range(2):
        done = run(shell, script, home, bin_dir)
        assert done.returncode == 0, done.stderr
    assert "claude-code@2.1.300 already installed" in done.stdout
    assert "BOXFORGE_AGENT=2.1.300 22.1.0 box" in done.stdout
    # the job wrapper, a login shell and ~/.bashrc all see the agent
    job = home / "job"
    job.mkdir()
    (job / "cmd").write_text("command -v claude; claude --version\n")
    wrapper = scripts.text("job-wrapper.sh")
    # sh run <job dir> keep|forget <clock_cs> <shell> <rm>, as bf_start starts it (stdout: the pid)
    ran = subprocess.run(["sh", "-c", wrapper, "sh", str(job), "forget", "", "/bin/sh", "rm"], capture_output=True,
                         text=True, env={"HOME": str(home), "PATH": str(bin_dir)}, timeout=30)
    assert ran.returncode == 0 and ran.stdout.strip().isdigit(), ran.stderr
    assert (job / "out").read_text() == f"{home}/.local/bin/claude\n2.1.300 (Claude Code)\n", ran.stderr
    for rc in (".profile", ".bashrc"):
        assert sum("boxforge/profile" in line for line in (home / rc).read_text().splitlines()) == 1


def test_a_pinned_release_that_reports_another_version_fails(shell, home, bin_dir) -> None:
    fake_npm(bin_dir)
    (bin_dir / "npm").write_text(FAKE_NPM.replace('"$want" >', '"2.0.0" >'))
    script = bootstrap_script(project_dir=str(home / "p"), repo=None, branch=None, agent=resolved("claude"))
    done = run(shell, script, home, bin_dir)
    assert done.returncode == 3 and "says '2.0.0 (Claude Code)', not 2.1.300" in done.stderr
