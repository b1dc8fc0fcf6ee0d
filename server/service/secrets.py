"""The secret env values this process knows, in bounded caches, and the one Redactor built from them.

Values this process does not hold (another process launched the job, or this one restarted) are
read back from the box's 0600 files, once per box and job. Values are never stored or logged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from server import jobs
from server.domain.redaction import Redactor
from server.store import BoxRecord, JobRecord

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
    def __init__(self, min_chars: int) -> None:
        self.min_chars = min_chars
        self._boxes = _Bounded(BOXES_KEPT)  # request id -> the box's env
        self._jobs = _Bounded(JOBS_KEPT)  # job id -> the job's own env

    def remember_box(self, request_id: str, env: Mapping[str, str]) -> None:
        self._boxes.put(request_id, env)

    def remember_job(self, job_id: str, env: Mapping[str, str]) -> None:
        self._jobs.put(job_id, env)

    def forget(self, rec: BoxRecord) -> None:
        self._boxes.pop(rec.request_id, None)

    async def redactor(self, rec: BoxRecord, ex: jobs.BoxExec, job: JobRecord | str | None = None) -> Redactor:
        """The secret env values (the box's and the job's) to hide in output as [redacted:NAME]."""
        if rec.request_id not in self._boxes:
            self._boxes.put(rec.request_id, await jobs.read_box_env(ex))
        pairs = dict(self._boxes[rec.request_id])
        job_id = job.job_id if isinstance(job, JobRecord) else job
        if job_id is not None:
            known = self._jobs.get(job_id)
            if known is None and isinstance(job, JobRecord) and job.secret_names:
                known = await jobs.read_secrets(ex, job_id)
                self._jobs.put(job_id, known)
            pairs.update(known or {})
        return Redactor.of(pairs, self.min_chars)
