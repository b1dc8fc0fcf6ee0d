"""The create saga: check the request, record it, then provision, reach, bootstrap and set up the box
— every step inside one burn-on-failure scope, so a create that fails at any step (or is cancelled)
destroys what it made before the error leaves this module."""

from __future__ import annotations

import dataclasses
import logging
import posixpath
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from providers.base import (
    LABEL_CREATE_DEADLINE,
    LABEL_READY,
    Box,
    BoxSpec,
    Provider,
    ProviderError,
    box_labels,
)
from providers.capabilities import OnboxCall, WaitsForBoot
from server import boxfile, forwardenv, jobs
from server.bootstrap import base_commit_from, bootstrap_script, installed_agent_from
from server.config import Settings
from server.domain.hints import Hint, HintKind
from server.domain.states import CREATE_STEPS, BoxStatus, CreateStep
from server.errors import BoxUnreachable, ForgeError, ProvisionFailed, ServerExists
from server.git import seed as seed_git
from server.keys import create_box_keys
from server.schemas import ServerInfo
from server.service import onbox
from server.service import pool as pool_module
from server.service.access import BoxAccess
from server.service.agentcache import AgentRegistry
from server.service.boxes import Boxes
from server.service.createjobs import CreateJobs, Step, read_boxfile
from server.service.createreq import (
    CreateRequest,
    check_request,
    drop_bundle,
    git_data,
    made_data,
    prepare_request,
    reason,
)
from server.service.creators import CREATOR, this_process
from server.service.pool import WarmPool
from server.service.providers import ProviderSet
from server.service.secrets import Secrets
from server.service.views import AGENT_INSTALLED
from server.store import BoxRecord, Repository

log = logging.getLogger("boxforge.fleet")
Progress = Callable[[str, int, int], Awaitable[None]]
PROJECT_DIR_NAME = "project"
HOME_PROBE = OnboxCall("home.sh")
REPO_VIA = ("orchestrator", "box")


@dataclass
class _Made:
    """What a create has made so far (for the burn on failure)."""

    box: Box | None = None


async def _probe_home(ex: jobs.BoxExec) -> str:
    result = await onbox.run(ex, HOME_PROBE, 30.0)
    home = result.stdout.decode(errors="replace").strip()
    if result.exit_status != 0 or not home.startswith("/"):
        raise BoxUnreachable("the box did not report a home directory over SSH")
    return home


FORWARD_FILE = OnboxCall("forwarded-file.sh")


async def _forward_env(ex: jobs.BoxExec, home: str, forwarded: forwardenv.Forwarded,
                       timeout: float) -> dict[str, str]:
    """The forwarded env for the box: its plain values, and each file variable pointing at a copy of its file
    on the box (one copy per distinct file: several CA variables usually name the same bundle)."""
    env = dict(forwarded.env)
    copies: dict[bytes, str] = {}
    for name, content in sorted(forwarded.files.items()):
        if content not in copies:
            call = dataclasses.replace(FORWARD_FILE, params={"name": name})
            result = await ex(onbox.command_line(call), content, timeout)
            if result.exit_status != 0:
                raise ForgeError(f"could not copy the file of {name} (forward_env) into the box: "
                                 f"{result.stderr.decode(errors='replace').strip()[-300:]}")
            copies[content] = forwardenv.box_path(home, name)
        env[name] = copies[content]
    return env


