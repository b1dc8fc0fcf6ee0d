"""``land``: merge fetched box branches into a target branch of the user's repo, in the given order.

The merges happen in a temporary worktree, so the user's checkout (and any uncommitted changes of its
own) is never touched by a merge; the target branch moves only over merges that succeeded. At the
first conflict the merge is aborted, the worktree removed, and the result names the conflicting files
and the boxes (landed before, in this run) that touched them. It never pushes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from server.config import ensure_private_dir
from server.errors import InvalidInput
from server.git import local
from server.git.local import IDENTITY


@dataclass
class LandOutcome:
    repo: str
    into: str
    landed: list[str] = field(default_factory=list)  # boxes merged, in order
    commit: str | None = None  # the target's commit after the landing
    conflict_box: str | None = None
    conflict_files: list[str] = field(default_factory=list)
    conflict_with: list[str] = field(default_factory=list)  # boxes landed before that touched those files
    not_tried: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.conflict_box is None

    def summary(self) -> str:
        done = f"landed {', '.join(self.landed) or 'nothing'} into {self.into}"
        if self.ok:
            return done
        return (f"{done}; stopped at {self.conflict_box}: {', '.join(self.conflict_files)} conflict"
                + (f" with {', '.join(self.conflict_with)}" if self.conflict_with else ""))


async def _current_branch(repo: Path) -> str | None:
    code, out, _ = await local.git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return out.strip() if code == 0 else None


async def _dirty(repo: Path) -> bool:
    return bool(await local.out(repo, "status", "--porcelain", "--untracked-files=no"))


async def land_refs(repo: Path, refs: list[tuple[str, str]], into: str | None, tmp_dir: Path) -> LandOutcome:
    current = await _current_branch(repo)
    into = into or current
    if not into:
        raise InvalidInput(f"{repo} is on a detached HEAD: say which branch to land into (--into BRANCH)")
    await local.check_branch_name(into)
    start = await local.rev(repo, f"refs/heads/{into}")
    if start is None:
        raise InvalidInput(f"{repo} has no branch {into!r} to land into")
    bare = (await local.out(repo, "rev-parse", "--is-bare-repository")) == "true"
    checked_out = not bare and current == into
    if checked_out and await _dirty(repo):
        raise InvalidInput(f"{into!r} is checked out in {repo} with uncommitted changes; commit or stash them "
                           "first (land never touches your own changes)")
    outcome = LandOutcome(repo=str(repo), into=into)
    touched: dict[str, set[str]] = {}
    work = ensure_private_dir(tmp_dir) / f"land-{secrets.token_hex(6)}"
    await local.git(repo, "worktree", "add", "--quiet", "--detach", str(work), start)
    try:
        tip = start
        for index, (box, ref) in enumerate(refs):
            code, _, _ = await local.git(work, "merge", "--no-ff", "--no-edit", "-m", f"Land {box} ({ref})", ref,
                                         env=IDENTITY, check=False)
            if code != 0:
                files = (await local.out(work, "diff", "--name-only", "--diff-filter=U")).splitlines()
                await local.git(work, "merge", "--abort", check=False)
                outcome.conflict_box, outcome.conflict_files = box, files
                outcome.conflict_with = [b for b, seen in touched.items() if seen & set(files)]
                outcome.not_tried = [b for b, _ in refs[index + 1:]]
                break
            touched[box] = set((await local.out(work, "diff", "--name-only", tip, "HEAD")).splitlines())
            tip = await local.out(work, "rev-parse", "HEAD")
            outcome.landed.append(box)
    finally:
        await local.git(repo, "worktree", "remove", "--force", str(work), check=False)
        await local.git(repo, "worktree", "prune", check=False)
    if tip != start:
        if checked_out:  # the user's checkout follows its branch: a fast-forward, their tree stays clean
            await local.git(repo, "merge", "--ff-only", "--quiet", tip)
        else:
            await local.git(repo, "update-ref", f"refs/heads/{into}", tip, start)
    outcome.commit = tip
    return outcome
