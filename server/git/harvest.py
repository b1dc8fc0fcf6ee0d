"""Bringing a box's work home: ``git-harvest.sh`` bundles what the box holds beyond what the
orchestrator has (its uncommitted changes as one extra commit), and ``bring_home`` fetches that bundle
into a home repo under ``refs/boxforge/<box>/<branch>`` in one atomic ref update (a cut transfer
leaves no ref behind; a retry gives the same commits), or keeps it as a bundle file.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from providers.capabilities import OnboxCall
from server.config import ensure_private_dir
from server.errors import ForgeError
from server.git import local
from server.git.local import GitError
from server.jobs import BoxExec
from server.service import onbox

REF_ROOT = "refs/boxforge"
BUNDLE_MARK = b"\n--bundle--\n"
NONE_MARK = b"\n--none--\n"
MAX_COMMITS_SHOWN = 50


class HarvestFailed(ForgeError):
    """The box's work could not be read (its repo is gone, it did not answer in time)."""


@dataclass(frozen=True)
class Collected:
    """What the box holds: HEAD, its branch (None: detached), the tip to bring home (HEAD or the extra
    commit of uncommitted changes), the files left out of that commit, and the bundle (None: nothing new)."""

    head: str
    branch: str | None
    tip: str
    wip: str | None
    ref: str | None
    skipped: tuple[str, ...] = ()
    bundle: bytes | None = field(default=None, repr=False)


def box_ref(box: str, branch: str) -> str:
    return f"{REF_ROOT}/{box}/{branch}"


def parse(raw: bytes) -> Collected:
    """The harvest script's answer: key=value lines, then the bundle (or the mark that nothing is new)."""
    bundle: bytes | None = None
    if BUNDLE_MARK in b"\n" + raw:
        head_part, bundle = (b"\n" + raw).split(BUNDLE_MARK, 1)
    elif NONE_MARK in b"\n" + raw + b"\n":
        head_part = (b"\n" + raw).split(NONE_MARK, 1)[0]
    else:
        raise HarvestFailed("the box's harvest answer was cut short; retry")
    values: dict[str, str] = {}
    skipped: list[str] = []
    for line in head_part.decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "skipped":
            size, _, path = value.partition(" ")
            skipped.append(f"{path} ({int(size) // 1024} KiB)")
        else:
            values[key] = value
    if not values.get("head") or not values.get("tip"):
        raise HarvestFailed("the box's harvest answer was incomplete; retry")
    return Collected(head=values["head"], branch=values.get("branch") or None, tip=values["tip"],
                     wip=values.get("wip") or None, ref=values.get("ref") or None, skipped=tuple(skipped),
                     bundle=bundle)


async def collect(ex: BoxExec, *, project_dir: str, known: list[str], include_uncommitted: bool,
                  max_file_bytes: int, box: str, timeout: float) -> Collected:
    call = OnboxCall("git-harvest.sh", {"project": project_dir, "known": " ".join(known),
                                        "include_uncommitted": "1" if include_uncommitted else "0",
                                        "max_file_bytes": str(max_file_bytes), "box": box})
    result = await ex(onbox.command_line(call), None, timeout)
    if result.exit_status != 0:
        raise HarvestFailed(result.stderr.decode(errors="replace").strip()[-500:] or
                            f"the harvest script failed on the box (exit {result.exit_status})")
    return parse(result.stdout)


async def bring_home(repo: Path, collected: Collected, ref: str, tmp_dir: Path) -> str | None:
    """Fetch the collected bundle into ``repo`` as ``ref`` (forced: a rewritten branch moves it);
    the old value of the ref (None: new)."""
    old = await local.rev(repo, ref)
    if collected.bundle is None:
        if old != collected.tip:
            await local.git(repo, "update-ref", ref, collected.tip, *([old] if old else []))
        return old
    assert collected.ref is not None
    bundle = ensure_private_dir(tmp_dir) / f"fetch-{secrets.token_hex(6)}.bundle"
    try:
        await anyio.Path(bundle).write_bytes(collected.bundle)
        await local.git(repo, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", str(bundle),
                        f"+{collected.ref}:{ref}")
    finally:
        await anyio.Path(bundle).unlink(missing_ok=True)
    if await local.rev(repo, ref) != collected.tip:
        raise GitError(f"fetching into {repo} did not set {ref} to {collected.tip[:12]}")
    return old


async def save_bundle(collected: Collected, path: Path) -> Path:
    """Keep the collected bundle as a file (the harvest of a box whose home repo is not local, or gone)."""
    assert collected.bundle is not None
    ensure_private_dir(path.parent)
    tmp = path.with_suffix(".partial")
    await anyio.Path(tmp).write_bytes(collected.bundle)
    await anyio.Path(tmp).rename(path)
    return path


async def commits(repo: Path, since: str | None, tip: str) -> list[tuple[str, str]]:
    """(short id, subject) of the commits in since..tip, newest first (at most MAX_COMMITS_SHOWN)."""
    span = f"{since}..{tip}" if since else tip
    out = await local.out(repo, "log", f"--max-count={MAX_COMMITS_SHOWN}", "--format=%h%x09%s", span, "--")
    return [tuple(line.split("\t", 1)) if "\t" in line else (line, "") for line in out.splitlines()]  # type: ignore[misc]


async def diffstat(repo: Path, base: str | None, tip: str) -> tuple[str, list[str]]:
    """(the diffstat of base..tip, the files touched)."""
    if not base:
        return "", []
    stat = await local.out(repo, "diff", "--stat=100", base, tip, "--")
    names = await local.out(repo, "diff", "--name-only", base, tip, "--")
    return stat, names.splitlines()


async def is_ancestor(repo: Path, old: str, new: str) -> bool:
    code, _, _ = await local.git(repo, "merge-base", "--is-ancestor", old, new, check=False)
    return code == 0
