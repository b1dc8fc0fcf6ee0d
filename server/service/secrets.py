"""The secret env values this process knows, in bounded caches, and the one Redactor built from them.

Every text a tool returns from a box is redacted with every secret known for that box: the box env
and the env of each of its jobs (a job can print another job's files). Values this process does not
hold (another process launched the job, or this one restarted) are read back from the box's 0600
files, once per box and job, in one call for all the jobs missing. Values are never stored or logged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from server import jobs
from server.domain.redaction import Redactor
from server.store import BoxRecord, JobRecord, Repository

BOXES_KEPT = 1000
JOBS_KEPT = 1000


class _Bounded(OrderedDict[str, dict[str, str]]):
    """At most ``limit`` entries, oldest dropped first: a long-lived server stays small."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: str, env: Mapping[str, str]) -> None:
        self[key] = dict(env)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class Secrets:
    def __init__(self, min_chars: int, repo: Repository) -> None:
        self.min_chars = min_chars
        self.repo = repo
        self._boxes = _Bounded(BOXES_KEPT)  # request id -> the box's env
        self._jobs = _Bounded(JOBS_KEPT)  # job id -> the job's own env

    def remember_box(self, request_id: str, env: Mapping[str, str]) -> None:
        self._boxes.put(request_id, env)

    def remember_job(self, job_id: str, env: Mapping[str, str]) -> None:
        self._jobs.put(job_id, env)

    def forget(self, rec: BoxRecord) -> None:
        self._boxes.pop(rec.request_id, None)

    async def redactor(self, rec: BoxRecord, ex: jobs.BoxExec, job: JobRecord | str | None = None) -> Redactor:
        """Every secret env value known for the box (its env, and each of its jobs' env; ``job`` first, even
        when the store does not know it yet) to hide in output as [redacted:NAME]."""
        if rec.request_id not in self._boxes:
            self._boxes.put(rec.request_id, await jobs.read_box_env(ex))
        job_id = job.job_id if isinstance(job, JobRecord) else job
        box_jobs = await self.repo.jobs_of_box(rec.request_id)
        missing = [j.job_id for j in box_jobs if j.secret_names and j.job_id not in self._jobs][-JOBS_KEPT:]
        for read_id, env in (await jobs.read_many_secrets(ex, missing)).items():
            self._jobs.put(read_id, env)
        ids = [job_id] if job_id is not None else []
        ids += [j.job_id for j in box_jobs if j.job_id != job_id]
        envs = [self._boxes[rec.request_id], *(self._jobs[i] for i in ids if i in self._jobs)]
        return Redactor.merged(envs, self.min_chars)
