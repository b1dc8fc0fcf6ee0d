"""Git through the orchestrator, what the tools and the CLI call: fetch a box's work home (through the
``Harvester`` of service/harvest.py), compare boxes for the fan-in, land fetched branches in order, push
one to the user's remote.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import anyio

from providers.capabilities import OnboxCall
from server.config import Settings
from server.domain.hints import Hint, HintKind
from server.errors import ForgeError, InvalidInput
from server.git import local
from server.git.land import LandOutcome, land_refs
from server.schemas import CommitLine, CompareBox, CompareResult, FetchResult, Overlap, PushResult, time_left
from server.service import onbox
from server.service.access import BoxAccess
from server.service.harvest import Harvester
from server.store import BoxRecord, Repository

CREATE_KINDS = ("bootstrap", "setup", "service")


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
