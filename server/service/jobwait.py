"""Waiting on many jobs at once: one long-poll per job, all in parallel, answered as soon as any of
them ends, so a fan-out of N jobs needs about N waits instead of N x polls."""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from server.domain.hints import Hint, HintKind
from server.domain.states import JobState
from server.schemas import JobBrief, JobWaitResult
from server.service.jobs import MAX_WAIT_S, Jobs


async def _briefs(jobs: Jobs, job_ids: Sequence[str]) -> list[JobBrief]:
    found: dict[str, JobBrief] = {}

    async def one(job_id: str) -> None:
        found[job_id] = await jobs.brief(job_id)

    async with anyio.create_task_group() as tg:
        for job_id in job_ids:
            tg.start_soon(one, job_id)
    return [found[job_id] for job_id in job_ids]


async def wait_any(jobs: Jobs, job_ids: Sequence[str], wait_s: float) -> JobWaitResult:
    """Every job's state once any of them is not running, or after ``wait_s``."""
    ids = list(dict.fromkeys(job_ids))
    briefs = await _briefs(jobs, ids)  # unknown ids fail here, before any wait
    if wait_s > 0 and all(b.state == JobState.RUNNING for b in briefs):
        with anyio.move_on_after(min(wait_s, MAX_WAIT_S)):
            async with anyio.create_task_group() as tg:

                async def watch(job_id: str) -> None:
                    brief = await jobs.brief(job_id, wait_s=wait_s)
                    if brief.state != JobState.RUNNING or not brief.box_reachable:
                        tg.cancel_scope.cancel()

                for job_id in ids:
                    tg.start_soon(watch, job_id)
        briefs = await _briefs(jobs, ids)
    ended = [b.job_id for b in briefs if b.state != JobState.RUNNING]
    running = [b.job_id for b in briefs if b.state == JobState.RUNNING]
    result = JobWaitResult(jobs=briefs, ended=ended, running=running)
    if ended:
        result.suggest("hint", Hint(HintKind.JOBS_ENDED, job_ids=tuple(running)))
    return result
