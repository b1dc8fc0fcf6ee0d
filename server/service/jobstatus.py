"""Reading jobs: a job's status and output from offsets (cut clean: never inside a character or a secret,
secret values redacted), its brief state, and what the store knows of a job whose box cannot answer.
``Jobs`` (service/jobs.py) starts, lists and cancels jobs and reads through this."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable

from server import jobs
from server.config import Settings
from server.domain.durations import iso
from server.domain.hints import Hint, HintKind
from server.domain.output import complete_utf8_prefix, decode_output
from server.domain.states import BoxStatus, JobState
from server.errors import BoxUnreachable, JobError, StoreFull, UnknownJob
from server.schemas import JobBrief, JobStatusResult, time_left
from server.service.access import BoxAccess
from server.service.boxes import Boxes
from server.service.diskspace import box_disk_full
from server.service.secrets import Secrets
from server.store import BoxRecord, JobRecord, Repository

log = logging.getLogger("boxforge.jobs")
MAX_WAIT_S = 300.0
LAUNCH_GRACE_S = 30.0  # a job recorded this recently but unknown on its box is still being launched


def duration(st: jobs.JobStatus) -> float | None:
    if st.started_at is None:
        return None
    return round((st.finished_at or time.time()) - st.started_at, 3)


class JobReader:
    """A job's state and output as the surfaces show it, from its box or, when the box cannot answer, from
    the store's cache (which this also keeps: state, output tail)."""

    def __init__(self, settings: Settings, repo: Repository, access: BoxAccess, secrets: Secrets,
                 boxes: Boxes) -> None:
        self.settings = settings
        self.repo = repo
        self.access = access
        self.secrets = secrets
        self.boxes = boxes

    async def cache(self, write: Awaitable[None]) -> None:
        """A write to the store's cache of a job (state, output tail, event): the box holds the truth, so a
        full state dir must not turn a job's answer into an error (the next write that finds room catches up)."""
        try:
            await write
        except StoreFull:
            log.warning("the store is full: a job's cached state or output was not written")

    @staticmethod
    def launching(job: JobRecord, st: jobs.JobStatus) -> jobs.JobStatus:
        """A job the box does not know yet, recorded moments ago, is being launched (by this process or another:
        the record is written before the launch): running, not lost."""
        if st.state == JobState.LOST and st.started_at is None and time.time() - job.created_at < LAUNCH_GRACE_S:
            return dataclasses.replace(st, state=JobState.RUNNING)
        return st

    async def record_state(self, job_id: str, st: jobs.JobStatus) -> None:
        if st.state != JobState.RUNNING:
            await self.cache(self.repo.update_job(job_id, state=st.state, exit_code=st.exit_code,
                                                   finished_at=st.finished_at))

    async def job_box(self, job_id: str) -> tuple[JobRecord, BoxRecord | None]:
        job, rec = await self.repo.job_and_box(job_id)
        if job is None:
            recent = await self.repo.recent_job_ids()
            raise UnknownJob(f"unknown job {job_id!r}; recent jobs: {', '.join(recent) if recent else 'none yet'}",
                             hint=Hint(HintKind.LIST_JOBS))
        # a box still provisioning already answers for its bootstrap and setup jobs
        readable = rec is not None and (rec.state == BoxStatus.READY or (
            rec.state == BoxStatus.PROVISIONING and rec.host is not None))
        return job, rec if readable else None

    async def job_status(self, job_id: str, *, stdout_offset: int = 0, stderr_offset: int = 0,
                         wait_s: float = 0.0, max_bytes: int | None = None) -> JobStatusResult:
        job, rec = await self.job_box(job_id)
        if rec is None:
            return self._from_record(job, stdout_offset, stderr_offset, f"server {job.box_name!r} is gone")
        cap = min(max_bytes or self.settings.output_cap_bytes, self.settings.output_cap_bytes)
        ex = self.access.exec(rec)
        try:
            try:
                st = await jobs.status(ex, job_id, stdout_offset=stdout_offset, stderr_offset=stderr_offset,
                                       max_bytes=cap, wait_s=min(wait_s, MAX_WAIT_S))
            except JobError:  # on a full disk a channel's capture of the output is cut short: read it again
                if await box_disk_full(self.access, rec, f"~/.boxforge/jobs/{job_id}") is None:
                    raise
                st = await jobs.status(self.access.exec_only(rec), job_id, stdout_offset=stdout_offset,
                                       stderr_offset=stderr_offset, max_bytes=cap)
            st = self.launching(job, st)
        except BoxUnreachable as exc:
            return await self._unreachable(job, rec, stdout_offset, stderr_offset, exc)
        await self.record_state(job_id, st)
        return await self._status_result(rec, ex, job, st)

    async def brief(self, job_id: str, *, wait_s: float = 0.0) -> JobBrief:
        """A job's state and output sizes, no output (waiting up to ``wait_s`` for it to end)."""
        job, rec = await self.job_box(job_id)
        if rec is not None:
            try:
                st = self.launching(job, await jobs.status(self.access.exec(rec), job_id, max_bytes=0,
                                                            wait_s=min(wait_s, MAX_WAIT_S)))
            except BoxUnreachable:
                pass
            else:
                await self.record_state(job_id, st)
                return JobBrief(job_id=job_id, server=rec.name, state=st.state, exit_code=st.exit_code,
                                stdout_size=st.stdout_size, stderr_size=st.stderr_size)
        state = job.state if rec is not None or job.state != JobState.RUNNING else JobState.LOST
        return JobBrief(job_id=job_id, server=job.box_name, state=state, exit_code=job.exit_code,
                        box_reachable=False)

    async def _chunks(self, rec: BoxRecord, ex: jobs.BoxExec, job: JobRecord,
                      st: jobs.JobStatus) -> tuple[bytes, bytes]:
        """The chunks of both streams to show: a chunk followed by more output ends on a whole character, and
        one that could end where a secret begins waits for the rest (never half a secret)."""
        chunks = []
        for data, offset, size in ((st.stdout, st.stdout_offset, st.stdout_size),
                                   (st.stderr, st.stderr_offset, st.stderr_size)):
            chunks.append(data[:complete_utf8_prefix(data)] if offset + len(data) < size else data)
        out, err = chunks
        if not (out or err):
            return out, err
        redactor = await self.secrets.redactor(rec, ex, job)
        if st.state == JobState.RUNNING or st.stdout_offset + len(out) < st.stdout_size:
            out = out[:redactor.safe_end(out)]
        if st.state == JobState.RUNNING or st.stderr_offset + len(err) < st.stderr_size:
            err = err[:redactor.safe_end(err)]
        return out, err

    async def _status_result(self, rec: BoxRecord, ex: jobs.BoxExec, job: JobRecord,
                             st: jobs.JobStatus) -> JobStatusResult:
        out, err = await self._chunks(rec, ex, job, st)
        out_text, out_binary = decode_output(out)
        err_text, err_binary = decode_output(err)
        if out_text or err_text:
            redactor = await self.secrets.redactor(rec, ex, job)
            out_text, err_text = redactor.text(out_text), redactor.text(err_text)
            await self.cache(self.repo.append_output(job.job_id, out_text, err_text))
        next_out, next_err = st.stdout_offset + len(out), st.stderr_offset + len(err)
        more = next_out < st.stdout_size or next_err < st.stderr_size
        result = JobStatusResult(
            job_id=job.job_id, server=rec.name, state=st.state, exit_code=st.exit_code, stdout=out_text,
            stderr=err_text, stdout_offset=next_out, stderr_offset=next_err, stdout_size=st.stdout_size,
            stderr_size=st.stderr_size, more=more, binary=out_binary or err_binary, duration_s=duration(st),
            hint="the job's record is gone from the box (rebooted or cleaned); rerun it if needed"
            if st.state == JobState.LOST and not more else None,
        )
        offsets = {"job_id": job.job_id, "stdout_offset": next_out, "stderr_offset": next_err}
        if more:
            result.suggest("hint", Hint(HintKind.MORE_OUTPUT, **offsets))
        elif st.state == JobState.RUNNING:
            result.suggest("hint", Hint(HintKind.WAIT_JOB, wait_s=30, **offsets))
        elif st.state == JobState.FAILED:
            result.hint = await self.disk_note(rec, job.job_id)
        result.suggest("warning", time_left(rec.expires_at)[2])
        return result

    async def disk_note(self, rec: BoxRecord, job_id: str) -> str | None:
        """For a job that failed: "no space left on the box's disk …" if that is why its writes (and maybe the
        job) failed; its output file holds every byte it managed to write."""
        full = await box_disk_full(self.access, rec, f"~/.boxforge/jobs/{job_id}")
        return f"{full}; the output shown is all the job wrote before the disk filled" if full else None

    def _from_record(self, job: JobRecord, stdout_offset: int, stderr_offset: int, why: str,
                     *, state: str | None = None, last_seen: float | None = None) -> JobStatusResult:
        """What the store knows of a job whose box cannot answer: last state and the output read so far."""
        if state is None:
            state = job.state if job.state != JobState.RUNNING else JobState.LOST
        shown = "last output read before that" if job.out_tail or job.err_tail else "no output was read before that"
        return JobStatusResult(
            job_id=job.job_id, server=job.box_name, state=state, exit_code=job.exit_code,
            stdout=job.out_tail or "", stderr=job.err_tail or "", stdout_offset=stdout_offset,
            stderr_offset=stderr_offset, stdout_size=0, stderr_size=0, box_reachable=False,
            last_seen=iso(last_seen), hint=f"{why}; stdout/stderr hold the {shown}",
        )

    async def _unreachable(self, job: JobRecord, rec: BoxRecord, stdout_offset: int, stderr_offset: int,
                           exc: BoxUnreachable) -> JobStatusResult:
        prov = self.boxes.providers.get(rec.provider)
        box = await prov.get(rec.box_id) if rec.box_id else None
        if box is None:  # vanished: its running jobs are lost, with what was read of them
            await self.boxes.reconcile()
            if job.state == JobState.RUNNING:
                await self.repo.update_job(job.job_id, state=JobState.LOST)
            return self._from_record(job, stdout_offset, stderr_offset, f"server {rec.name!r} vanished at the provider")
        return self._from_record(
            job, stdout_offset, stderr_offset,
            f"server {rec.name!r} is not answering ({exc}); the job's state is the last known one — "
            "poll again later, boxforge reconnects when the box answers",
            state=job.state, last_seen=self.access.last_seen(rec.name),
        )
