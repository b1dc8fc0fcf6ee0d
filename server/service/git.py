"""Git through the orchestrator, the service side: fetch a box's work home, harvest it before every
burn, compare boxes for the fan-in, land fetched branches in order, push one to the user's remote.

``Harvester`` needs only the store and the box access (the lifecycle and the reaper call it under
the box's lock before they burn); ``GitWork`` is what the tools and the CLI call.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import anyio

from providers.capabilities import OnboxCall
from server.config import Settings, ensure_private_dir
from server.domain.durations import format_duration
from server.domain.hints import Hint, HintKind
from server.errors import ForgeError, InvalidInput
from server.git import harvest, local
from server.git.land import LandOutcome, land_refs
from server.git.seed import cache_dir
from server.schemas import CommitLine, CompareBox, CompareResult, FetchResult, Overlap, PushResult, time_left
from server.service import onbox
from server.service.access import BoxAccess
from server.store import BoxRecord, Repository

GIT_DATA = "git"
FETCHED = "fetched"  # key of BoxRecord.data: the last fetch (repo, ref, tip, head)
CREATE_KINDS = ("bootstrap", "setup", "service")


def _lines(pairs: list[tuple[str, str]]) -> list[CommitLine]:
    return [CommitLine(id=i, subject=s) for i, s in pairs]


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
        if not self.has_git(rec):
            raise InvalidInput(f"server {rec.name!r} was made without a repo: there is no branch to fetch")
        home, _ = await self.home_of(rec)
        if home is None:
            raise InvalidInput(f"the repo {rec.repo!r} that {rec.name!r} was seeded from is gone on this machine; "
                               "its work is harvested as a bundle under the state dir when it is burned")
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
        # Since the last fetch: from the old tip, or from the old HEAD when that tip was an uncommitted commit.
        since = None
        for candidate in (old, prev_head):
            if candidate and await local.rev(home, candidate) and await harvest.is_ancestor(home, candidate,
                                                                                           collected.tip):
                since = candidate
                break
        rewritten = bool(old) and since is None
        since = since if old else rec.base_commit  # a first fetch: everything ahead of base is new
        stat, files = await harvest.diffstat(home, rec.base_commit, collected.tip)
        result = FetchResult(
            server=rec.name, repo=str(home), ref=ref, tip=collected.tip, head=collected.head,
            branch=collected.branch, base_commit=rec.base_commit, uncommitted_commit=collected.wip,
            commits=_lines(await harvest.commits(home, rec.base_commit, collected.tip)),
            new_commits=[] if old == collected.tip else _lines(await harvest.commits(home, since, collected.tip)),
            files=files, diffstat=stat, rewritten=rewritten, skipped_files=list(collected.skipped))
        notes = []
        if collected.branch is None:
            notes.append("the box is on a detached HEAD; its HEAD came home as " + ref)
        if rewritten:
            notes.append(f"the box's branch was rewritten (force-moved); {ref} was reset from {(old or '')[:12]}")
        if collected.skipped:
            notes.append(f"files over {self.settings.harvest_max_file_bytes // 1024} KiB were left out of the "
                         f"uncommitted commit: {', '.join(collected.skipped)[:500]}")
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


class GitWork:
    """The git operations tools and the CLI call: fetch, compare, land, push."""

    def __init__(self, settings: Settings, repo: Repository, access: BoxAccess, boxes: Any,
                 harvester: Harvester) -> None:
        self.settings = settings
        self.repo = repo
        self.access = access
        self.boxes = boxes
        self.harvester = harvester

    async def fetch(self, server: str, *, include_uncommitted: bool = True,
                    local_branch: str | None = None) -> FetchResult:
        async with self.boxes.lock(server):  # one fetch of a box at a time; a burn waits for it
            rec = await self.boxes.ready(server)
            result = await self.harvester.fetch(rec, include_uncommitted=include_uncommitted,
                                                local_branch=local_branch)
        result.time_left, _, expiring = time_left(rec.expires_at, warn_s=self.settings.expiry_warn_s)
        if result.warning is None:
            result.suggest("warning", expiring)
        return result

    async def compare(self, servers: list[str]) -> CompareResult:
        if not servers:
            raise InvalidInput("give the boxes to compare (servers=[...])")
        recs = [await self.boxes.ready(name) for name in dict.fromkeys(servers)]
        boxes: dict[str, CompareBox] = {}

        async def one(rec: BoxRecord) -> None:
            boxes[rec.name] = await self._compare_one(rec)

        async with anyio.create_task_group() as tg:
            for rec in recs:
                tg.start_soon(one, rec)
        ordered = [boxes[r.name] for r in recs]
        overlaps = [Overlap(servers=[a.server, b.server], files=sorted(set(a.files) & set(b.files)))
                    for a, b in itertools.combinations(ordered, 2) if set(a.files) & set(b.files)]
        result = CompareResult(boxes=ordered, overlaps=overlaps)
        result.suggest("hint", Hint(HintKind.COMPARED, server=",".join(b.server for b in ordered)))
        return result

    async def _compare_one(self, rec: BoxRecord) -> CompareBox:
        out = CompareBox(server=rec.name, branch=rec.branch, base_commit=rec.base_commit,
                         time_left=time_left(rec.expires_at)[0], last_job=await self._last_job(rec))
        if not self.harvester.has_git(rec) or not rec.base_commit:
            out.error = "made without a repo"
            return out
        assert rec.project_dir is not None
        call = OnboxCall("git-compare.sh", {"project": rec.project_dir, "base": rec.base_commit})
        try:
            result = await onbox.run(self.access.exec(rec, long=True), call, self.settings.harvest_timeout_s)
        except (ForgeError, TimeoutError) as exc:
            out.error = str(exc) or "the box did not answer"
            return out
        if result.exit_status != 0:
            out.error = result.stderr.decode(errors="replace").strip()[-300:]
            return out
        text = result.stdout.decode(errors="replace")
        head, _, stat = text.partition("--stat--\n")
        files: list[str] = []
        for line in head.splitlines():
            key, _, value = line.partition("=")
            if key == "branch":
                out.branch = value or None
            elif key == "ahead":
                out.ahead = int(value or 0)
            elif key == "commit":
                short, _, subject = value.partition(" ")
                out.commits.append(CommitLine(id=short, subject=subject))
            elif key == "file":
                files.append(value)
            elif key == "dirty":
                out.uncommitted = True
        out.files = sorted(set(files))
        out.diffstat = stat.strip()
        return out

    async def _last_job(self, rec: BoxRecord) -> str | None:
        jobs = [j for j in await self.repo.jobs_of_box(rec.request_id) if j.kind not in CREATE_KINDS]
        if not jobs:
            return None
        job = max(jobs, key=lambda j: j.created_at)
        code = "" if job.exit_code is None else f" (exit {job.exit_code})"
        return f"{job.job_id} {job.state}{code}"

    async def land(self, servers: list[str], *, into: str | None, repo: str | None) -> LandOutcome:
        """Merge the fetched branches of ``servers`` into ``into`` of the user's repo, in order (each is
        fetched first); stops at the first conflict with the merge aborted. Never pushes."""
        if not servers:
            raise InvalidInput("give the boxes to land, in merge order")
        refs: list[tuple[str, str]] = []
        home: Path | None = None
        for name in servers:
            fetched = await self.fetch(name)
            if home is None:
                home = Path(fetched.repo)
            elif Path(fetched.repo) != home and repo is None:
                raise InvalidInput("these boxes came from different repos; land them one repo at a time")
            refs.append((name, fetched.ref))
        target = Path(await anyio.Path(repo).expanduser().resolve()) if repo else home
        assert target is not None
        if not await local.is_repo(target):
            raise InvalidInput(f"{target} is not a git repository")
        if repo and target != home:
            for _, ref in refs:  # bring the refs over from where they came home
                await local.git(target, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", str(home),
                                f"+{ref}:{ref}")
        outcome = await land_refs(target, refs, into, self.settings.home / "git" / "tmp")
        await self.repo.add_event("land", detail=f"{target}: {outcome.summary()}"[:2000])
        return outcome

    async def push(self, server: str, *, remote: str = "origin") -> PushResult:
        """Push the box's committed branch (fetched first) to the user's remote with the orchestrator's
        credentials. The extra commit of uncommitted changes is not pushed."""
        if not remote or remote.startswith("-") or "\n" in remote:
            raise InvalidInput("remote must be a remote name of the repo (e.g. origin) or a URL")
        fetched = await self.fetch(server)
        rec = await self.boxes.ready(server)
        home = Path(fetched.repo)
        branch = fetched.branch or rec.branch
        if not branch:
            raise InvalidInput(f"{server!r} is on a detached HEAD and was made without a branch: nothing to push to")
        target = remote
        if not (await local.git(home, "remote", "get-url", remote, check=False))[0] == 0:
            if remote == "origin" and rec.repo and "://" in rec.repo:
                target = rec.repo  # boxforge's cache of a URL has no remotes: origin is the URL itself
            elif "://" not in remote and not remote.startswith("/"):
                raise InvalidInput(f"{home} has no remote {remote!r}; give a remote name it has, or a URL")
        creds = local.credential_env(self.settings.home, None, self.settings.env or None)
        code, _, err = await local.git(home, "push", "--porcelain", "--", target,
                                       f"{fetched.head}:refs/heads/{branch}", env=creds, check=False)
        if code != 0:
            raise ForgeError(f"push to {remote} was refused: {err.strip()[-600:]}")
        await self.repo.add_event("push", box_name=server, detail=f"{remote} {branch} {fetched.head[:12]}")
        result = PushResult(server=server, remote=remote, branch=branch, commit=fetched.head,
                            message=f"pushed {fetched.head[:12]} to {remote} as {branch}")
        if fetched.uncommitted_commit:
            result.message += "; the box's uncommitted changes were not pushed (commit them on the box first)"
        return result
