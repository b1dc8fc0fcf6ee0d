"""Box setup over SSH, as a bootstrap job: project checkout at a branch (the base commit
recorded), agent install, ready marker. The script runs on the box (POSIX sh) and is sent
over the job protocol's stdin, so nothing in it shows on a command line.

A repo is normally seeded by the orchestrator before this job runs (``server/git/seed.py``);
the job then only reads the base it recorded. With ``repo_via="box"`` the job clones a public
URL itself; a repo token never goes to a box, by either path.

Each step announces itself with a ``BOXFORGE_STEP=<step>`` stdout line; the last stdout
line of a successful bootstrap is ``BOXFORGE_BASE=<commit>``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from providers.base import CLOUD_INIT_FLAG_FILE, CLOUD_INIT_READY_FILE
from server.agents import AGENT_RUN_FILE, AgentPlan, agent_run_script, plan_agent
from server.errors import InvalidInput

BASE_MARKER = "BOXFORGE_BASE="
STEP_MARKER = "BOXFORGE_STEP="  # a line "BOXFORGE_STEP=clone" on stdout: the bootstrap reached that step



@dataclass(frozen=True)
class RepoSource:
    """Where to clone from: ``url`` is safe to show and store; ``secret_env`` is not."""

    url: str
    is_local_path: bool
    secret_env: dict[str, str]

    @property
    def is_ssh(self) -> bool:
        """Cloned over SSH: ``ssh://`` or scp-like ``git@host:org/repo``."""
        return self.url.startswith("ssh://") or ("://" not in self.url and not self.is_local_path)


def parse_repo(repo: str) -> RepoSource:
    """Split credentials off a repo URL; resolve a local path to an absolute one."""
    if "\x00" in repo or "\n" in repo:
        raise InvalidInput("repo must be a git URL or a path, without control characters")
    if "://" in repo:
        parts = urlsplit(repo)
        if parts.scheme not in ("https", "http", "ssh", "git", "file"):
            raise InvalidInput(f"unsupported repo URL scheme {parts.scheme!r}: use https://, ssh://, git:// or a path")
        secret_env: dict[str, str] = {}
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        if parts.username and parts.scheme in ("https", "http"):
            if parts.password:
                secret_env = {"BOXFORGE_GIT_USER": parts.username, "BOXFORGE_GIT_PASSWORD": parts.password}
            else:  # a bare token as user name, as GitHub accepts
                secret_env = {"BOXFORGE_GIT_USER": "x-access-token", "BOXFORGE_GIT_PASSWORD": parts.username}
        elif parts.username and parts.scheme == "ssh":
            netloc = f"{parts.username}@{netloc}"  # an ssh login name is not a secret; a password is dropped
        return RepoSource(urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), False, secret_env)
    if ":" in repo.split("/")[0] and not repo.startswith(("/", ".")):
        return RepoSource(repo, False, {})  # scp-like ssh: git@host:org/repo.git
    path = Path(repo).expanduser().resolve()
    if not path.exists():
        raise InvalidInput(f"repo path {repo!r} does not exist on this machine; give a git URL or an existing path")
    return RepoSource(str(path), True, {})


def cloud_init_wait_lines() -> list[str]:
    """Shell lines that wait for a cloud box's cloud-init and check its ready marker.

    A no-op where boxforge's cloud-init never ran (local boxes, machines without cloud-init):
    the flag file is written early by that cloud-init, the marker by its last step.
    """
    return [
        f"if [ -e {CLOUD_INIT_FLAG_FILE} ]; then",
        "  echo '[boxforge] waiting for cloud-init'",
        "  if command -v cloud-init >/dev/null 2>&1; then cloud-init status --wait >/dev/null 2>&1 || true; fi",
        f"  if [ ! -e {CLOUD_INIT_READY_FILE} ]; then",
        f"    echo 'cloud-init did not finish setting up this box ({CLOUD_INIT_READY_FILE} is missing): "
        "see /var/log/cloud-init-output.log on the box' >&2",
        "    exit 4",
        "  fi",
        "fi",
    ]


def bootstrap_script(*, project_dir: str, repo: RepoSource | None, branch: str | None,
                     agent: AgentPlan | str = "none", seeded: bool = False) -> str:
    """The bootstrap job's script: clone and check out, then install the agent. Every step is
    idempotent (a rerun on the same box skips what is done) and announces itself on stdout
    with a ``BOXFORGE_STEP=<step>`` line, which the orchestrator turns into progress."""
    q = shlex.quote
    plan = plan_agent(agent) if isinstance(agent, str) else agent
    lines = [
        "set -eu",
        *cloud_init_wait_lines(),
        'mkdir -p "$HOME/.boxforge"',
        f"project={q(project_dir)}",
        'run_user() { if command -v bash >/dev/null 2>&1; then bash -c "$1"; else sh -c "$1"; fi; }',
    ]
    if seeded:  # the orchestrator made the checkout and recorded the base
        lines += ['cd "$project"', 'read -r base < "$HOME/.boxforge/base" || base=']
    elif repo is None:
        lines += [f"echo {STEP_MARKER}clone"]
        lines += ['mkdir -p "$project"', 'cd "$project"', "base="]
    else:
        lines += [f"echo {STEP_MARKER}clone", *_clone_lines(repo, branch)]
    lines += [f"echo {STEP_MARKER}agent", *_agent_lines(plan)]
    lines += [
        'printf "%s\\n" "$base" > "$HOME/.boxforge/base"',
        'date +%s > "$HOME/.boxforge/ready"',
        f'echo "{BASE_MARKER}$base"',
    ]
    return "\n".join(lines) + "\n"


