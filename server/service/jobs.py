"""Commands and background jobs on ready boxes: start (idempotency keys; a foreground command waited on
in the same round trip), list and cancel; polling from offsets is ``JobReader``'s (service/jobstatus.py).
Output is redacted and cut clean (never inside a character or a secret), the last of it kept in the store
for a box that vanishes."""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import time
from collections.abc import Mapping

import anyio

from server import jobs
from server.config import Settings
from server.domain.durations import iso
from server.domain.hints import Hint, HintKind
from server.domain.inputs import check_command, check_env, resolve_cwd
from server.domain.names import new_job_id
from server.domain.output import Window, clean_end, head_tail, whole
from server.domain.redaction import Redactor
from server.domain.states import BoxStatus, JobState, Signal
from server.errors import (
    BoxBusy,
    BoxUnreachable,
    ForgeError,
    IdempotencyConflict,
    InvalidInput,
    JobError,
)
from server.schemas import (
    CancelResult,
    CommandResult,
    JobBrief,
    JobList,
    JobStatusResult,
    JobSummary,
    time_left,
)
from server.service.access import BoxAccess
from server.service.boxes import Boxes
from server.service.diskspace import box_disk_full
from server.service.jobstatus import MAX_WAIT_S, JobReader, duration
from server.service.secrets import Secrets
from server.store import BoxRecord, JobRecord, Repository

log = logging.getLogger("boxforge.jobs")
LIST_TIMEOUT_S = 30.0