class Forge:
    def __init__(self, settings: Settings, repo: Repository, providers: ProviderSet, access: BoxAccess,
                 secrets: Secrets, boxes: Boxes, background: TaskGroup | None, in_flight: set[str],
                 pool: WarmPool | None = None) -> None:
        self.settings = settings
        self.repo = repo
        self.providers = providers
        self.access = access
        self.secrets = secrets
        self.boxes = boxes
        self.background = background  # the server lifespan's task group: creates with wait=false run there
        self.in_flight = in_flight
        self.pool = pool  # warm boxes a matching create takes
        self.create_jobs = CreateJobs(settings, repo, secrets)
        self.agent_registry = AgentRegistry(settings, access)

    def check(self, **request: Any) -> tuple[str, int, CreateRequest]:
        """Refuse a bad request before anything is made: (provider name, ttl, the request)."""
        return check_request(self.settings, self.providers, has_background=self.background is not None, **request)

    async def create_server(self, name: str, *, ttl_s: int | None = None, repo: str | None = None,
                            branch: str | None = None, agent: str = "none", agent_install: str | None = None,
                            agent_command: str | None = None, env: Mapping[str, str] | None = None,
                            size: str | None = None, image: str | None = None, location: str | None = None,
                            provider: str | None = None, ready_timeout_s: float | None = None, wait: bool = True,
                            progress: Progress | None = None, repo_via: str = "orchestrator",
                            egress: str | None = None, agent_version: str | None = None,
                            pool: str | None = None) -> ServerInfo:
        """Forge a box and bootstrap it; on any failure the box is burned and ProvisionFailed raised.

        A request that matches a warm pool profile takes a ready box of that pool (server/service/pool.py)
        and only seeds the repo, runs the bootstrap (the agent is installed already) and the setup; with
        none ready it is forged as usual. ``pool``: this create makes a box to wait in that profile's pool.

        An npm agent's release (the latest, or ``agent_version``) and the Node it needs are resolved from
        the registry first, so a release that does not exist fails before anything is made.

        The repo is read by the orchestrator (before anything is made, so a repo that cannot be read
        fails at once) and pushed into the box as a bundle; ``repo_via="box"`` clones a public URL on
        the box instead.

        With ``wait=False`` the create continues in the background task group and this returns at once in
        state ``provisioning``; a failure then shows in list_servers' ``failed``."""
        provider_name, ttl, req = self.check(
            ttl_s=ttl_s, repo=repo, branch=branch, agent=agent, agent_install=agent_install,
            agent_command=agent_command, env=env, image=image, provider=provider,
            ready_timeout_s=ready_timeout_s, wait=wait, repo_via=repo_via, agent_version=agent_version)
        req = await prepare_request(self.settings, req, egress=egress, repo_via=repo_via, branch=branch,
                                    pool=pool)
        try:
            rec = None
            if pool is None and egress is None and repo_via == "orchestrator" and self.pool is not None:
                profile = pool_module.matching(
                    self.pool.profiles, self.settings.provider, provider=provider_name, size=size, image=image,
                    location=location, agent=agent, agent_version=agent_version, agent_install=agent_install,
                    agent_command=agent_command)
                rec = await self._take(profile, name, ttl, req, branch) if profile else None
            rec = rec or await self._record(name, provider_name, ttl, req, branch, size, location)
        except BaseException:
            drop_bundle(req)
            raise
        if wait:
            return await self._forge(rec, req, progress)
        assert self.background is not None
        self.background.start_soon(self._forge_detached, rec, req, name=f"create {name}")
        info = self.boxes.info(rec)
        info.suggest("hint", Hint(HintKind.FORGING, server=name))
        return info

    async def _take(self, profile: str, name: str, ttl_s: int, req: CreateRequest,
                    branch: str | None) -> BoxRecord | None:
        """A ready box of the warm pool, renamed for this create (None: none ready)."""
        assert self.pool is not None
        changes = {"repo": req.source.url if req.source else None, "branch": req.seed.branch if req.seed else branch,
                   "data": {**(git_data(req) or {}), CREATOR: this_process()}}
        try:
            rec = await self.pool.take(profile, name, ttl_s, changes)
        except sqlite3.IntegrityError:
            raise ServerExists(f"server {name!r} already exists; use it or pick another name",
                               hint=Hint(HintKind.BURN_FIRST, server=name)) from None
        if rec is not None:
            await self.repo.add_event("create", box_name=name, detail=f"{rec.provider} (warm pool {profile})")
            self.in_flight.add(rec.request_id)
            self.boxes.wakeup.ring()
        return rec

    async def _record(self, name: str, provider_name: str, ttl_s: int, req: CreateRequest, branch: str | None,
                      size: str | None, location: str | None) -> BoxRecord:
        now = time.time()
        request_id = "r" + secrets.token_hex(6)
        rec = BoxRecord(
            name=name, box_id=None, provider=provider_name, state=BoxStatus.PROVISIONING, step=CreateStep.PROVISION,
            key_id=f"{name}-{request_id}", request_id=request_id, host=None, ssh_port=None, ssh_user=None,
            home=None, project_dir=None, repo=req.source.url if req.source else None,
            branch=req.seed.branch if req.seed else branch, base_commit=None, agent=req.plan.name, size=size,
            location=location, data={**(git_data(req) or {}), CREATOR: this_process(),
                                     **({pool_module.POOL_DATA: req.pool} if req.pool else {})}, error=None,
            created_at=now, ready_at=None, expires_at=now + ttl_s, destroyed_at=None,
        )
        try:
            await self.repo.insert_box(rec)
        except sqlite3.IntegrityError:
            raise ServerExists(f"server {name!r} already exists; use it or pick another name",
                               hint=Hint(HintKind.BURN_FIRST, server=name)) from None
        await self.repo.add_event("create", box_name=name, detail=provider_name)
        self.in_flight.add(request_id)
        self.boxes.wakeup.ring()
        return rec

    async def _forge_detached(self, rec: BoxRecord, req: CreateRequest) -> None:
        """A create with wait=false: its failure is recorded on the box record, never raised into the lifespan."""
        try:
            await self._forge(rec, req, None)
        except (ForgeError, ProviderError):
            pass  # burned, and the record says why (list_servers shows it under failed)
        except Exception:
            log.exception("background create failed unexpectedly")

    @asynccontextmanager
    async def _burn_on_failure(self, rec: BoxRecord, prov: Provider,
                               req: CreateRequest | None = None) -> AsyncIterator[_Made]:
        """The one scope of a create: on any exception or cancellation, burn what was made and say why."""
        made = _Made()
        try:
            yield made
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._burn_failed(prov, rec, made.box, exc)
            if isinstance(exc, Exception):
                raise ProvisionFailed(f"creating server {rec.name!r} failed and the box was burned: "
                                      f"{reason(exc)}") from exc
            raise
        finally:
            self.in_flight.discard(rec.request_id)
            if req is not None:
                drop_bundle(req)

    async def _forge(self, rec: BoxRecord, req: CreateRequest, progress: Progress | None) -> ServerInfo:
        async def step(label: str) -> None:
            await self.repo.update_box(rec.request_id, step=label)
            if progress is not None:
                await progress(label, CREATE_STEPS.index(label), len(CREATE_STEPS))

        async with self._burn_on_failure(rec, req.prov, req) as made:
            labels = self._labels(rec, req)
            if (rec.data or {}).get(pool_module.FROM_POOL) and rec.box_id:  # a warm box: the user's labels now
                made.box = await req.prov.get(rec.box_id)
                if made.box is None:
                    raise ForgeError("the warm pool's box vanished before it was handed over; create again")
                made.box = await req.prov.set_labels(rec.box_id, labels)
            else:
                spec = await self._spec(rec, req, labels)
                await step(CreateStep.PROVISION)
                made.box = await req.prov.create(spec)
                await self.repo.update_box(rec.request_id, box_id=made.box.id)
                made.box = await req.prov.wait_ready(made.box.id, timeout=req.timeout)
            await step(CreateStep.SSH)
            fresh, ex, project_dir = await self._reach(rec, made.box, req)
            if isinstance(req.prov, WaitsForBoot):  # the box's own boot setup (it installs git) comes first
                await self._boot_wait(self.access.exec(fresh, long=True), req.prov, made.box, req.timeout)
            if req.seed is not None:
                await step(CreateStep.CLONE)
                assert req.source is not None
                await seed_git.install(self.access.exec(fresh, long=True), req.seed, project_dir,
                                       None if req.source.is_local_path else req.source.url)
                drop_bundle(req)
            base = await self._bootstrap(fresh, ex, project_dir, req, step)
            await self._setup(fresh, ex, project_dir, step, req.prov, made.box.id)
            # The ready label is what spares the box from the orphan sweep, in any orchestrator.
            await req.prov.set_labels(made.box.id, {**labels, LABEL_READY: "1"})
            await self.repo.update_box(rec.request_id, state=BoxStatus.READY, step=CreateStep.READY,
                                       base_commit=base, ready_at=time.time())
            await step(CreateStep.READY)
        final = await self.repo.box_by_request(rec.request_id)
        assert final is not None
        return self.boxes.info(final)

    def _labels(self, rec: BoxRecord, req: CreateRequest) -> dict[str, str]:
        # Readiness and bootstrap each get `timeout`; a setup pushes the deadline when it starts.
        deadline = time.time() + 2 * req.timeout
        labels = {**box_labels(owner=self.settings.owner, name=rec.name, request_id=rec.request_id,
                                expires_at=rec.expires_at), LABEL_CREATE_DEADLINE: str(int(deadline))}
        if req.pool:
            labels[pool_module.LABEL_POOL] = req.pool
        return labels

    async def _spec(self, rec: BoxRecord, req: CreateRequest, labels: dict[str, str]) -> BoxSpec:
        keys = await anyio.to_thread.run_sync(create_box_keys, self.settings.keys_dir, rec.key_id)
        return BoxSpec(name=rec.name, request_id=rec.request_id, labels=labels, host_key_private=keys.host_private,
                       host_key_public=keys.host_public, authorized_key=keys.client_public, size=rec.size,
                       image=req.image, location=rec.location, egress=req.egress)

    async def _reach(self, rec: BoxRecord, box: Box, req: CreateRequest) -> tuple[BoxRecord, jobs.BoxExec, str]:
        """Record where the box is, find its home over SSH, give it its env: (record, exec, project dir)."""
        await self.repo.update_box(rec.request_id, host=box.host, ssh_port=box.ssh_port, ssh_user=box.ssh_user,
                                   data={**(rec.data or {}), **made_data(box, req.forwarded.notes)})
        fresh = await self.repo.box_by_request(rec.request_id)
        assert fresh is not None
        ex = self.access.exec(fresh)
        with anyio.fail_after(req.timeout):
            home = await _probe_home(ex)
        project_dir = posixpath.join(home, PROJECT_DIR_NAME)
        await self.repo.update_box(rec.request_id, home=home, project_dir=project_dir)
        env = {**await _forward_env(ex, home, req.forwarded, req.timeout), **req.env}
        if env:
            await jobs.write_box_env(ex, env)
        self.secrets.remember_box(rec.request_id, env)  # the box env file's values are all redacted
        fresh = await self.repo.box_by_request(rec.request_id)
        assert fresh is not None
        return fresh, ex, project_dir

    async def _bootstrap(self, rec: BoxRecord, ex: jobs.BoxExec, project_dir: str, req: CreateRequest,
                         step: Step) -> str | None:
        async with self.agent_registry.registry_for(rec, req.plan, req.prov) as registry:
            script = bootstrap_script(project_dir=project_dir, repo=req.source, branch=rec.branch, agent=req.plan,
                                      seeded=req.seed is not None, npm_registry=registry)
            job_id = await self.create_jobs.start(rec, ex, "bootstrap", "[bootstrap]", script, rec.home or "~")
            await self.repo.merge_data(rec.request_id, bootstrap_job_id=job_id)
            markers = "\n".join(await self.create_jobs.follow(rec, ex, job_id, "bootstrap", req.timeout, step))
        installed = installed_agent_from(markers)
        if installed is not None:
            await self.repo.merge_data(rec.request_id, **{AGENT_INSTALLED: dataclasses.asdict(installed)})
        return base_commit_from(markers)

    @staticmethod
    async def _boot_wait(ex: jobs.BoxExec, prov: WaitsForBoot, box: Box, timeout: float) -> None:
        boot = await onbox.run(ex, prov.boot_wait(box), timeout)
        if boot.exit_status != 0:
            raise ForgeError("the box's boot setup failed: "
                             f"{boot.stderr.decode(errors='replace').strip()[-500:]}")

    async def _push_deadline(self, prov: Provider, box_id: str, seconds: float) -> None:
        """Move the box's create deadline so no orchestrator's sweep takes a long setup for an orphan."""
        box = await prov.get(box_id)
        if box is not None:
            await prov.set_labels(box_id, {**box.labels, LABEL_CREATE_DEADLINE: str(int(time.time() + seconds))})

    async def _setup(self, rec: BoxRecord, ex: jobs.BoxExec, project_dir: str, step: Step, prov: Provider,
                     box_id: str) -> None:
        """Run the setup commands of the repo's .boxforge.yml, then start its services."""
        await step(CreateStep.SETUP)
        recipe = await read_boxfile(ex, project_dir)
        if recipe is None:
            return
        if recipe.setup:
            await self._push_deadline(prov, box_id, recipe.timeout)
            job_id = await self.create_jobs.start(rec, ex, "setup", f"[setup] {boxfile.BOXFILE_NAME}",
                                                  boxfile.setup_script(recipe), project_dir)
            await self.repo.merge_data(rec.request_id, setup_job_id=job_id)
            await self.create_jobs.follow(rec, ex, job_id, f"setup from {boxfile.BOXFILE_NAME}", recipe.timeout)
        services: dict[str, str] = {}
        for service in recipe.services:
            services[service.name] = await self.create_jobs.start(
                rec, ex, "service", f"[service {service.name}] {service.command}", service.command, project_dir)
        if services:
            await self.repo.merge_data(rec.request_id, services=services)
        for service in recipe.services:
            if service.port is not None:  # opened now; it says listening=false until the service listens
                await self.access.forwards.open(self.access.target(rec), service.port, service=service.name)

    async def _burn_failed(self, prov: Provider, rec: BoxRecord, box: Box | None, exc: BaseException) -> None:
        current = await self.repo.box_by_request(rec.request_id)
        try:
            await self.boxes.destroy_box(prov, current, box.id if box else None)
        except (ForgeError, ProviderError):
            pass  # the reaper's orphan sweep retries boxes that carry our labels
        finally:
            await self.repo.end_box(rec.request_id, BoxStatus.FAILED, error=reason(exc)[:2000])
        if current is not None:
            await self.repo.add_event("create-failed", box_name=rec.name, detail=type(exc).__name__)