def _clone_lines(repo: RepoSource, branch: str | None) -> list[str]:
    q = shlex.quote
    if repo.secret_env:
        raise InvalidInput("a repo token never goes to a box: clone it through the orchestrator "
                           "(repo_via='orchestrator', the default)")
    lines: list[str] = ["export GIT_TERMINAL_PROMPT=0"]
    if repo.is_ssh:
        # No prompt can be answered in a job: fail instead of asking, and learn the git host's key.
        lines += [': "${GIT_SSH_COMMAND:=ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new}"',
                  "export GIT_SSH_COMMAND"]
    lines += [
        'if [ ! -d "$project/.git" ]; then',
        f"  echo {q('[boxforge] cloning ' + repo.url)}",
        f'  git clone --quiet -c credential.helper= -- {q(repo.url)} "$project"',
        "else",
        "  echo '[boxforge] already cloned'",
        "fi",
        'cd "$project"',
    ]
    if branch:
        lines += [
            f"branch={q(branch)}",
            'if [ "$(git branch --show-current 2>/dev/null)" = "$branch" ]; then',
            "  :",
            'elif git rev-parse --verify --quiet "refs/heads/$branch" >/dev/null; then',
            '  git checkout --quiet "$branch"',
            'elif git rev-parse --verify --quiet "refs/remotes/origin/$branch" >/dev/null; then',
            '  git checkout --quiet -b "$branch" --track "origin/$branch"',
            "else",
            "  echo \"[boxforge] branch $branch does not exist yet: creating it from the default branch\"",
            '  git checkout --quiet -b "$branch"',
            "fi",
        ]
    # The base is recorded once: a rerun must not move it past the agent's own commits.
    lines += [
        'if [ -s "$HOME/.boxforge/base" ]; then read -r base < "$HOME/.boxforge/base"; '
        "else base=$(git rev-parse HEAD 2>/dev/null || true); fi",
    ]
    return lines


def _agent_lines(plan: AgentPlan) -> list[str]:
    q = shlex.quote
    lines = ['export PATH="$HOME/.local/bin:$PATH"']
    if plan.package is not None:
        assert plan.binary is not None
        lines += [
            f"if command -v {plan.binary} >/dev/null 2>&1; then",
            f"  echo \"[boxforge] agent {plan.name}: already installed at $(command -v {plan.binary})\"",
            "else",
            *("  " + line for line in _node_lines(plan.name)),
            f"  echo '[boxforge] agent {plan.name}: npm install {plan.package}'",
            '  npm install --global --prefix "$HOME/.local" --no-fund --no-audit --loglevel=error '
            f"{q(plan.package)}",
            f"  command -v {plan.binary} >/dev/null 2>&1 || "
            f"{{ echo '{plan.binary} is not on PATH after npm install' >&2; exit 3; }}",
            "fi",
        ]
    elif plan.install is not None:
        lines += [
            f"agent_install={q(plan.install)}",
            'stamp=$(printf "%s" "$agent_install" | cksum)',
            'if [ -f "$HOME/.boxforge/agent-installed" ] && [ "$(cat "$HOME/.boxforge/agent-installed")" = "$stamp" ]; '
            "then",
            f"  echo '[boxforge] agent {plan.name}: already installed'",
            "else",
            f"  echo '[boxforge] agent {plan.name}: running agent_install'",
            '  (cd "$project" && run_user "$agent_install") || '
            '{ code=$?; echo "[boxforge] agent_install failed (exit $code)" >&2; exit "$code"; }',
            '  printf "%s\\n" "$stamp" > "$HOME/.boxforge/agent-installed"',
            "fi",
        ]
    if plan.run is not None:
        lines += [
            f'printf "%s" {q(agent_run_script(plan))} > "$HOME/{AGENT_RUN_FILE}"',
            f'chmod 700 "$HOME/{AGENT_RUN_FILE}"',
        ]
    return lines


def _node_lines(agent: str) -> list[str]:
    """Install Node.js and npm from the distribution when a cloud box lacks them. Never on a
    local box: that is this machine, whose packages are not boxforge's to change."""
    return [
        "if ! command -v npm >/dev/null 2>&1; then",
        f"  if [ -e {CLOUD_INIT_FLAG_FILE} ] && command -v apt-get >/dev/null 2>&1; then",
        '    if [ "$(id -u)" = 0 ]; then as_root=; elif sudo -n true 2>/dev/null; then as_root="sudo -n"; else',
        "      echo 'installing Node.js needs root or passwordless sudo on the box' >&2; exit 3",
        "    fi",
        "    echo '[boxforge] installing Node.js and npm (apt)'",
        "    $as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update",
        "    $as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 "
        "install nodejs npm",
        "  else",
        f"    echo 'npm is needed to install the {agent} agent and this box has none: install Node.js, "
        "or pass agent_install' >&2",
        "    exit 3",
        "  fi",
        "fi",
    ]


def base_commit_from(stdout: str) -> str | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(BASE_MARKER):
            return line[len(BASE_MARKER):].strip() or None
    return None
