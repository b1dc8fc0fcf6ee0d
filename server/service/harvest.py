"""Bringing a box's work home: fetch its branch into its home repo, harvest it before every burn.

``Harvester`` needs only the store and the box access; the lifecycle and the reaper call it under the
box's lock before they burn, and ``GitWork`` (service/git.py) fetches through it.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio

from server.config import Settings, ensure_private_dir
from server.domain.durations import format_duration
from server.domain.hints import Hint, HintKind
from server.errors import ForgeError, InvalidInput
from server.git import harvest, local
from server.git.seed import cache_dir
from server.schemas import CommitLine, FetchResult
from server.service.access import BoxAccess
from server.store import BoxRecord, Repository

GIT_DATA = "git"  # key of BoxRecord.data: the box's home repo and seed (see server/git)
FETCHED = "fetched"  # key of BoxRecord.data: the last fetch (repo, ref, tip, head)


def _lines(pairs: list[tuple[str, str]]) -> list[CommitLine]:
    return [CommitLine(id=i, subject=s) for i, s in pairs]


async def _since_last_fetch(home: Path, tip: str, old: str | None, prev_head: str | None) -> str | None:
    """Where the commits new since the last fetch start: the old tip, or the old HEAD when that tip was an
    uncommitted commit; None when neither is an ancestor of ``tip`` (the branch was rewritten)."""
    for candidate in (old, prev_head):
        if candidate and await local.rev(home, candidate) and await harvest.is_ancestor(home, candidate, tip):
            return candidate
    return None


class Harvester:
    """Brings a box's work home: into its home repo as ``refs/boxforge/<box>/<branch>``, or as a bundle
    under the state dir when there is no home repo to fetch into."""

    def __init__(self, settings: Settings, repo: Repository, access: BoxAccess) -> None:
        self.settings = settings
        self.repo = repo
        self.access = access

    @staticmethod
    def has_git(rec: BoxRecord) -> bool:
        return bool(rec.repo) and bool(rec.project_dir)

    async def home_of(self, rec: BoxRecord) -> tuple[Path | None, bool]:
        """(the repo a box's work comes home to, whether it is the user's own repo); None: it is gone."""
        data = (rec.data or {}).get(GIT_DATA) or {}
        if data.get("home_repo"):
            home = Path(data["home_repo"])
            user = bool(data.get("user_repo"))
        else:  # cloned on the box from a URL: the orchestrator's cache of that URL
            assert rec.repo is not None
            home, user = cache_dir(self.settings.home, rec.repo), False
            if not await anyio.Path(home / "HEAD").exists():
                await anyio.Path(home.parent).mkdir(parents=True, exist_ok=True)
                await local.git(None, "init", "--quiet", "--bare", str(home))
        return (home, user) if await local.is_repo(home) else (None, user)

    async def _known(self, rec: BoxRecord, home: Path) -> list[str]:
        fetched = (rec.data or {}).get(FETCHED) or {}
        ids = [fetched.get("tip"), fetched.get("head"), rec.base_commit]
        return [c for c in dict.fromkeys(ids) if c and await local.rev(home, c)]

    async def fetch(self, rec: BoxRecord, *, include_uncommitted: bool = True,
                    local_branch: str | None = None) -> FetchResult:
        """Fetch the box's branch into its home repo (the caller holds the box's lock)."""
        home = await self._fetch_home(rec)
        assert rec.project_dir is not None
        collected = await harvest.collect(
            self.access.exec(rec, long=True), project_dir=rec.project_dir, known=await self._known(rec, home),
            include_uncommitted=include_uncommitted, max_file_bytes=self.settings.harvest_max_file_bytes,
            box=rec.name, timeout=self.settings.harvest_timeout_s)
        branch = collected.branch or rec.branch or "detached"
        ref = harvest.box_ref(rec.name, branch)
        prev_head = ((rec.data or {}).get(FETCHED) or {}).get("head")
        old = await harvest.bring_home(home, collected, ref, self.settings.home / "git" / "tmp")
        await self.repo.merge_data(rec.request_id, **{FETCHED: {"repo": str(home), "ref": ref, "tip": collected.tip,
                                                               "head": collected.head, "at": time.time()}})
        since = await _since_last_fetch(home, collected.tip, old, prev_head)
        rewritten = bool(old) and since is None
        since = since if old else rec.base_commit  # a first fetch: everything ahead of base is new
        stat, files = await harvest.diffstat(home, rec.base_commit, collected.tip)
        result = FetchResult(
            server=rec.name, repo=str(home), ref=ref, tip=collected.tip, head=collected.head,
            branch=collected.branch, base_commit=rec.base_commit, uncommitted_commit=collected.wip,
            commits=_lines(await harvest.commits(home, rec.base_commit, collected.tip)),
            new_commits=[] if old == collected.tip else _lines(await harvest.commits(home, since, collected.tip)),
            files=files, diffstat=stat, rewritten=rewritten, skipped_files=list(collected.skipped))
        notes = self._fetch_notes(collected, ref, old if rewritten else None)
        if local_branch:
            code, _, err = await local.git(home, "branch", "--force", local_branch, collected.tip, check=False)
            if code == 0:
                result.local_branch = local_branch
            else:
                notes.append(f"local branch {local_branch!r} was not updated: {err.strip()[-300:]}")
        if notes:
            result.say("warning", "; ".join(notes))
        result.suggest("hint", Hint(HintKind.FETCHED, server=rec.name))
        await self.repo.add_event("fetch", box_name=rec.name, detail=f"{ref} {collected.tip[:12]}")
        return result

    async def _fetch_home(self, rec: BoxRecord) -> Path:
        """The home repo a fetch writes into; a clear refusal when the box has none."""
        if not self.has_git(rec):
            raise InvalidInput(f"server {rec.name!r} was made without a repo: there is no branch to fetch")
        home, _ = await self.home_of(rec)
        if home is None:
            raise InvalidInput(f"the repo {rec.repo!r} that {rec.name!r} was seeded from is gone on this machine; "
                               "its work is harvested as a bundle under the state dir when it is burned")
        return home

    def _fetch_notes(self, collected: harvest.Collected, ref: str, rewritten_from: str | None) -> list[str]:
        """What the user should know about a fetch: detached HEAD, a rewritten branch, files left out."""
        notes = []
        if collected.branch is None:
            notes.append("the box is on a detached HEAD; its HEAD came home as " + ref)
        if rewritten_from is not None:
            notes.append(f"the box's branch was rewritten (force-moved); {ref} was reset from {rewritten_from[:12]}")
        if collected.skipped:
            notes.append(f"files over {self.settings.harvest_max_file_bytes // 1024} KiB were left out of the "
                         f"uncommitted commit: {', '.join(collected.skipped)[:500]}")
        return notes

    async def before_burn(self, rec: BoxRecord | None, why: str) -> tuple[bool | None, str | None]:
        """Harvest what has not come home, within the harvest time limit: (harvested, what happened).
        (None, None): the box has no repo. Never raises: the caller decides whether to burn anyway."""
        if rec is None or not self.has_git(rec):
            return None, None
        try:
            with anyio.fail_after(self.settings.harvest_timeout_s):
                said = await self._harvest(rec)
        except (ForgeError, TimeoutError, OSError) as exc:
            limit = format_duration(self.settings.harvest_timeout_s)
            said = f"work NOT harvested ({exc or 'no answer within ' + limit})"
            await self.repo.add_event("harvest-failed", box_name=rec.name, detail=f"{why}: {said}"[:2000])
            return False, said
        await self.repo.add_event("harvest", box_name=rec.name, detail=f"{why}: {said}"[:2000])
        return True, said

    async def _harvest(self, rec: BoxRecord) -> str:
        home, user = await self.home_of(rec)
        if home is not None:
            fetched = await self.fetch(rec)
            said = f"came home as {fetched.ref} ({fetched.tip[:12]}) in {fetched.repo}"
            if user:
                return said
            saved = self._bundle_path(rec)
            await anyio.to_thread.run_sync(ensure_private_dir, saved.parent)  # the first harvest makes the dir
            await local.git(home, "bundle", "create", "--quiet", str(saved), fetched.ref)
            return f"{said}; bundle {saved}"
        assert rec.project_dir is not None
        collected = await harvest.collect(
            self.access.exec(rec, long=True), project_dir=rec.project_dir, known=[], include_uncommitted=True,
            max_file_bytes=self.settings.harvest_max_file_bytes, box=rec.name,
            timeout=self.settings.harvest_timeout_s)
        if collected.bundle is None:
            return "nothing to harvest"
        saved = await harvest.save_bundle(collected, self._bundle_path(rec))
        return f"the source repo is gone: saved as bundle {saved} (git fetch {saved} {collected.ref}:<branch>)"

    def _bundle_path(self, rec: BoxRecord) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        return ensure_private_dir(self.settings.home / "harvests") / f"{rec.name}-{rec.request_id}-{stamp}.bundle"
