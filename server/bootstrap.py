"""Box setup over SSH, as a bootstrap job: project checkout at a branch, agent install,
ready marker. The script runs on the box (POSIX sh) and is sent over the job protocol's
stdin, so nothing in it shows on a command line; repo credentials travel as job env
values and reach git through GIT_ASKPASS, so they never land in .git/config.

The last stdout line of a successful bootstrap is ``BOXFORGE_BASE=<commit>``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from providers.base import CLOUD_INIT_FLAG_FILE, CLOUD_INIT_READY_FILE
from server.errors import InvalidInput

AGENT_PRESETS: dict[str, str | None] = {
    "none": None,
    "claude": "@anthropic-ai/claude-code",
    "codex": "@openai/codex",
}
AGENT_BINARIES = {"claude": "claude", "codex": "codex"}
BASE_MARKER = "BOXFORGE_BASE="

ASKPASS = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "$BOXFORGE_GIT_USER" ;;
  *) printf '%s\\n' "$BOXFORGE_GIT_PASSWORD" ;;
esac
"""


@dataclass(frozen=True)
class RepoSource:
    """Where to clone from: ``url`` is safe to show and store; ``secret_env`` is not."""

    url: str
    is_local_path: bool
    secret_env: dict[str, str]


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


def bootstrap_script(*, project_dir: str, repo: RepoSource | None, branch: str | None, agent: str) -> str:
    q = shlex.quote
    lines = [
        "set -eu",
        *cloud_init_wait_lines(),
        'mkdir -p "$HOME/.boxforge"',
        f"project={q(project_dir)}",
    ]
    if repo is None:
        lines += ['mkdir -p "$project"', 'cd "$project"', "base="]
    else:
        if repo.secret_env:
            lines += [
                f"cat > \"$HOME/.boxforge/askpass\" <<'EOF'\n{ASKPASS}EOF",
                'chmod 700 "$HOME/.boxforge/askpass"',
                'export GIT_ASKPASS="$HOME/.boxforge/askpass" GIT_TERMINAL_PROMPT=0',
            ]
        lines += [
            "echo '[boxforge] clone'",
            'if [ ! -d "$project/.git" ]; then',
            f'  git clone --quiet -c credential.helper= -- {q(repo.url)} "$project"',
            "fi",
            'cd "$project"',
        ]
        if branch:
            lines += [
                f"branch={q(branch)}",
                'if git rev-parse --verify --quiet "refs/heads/$branch" >/dev/null; then',
                '  git checkout --quiet "$branch"',
                'elif git rev-parse --verify --quiet "refs/remotes/origin/$branch" >/dev/null; then',
                '  git checkout --quiet -b "$branch" --track "origin/$branch"',
                "else",
                "  echo \"[boxforge] branch $branch does not exist yet: creating it from the default branch\"",
                '  git checkout --quiet -b "$branch"',
                "fi",
            ]
        lines.append("base=$(git rev-parse HEAD 2>/dev/null || true)")
    package = AGENT_PRESETS.get(agent)
    if package is not None:
        binary = AGENT_BINARIES[agent]
        lines += [
            f"echo '[boxforge] agent {agent}'",
            f'if ! command -v {binary} >/dev/null 2>&1 && [ ! -x "$HOME/.local/bin/{binary}" ]; then',
            '  command -v npm >/dev/null 2>&1 || { echo "npm is needed to install the agent" >&2; exit 3; }',
            f'  npm install --silent --global --prefix "$HOME/.local" {q(package)}',
            "fi",
        ]
    lines += [
        'printf "%s\\n" "$base" > "$HOME/.boxforge/base"',
        'date +%s > "$HOME/.boxforge/ready"',
        f'echo "{BASE_MARKER}$base"',
    ]
    return "\n".join(lines) + "\n"


def base_commit_from(stdout: str) -> str | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(BASE_MARKER):
            return line[len(BASE_MARKER):].strip() or None
    return None
