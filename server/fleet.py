"""The fleet service: create, destroy, extend and list boxes; start, poll and cancel jobs.

The only module that touches the store, the providers and SSH together. Every method
returns a schema model or raises a ForgeError with an actionable message.

Burn on every path: a create that fails at any step (or is cancelled) destroys what it
made before the error leaves this module.
"""

from __future__ import annotations

import base64
import logging
import os
import posixpath
import secrets
import shlex
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from providers import provider_class
from providers.base import (
    BACKSTOP_EXPIRES_FILE,
    LABEL_CREATE_DEADLINE,
    LABEL_EXPIRES_AT,
    LABEL_READY,
    LABEL_REQUEST,
    Box,
    BoxSpec,
    Provider,
    ProviderError,
    ReadyTimeout,
    box_labels,
    is_expired,
    owner_labels,
)
from server import agents, boxfile, files, jobs
from server.agents import AgentPlan, plan_agent
from server.bootstrap import BASE_MARKER, STEP_MARKER, RepoSource, base_commit_from, bootstrap_script, parse_repo
from server.config import Settings, _config_path
from server.errors import (
    BoxUnreachable,
    ForgeError,
    InvalidInput,
    NotOwned,
    ProviderFailure,
    ProvisionFailed,
    ServerExists,
    UnknownJob,
    UnknownServer,
)
from server.keys import BoxKeys, create_box_keys, delete_box_keys, load_box_keys
from server.schemas import (
    ENV_NAME_RE,
    AgentRun,
    CancelResult,
    CommandResult,
    DestroyResult,
    DiffResult,
    DownloadResult,
    FileContent,
    FileList,
    GrepResult,
    JobList,
    JobStatusResult,
    JobSummary,
    ServerInfo,
    ServerList,
    WriteResult,
    cost_so_far,
    format_duration,
    iso,
    time_left,
)
from server.ssh import ExecResult, SSHPool, SSHTarget
from server.store import BoxRecord, JobRecord, Store
from server.text import complete_utf8_prefix, decode_output

log = logging.getLogger("boxforge.fleet")
T = TypeVar("T")
Progress = Callable[[str, int, int], Awaitable[None]]
CREATE_STEPS = ("provision", "ssh", "clone", "agent", "setup", "ready")
FAILED_SHOWN_S = 3600.0  # list_servers shows creates that failed this recently
MAX_COMMAND_BYTES = 256 * 1024
MAX_ENV_VALUE_BYTES = 64 * 1024
MAX_WAIT_S = 300.0
JOB_SECRETS_KEPT = 1000
PROJECT_DIR_NAME = "project"
DROPPED_MARKER = "\n[... {n} bytes dropped ...]\n"


@dataclass(frozen=True)
class Redactor:
    """Secret values to hide in output, longest first."""

    secrets: tuple[tuple[str, str], ...]  # (value, name)

    @classmethod
    def of(cls, env: Mapping[str, str], min_chars: int) -> Redactor:
        pairs = sorted(((v, k) for k, v in env.items() if len(v) >= min_chars), key=lambda vk: -len(vk[0]))
        return cls(tuple(pairs))

    def text(self, text: str) -> str:
        for value, name in self.secrets:
            if value in text:
                text = text.replace(value, f"[redacted:{name}]")
        return text

    __call__ = text

    def safe_end(self, data: bytes) -> int:
        """Length of ``data`` without a tail that could be the start of a secret cut off by the chunk."""
        cut = 0
        for value, _ in self.secrets:
            raw = value.encode()
            for k in range(min(len(raw) - 1, len(data)), cut, -1):
                if data.endswith(raw[:k]):
                    cut = k
                    break
        return len(data) - cut

    def safe_start(self, data: bytes) -> int:
        """Bytes at the start of ``data`` that could be the end of a secret cut off before it."""
        skip = 0
        for value, _ in self.secrets:
            raw = value.encode()
            for k in range(min(len(raw) - 1, len(data)), skip, -1):
                if data.startswith(raw[-k:]):
                    skip = k
                    break
        return skip


@dataclass
class Health:
    """When a box last answered over SSH, and since when it has not."""

    last_seen: float | None = None
    unreachable_since: float | None = None
    error: str | None = None


