"""``Fleet``: the one object tools and the CLI call. A thin facade: each method hands over to the unit
that owns the concern (boxes, forge, jobs, files, agents, reaping); the units share the resources
opened by ``resources.open_resources`` (store repository, SSH pool, providers) and are wired here, once,
in the constructor."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from providers.base import Provider
from providers.capabilities import BuildsImages
from server.config import Settings
from server.errors import InvalidInput
from server.git.land import LandOutcome
from server.plans.board import PlanBoard
from server.plans.model import Plan
from server.plans.scheduler import Plans
from server.schemas import (
    AgentRun,
    CancelResult,
    CommandResult,
    CompareResult,
    DestroyResult,
    DiffResult,
    DownloadResult,
    Encoding,
    FetchResult,
    FileContent,
    FileList,
    ForkResult,
    ForwardInfo,
    ForwardList,
    GrepResult,
    JobList,
    JobStatusResult,
    JobWaitResult,
    PoolStatus,
    PushResult,
    ServerInfo,
    ServerList,
    WriteResult,
)
from server.service.access import BoxAccess
from server.service.agents import Agents
from server.service.boxes import Boxes
from server.service.files import Files
from server.service.forge import Forge, Progress
from server.service.forks import Forks
from server.service.git import GitWork
from server.service.harvest import Harvester
from server.service.jobs import Jobs
from server.service.jobwait import wait_any
from server.service.pool import PoolFiller, WarmPool
from server.service.reaper import Reaping
from server.service.resources import FleetResources, open_resources, recover
from server.service.secrets import Secrets
from server.service.wakeup import Wakeup
from server.ssh import SSHTarget
from server.store import BoxRecord, Store
from server.vault import resolve_env, secret_store


@asynccontextmanager
async def open_fleet(settings: Settings, *, background: TaskGroup | None = None,
                     wakeup: Wakeup | None = None) -> AsyncIterator[Fleet]:
    """A Fleet over freshly opened resources (for the CLI and tests; the MCP lifespan builds its own)."""
    async with open_resources(settings) as res:
        fleet = Fleet(res, background=background, wakeup=wakeup)
        await fleet.recover()
        yield fleet


class Fleet:
    """Create, destroy, extend and list boxes; start, poll and cancel jobs; file tools and agents.

    ``background`` (the MCP server lifespan's task group) is where creates with ``wait=False`` finish;
    ``wakeup`` is rung when a create or extend changes the schedule the reaper sleeps on."""

    def __init__(self, res: FleetResources, *, background: TaskGroup | None = None,
                 wakeup: Wakeup | None = None) -> None:
        self.settings = res.settings
        self.repo = res.repo
        self.pool = res.pool
        self._providers = res.providers
        self.wakeup = wakeup or Wakeup()
        in_flight: set[str] = set()  # request ids of creates running in this process
        self.access = BoxAccess(self.settings, self.pool)
        self.vault = secret_store(self.settings.config_path)
        secrets = Secrets(self.settings.redact_min_chars, self.repo)
        self.harvester = Harvester(self.settings, self.repo, self.access)
        self.boxes = Boxes(self.settings, self.repo, self._providers, self.access, secrets, self.wakeup, in_flight,
                           self.harvester)
        self.git = GitWork(self.settings, self.repo, self.access, self.boxes, self.harvester)
        self.warm = WarmPool(self.settings, self.repo)  # warm boxes (self.pool is the SSH pool)
        self.forge = Forge(self.settings, self.repo, self._providers, self.access, secrets, self.boxes, background,
                           in_flight, self.warm)
        self.pool_filler = PoolFiller(self.warm, self.forge.create_server, self._providers)
        self.jobs = Jobs(self.settings, self.repo, self.access, secrets, self.boxes)
        self.files = Files(self.settings, self.access, secrets, self.boxes)
        self.agents = Agents(self.access, self.boxes, self.jobs)
        self.reaping = Reaping(self.settings, self.repo, self._providers, self.boxes, in_flight)
        self.forks = Forks(self.settings, self.repo, self._providers, self.access, self.boxes, self.forge, self.jobs)
        self.plans = Plans(self, background)

    # resources

    @property
    def store(self) -> Store:
        """The synchronous store (for tests and tools that read records directly)."""
        return self.repo.store

    @property
    def providers(self) -> dict[str, Provider]:
        """Provider instances by name; a test may put its own in before first use."""
        return self._providers.instances

    def provider(self, name: str) -> Provider:
        return self._providers.get(name)

    async def env(self, env: Mapping[str, str] | None, env_from: Sequence[str] | None) -> dict[str, str]:
        """``env`` plus the values of the ``env_from`` names (secret store, then this process's environment)."""
        if not env_from:
            return dict(env or {})
        return await anyio.to_thread.run_sync(resolve_env, env, env_from, self.vault, self.settings.env)

    def info(self, rec: BoxRecord, now: float | None = None) -> ServerInfo:
        return self.boxes.info(rec, now)

    # boxes

    async def create_server(self, name: str, *, ttl_s: int | None = None, repo: str | None = None,
                            branch: str | None = None, agent: str = "none", agent_install: str | None = None,
                            agent_command: str | None = None, env: Mapping[str, str] | None = None,
                            size: str | None = None, image: str | None = None, location: str | None = None,
                            provider: str | None = None, ready_timeout_s: float | None = None, wait: bool = True,
                            progress: Progress | None = None, repo_via: str = "orchestrator",
                            egress: str | None = None, env_from: Sequence[str] | None = None,
                            agent_version: str | None = None) -> ServerInfo:
        """Forge a box and bootstrap it; on any failure the box is burned and ProvisionFailed raised."""
        return await self.forge.create_server(
            name, ttl_s=ttl_s, repo=repo, branch=branch, agent=agent, agent_install=agent_install,
            agent_command=agent_command, env=await self.env(env, env_from), size=size, image=image, location=location,
            provider=provider, ready_timeout_s=ready_timeout_s, wait=wait, progress=progress, repo_via=repo_via,
            egress=egress, agent_version=agent_version)

    async def fork_server(self, source: str, names: Sequence[str], *, branches: Sequence[str | None] | None = None,
                          ttl_s: int | None = None) -> ForkResult:
        """New boxes starting as a copy of ``source``'s files, each with its own keys, TTL and branch."""
        return await self.forks.fork_server(source, names, branches=branches, ttl_s=ttl_s)

    async def pool_status(self) -> PoolStatus:
        """Every warm pool profile: wanted, ready, starting, and why it is off."""
        return await self.warm.status(self.pool_filler.refusal)

    async def fill_pools(self) -> list[str]:
        """Start every profile's missing boxes now and wait for them; the names made ready."""
        return await self.pool_filler.fill_once()

    def _image_builder(self, provider: str | None) -> BuildsImages:
        prov = self._providers.get(provider or self.settings.provider)
        if not isinstance(prov, BuildsImages):
            raise InvalidInput(f"provider {prov.name!r} builds no images here (local boxes do)")
        return prov

    async def list_images(self, provider: str | None = None) -> list[dict[str, object]]:
        """The images a provider has cached for its boxes."""
        builder = self._image_builder(provider)
        return await anyio.to_thread.run_sync(builder.cached_images)

    async def image_ready(self, provider: str | None = None) -> bool:
        """False when the next create must build the provider's image first (about a minute)."""
        prov = self._providers.get(provider or self.settings.provider)
        return not isinstance(prov, BuildsImages) or await anyio.to_thread.run_sync(prov.image_ready)

    async def build_image(self, progress: Callable[[str], None], *, provider: str | None = None,
                          force: bool = False) -> dict[str, object]:
        """Build (or find) the provider's image now; ``progress`` gets one line per step."""
        builder = self._image_builder(provider)
        return await anyio.to_thread.run_sync(lambda: builder.build_image(progress, force))

    async def destroy_server(self, name: str, *, harvest: bool = True) -> DestroyResult:
        return await self.boxes.destroy_server(name, harvest=harvest)

    async def extend_server(self, name: str, ttl_s: int, *, shorten: bool = True) -> ServerInfo:
        return await self.boxes.extend_server(name, ttl_s, shorten=shorten)

    async def recover(self, timeout_s: float = 60.0) -> list[str]:
        """At start: end the creates whose orchestrator died (adopt or burn them). Bounded: a provider that
        stalls leaves them to the reaper."""
        return await recover(self.settings, self.repo, self.boxes, timeout_s)

    async def list_servers(self) -> ServerList:
        return await self.boxes.list_servers()

    async def server_info(self, server: str) -> ServerInfo:
        """One live box (ready or still provisioning)."""
        return self.boxes.info(await self.boxes.live(server))

    async def ssh_access(self, server: str) -> tuple[SSHTarget, ServerInfo]:
        """Where and how to reach a ready box with a plain ssh client (its key, its pinned host key)."""
        rec = await self.boxes.ready(server)
        return self.access.target(rec), self.boxes.info(rec)

    async def reconcile(self) -> None:
        await self.boxes.reconcile()

    async def reap_once(self) -> tuple[list[str], float | None]:
        """Destroy expired and orphaned boxes of this owner; the names burned and when to look again."""
        return await self.reaping.reap_once()

    # ports

    async def forward(self, server: str, port: int, *, local_port: int | None = None,
                      bind: str = "127.0.0.1") -> ForwardInfo:
        """Forward the ready box's TCP ``port`` to ``bind:local_port`` on this machine, over its SSH connection."""
        rec = await self.boxes.ready(server)
        return await self.access.forwards.open(self.access.target(rec), port, local_port, bind)

    async def list_forwards(self, server: str) -> ForwardList:
        """The box's open forwards (this process's), each checked again for a listener."""
        await self.boxes.live(server)
        return ForwardList(forwards=await self.access.forwards.of_box(server))

    async def close_forward(self, server: str, port: int | None = None) -> ForwardList:
        """Close one of the box's forwards, or all of them; the ones closed."""
        return ForwardList(forwards=await self.access.forwards.close(server, port))

    async def forward_ended(self, server: str) -> None:
        """Return when the box's forwards have ended (closed, burned, or the box gone)."""
        await self.access.forwards.wait_ended(server)

    # git: the work comes home

    async def fetch(self, server: str, *, include_uncommitted: bool = True,
                    local_branch: str | None = None) -> FetchResult:
        return await self.git.fetch(server, include_uncommitted=include_uncommitted, local_branch=local_branch)

    async def compare(self, servers: list[str]) -> CompareResult:
        return await self.git.compare(servers)

    async def land(self, servers: list[str], *, into: str | None = None, repo: str | None = None) -> LandOutcome:
        return await self.git.land(servers, into=into, repo=repo)

    async def push(self, server: str, *, remote: str = "origin") -> PushResult:
        return await self.git.push(server, remote=remote)

    # jobs

    async def run(self, server: str, command: str, *, background: bool = False, timeout_s: float | None = None,
                  cwd: str | None = None, env: Mapping[str, str] | None = None, kill_on_timeout: bool = False,
                  idempotency_key: str | None = None, env_from: Sequence[str] | None = None) -> CommandResult:
        received = time.monotonic()  # timeout_s counts from here
        return await self.jobs.run(server, command, background=background, timeout_s=timeout_s, cwd=cwd,
                                   env=await self.env(env, env_from), kill_on_timeout=kill_on_timeout,
                                   idempotency_key=idempotency_key, received=received)

    async def job_status(self, job_id: str, *, stdout_offset: int = 0, stderr_offset: int = 0,
                         wait_s: float = 0.0, max_bytes: int | None = None) -> JobStatusResult:
        return await self.jobs.job_status(job_id, stdout_offset=stdout_offset, stderr_offset=stderr_offset,
                                          wait_s=wait_s, max_bytes=max_bytes)

    async def wait_jobs(self, job_ids: Sequence[str], wait_s: float = 0.0) -> JobWaitResult:
        """Every job's state, as soon as any of them ends (or after ``wait_s``)."""
        return await wait_any(self.jobs, job_ids, wait_s)

    async def list_jobs(self, server: str | None = None) -> JobList:
        return await self.jobs.list_jobs(server)

    async def cancel_job(self, job_id: str, signal: str = "TERM") -> CancelResult:
        return await self.jobs.cancel_job(job_id, signal)

    # files, review and agents

    async def read_file(self, server: str, path: str, *, offset: int = 0, limit: int = 2000,
                        encoding: Encoding = "text") -> FileContent:
        return await self.files.read_file(server, path, offset=offset, limit=limit, encoding=encoding)

    async def write_file(self, server: str, path: str, content: str, *, encoding: Encoding = "text",
                         create_dirs: bool = True, mode: int | None = None) -> WriteResult:
        return await self.files.write_file(server, path, content, encoding=encoding, create_dirs=create_dirs,
                                           mode=mode)

    async def list_files(self, server: str, path: str = ".", pattern: str = "*", *,
                         max_entries: int = 500) -> FileList:
        return await self.files.list_files(server, path, pattern, max_entries=max_entries)

    async def grep(self, server: str, pattern: str, path: str = ".", *, glob: str | None = None,
                   ignore_case: bool = False, max_results: int = 100) -> GrepResult:
        return await self.files.grep(server, pattern, path, glob=glob, ignore_case=ignore_case,
                                     max_results=max_results)

    async def upload(self, server: str, local_path: str, remote_path: str, *, create_dirs: bool = True,
                     overwrite: bool = True) -> WriteResult:
        return await self.files.upload(server, local_path, remote_path, create_dirs=create_dirs, overwrite=overwrite)

    async def download(self, server: str, remote_path: str, local_path: str, *,
                       overwrite: bool = False) -> DownloadResult:
        return await self.files.download(server, remote_path, local_path, overwrite=overwrite)

    async def diff(self, server: str, *, max_bytes: int = 64 * 1024) -> DiffResult:
        return await self.files.diff(server, max_bytes=max_bytes)

    async def run_agent(self, server: str, prompt: str, *, args: list[str] | None = None,
                        env: Mapping[str, str] | None = None, cwd: str | None = None,
                        idempotency_key: str | None = None, env_from: Sequence[str] | None = None) -> AgentRun:
        return await self.agents.run_agent(server, prompt, args=args, env=await self.env(env, env_from), cwd=cwd,
                                           idempotency_key=idempotency_key)

    # plans: tasks fanned out over a pool of boxes (server/plans, docs/plans.md)

    async def plan_start(self, plan: Plan, *, base_dir: Path | None = None) -> PlanBoard:
        return await self.plans.start(plan, base_dir=base_dir)

    async def plan_status(self, plan_id: str, *, wait_s: float = 0.0) -> PlanBoard:
        return await self.plans.status(plan_id, wait_s)

    async def plan_cancel(self, plan_id: str) -> PlanBoard:
        return await self.plans.cancel(plan_id)

    async def plan_land(self, plan_id: str, *, into: str | None = None) -> LandOutcome:
        return await self.plans.land(plan_id, into=into)
