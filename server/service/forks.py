"""Forks: new boxes that start as a copy of a ready box's filesystem (checkout, installed tools, caches),
each with its own keys, labels, TTL and branch. The base of best-of-N: one prepared box, N forks.

The provider copies the files (``CanFork``: a local box's overlay upper dir, a Hetzner snapshot) in one
call for all the forks, so anything it shares between them (a snapshot) is made once. Then each fork is
finished on its own, inside its own burn-on-failure scope (``Forge._burn_on_failure``): reachable, its
branch started at the source's HEAD, its ready label. A fork that fails is burned and reported; the others
stay. Jobs running on the source are not copied (their files are, their processes are not).
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import anyio
import anyio.to_thread

from providers.base import LABEL_CREATE_DEADLINE, LABEL_READY, Box, BoxSpec, Provider, box_labels
from providers.capabilities import CanFork, OnboxCall
from server.config import Settings
from server.domain.durations import check_ttl_within, parse_ttl
from server.domain.hints import Hint, HintKind
from server.domain.names import check_branch, check_name
from server.domain.states import BoxStatus, CreateStep, JobState
from server.errors import BoxUnreachable, ForgeError, InvalidInput, ProvisionFailed, ServerExists
from server.jobs import BoxExec
from server.keys import create_box_keys
from server.schemas import ForkFailure, ForkResult, ServerInfo
from server.service import onbox
from server.service.access import BoxAccess
from server.service.boxes import Boxes
from server.service.createreq import made_data
from server.service.creators import CREATOR, this_process
from server.service.forge import Forge
from server.service.harvest import GIT_DATA
from server.service.jobs import Jobs
from server.service.providers import ProviderSet
from server.store import BoxRecord, Repository

MAX_FORKS = 10
NOTE = ("each fork is a copy of the source's files at the moment of the call (checkout with uncommitted "
        "changes, installed tools, caches, env) with its own keys, TTL and branch; processes and running jobs "
        "are not copied")


@dataclass(frozen=True)
class _Fork:
    rec: BoxRecord
    spec: BoxSpec


class _Batch:
    """The provider's one fork call, shared by the forks: the first to ask runs it, the others wait."""

    def __init__(self, prov: CanFork, source: Box, specs: list[BoxSpec], lock: anyio.Lock) -> None:
        self.prov, self.source, self.specs, self.lock = prov, source, specs, lock
        self._done = anyio.Event()
        self._started = False
        self._boxes: list[Box] = []
        self._error: BaseException | None = None

    async def box(self, index: int) -> Box:
        if not self._started:
            self._started = True
            try:
                async with self.lock:  # the source is not burned while its files are copied
                    self._boxes = await self.prov.fork(self.source, self.specs)
            except BaseException as exc:
                self._error = exc
                raise
            finally:
                self._done.set()
        await self._done.wait()
        if self._error is not None:
            raise ForgeError(f"the provider could not fork the box: {self._error}") from self._error
        return self._boxes[index]


def check_fork(names: Sequence[str], branches: Sequence[str | None] | None) -> list[tuple[str, str | None]]:
    """(name, branch) per fork; refused before anything is made."""
    if not 1 <= len(names) <= MAX_FORKS:
        raise InvalidInput(f"give 1 to {MAX_FORKS} fork names")
    if len(set(names)) != len(names):
        raise InvalidInput("fork names must be distinct")
    if branches is not None and len(branches) != len(names):
        raise InvalidInput(f"branches must have one entry per name ({len(names)}), or be left out")
    pairs = []
    for i, name in enumerate(names):
        branch = branches[i] if branches is not None else None
        try:
            pairs.append((check_name(name), check_branch(branch) if branch else None))
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    chosen = [b for _, b in pairs if b]
    if len(set(chosen)) != len(chosen):
        raise InvalidInput("two forks cannot share one branch")
    return pairs


def fork_branch(source_branch: str | None, name: str) -> str:
    """A fork's default branch: the source's branch with the fork's name after it, else the name."""
    return f"{source_branch}-{name}" if source_branch else name