@dataclass
class Fleet:
    settings: Settings
    store: Store
    pool: SSHPool
    providers: dict[str, Provider] = field(default_factory=dict)
    on_schedule_change: Callable[[], None] | None = None
    _box_locks: dict[str, anyio.Lock] = field(default_factory=dict)
    _db_limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(1))
    _keys: dict[str, BoxKeys] = field(default_factory=dict)  # key id -> the box's key files, read once
    _creating: set[str] = field(default_factory=set)  # request ids of creates running in this process
    _health: dict[str, Health] = field(default_factory=dict)  # box name -> reachability
    _box_secrets: dict[str, dict[str, str]] = field(default_factory=dict)  # request id -> box env
    _job_secrets: dict[str, dict[str, str]] = field(default_factory=dict)  # job id -> per-job env
    background: TaskGroup | None = None  # owned by the server's lifespan: creates with wait=false run here

    # plumbing

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._db_limiter)

    def provider(self, name: str) -> Provider:
        if name not in self.providers:
            try:
                cls = provider_class(name)
            except ProviderError as exc:
                raise InvalidInput(str(exc)) from exc
            if name == "local":
                self.providers[name] = cls(self.settings.local_boxes_dir, server=self.settings.local_sshd,
                                           watchdog_grace_s=self.settings.local_watchdog_grace_s)
            else:
                self.providers[name] = cls.from_settings(self.settings)
        return self.providers[name]

    def _lock(self, name: str) -> anyio.Lock:
        return self._box_locks.setdefault(name, anyio.Lock())

    def _target(self, rec: BoxRecord) -> SSHTarget:
        if rec.host is None or rec.ssh_port is None or rec.ssh_user is None:
            raise BoxUnreachable(f"box {rec.name!r} has no SSH address yet (state {rec.state})")
        keys = self._keys.get(rec.key_id)
        if keys is None:  # a box's keys never change: read them once, not on every poll
            keys = self._keys[rec.key_id] = load_box_keys(self.settings.keys_dir, rec.key_id)
        return SSHTarget(rec.name, rec.host, rec.ssh_port, rec.ssh_user, keys.client_key_path, keys.host_public)

    async def _forget_box(self, rec: BoxRecord) -> None:
        """A box has ended: drop its keys and what this process remembered of it."""
        self._keys.pop(rec.key_id, None)
        self._box_secrets.pop(rec.request_id, None)
        self._health.pop(rec.name, None)
        await anyio.to_thread.run_sync(delete_box_keys, self.settings.keys_dir, rec.key_id)

    def _exec(self, rec: BoxRecord, *, long: bool = False) -> jobs.BoxExec:
        """The box's exec, recording when it last answered and since when it has not. ``long``: for
        scripts that may run for minutes (grep, diff), which take the pool's long lane so that they
        never hold up short calls (status, launch, cancel) to the same box."""
        target = self._target(rec)
        inner = jobs.box_exec(self.pool, target)
        health = self._health.setdefault(rec.name, Health())

        async def run(script: str, stdin: bytes | None = None, timeout: float | None = None) -> ExecResult:
            try:
                if long:
                    result = await self.pool.channel_run(target, script, stdin=stdin, timeout=timeout, long=True)
                else:
                    result = await inner(script, stdin, timeout)
            except BoxUnreachable as exc:
                health.unreachable_since = health.unreachable_since or time.time()
                health.error = str(exc)
                raise
            health.last_seen, health.unreachable_since, health.error = time.time(), None, None
            return result

        return run

    async def _redactor(self, rec: BoxRecord, ex: jobs.BoxExec, job: JobRecord | str | None = None) -> Redactor:
        """The secret env values (the box's and the job's) to hide in output as [redacted:NAME].

        Values this process does not hold (another process launched the job, or this one restarted)
        are read back from the box's 0600 files, once per box and job.
        """
        if rec.request_id not in self._box_secrets:
            self._box_secrets[rec.request_id] = await jobs.read_box_env(ex)
        pairs = dict(self._box_secrets[rec.request_id])
        job_id = job.job_id if isinstance(job, JobRecord) else job
        if job_id is not None:
            known = self._job_secrets.get(job_id)
            if known is None and isinstance(job, JobRecord) and job.secret_names:
                known = await jobs.read_secrets(ex, job_id)
                self._remember_job_secrets(job_id, known)
            pairs.update(known or {})
        return Redactor.of(pairs, self.settings.redact_min_chars)

    def _remember_job_secrets(self, job_id: str, env: Mapping[str, str]) -> None:
        self._job_secrets[job_id] = dict(env)
        while len(self._job_secrets) > JOB_SECRETS_KEPT:  # oldest first: a long-lived server stays small
            del self._job_secrets[next(iter(self._job_secrets))]

    def _changed_schedule(self) -> None:
        if self.on_schedule_change is not None:
            self.on_schedule_change()

    async def _live(self, name: str) -> BoxRecord:
        rec = await self._db(self.store.live_box, name)
        if rec is None:
            names = await self._db(self.store.live_names)
            known = ", ".join(names) if names else "none (create one with create_server)"
            raise UnknownServer(f"unknown server {name!r}; live servers: {known}")
        return rec

    async def _ready(self, name: str) -> BoxRecord:
        rec = await self._live(name)
        if rec.state != "ready":
            raise ForgeError(f"server {name!r} is still provisioning (step: {rec.step}); try again shortly")
        if rec.expires_at <= time.time():
            raise ForgeError(f"server {name!r} has expired and is being burned; create a new one")
        return rec

    def info(self, rec: BoxRecord, now: float | None = None) -> ServerInfo:
        live = rec.live
        left, left_s, warning = time_left(rec.expires_at, now) if live else (None, None, None)
        host = f"[{rec.host}]" if rec.host and ":" in rec.host else rec.host
        address = f"{rec.ssh_user}@{host}:{rec.ssh_port}" if rec.host and live else None
        data = rec.data or {}
        price = data.get("price_hourly")
        cost = None
        if price is not None:
            until = rec.destroyed_at or (time.time() if now is None else now)
            cost = cost_so_far(price, rec.created_at, until, data.get("price_monthly"))
        return ServerInfo(
            name=rec.name,
            provider=rec.provider,
            state=rec.state,
            step=rec.step if rec.state == "provisioning" else None,
            address=address,
            project_dir=rec.project_dir,
            repo=rec.repo,
            branch=rec.branch,
            base_commit=rec.base_commit,
            agent=rec.agent,
            bootstrap_job_id=data.get("bootstrap_job_id"),
            setup_job_id=data.get("setup_job_id"),
            services=data.get("services"),
            created_at=iso(rec.created_at),
            expires_at=iso(rec.expires_at),
            time_left=left,
            time_left_s=left_s,
            warning=warning,
            error=rec.error,
            ip=data.get("ip") if live else None,
            price_per_hour=price,
            cost_so_far=cost,
        )

    # boxes

    async def create_server(
        self,
        name: str,
        *,
        ttl_s: int | None = None,
        repo: str | None = None,
        branch: str | None = None,
        agent: str = "none",
        agent_install: str | None = None,
        agent_command: str | None = None,
        env: Mapping[str, str] | None = None,
        size: str | None = None,
        image: str | None = None,
        location: str | None = None,
        provider: str | None = None,
        ready_timeout_s: float | None = None,
        wait: bool = True,
        progress: Progress | None = None,
    ) -> ServerInfo:
        """Forge a box and bootstrap it; on any failure the box is burned and ProvisionFailed raised.

        With ``wait=False`` the create continues in ``self.background`` (the server lifespan's task
        group) and this returns at once in state ``provisioning``; a failure then shows in
        list_servers' ``failed``.
        """
        from server.schemas import parse_ttl

        ttl_s = ttl_s if ttl_s is not None else parse_ttl(self.settings.default_ttl)
        if ttl_s > self.settings.max_ttl_s:
            raise InvalidInput(
                f"ttl {format_duration(ttl_s)} exceeds the maximum of {format_duration(self.settings.max_ttl_s)}; "
                "use a shorter ttl and extend_server later if needed"
            )
        plan = plan_agent(agent, install=agent_install, command=agent_command)
        env = dict(env or {})
        check_env(env)
        if branch and not repo:
            raise InvalidInput("branch needs a repo: pass repo (a git URL or a local path) too")
        source = parse_repo(repo) if repo else None
        provider_name = provider or self.settings.provider
        prov = self.provider(provider_name)
        if source is not None and source.is_local_path and provider_name != "local":
            raise InvalidInput("a local repo path only works on local boxes; give a git URL the box can reach")
        if not wait and self.background is None:
            raise InvalidInput("wait=false needs a long-running MCP server to finish the create; wait for it instead")
        timeout = ready_timeout_s if ready_timeout_s is not None else self.settings.ready_timeout_s

        now = time.time()
        request_id = "r" + secrets.token_hex(6)
        rec = BoxRecord(
            name=name, box_id=None, provider=provider_name, state="provisioning", step="provision",
            key_id=f"{name}-{request_id}", request_id=request_id, host=None, ssh_port=None, ssh_user=None,
            home=None, project_dir=None, repo=source.url if source else None, branch=branch, base_commit=None,
            agent=plan.name, size=size, location=location, data=None, error=None, created_at=now, ready_at=None,
            expires_at=now + ttl_s, destroyed_at=None,
        )
        try:
            await self._db(self.store.insert_box, rec)
        except sqlite3.IntegrityError:
            raise ServerExists(
                f"server {name!r} already exists; use it, destroy_server it first, or pick another name"
            ) from None
        await self._db(self.store.add_event, "create", box_name=name, detail=provider_name)
        self._creating.add(request_id)
        self._changed_schedule()
        forge = partial(self._forge, rec, prov, source, plan, env, image, timeout)
        if wait:
            return await forge(progress)
        assert self.background is not None
        self.background.start_soon(self._forge_detached, forge, name=f"create {name}")
        info = self.info(rec)
        info.hint = (f"forging in the background: poll list_servers until {name!r} is ready (its step field shows "
                     "progress; a failure shows under failed); bootstrap_job_id appears once the box answers SSH, "
                     "and vm_job_status on it follows the bootstrap log")
        return info

    async def _forge_detached(self, forge: Callable[[Progress | None], Awaitable[ServerInfo]]) -> None:
        """A create with wait=false: its failure is recorded on the box record, never raised into the lifespan."""
        try:
            await forge(None)
        except (ForgeError, ProviderError):
            pass  # burned, and the record says why (list_servers shows it under failed)
        except Exception:
            log.exception("background create failed unexpectedly")

    async def _forge(self, rec: BoxRecord, prov: Provider, source: RepoSource | None, plan: AgentPlan,
                     env: dict[str, str], image: str | None, timeout: float, progress: Progress | None) -> ServerInfo:
        name, request_id = rec.name, rec.request_id

        async def step(label: str) -> None:
            await self._db(self.store.update_box, request_id, step=label)
            if progress is not None:
                await progress(label, CREATE_STEPS.index(label), len(CREATE_STEPS))

        box: Box | None = None
        try:
            keys = await anyio.to_thread.run_sync(create_box_keys, self.settings.keys_dir, rec.key_id)
            # Readiness and bootstrap each get `timeout`; a setup pushes the deadline when it starts.
            deadline = time.time() + 2 * timeout
            spec = BoxSpec(
                name=name, request_id=request_id,
                labels={**box_labels(owner=self.settings.owner, name=name, request_id=request_id,
                                     expires_at=rec.expires_at), LABEL_CREATE_DEADLINE: str(int(deadline))},
                host_key_private=keys.host_private, host_key_public=keys.host_public,
                authorized_key=keys.client_public, size=rec.size, image=image, location=rec.location,
            )
            await step("provision")
            box = await prov.create(spec)
            await self._db(self.store.update_box, request_id, box_id=box.id)
            box = await prov.wait_ready(box.id, timeout=timeout)
            await step("ssh")
            await self._db(self.store.update_box, request_id, host=box.host, ssh_port=box.ssh_port,
                           ssh_user=box.ssh_user, data=dict(box.data))
            fresh = await self._db(self.store.box_by_request, request_id)
            assert fresh is not None
            ex = self._exec(fresh)
            with anyio.fail_after(timeout):
                home = await _probe_home(ex)
            project_dir = posixpath.join(home, PROJECT_DIR_NAME)
            await self._db(self.store.update_box, request_id, home=home, project_dir=project_dir)
            if env:
                await jobs.write_box_env(ex, env)
            self._box_secrets[request_id] = dict(env)
            base = await self._bootstrap(fresh, ex, home, project_dir, source, plan, timeout, step)
            await self._setup(fresh, ex, project_dir, step, partial(self._push_deadline, prov, box.id))
            # The ready label is what spares the box from the orphan sweep, in any orchestrator.
            await prov.set_labels(box.id, {**spec.labels, LABEL_READY: "1"})
            await self._db(self.store.update_box, request_id, state="ready", step="ready", base_commit=base,
                           ready_at=time.time())
            await step("ready")
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._burn_failed(prov, request_id, box, exc)
            if isinstance(exc, Exception):
                raise ProvisionFailed(f"creating server {name!r} failed and the box was burned: {reason(exc)}") from exc
            raise
        finally:
            self._creating.discard(request_id)
        final = await self._db(self.store.box_by_request, request_id)
        assert final is not None
        return self.info(final)

    async def _merge_data(self, request_id: str, **values: Any) -> None:
        rec = await self._db(self.store.box_by_request, request_id)
        await self._db(self.store.update_box, request_id, data={**((rec.data if rec else None) or {}), **values})

    async def _start_create_job(self, rec: BoxRecord, ex: jobs.BoxExec, kind: str, label: str, script: str, cwd: str,
                                env: Mapping[str, str] | None = None) -> str:
        """Launch a bootstrap, setup or service job. Its env (a repo token) is deleted on the box once
        sourced: the agent that runs there later must not find it."""
        job_id = jobs.new_job_id()
        await self._db(self.store.insert_job, JobRecord(
            job_id=job_id, box_name=rec.name, request_id=rec.request_id, command=label[:500], cwd=cwd,
            kind=kind, idempotency_key=None, state="running", exit_code=None, created_at=time.time(),
            finished_at=None))
        if env:
            self._remember_job_secrets(job_id, env)
        await jobs.launch(ex, job_id, script, cwd=cwd, env=env or {}, keep_secrets=False)
        return job_id

    async def _await_create_job(self, rec: BoxRecord, ex: jobs.BoxExec, job_id: str, what: str, timeout: float,
                                step: Callable[[str], Awaitable[None]] | None = None) -> list[str]:
        """Follow a bootstrap or setup job to its end, turning its step markers into progress.

        Returns the marker lines it printed; a job that fails or outlives ``timeout`` raises
        with the (redacted) tail of its log.
        """
        deadline = time.monotonic() + timeout
        offset, pending, markers = 0, b"", []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ForgeError(f"{what} did not finish within {format_duration(timeout)}; a slow setup needs a "
                                 "larger 'timeout' in .boxforge.yml, a slow bootstrap a larger ready_timeout_s")
            st = await jobs.status(ex, job_id, stdout_offset=offset, stderr_offset=1 << 40,
                                   max_bytes=self.settings.output_cap_bytes, wait_s=min(left, 1.0 if step else 30.0))
            offset = st.next_stdout_offset
            *lines, pending = (pending + st.stdout).split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                if line.startswith(STEP_MARKER) and step is not None:
                    label = line[len(STEP_MARKER):].strip()
                    if label in ("clone", "agent"):
                        await step(label)
                elif line.startswith(BASE_MARKER):
                    markers.append(line)
            if st.state != "running" and not st.more:
                break
        await self._db(self.store.update_job, job_id, state=st.state, exit_code=st.exit_code,
                       finished_at=st.finished_at)
        if st.state != "succeeded":
            redact = await self._redactor(rec, ex, job_id)
            tail = redact(await self._tail(ex, job_id, st, 2000))
            raise ForgeError(f"{what} failed (exit {st.exit_code}); log tail:\n{tail}")
        return markers

    async def _bootstrap(self, rec: BoxRecord, ex: jobs.BoxExec, home: str, project_dir: str,
                         source: RepoSource | None, plan: AgentPlan, timeout: float,
                         step: Callable[[str], Awaitable[None]]) -> str | None:
        script = bootstrap_script(project_dir=project_dir, repo=source, branch=rec.branch, agent=plan)
        job_id = await self._start_create_job(rec, ex, "bootstrap", "[bootstrap]", script, home,
                                              source.secret_env if source else None)
        await self._merge_data(rec.request_id, bootstrap_job_id=job_id)
        markers = await self._await_create_job(rec, ex, job_id, "bootstrap", timeout, step)
        return base_commit_from("\n".join(markers))

    async def _push_deadline(self, prov: Provider, box_id: str, seconds: float) -> None:
        """Move the box's create deadline so no orchestrator's sweep takes a long setup for an orphan."""
        box = await prov.get(box_id)
        if box is not None:
            await prov.set_labels(box_id, {**box.labels, LABEL_CREATE_DEADLINE: str(int(time.time() + seconds))})

    async def _setup(self, rec: BoxRecord, ex: jobs.BoxExec, project_dir: str,
                     step: Callable[[str], Awaitable[None]],
                     push_deadline: Callable[[float], Awaitable[None]]) -> None:
        """Run the setup commands of the repo's .boxforge.yml, then start its services."""
        await step("setup")
        read = await ex(boxfile.read_script(project_dir), None, 30.0)
        if boxfile.missing(read.exit_status):
            return
        if read.exit_status != 0:
            raise ForgeError(f"could not read {boxfile.BOXFILE_NAME} on the box: "
                             f"{read.stderr.decode(errors='replace').strip()[-300:]}")
        if len(read.stdout) > boxfile.MAX_BOXFILE_BYTES:
            raise InvalidInput(f"{boxfile.BOXFILE_NAME} is larger than 64 KiB; keep long scripts in the repo and "
                               "call them from it")
        recipe = boxfile.parse_boxfile(read.stdout.decode(errors="replace"))
        if recipe.setup:
            await push_deadline(recipe.timeout)
            job_id = await self._start_create_job(rec, ex, "setup", f"[setup] {boxfile.BOXFILE_NAME}",
                                                  boxfile.setup_script(recipe), project_dir)
            await self._merge_data(rec.request_id, setup_job_id=job_id)
            await self._await_create_job(rec, ex, job_id, f"setup from {boxfile.BOXFILE_NAME}", recipe.timeout)
        services: dict[str, str] = {}
        for service in recipe.services:
            services[service.name] = await self._start_create_job(
                rec, ex, "service", f"[service {service.name}] {service.command}", service.command, project_dir)
        if services:
            await self._merge_data(rec.request_id, services=services)

    async def _tail(self, ex: jobs.BoxExec, job_id: str, st: jobs.JobStatus, limit: int) -> str:
        parts = []
        for stream, size in (("err", st.stderr_size), ("out", st.stdout_size)):
            if size:
                data = await jobs.read_range(ex, job_id, stream, max(0, size - limit), limit)
                parts.append(decode_output(data)[0].strip())
        return "\n".join(p for p in parts if p)[-limit:]

    async def _burn_failed(self, prov: Provider, request_id: str, box: Box | None, exc: BaseException) -> None:
        rec = await self._db(self.store.box_by_request, request_id)
        try:
            await self._destroy_box(prov, rec, box.id if box else None)
        except (ForgeError, ProviderError):
            pass  # the reaper's orphan sweep retries boxes that carry our labels
        finally:
            await self._db(self.store.update_box, request_id, state="failed", step=None,
                           error=reason(exc)[:2000], destroyed_at=time.time())
        if rec is not None:
            await self._db(self.store.add_event, "create-failed", box_name=rec.name, detail=type(exc).__name__)

    async def _destroy_box(self, prov: Provider, rec: BoxRecord | None, box_id: str | None) -> None:
        if rec is not None:
            await self.pool.drop(rec.name)
            box_id = box_id or rec.box_id
            if box_id is None:  # create may have reached the provider before we learned the id
                found = await prov.list({LABEL_REQUEST: rec.request_id})
                box_id = found[0].id if found else None
        if box_id is not None:
            try:
                await prov.destroy(box_id)
            except ProviderError as exc:
                raise ProviderFailure(f"could not destroy box {box_id}: {exc}; the reaper will retry") from exc
        if rec is not None:
            await self._forget_box(rec)

    async def destroy_server(self, name: str) -> DestroyResult:
        async with self._lock(name):
            rec = await self._db(self.store.live_box, name)
            if rec is None:
                return DestroyResult(name=name, destroyed=False,
                                     message=f"no live server named {name!r}; nothing to burn")
            prov = self.provider(rec.provider)
            if rec.box_id is not None:
                self._check_owner(name, await prov.get(rec.box_id))
            await self._destroy_box(prov, rec, rec.box_id)
            await self._db(self.store.update_box, rec.request_id, state="destroyed", step=None,
                           destroyed_at=time.time())
            await self._db(self.store.add_event, "destroy", box_name=name)
        return DestroyResult(name=name, destroyed=True, message=f"server {name!r} burned")

    async def extend_server(self, name: str, ttl_s: int) -> ServerInfo:
        """Set the box to expire ``ttl_s`` from now."""
        if ttl_s > self.settings.max_ttl_s:
            raise InvalidInput(f"ttl {format_duration(ttl_s)} exceeds the maximum of "
                               f"{format_duration(self.settings.max_ttl_s)}")
        async with self._lock(name):
            rec = await self._ready(name)
            prov = self.provider(rec.provider)
            box = await prov.get(rec.box_id) if rec.box_id else None
            if box is None:
                raise UnknownServer(f"server {name!r} is gone (expired or destroyed outside boxforge)")
            self._check_owner(name, box)
            expires_at = time.time() + ttl_s
            labels = {**box.labels, LABEL_EXPIRES_AT: str(int(expires_at))}
            try:
                await prov.set_labels(box.id, labels)
            except ProviderError as exc:
                raise ProviderFailure(f"could not extend {name!r}: {exc}") from exc
            await self._db(self.store.update_box, rec.request_id, expires_at=float(int(expires_at)))
            await self._db(self.store.add_event, "extend", box_name=name, detail=str(ttl_s))
            backstop_moved = await self._move_backstop(rec, int(expires_at))
        self._changed_schedule()
        info = self.info(await self._live(name))
        if not backstop_moved:
            info.warning = ("the expiry label was pushed, but the box could not be reached to move its own "
                            "power-off backstop; call extend_server again once it answers")
        return info

    def _check_owner(self, name: str, box: Box | None) -> None:
        """Refuse to act on a machine whose labels name another owner (a shared cloud project)."""
        if box is not None and box.owner != self.settings.owner:
            raise NotOwned(f"server {name!r} ({box.id}) carries owner label {box.owner!r}, not this orchestrator's "
                           f"{self.settings.owner!r}; boxforge only touches its own machines")

    async def _move_backstop(self, rec: BoxRecord, expires_at: int) -> bool:
        """Move a cloud box's on-box power-off deadline along; a no-op where the box has none."""
        script = f'f={BACKSTOP_EXPIRES_FILE}; if [ -w "$f" ]; then printf "%s\\n" {expires_at} > "$f"; fi'
        try:
            result = await self._exec(rec)(script, None, 30.0)
        except (ForgeError, TimeoutError):
            return False
        return result.exit_status == 0

    async def list_servers(self) -> ServerList:
        """Live boxes, each probed over SSH (in parallel) so unreachable ones show with their last-seen time."""
        await self.reconcile()
        recs = await self._db(self.store.live_boxes)
        reachable: dict[str, bool] = {}

        async def probe(rec: BoxRecord) -> None:
            try:
                with anyio.fail_after(self.settings.probe_timeout_s):
                    await self._exec(rec)("true", None, self.settings.probe_timeout_s)
                reachable[rec.name] = True
            except (ForgeError, TimeoutError):
                reachable[rec.name] = False

        async with anyio.create_task_group() as tg:
            for rec in recs:
                if rec.state == "ready":
                    tg.start_soon(probe, rec)
        now = time.time()
        infos = []
        for rec in recs:
            info = self.info(rec, now)
            if rec.name in reachable:
                info.reachable = reachable[rec.name]
                if not info.reachable:
                    info.last_seen = iso(self._health.get(rec.name, Health()).last_seen)
                    info.warning = (f"not answering over SSH (last seen {info.last_seen or 'never by this process'});"
                                    " boxforge reconnects when it answers again")
            infos.append(info)
        failed = await self._db(self.store.failed_since, now - FAILED_SHOWN_S)
        return ServerList(servers=infos, count=len(infos), failed=[self.info(r, now) for r in failed])

    async def reconcile(self) -> None:
        """Mark ready boxes the provider no longer has (burned by a box-side watchdog, say) as destroyed."""
        recs = await self._db(self.store.live_boxes)
        for provider_name in {r.provider for r in recs}:
            try:
                alive = {b.id for b in await self.provider(provider_name).list(owner_labels(self.settings.owner))}
            except (ProviderError, ForgeError):
                continue  # a provider that cannot answer now tells nothing about its boxes
            for rec in recs:
                if rec.provider != provider_name or rec.box_id in alive:
                    continue
                if rec.state == "ready":
                    await self.pool.drop(rec.name)
                    await self._db(self.store.update_box, rec.request_id, state="destroyed",
                                   destroyed_at=time.time(), error="gone at the provider (expired or removed)")
                    await self._forget_box(rec)
                elif self._abandoned(rec):
                    await self._db(self.store.update_box, rec.request_id, state="failed", step=None,
                                   destroyed_at=time.time(), error="creation was interrupted (orchestrator stopped)")
                    await self._forget_box(rec)

    def _abandoned(self, rec: BoxRecord) -> bool:
        """A provisioning record no running create owns: its process died mid-create."""
        return (rec.state == "provisioning" and rec.request_id not in self._creating
                and time.time() - rec.created_at > self.settings.orphan_grace_s)

    # reaper

    def _doomed(self, box: Box, now: float) -> bool:
        """Expired, or never ready and past its create deadline (unless this process is still creating it)."""
        if box.owner != self.settings.owner:
            return False
        orphan = not box.ready and box.request_id not in self._creating and now > box.orphan_at(
            self.settings.orphan_grace_s)
        return is_expired(box, now) or orphan

    def _reaped_providers(self, recs: list[BoxRecord]) -> set[str]:
        names = {r.provider for r in recs} | {"local", self.settings.provider}
        if not self.settings.hcloud_token:
            names.discard("hetzner")
        return names

    async def reap_once(self) -> tuple[list[str], float | None]:
        """Destroy expired boxes of this owner, found through provider labels alone.

        Returns the names burned and the next expiry among the survivors.
        """
        now = time.time()
        burned: list[str] = []
        next_expiry: float | None = None
        recs = await self._db(self.store.live_boxes)
        for provider_name in sorted(self._reaped_providers(recs)):
            prov = self.provider(provider_name)
            try:
                boxes = await prov.list(owner_labels(self.settings.owner))
            except ProviderError:
                continue
            for box in boxes:
                if box.owner != self.settings.owner:
                    continue  # never touch a machine that is not ours
                if not self._doomed(box, now):
                    if box.expires_at is not None:
                        next_expiry = box.expires_at if next_expiry is None else min(next_expiry, box.expires_at)
                    if not box.ready:  # look again when it would become an orphan
                        orphan_at = box.orphan_at(self.settings.orphan_grace_s)
                        next_expiry = orphan_at if next_expiry is None else min(next_expiry, orphan_at)
                    continue
                rec = await self._db(self.store.box_by_request, box.request_id) if box.request_id else None
                try:
                    async with self._lock(box.name):
                        # Look again under the lock: an extend that held it may just have saved the box.
                        current = await prov.get(box.id)
                        if current is None or not self._doomed(current, time.time()):
                            continue
                        await self._destroy_box(prov, rec, box.id)
                except (ForgeError, ProviderError):
                    continue
                why = "expired" if is_expired(current, now) else "orphan: creation never finished"
                if rec is not None:
                    await self._db(self.store.update_box, rec.request_id, state="destroyed", step=None,
                                   destroyed_at=time.time(), error=why)
                await self._db(self.store.add_event, "reap", box_name=box.name, detail=f"{box.id}: {why}")
                burned.append(box.name)
        await self.reconcile()
        return burned, next_expiry

    # jobs

    async def run(
        self,
        server: str,
        command: str,
        *,
        background: bool = False,
        timeout_s: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        kill_on_timeout: bool = False,
        idempotency_key: str | None = None,
    ) -> CommandResult:
        check_command(command)
        env = dict(env or {})
        check_env(env)
        rec = await self._ready(server)
        ex = self._exec(rec)
        workdir = resolve_cwd(rec, cwd)
        new_id = jobs.new_job_id()
        job = await self._db(self.store.insert_job, JobRecord(
            job_id=new_id, box_name=rec.name, request_id=rec.request_id, command=command[:500],
            cwd=workdir, kind="command", idempotency_key=idempotency_key, state="running", exit_code=None,
            created_at=time.time(), finished_at=None, secret_names=",".join(sorted(env)) if env else None))
        reused = job.job_id != new_id  # the idempotency key was used before: never run the task twice
        if env and not reused:
            self._remember_job_secrets(job.job_id, env)
        if not reused:
            try:
                await jobs.launch(ex, job.job_id, command, cwd=workdir, env=env)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._db(self.store.delete_job, job.job_id)
                raise
            await self._db(self.store.add_event, "job", box_name=rec.name, job_id=job.job_id)
        _, _, warning = time_left(rec.expires_at)
        if background:
            return CommandResult(
                server=rec.name, job_id=job.job_id, state="running", warning=warning,
                hint=f"started in the background{' (same idempotency_key: existing job)' if reused else ''}; "
                     f"poll with vm_job_status(job_id='{job.job_id}', wait_s=30)",
            )
        wait = min(timeout_s if timeout_s is not None else self.settings.foreground_timeout_s, MAX_WAIT_S)
        st = await jobs.status(ex, job.job_id, max_bytes=self.settings.output_cap_bytes, wait_s=wait)
        if st.state == "running" and kill_on_timeout:
            await jobs.cancel(ex, job.job_id, "KILL")
            st = await jobs.status(ex, job.job_id, max_bytes=self.settings.output_cap_bytes, wait_s=5.0)
        await self._record_job_state(job.job_id, st)
        return await self._command_result(rec, ex, st, wait)

    async def _command_result(self, rec: BoxRecord, ex: jobs.BoxExec, st: jobs.JobStatus, wait: float) -> CommandResult:
        redactor = await self._redactor(rec, ex, st.job_id)
        cap = self.settings.output_cap_bytes
        texts: dict[str, str] = {}
        dropped: dict[str, int] = {}
        next_offset = {"out": st.stdout_size, "err": st.stderr_size}
        for stream, data, size in (("out", st.stdout, st.stdout_size), ("err", st.stderr, st.stderr_size)):
            if st.state == "running":  # what follows is read from this offset on: cut clean
                data = data[:redactor.safe_end(data[:complete_utf8_prefix(data)])]
                next_offset[stream] = (st.stdout_offset if stream == "out" else st.stderr_offset) + len(data)
            if size <= cap or st.state == "running":
                texts[stream] = decode_output(data)[0]
                dropped[stream] = 0
                continue
            half = cap // 2
            head = data[:half]
            tail = await jobs.read_range(ex, st.job_id, stream, size - half, half)
            head = head[:redactor.safe_end(head[:complete_utf8_prefix(head)])]
            tail = tail[redactor.safe_start(tail):]  # never show the end of a secret cut in half
            dropped[stream] = size - len(head) - len(tail)
            texts[stream] = decode_output(head)[0] + DROPPED_MARKER.format(n=dropped[stream]) + \
                decode_output(tail)[0]
        texts = {stream: redactor.text(text) for stream, text in texts.items()}
        await self._db(self.store.append_output, st.job_id, texts["out"], texts["err"])
        _, _, warning = time_left(rec.expires_at)
        if st.state == "running":
            hint = (f"still running after {wait:.0f}s; it continues in the background: poll "
                    f"vm_job_status(job_id='{st.job_id}', stdout_offset={next_offset['out']}, "
                    f"stderr_offset={next_offset['err']}, wait_s=30) or vm_job_cancel it")
        elif st.state == "killed":
            hint = "the command was killed"
        else:
            hint = None
        return CommandResult(
            server=rec.name, job_id=st.job_id, state=st.state, exit_code=st.exit_code,
            stdout=texts["out"], stderr=texts["err"],
            stdout_dropped_bytes=dropped["out"], stderr_dropped_bytes=dropped["err"],
            stdout_offset=next_offset["out"], stderr_offset=next_offset["err"],
            duration_s=_duration(st), hint=hint, warning=warning,
        )

    async def _record_job_state(self, job_id: str, st: jobs.JobStatus) -> None:
        if st.state != "running":
            await self._db(self.store.update_job, job_id, state=st.state, exit_code=st.exit_code,
                           finished_at=st.finished_at)

    async def _job_box(self, job_id: str) -> tuple[JobRecord, BoxRecord | None]:
        def lookup() -> tuple[JobRecord | None, BoxRecord | None]:  # one trip to the store thread
            job = self.store.job(job_id)
            return job, self.store.box_by_request(job.request_id) if job is not None else None

        job, rec = await self._db(lookup)
        if job is None:
            recent = await self._db(self.store.recent_job_ids)
            known = ", ".join(recent) if recent else "none yet"
            raise UnknownJob(f"unknown job {job_id!r}; recent jobs: {known} (vm_job_list shows all)")
        # a box still provisioning already answers for its bootstrap and setup jobs
        readable = rec is not None and (rec.state == "ready" or (rec.state == "provisioning" and rec.host is not None))
        return job, rec if readable else None

    async def job_status(self, job_id: str, *, stdout_offset: int = 0, stderr_offset: int = 0,
                         wait_s: float = 0.0, max_bytes: int | None = None) -> JobStatusResult:
        job, rec = await self._job_box(job_id)
        if rec is None:
            return self._status_from_record(job, stdout_offset, stderr_offset,
                                            f"server {job.box_name!r} is gone")
        cap = min(max_bytes or self.settings.output_cap_bytes, self.settings.output_cap_bytes)
        ex = self._exec(rec)
        try:
            st = await jobs.status(ex, job_id, stdout_offset=stdout_offset, stderr_offset=stderr_offset,
                                   max_bytes=cap, wait_s=min(wait_s, MAX_WAIT_S))
        except BoxUnreachable as exc:
            return await self._status_unreachable(job, rec, stdout_offset, stderr_offset, exc)
        await self._record_job_state(job_id, st)
        out = st.stdout[:complete_utf8_prefix(st.stdout)] if st.stdout_offset + len(st.stdout) < st.stdout_size \
            else st.stdout
        err = st.stderr[:complete_utf8_prefix(st.stderr)] if st.stderr_offset + len(st.stderr) < st.stderr_size \
            else st.stderr
        if out or err:
            redactor = await self._redactor(rec, ex, job)
            # A chunk that ends where a secret could begin waits for the rest: never half a secret.
            if st.state == "running" or st.stdout_offset + len(out) < st.stdout_size:
                out = out[:redactor.safe_end(out)]
            if st.state == "running" or st.stderr_offset + len(err) < st.stderr_size:
                err = err[:redactor.safe_end(err)]
        out_text, out_binary = decode_output(out)
        err_text, err_binary = decode_output(err)
        if out_text or err_text:
            out_text, err_text = redactor.text(out_text), redactor.text(err_text)
            await self._db(self.store.append_output, job_id, out_text, err_text)
        next_out, next_err = st.stdout_offset + len(out), st.stderr_offset + len(err)
        more = next_out < st.stdout_size or next_err < st.stderr_size
        if more:
            hint = f"more output: call again with stdout_offset={next_out}, stderr_offset={next_err}"
        elif st.state == "running":
            hint = (f"still running; call again with stdout_offset={next_out}, stderr_offset={next_err}, "
                    "wait_s=30 to wait for it")
        elif st.state == "lost":
            hint = "the job's record is gone from the box (rebooted or cleaned); rerun it if needed"
        else:
            hint = None
        _, _, warning = time_left(rec.expires_at)
        return JobStatusResult(
            job_id=job_id, server=rec.name, state=st.state, exit_code=st.exit_code, stdout=out_text,
            stderr=err_text, stdout_offset=next_out, stderr_offset=next_err, stdout_size=st.stdout_size,
            stderr_size=st.stderr_size, more=more, binary=out_binary or err_binary, duration_s=_duration(st),
            hint=hint, warning=warning,
        )

    def _status_from_record(self, job: JobRecord, stdout_offset: int, stderr_offset: int, why: str,
                            *, state: str | None = None, last_seen: float | None = None) -> JobStatusResult:
        """What the store knows of a job whose box cannot answer: last state and the output read so far."""
        if state is None:
            state = job.state if job.state != "running" else "lost"
        shown = "last output read before that" if job.out_tail or job.err_tail else "no output was read before that"
        return JobStatusResult(
            job_id=job.job_id, server=job.box_name, state=state, exit_code=job.exit_code,
            stdout=job.out_tail or "", stderr=job.err_tail or "", stdout_offset=stdout_offset,
            stderr_offset=stderr_offset, stdout_size=0, stderr_size=0, box_reachable=False,
            last_seen=iso(last_seen), hint=f"{why}; stdout/stderr hold the {shown}",
        )

    async def _status_unreachable(self, job: JobRecord, rec: BoxRecord, stdout_offset: int, stderr_offset: int,
                                  exc: BoxUnreachable) -> JobStatusResult:
        box = await self.provider(rec.provider).get(rec.box_id) if rec.box_id else None
        if box is None:  # vanished: its running jobs are lost, with what was read of them
            await self.reconcile()
            if job.state == "running":
                await self._db(self.store.update_job, job.job_id, state="lost")
            return self._status_from_record(job, stdout_offset, stderr_offset,
                                            f"server {rec.name!r} vanished at the provider")
        health = self._health.get(rec.name, Health())
        return self._status_from_record(
            job, stdout_offset, stderr_offset,
            f"server {rec.name!r} is not answering ({exc}); the job's state is the last known one — "
            "poll again later, boxforge reconnects when the box answers",
            state=job.state, last_seen=health.last_seen,
        )

    async def list_jobs(self, server: str | None = None) -> JobList:
        recs = [await self._ready(server)] if server else [
            r for r in await self._db(self.store.live_boxes) if r.state == "ready"]
        summaries: list[JobSummary] = []
        unreachable: list[str] = []

        async def one(rec: BoxRecord) -> None:
            known = {j.job_id: j for j in await self._db(self.store.jobs_of_box, rec.request_id)}
            try:
                with anyio.fail_after(30):
                    on_box = await jobs.list_jobs(self._exec(rec))
            except (ForgeError, TimeoutError):
                unreachable.append(rec.name)
                return
            for s in on_box:
                command = known[s.job_id].command if s.job_id in known else s.command
                summaries.append(JobSummary(
                    job_id=s.job_id, server=rec.name, state=s.state, exit_code=s.exit_code,
                    command=command[:120], started_at=iso(s.started_at),
                    duration_s=round((s.finished_at or time.time()) - s.started_at, 3) if s.started_at else None,
                ))

        async with anyio.create_task_group() as tg:
            for rec in recs:
                tg.start_soon(one, rec)
        summaries.sort(key=lambda s: s.started_at or "")
        return JobList(jobs=summaries, count=len(summaries), unreachable=sorted(unreachable))

    async def cancel_job(self, job_id: str, signal: str = "TERM") -> CancelResult:
        job, rec = await self._job_box(job_id)
        if rec is None:
            return CancelResult(job_id=job_id, server=job.box_name, state=job.state if job.state != "running"
                                else "lost", message=f"server {job.box_name!r} is gone; nothing to cancel")
        ex = self._exec(rec)
        before = await jobs.status(ex, job_id, max_bytes=0)
        if before.state != "running":
            return CancelResult(job_id=job_id, server=rec.name, state=before.state, exit_code=before.exit_code,
                                message=f"job already finished ({before.state}); nothing to cancel")
        await jobs.cancel(ex, job_id, signal)
        st = await jobs.status(ex, job_id, max_bytes=0, wait_s=5.0)
        await self._record_job_state(job_id, st)
        message = f"sent SIG{signal} to the job's process group"
        if st.state == "running":
            message += f"; it is still running: retry with signal='KILL' (job_id='{job_id}')"
        return CancelResult(job_id=job_id, server=rec.name, state=st.state, exit_code=st.exit_code, message=message)


    # files, review and agents

    async def _files(self, server: str) -> tuple[BoxRecord, files.BoxFiles]:
        rec = await self._ready(server)
        home = rec.home or "~"
        return rec, files.BoxFiles(rec.name, self.pool, self._target(rec), self._exec(rec, long=True),
                                   rec.project_dir or home, home, timeout_s=self.settings.sftp_timeout_s)

    async def server_info(self, server: str) -> ServerInfo:
        """One live box (ready or still provisioning)."""
        return self.info(await self._live(server))

    async def ssh_access(self, server: str) -> tuple[SSHTarget, ServerInfo]:
        """Where and how to reach a ready box with a plain ssh client (its key, its pinned host key)."""
        rec = await self._ready(server)
        return self._target(rec), self.info(rec)

    async def read_file(self, server: str, path: str, *, offset: int = 0, limit: int = 2000,
                        encoding: files.Encoding = "text") -> FileContent:
        rec, fs = await self._files(server)
        result = await files.read_file(fs, path, offset=offset, limit=limit, encoding=encoding)
        redact = await self._redactor(rec, self._exec(rec))
        if encoding == "base64":
            text = base64.b64decode(result.content).decode(errors="replace")
            if redact(text) != text:
                raise InvalidInput(f"{result.path} holds a secret env value of this box, which boxforge never "
                                   "returns; read it as text (secrets redacted) or vm_download it")
        else:
            result.content = redact(result.content)
        return result

    async def write_file(self, server: str, path: str, content: str, *, encoding: files.Encoding = "text",
                         create_dirs: bool = True, mode: int | None = None) -> WriteResult:
        data = files.decode_content(content, encoding)
        _, fs = await self._files(server)
        return await files.write_file(fs, path, data, create_dirs=create_dirs, mode=mode)

    async def list_files(self, server: str, path: str = ".", pattern: str = "*", *,
                         max_entries: int = 500) -> FileList:
        _, fs = await self._files(server)
        return await files.list_files(fs, path, pattern, max_entries=max_entries)

    async def grep(self, server: str, pattern: str, path: str = ".", *, glob: str | None = None,
                   ignore_case: bool = False, max_results: int = 100) -> GrepResult:
        rec, fs = await self._files(server)
        result = await files.grep(fs, pattern, path, glob=glob, ignore_case=ignore_case, max_results=max_results)
        redact = await self._redactor(rec, self._exec(rec))
        for match in result.matches:
            match.text = redact(match.text)
        return result

    def _local_path(self, path: str) -> Path:
        roots = files.transfer_roots(self.settings.transfer_roots)
        return files.check_local_path(path, roots=roots, forbidden=credential_paths(self.settings, roots))

    async def upload(self, server: str, local_path: str, remote_path: str, *, create_dirs: bool = True,
                     overwrite: bool = True) -> WriteResult:
        local = self._local_path(local_path)
        _, fs = await self._files(server)
        return await files.upload(fs, local, remote_path, create_dirs=create_dirs, overwrite=overwrite)

    async def download(self, server: str, remote_path: str, local_path: str, *,
                       overwrite: bool = False) -> DownloadResult:
        local = self._local_path(local_path)
        _, fs = await self._files(server)
        return await files.download(fs, remote_path, local, overwrite=overwrite)

    async def diff(self, server: str, *, max_bytes: int = 64 * 1024) -> DiffResult:
        """The box's work: working tree and commits against the base commit recorded at create."""
        rec, fs = await self._files(server)
        result = await files.diff(fs, rec.base_commit, max_bytes=min(max_bytes, files.MAX_DIFF_BYTES))
        redact = await self._redactor(rec, self._exec(rec))
        result.diff = redact(result.diff)
        return result

    async def run_agent(self, server: str, prompt: str, *, args: list[str] | None = None,
                        env: Mapping[str, str] | None = None, cwd: str | None = None,
                        idempotency_key: str | None = None) -> AgentRun:
        """Start the box's agent non-interactively as a background job, the prompt on its stdin."""
        data = agents.check_prompt(prompt)
        extra = list(args or [])
        agents.check_agent_args(extra)
        rec = await self._ready(server)
        if not rec.agent or rec.agent == "none":
            raise InvalidInput(f"server {server!r} has no agent (created with agent='none'): create a box with "
                               "agent='claude', 'codex' or 'custom' (with agent_command), or run it with vm_bash")
        prompt_id = "p-" + secrets.token_hex(6)
        stored = await self._exec(rec)("/bin/sh -c " + shlex.quote(agents.write_prompt_script(prompt_id)), data, 60.0)
        if stored.exit_status != 0:
            raise ForgeError(f"could not store the prompt on {server!r}: "
                             f"{stored.stderr.decode(errors='replace').strip()[-300:]}")
        started = await self.run(server, agents.run_command(prompt_id, extra), background=True, cwd=cwd, env=env,
                                 idempotency_key=idempotency_key)
        return AgentRun(
            server=rec.name, job_id=started.job_id, agent=rec.agent, state=started.state,
            prompt_path=posixpath.join(rec.home or "~", agents.PROMPTS_DIR, prompt_id),
            hint=f"the agent works in the background: poll vm_job_status(job_id='{started.job_id}', wait_s=60) "
                 f"until it ends, then review its work with vm_diff(server='{rec.name}')",
        )

