"""Seeding a box: the orchestrator reads the source repo (a local path, or a URL fetched with its own
credentials into a bare cache under the state dir), bundles the branch the box needs (and the default
branch) and pushes the bundle over the box channel, where ``git-seed.sh`` makes the checkout. The box
gets the history and a credential-free ``origin`` URL; never a token.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio

from providers.capabilities import OnboxCall
from server.bootstrap import RepoSource
from server.config import ensure_private_dir
from server.errors import InvalidInput
from server.git import local
from server.git.local import GitError
from server.jobs import BoxExec
from server.service import onbox

SEED_TIMEOUT_S = 600.0
_CACHE_LOCKS: dict[str, anyio.Lock] = {}


@dataclass(frozen=True)
class Seed:
    """A prepared seed: the repo it came from (the box's home repo), the branch and its start commit."""

    home_repo: Path  # the user's local repo, or the bare cache of a URL under the state dir
    home_is_user_repo: bool
    branch: str
    start: str  # the commit the branch starts at on the box (its base)
    branch_existed: bool
    default_branch: str
    bundle: Path


def cache_dir(state_dir: Path, url: str) -> Path:
    """The bare cache of a URL source (one per URL, shared by the boxes seeded from it)."""
    return state_dir / "git" / "sources" / (hashlib.sha256(url.encode()).hexdigest()[:16] + ".git")


async def _default_branch(repo: Path) -> str | None:
    code, out, _ = await local.git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    name = out.strip()
    if code == 0 and name and await local.rev(repo, f"refs/heads/{name}"):
        return name
    for guess in ("main", "master"):
        if await local.rev(repo, f"refs/heads/{guess}"):
            return guess
    return None


async def _refresh_cache(state_dir: Path, source: RepoSource, env: Mapping[str, str] | None) -> Path:
    """Fetch every branch of a URL source into its bare cache, with the orchestrator's credentials."""
    bare = cache_dir(state_dir, source.url)
    ensure_private_dir(bare.parent)
    async with _CACHE_LOCKS.setdefault(str(bare), anyio.Lock()):  # two creates from one URL fetch in turn
        return await _fetch_cache(state_dir, source, bare, env)


async def _fetch_cache(state_dir: Path, source: RepoSource, bare: Path, env: Mapping[str, str] | None) -> Path:
    if not (bare / "HEAD").exists():
        await local.git(None, "init", "--quiet", "--bare", str(bare))
    creds = local.credential_env(state_dir, source.secret_env, env)
    code, _, err = await local.git(bare, "fetch", "--quiet", "--prune", "--no-tags", "--", source.url,
                                   "+refs/heads/*:refs/heads/*", env=creds, check=False, timeout=SEED_TIMEOUT_S)
    if code != 0:
        raise InvalidInput(f"could not read repo {source.url!r} from the orchestrator: {err.strip()[-500:]}; check "
                           "the URL and that this machine's git credentials (credential helper, GITHUB_TOKEN, "
                           "ssh-agent, or a token in the URL) can read it")
    code, out, _ = await local.git(bare, "ls-remote", "--symref", "--", source.url, "HEAD", env=creds, check=False)
    for line in out.splitlines():
        if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
            await local.git(bare, "symbolic-ref", "HEAD", line[len("ref: "):-len("\tHEAD")], check=False)
    return bare


async def prepare(state_dir: Path, source: RepoSource, branch: str | None,
                  env: Mapping[str, str] | None = None) -> Seed:
    """Read the source and write the bundle a box is seeded from. Raises InvalidInput for a repo that
    does not exist or cannot be read, has no commits, or a branch name git refuses."""
    if source.is_local_path:
        home = Path(source.url)
        if not await local.is_repo(home):
            raise InvalidInput(f"{source.url!r} is not a git repository; give the path of a git checkout or a URL")
    else:
        home = await _refresh_cache(state_dir, source, env)
    if branch:
        await local.check_branch_name(branch)
    default = await _default_branch(home)
    if default is None:
        raise InvalidInput(f"repo {source.url!r} has no commits on a default branch; commit something first")
    target = branch or default
    existing = await local.rev(home, f"refs/heads/{target}")
    start = existing or await local.rev(home, f"refs/heads/{default}")
    assert start is not None
    tmp_dir = ensure_private_dir(state_dir / "git" / "tmp")
    bundle = tmp_dir / f"seed-{secrets.token_hex(6)}.bundle"
    refs = sorted({f"refs/heads/{default}", *([f"refs/heads/{target}"] if existing else [])})
    await local.git(home, "bundle", "create", "--quiet", str(bundle), *refs, timeout=SEED_TIMEOUT_S)
    return Seed(home, source.is_local_path, target, start, existing is not None, default, bundle)


async def install(ex: BoxExec, seed: Seed, project_dir: str, origin: str | None) -> None:
    """Send the bundle over the box channel and make the checkout there (idempotent)."""
    data = await anyio.Path(seed.bundle).read_bytes()
    call = OnboxCall("git-seed.sh", {"project": project_dir, "branch": seed.branch, "start": seed.start,
                                     "origin": origin or ""})
    result = await ex(onbox.command_line(call), data, SEED_TIMEOUT_S)
    if result.exit_status != 0:
        raise GitError("seeding the box's checkout failed: "
                       f"{result.stderr.decode(errors='replace').strip()[-800:]}")
