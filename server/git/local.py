"""Host-side git: one runner with a timeout, no prompts, and the orchestrator's credentials.

Credentials reach git the way the user's own git gets them (their credential helper, ssh-agent), plus
a token given in a repo URL or ``GITHUB_TOKEN`` / ``BOXFORGE_GIT_TOKEN``, which is handed over in the
git process's environment and answered by an askpass script: never on a command line, in a URL git
stores, or in a file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio

from server.errors import ForgeError

GIT_TIMEOUT_S = 300.0
TOKEN_ENVS = ("BOXFORGE_GIT_TOKEN", "GITHUB_TOKEN")
ASKPASS = """#!/bin/sh
# boxforge: answers git's credential prompts from the orchestrator's own environment.
case "$1" in
  Username*) printf '%s\\n' "$BOXFORGE_GIT_USER" ;;
  *) printf '%s\\n' "$BOXFORGE_GIT_PASSWORD" ;;
esac
"""
IDENTITY = {"GIT_AUTHOR_NAME": "boxforge", "GIT_AUTHOR_EMAIL": "boxforge@localhost",
            "GIT_COMMITTER_NAME": "boxforge", "GIT_COMMITTER_EMAIL": "boxforge@localhost"}


class GitError(ForgeError):
    """A git command failed; the message carries its (credential-free) stderr."""


def askpass_path(state_dir: Path) -> Path:
    """The askpass script under the state dir (no secret in it: it reads the git process's env)."""
    path = state_dir / "git-askpass"
    if not path.exists() or path.read_text() != ASKPASS:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(ASKPASS)
        tmp.chmod(stat.S_IRWXU)
        tmp.replace(path)
    return path


def credential_env(state_dir: Path, secret_env: Mapping[str, str] | None,
                   env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Env for a host git that talks to a remote: the URL's token, else the orchestrator's token env."""
    env = os.environ if env is None else env
    creds = dict(secret_env or {})
    if not creds:
        token = next((env[name] for name in TOKEN_ENVS if env.get(name)), None)
        if token:
            creds = {"BOXFORGE_GIT_USER": "x-access-token", "BOXFORGE_GIT_PASSWORD": token}
    if not creds:
        return {}
    return {**creds, "GIT_ASKPASS": str(askpass_path(state_dir))}


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The orchestrator's env for git: no prompts, no repo-locating variables inherited by accident."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY")}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    env.update(extra or {})
    return env


async def git(cwd: Path | str | None, *args: str, env: Mapping[str, str] | None = None, check: bool = True,
              timeout: float = GIT_TIMEOUT_S, input: bytes | None = None) -> tuple[int, str, str]:
    """Run ``git args`` in ``cwd``: (exit code, stdout, stderr). Raises GitError when ``check`` and it fails."""
    cmd: Sequence[str] = ["git", *args]
    try:
        with anyio.fail_after(timeout):
            proc = await anyio.run_process(cmd, cwd=cwd, env=clean_env(env), check=False, input=input)
    except TimeoutError:
        raise GitError(f"git {args[0]} did not finish within {timeout:g}s") from None
    out = proc.stdout.decode(errors="replace")
    err = proc.stderr.decode(errors="replace")
    if check and proc.returncode != 0:
        raise GitError(f"git {args[0]} failed: {err.strip()[-800:] or out.strip()[-800:]}")
    return proc.returncode, out, err


async def out(cwd: Path | str | None, *args: str, env: Mapping[str, str] | None = None,
              timeout: float = GIT_TIMEOUT_S) -> str:
    """stdout of a git command that must succeed, stripped."""
    return (await git(cwd, *args, env=env, timeout=timeout))[1].strip()


async def rev(cwd: Path | str, name: str) -> str | None:
    """The commit ``name`` resolves to in ``cwd``, or None."""
    code, stdout, _ = await git(cwd, "rev-parse", "--verify", "--quiet", name + "^{commit}", check=False)
    return stdout.strip() if code == 0 else None


async def is_repo(path: Path) -> bool:
    if not await anyio.Path(path).is_dir():
        return False
    code, _, _ = await git(path, "rev-parse", "--git-dir", check=False)
    return code == 0


async def check_branch_name(branch: str) -> None:
    code, _, _ = await git(None, "check-ref-format", "--branch", branch, check=False)
    if code != 0 or branch.startswith("-"):
        raise GitError(f"git refuses the branch name {branch!r}; use letters, digits and '/', '-', '_', '.'")