def _request_hash(asked: object, cwd: str | None, env_names: list[str]) -> str:
    """A digest of what a call asked for (never env values): what a reused idempotency key must match."""
    canonical = json.dumps([asked, cwd, env_names], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Jobs:
    def __init__(self, settings: Settings, repo: Repository, access: BoxAccess, secrets: Secrets,
                 boxes: Boxes) -> None:
        self.settings = settings
        self.repo = repo
        self.access = access
        self.secrets = secrets
        self.boxes = boxes
        self.reader = JobReader(settings, repo, access, secrets, boxes)

    async def job_status(self, job_id: str, *, stdout_offset: int = 0, stderr_offset: int = 0,
                         wait_s: float = 0.0, max_bytes: int | None = None) -> JobStatusResult:
        return await self.reader.job_status(job_id, stdout_offset=stdout_offset, stderr_offset=stderr_offset,
                                            wait_s=wait_s, max_bytes=max_bytes)

    async def brief(self, job_id: str, *, wait_s: float = 0.0) -> JobBrief:
        return await self.reader.brief(job_id, wait_s=wait_s)

    async def run(self, server: str, command: str, *, background: bool = False, timeout_s: float | None = None,
                  cwd: str | None = None, env: Mapping[str, str] | None = None, kill_on_timeout: bool = False,
                  idempotency_key: str | None = None, asked: object = None,
                  received: float | None = None) -> CommandResult:
        """Run ``command``; ``asked`` is what the caller asked for when it is not the command itself (an agent's
        prompt and args): with ``idempotency_key`` it is what a reuse of the key must match. A foreground call
        answers within ``timeout_s`` of ``received`` (``time.monotonic()``; default: now), whatever holds the
        box's sessions."""
        wait = min(timeout_s if timeout_s is not None else self.settings.foreground_timeout_s, MAX_WAIT_S)
        deadline = (time.monotonic() if received is None else received) + wait
        check_command(command)
        env = dict(env or {})
        check_env(env)
        rec = await self.boxes.ready(server)
        ex = self.access.exec(rec)
        workdir = resolve_cwd(cwd, project_dir=rec.project_dir, home=rec.home)
        request_hash = _request_hash(command if asked is None else asked, cwd, sorted(env))
        cap = self.settings.output_cap_bytes
        # a foreground command starts and is waited on in one round trip, answering by its deadline (if no SSH
        # session to the box comes free before it, nothing is started and BoxBusy says so)
        try:
            job, reused, st = await self._start(rec, ex, command, workdir, env, idempotency_key, request_hash,
                                                None if background else (deadline, cap))
        except JobError as exc:
            full = await box_disk_full(self.access, rec, "~/.boxforge/jobs")
            if full is None:
                raise
            if background or env:
                raise JobError(f"{full}. The command could not start: a job needs room for its record; a foreground "
                               "command without env runs directly (use one to free space)") from exc
            return await self._run_direct(rec, command, workdir, deadline, full)
        _, _, warning = time_left(rec.expires_at)
        if background:
            started = CommandResult(server=rec.name, job_id=job.job_id, state=JobState.RUNNING)
            started.suggest("hint", Hint(HintKind.POLL_JOB, job_id=job.job_id, reused=reused))
            started.suggest("warning", warning)
            return started
        if st is None:  # the job existed already (same idempotency key): wait for it
            try:
                st = await jobs.status(ex, job.job_id, max_bytes=cap, deadline=deadline)
            except BoxBusy:
                busy = CommandResult(server=rec.name, job_id=job.job_id, state=JobState.RUNNING)
                busy.suggest("hint", Hint(HintKind.BOX_BUSY, server=rec.name, job_id=job.job_id, wait_s=wait))
                busy.suggest("warning", warning)
                return busy
        if st.state == JobState.RUNNING and kill_on_timeout:
            await jobs.cancel(ex, job.job_id, Signal.KILL)
            st = await jobs.status(ex, job.job_id, max_bytes=cap, wait_s=5.0)
        await self.reader.record_state(job.job_id, st)
        return await self._command_result(rec, ex, st, wait)

    async def _start(self, rec: BoxRecord, ex: jobs.BoxExec, command: str, workdir: str, env: dict[str, str],
                     idempotency_key: str | None, request_hash: str,
                     wait: tuple[float, int] | None = None) -> tuple[JobRecord, bool, jobs.JobStatus | None]:
        """The job record, whether it existed already (same idempotency key and request: never run the task
        twice) and, with ``wait`` (deadline, max bytes) for a job it started, the job's status at that deadline.
        The same key for a different request is refused, naming the key and the first job."""
        new_id = new_job_id()
        job = await self.repo.insert_job(JobRecord(
            job_id=new_id, box_name=rec.name, request_id=rec.request_id, command=command[:500],
            cwd=workdir, kind="command", idempotency_key=idempotency_key, state=JobState.RUNNING, exit_code=None,
            created_at=time.time(), finished_at=None, secret_names=",".join(sorted(env)) if env else None,
            request_hash=request_hash))
        if job.job_id != new_id:
            if job.request_hash is not None and job.request_hash != request_hash:
                raise IdempotencyConflict(
                    f"idempotency_key {idempotency_key!r} was already used on {rec.name!r} for job {job.job_id}, "
                    "a different request (command, cwd, env names or prompt): reuse a key only to retry the same "
                    "request, or choose a new key for this one",
                    hint=Hint(HintKind.KEY_TAKEN, job_id=job.job_id))
            return job, True, None
        if env:
            self.secrets.remember_job(job.job_id, env)
        st = None
        try:
            if wait is None:
                await jobs.launch(ex, job.job_id, command, cwd=workdir, env=env)
            else:
                st = await jobs.run(ex, job.job_id, command, cwd=workdir, env=env, deadline=wait[0],
                                    max_bytes=wait[1])
        except BaseException as exc:
            # a foreground start that timed out or was cancelled has started, and is waited on: keep its record
            if wait is None or isinstance(exc, (InvalidInput, JobError, BoxUnreachable)):
                with anyio.CancelScope(shield=True):
                    await self.repo.delete_job(job.job_id)
            raise
        await self.reader.cache(self.repo.add_event("job", box_name=rec.name, job_id=job.job_id))
        return job, False, st

    async def _window(self, ex: jobs.BoxExec, st: jobs.JobStatus, stream: jobs.Stream,
                      redactor: Redactor) -> tuple[Window, int]:
        """What a foreground result shows of one stream, and the offset to read on from."""
        data, size, offset = (st.stdout, st.stdout_size, st.stdout_offset) if stream == "out" else \
            (st.stderr, st.stderr_size, st.stderr_offset)
        if st.state == JobState.RUNNING:  # what follows is read from this offset on: cut clean
            data = clean_end(data, redactor)
            return whole(data, redactor), offset + len(data)
        if size <= self.settings.output_cap_bytes:
            return whole(data, redactor), size
        half = self.settings.output_cap_bytes // 2
        tail = await jobs.read_range(ex, st.job_id, stream, size - half, half)
        return head_tail(data[:half], tail, size, redactor), size

    async def _command_result(self, rec: BoxRecord, ex: jobs.BoxExec, st: jobs.JobStatus,
                              wait: float) -> CommandResult:
        redactor = await self.secrets.redactor(rec, ex, st.job_id)
        out, next_out = await self._window(ex, st, "out", redactor)
        err, next_err = await self._window(ex, st, "err", redactor)
        await self.reader.cache(self.repo.append_output(st.job_id, out.text, err.text))
        result = CommandResult(
            server=rec.name, job_id=st.job_id, state=st.state, exit_code=st.exit_code, stdout=out.text,
            stderr=err.text, stdout_dropped_bytes=out.dropped, stderr_dropped_bytes=err.dropped,
            stdout_offset=next_out, stderr_offset=next_err, duration_s=duration(st),
            hint="the command was killed" if st.state == JobState.KILLED else None,
        )
        if st.state == JobState.RUNNING:
            result.suggest("hint", Hint(HintKind.STILL_RUNNING, job_id=st.job_id, wait_s=wait,
                                        stdout_offset=next_out, stderr_offset=next_err))
        elif st.state == JobState.FAILED:
            result.hint = await self.reader.disk_note(rec, st.job_id)
        result.suggest("warning", time_left(rec.expires_at)[2])
        return result

    async def _run_direct(self, rec: BoxRecord, command: str, workdir: str, deadline: float,
                          full: str) -> CommandResult:
        """On a full box disk, where no job can start: the command over a plain SSH exec session (the command on
        its stdin, never a command line), so that it can free space. No job record, output not kept."""
        home, _, rest = workdir.partition("/") if workdir.startswith("~") else ("", "", workdir)
        cd = f'cd "$HOME"/{shlex.quote(rest)}' if home == "~" and rest else 'cd "$HOME"' if home == "~" else \
            f"cd {shlex.quote(workdir)}"
        started = time.time()
        result = await self.access.pool.run(self.access.target(rec), f"{cd} && exec /bin/sh -s",
                                            stdin=command.encode(), timeout=max(deadline - time.monotonic(), 1.0))
        redact = Redactor.merged([], self.settings.redact_min_chars)
        with anyio.move_on_after(5):
            redact = await self.secrets.redactor(rec, self.access.exec_only(rec))
        code = result.exit_status
        out = whole(result.stdout[: self.settings.output_cap_bytes], redact)
        err = whole(result.stderr[: self.settings.output_cap_bytes], redact)
        return CommandResult(
            server=rec.name, job_id=new_job_id(), state=JobState.SUCCEEDED if code == 0 else
            JobState.KILLED if code is None else JobState.FAILED, exit_code=code, stdout=out.text, stderr=err.text,
            duration_s=round(time.time() - started, 3),
            hint=f"{full}. This command ran directly over SSH, not as a job (no job record, so vm_job_status does "
                 "not know its id, and a cut connection would end it)")

    async def list_jobs(self, server: str | None = None) -> JobList:
        recs = [await self.boxes.ready(server)] if server else [
            r for r in await self.repo.live_boxes() if r.state == BoxStatus.READY]
        summaries: list[JobSummary] = []
        unreachable: list[str] = []

        async def one(rec: BoxRecord) -> None:
            known = {j.job_id: j for j in await self.repo.jobs_of_box(rec.request_id)}
            try:
                with anyio.fail_after(LIST_TIMEOUT_S):
                    on_box = await jobs.list_jobs(self.access.exec(rec))
            except (ForgeError, TimeoutError):
                unreachable.append(rec.name)
                return
            summaries.extend(JobSummary(
                job_id=s.job_id, server=rec.name, state=s.state, exit_code=s.exit_code,
                command=(known[s.job_id].command if s.job_id in known else s.command)[:120],
                started_at=iso(s.started_at),
                duration_s=round((s.finished_at or time.time()) - s.started_at, 3) if s.started_at else None,
            ) for s in on_box)

        async with anyio.create_task_group() as tg:
            for rec in recs:
                tg.start_soon(one, rec)
        summaries.sort(key=lambda s: s.started_at or "")
        return JobList(jobs=summaries, count=len(summaries), unreachable=sorted(unreachable))

    async def cancel_job(self, job_id: str, signal: str = Signal.TERM) -> CancelResult:
        job, rec = await self.reader.job_box(job_id)
        if rec is None:
            state = job.state if job.state != JobState.RUNNING else JobState.LOST
            return CancelResult(job_id=job_id, server=job.box_name, state=state,
                                message=f"server {job.box_name!r} is gone; nothing to cancel")
        ex = self.access.exec(rec)
        before = await jobs.status(ex, job_id, max_bytes=0)
        if before.state != JobState.RUNNING:
            return CancelResult(job_id=job_id, server=rec.name, state=before.state, exit_code=before.exit_code,
                                message=f"job already finished ({before.state}); nothing to cancel")
        await jobs.cancel(ex, job_id, signal)
        st = await jobs.status(ex, job_id, max_bytes=0, wait_s=5.0)
        await self.reader.record_state(job_id, st)
        message = f"sent SIG{signal} to the job's process group"
        result = CancelResult(job_id=job_id, server=rec.name, state=st.state, exit_code=st.exit_code,
                              message=message)
        if st.state == JobState.RUNNING:
            result.suggest("message", Hint(HintKind.KILL_JOB, job_id=job_id),
                           prefix=message + "; it is still running: ")
        return result