class Forks:
    def __init__(self, settings: Settings, repo: Repository, providers: ProviderSet, access: BoxAccess,
                 boxes: Boxes, forge: Forge, jobs: Jobs) -> None:
        self.settings = settings
        self.repo = repo
        self.providers = providers
        self.access = access
        self.boxes = boxes
        self.forge = forge
        self.jobs = jobs

    async def fork_server(self, source: str, names: Sequence[str], *, branches: Sequence[str | None] | None = None,
                          ttl_s: int | None = None, ready_timeout_s: float | None = None) -> ForkResult:
        """Fork the ready box ``source`` into one new box per name; see the module docstring."""
        pairs = check_fork(names, branches)
        ttl_s = ttl_s if ttl_s is not None else parse_ttl(self.settings.default_ttl)
        refused = check_ttl_within(ttl_s, self.settings.max_ttl_s)
        if refused:
            raise InvalidInput(refused, hint=Hint(HintKind.EXTEND_LATER))
        src, prov, source_box = await self._source(source, [name for name, _ in pairs])
        running = [j.job_id for j in (await self.jobs.list_jobs(src.name)).jobs if j.state == JobState.RUNNING]
        timeout = ready_timeout_s if ready_timeout_s is not None else self.settings.ready_timeout_s
        forks = await self._records(src, pairs, ttl_s, timeout)
        batch = _Batch(cast(CanFork, prov), source_box, [f.spec for f in forks], self.boxes.lock(src.name))
        done: dict[str, ServerInfo] = {}
        failed: list[ForkFailure] = []

        async def finish(i: int, fork: _Fork) -> None:
            try:
                done[fork.rec.name] = await self._finish(src, prov, fork, batch, i, timeout)
            except ProvisionFailed as exc:
                failed.append(ForkFailure(name=fork.rec.name, error=str(exc)))

        async with anyio.create_task_group() as tg:
            for i, fork in enumerate(forks):
                tg.start_soon(finish, i, fork)
        return ForkResult(source=src.name, forks=[done[f.rec.name] for f in forks if f.rec.name in done],
                          failed=failed, jobs_not_copied=running, note=NOTE)

    async def _source(self, source: str, names: list[str]) -> tuple[BoxRecord, Provider, Box]:
        """The ready source box, its provider (which must fork) and its provider's Box; the names must be free."""
        src = await self.boxes.ready(source)
        prov = self.providers.get(src.provider)
        if not isinstance(prov, CanFork):
            raise InvalidInput(f"provider {prov.name!r} cannot fork boxes; create new boxes from the repo instead")
        for name in names:
            if await self.repo.live_box(name) is not None:
                raise ServerExists(f"server {name!r} already exists; pick another fork name",
                                   hint=Hint(HintKind.BURN_FIRST, server=name))
        source_box = await prov.get(src.box_id) if src.box_id else None
        if source_box is None:
            raise ForgeError(f"server {source!r} is gone at its provider; it cannot be forked")
        return src, prov, source_box

    async def _records(self, src: BoxRecord, pairs: list[tuple[str, str | None]], ttl_s: int,
                       timeout: float) -> list[_Fork]:
        """One provisioning record per fork, all or none (a taken name ends the ones already written)."""
        forks: list[_Fork] = []
        try:
            for name, branch in pairs:
                forks.append(await self._record(src, name, branch or fork_branch(src.branch, name), ttl_s, timeout))
        except BaseException:
            for made in forks:
                await self.repo.end_box(made.rec.request_id, BoxStatus.FAILED, error="another fork's name was taken")
                self.forge.in_flight.discard(made.rec.request_id)
            raise
        return forks

    async def _record(self, src: BoxRecord, name: str, branch: str, ttl_s: int, timeout: float) -> _Fork:
        now = time.time()
        request_id = "r" + secrets.token_hex(6)
        data: dict[str, Any] = {CREATOR: this_process(), "forked_from": src.name}
        if (src.data or {}).get(GIT_DATA):
            data[GIT_DATA] = src.data[GIT_DATA]  # type: ignore[index]
        rec = BoxRecord(
            name=name, box_id=None, provider=src.provider, state=BoxStatus.PROVISIONING, step=CreateStep.PROVISION,
            key_id=f"{name}-{request_id}", request_id=request_id, host=None, ssh_port=None, ssh_user=None,
            home=None, project_dir=None, repo=src.repo, branch=branch if src.project_dir and src.repo else None,
            base_commit=src.base_commit, agent=src.agent, size=src.size, location=src.location, data=data,
            error=None, created_at=now, ready_at=None, expires_at=now + ttl_s, destroyed_at=None)
        try:
            await self.repo.insert_box(rec)
        except sqlite3.IntegrityError:
            raise ServerExists(f"server {name!r} already exists; pick another fork name",
                               hint=Hint(HintKind.BURN_FIRST, server=name)) from None
        await self.repo.add_event("fork", box_name=name, detail=src.name)
        self.forge.in_flight.add(request_id)
        self.boxes.wakeup.ring()
        keys = await anyio.to_thread.run_sync(create_box_keys, self.settings.keys_dir, rec.key_id)
        labels = {**box_labels(owner=self.settings.owner, name=name, request_id=request_id, expires_at=rec.expires_at),
                  LABEL_CREATE_DEADLINE: str(int(now + 2 * timeout))}
        spec = BoxSpec(name=name, request_id=request_id, labels=labels, host_key_private=keys.host_private,
                       host_key_public=keys.host_public, authorized_key=keys.client_public, size=src.size,
                       location=src.location)
        return _Fork(rec, spec)

    async def _finish(self, src: BoxRecord, prov: Provider, fork: _Fork, batch: _Batch, index: int,
                      timeout: float) -> ServerInfo:
        rec = fork.rec
        async with self.forge._burn_on_failure(rec, prov) as made:
            made.box = await batch.box(index)
            await self.repo.update_box(rec.request_id, box_id=made.box.id)
            made.box = await prov.wait_ready(made.box.id, timeout=timeout)
            await self.repo.update_box(rec.request_id, step=CreateStep.SSH, host=made.box.host,
                                       ssh_port=made.box.ssh_port, ssh_user=made.box.ssh_user,
                                       data={**(rec.data or {}), **made_data(made.box)})
            fresh = await self.repo.box_by_request(rec.request_id)
            assert fresh is not None
            ex = self.access.exec(fresh)
            home = await _home(ex, timeout)
            project_dir = src.project_dir.replace(src.home, home, 1) if src.project_dir and src.home else None
            await self.repo.update_box(rec.request_id, home=home, project_dir=project_dir)
            if project_dir and rec.branch:
                await _start_branch(ex, project_dir, rec.branch, timeout)
            await prov.set_labels(made.box.id, {**fork.spec.labels, LABEL_READY: "1"})
            await self.repo.update_box(rec.request_id, state=BoxStatus.READY, step=CreateStep.READY,
                                       ready_at=time.time())
        final = await self.repo.box_by_request(rec.request_id)
        assert final is not None
        return self.boxes.info(final)


async def _home(ex: BoxExec, timeout: float) -> str:
    with anyio.fail_after(timeout):
        result = await onbox.run(ex, OnboxCall("home.sh"), 30.0)
    home = result.stdout.decode(errors="replace").strip()
    if result.exit_status != 0 or not home.startswith("/"):
        raise BoxUnreachable("the fork did not report a home directory over SSH")
    return home


async def _start_branch(ex: BoxExec, project_dir: str, branch: str, timeout: float) -> None:
    result = await onbox.run(ex, OnboxCall("git-fork-branch.sh", {"project": project_dir, "branch": branch}),
                             min(timeout, 60.0))
    if result.exit_status != 0:
        why = result.stderr.decode(errors="replace").strip()[-500:]
        raise ForgeError(f"could not start branch {branch!r} on the fork: {why}")