def credential_paths(settings: Settings, roots: list[Path]) -> list[Path]:
    """Local paths vm_upload/vm_download never touch: boxforge's state dir and config (the file
    ``load_settings`` actually reads, and its dir), SSH keys, and the credentials of the cloud CLIs."""
    home = Path.home()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    config = _config_path(os.environ).expanduser().resolve()
    paths = [settings.home, config, home / ".ssh", home / ".config" / "hcloud", config_home / "hcloud",
             home / ".aws", home / ".netrc"]
    # the config's dir too, unless that would shut the home dir or a transfer root (a config kept in a project)
    if not any(place.resolve().is_relative_to(config.parent) for place in [home, *roots]):
        paths.append(config.parent)
    return paths


def _duration(st: jobs.JobStatus) -> float | None:
    if st.started_at is None:
        return None
    return round((st.finished_at or time.time()) - st.started_at, 3)


async def _probe_home(ex: jobs.BoxExec) -> str:
    result = await ex('printf %s "$HOME"', None, 30.0)
    home = result.stdout.decode(errors="replace").strip()
    if result.exit_status != 0 or not home.startswith("/"):
        raise BoxUnreachable("the box did not report a home directory over SSH")
    return home


def reason(exc: BaseException) -> str:
    if isinstance(exc, ReadyTimeout):
        return f"the box did not become reachable in time ({exc})"
    text = str(exc) or type(exc).__name__
    return text


def check_env(env: Mapping[str, str]) -> None:
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_NAME_RE.fullmatch(key):
            shown = str(key)[:40]
            raise InvalidInput(f"invalid env name {shown!r}: use letters, digits and '_', not starting with a digit")
        if not isinstance(value, str):
            raise InvalidInput(f"env {key} must be a string")
        if "\x00" in value or len(value.encode()) > MAX_ENV_VALUE_BYTES:
            raise InvalidInput(f"env {key} must be at most 64 KiB and contain no NUL byte")


def check_command(command: str) -> None:
    if not command.strip():
        raise InvalidInput("command is empty: pass a shell command such as 'git status'")
    if "\x00" in command:
        raise InvalidInput("command contains a NUL byte, which no shell can run; remove it")
    if len(command.encode()) > MAX_COMMAND_BYTES:
        raise InvalidInput("command is larger than 256 KiB; write a script with vm_bash in parts or upload it")


def resolve_cwd(rec: BoxRecord, cwd: str | None) -> str:
    base = rec.project_dir or rec.home or "~"
    if cwd is None or cwd == "":
        return base
    if "\x00" in cwd or "\n" in cwd:
        raise InvalidInput("cwd must not contain NUL or newline characters")
    if cwd.startswith("~"):
        cwd = (rec.home or "~") + cwd[1:]
    return posixpath.normpath(posixpath.join(base, cwd))


@asynccontextmanager
async def open_fleet(settings: Settings) -> AsyncIterator[Fleet]:
    """A Fleet with its store, SSH pool and providers, all closed on exit."""
    store = await anyio.to_thread.run_sync(Store, settings.db_path)
    pool = SSHPool(keepalive_interval=settings.keepalive_interval_s)
    fleet = Fleet(settings=settings, store=store, pool=pool)
    try:
        yield fleet
    finally:
        with anyio.CancelScope(shield=True):
            await pool.aclose()
            for prov in fleet.providers.values():
                await prov.aclose()
            store.close()
