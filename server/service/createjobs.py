"""The jobs a create runs on the box (bootstrap, setup, services): launch them, follow them to their
end while turning their step markers into progress, and say why one failed with its log's tail."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping

from providers.capabilities import OnboxCall
from server import boxfile, jobs
from server.bootstrap import AGENT_MARKER, BASE_MARKER, STEP_MARKER
from server.config import Settings
from server.domain.durations import format_duration
from server.domain.names import new_job_id
from server.domain.output import decode_output
from server.domain.states import CreateStep, JobState
from server.errors import ForgeError, InvalidInput
from server.service import onbox
from server.service.secrets import Secrets
from server.store import BoxRecord, JobRecord, Repository

Step = Callable[[str], Awaitable[None]]
TAIL_SHOWN = 2000  # characters of a failed create job's log shown in the error
MARKED_STEPS = (CreateStep.CLONE, CreateStep.AGENT)  # steps the bootstrap script reports itself
# A log file a failed job's output points at (npm: "A complete log of this run can be found in: /root/.npm/
# _logs/....log"): on the box, so the burn deletes it; its tail goes into the error first.
NAMED_LOG = re.compile(r"(?<![\w.~:/-])(/[\w.@+-]+(?:/[\w.@+-]+)*\.log)\b")
NAMED_LOGS_READ = 2
NAMED_LOG_TAIL = 1500
LOG_TAIL = OnboxCall("log-tail.sh")


class CreateJobs:
    def __init__(self, settings: Settings, repo: Repository, secrets: Secrets) -> None:
        self.settings = settings
        self.repo = repo
        self.secrets = secrets

    async def start(self, rec: BoxRecord, ex: jobs.BoxExec, kind: str, label: str, script: str, cwd: str,
                    env: Mapping[str, str] | None = None) -> str:
        """Launch a bootstrap, setup or service job. Its env (a repo token) is deleted on the box once
        sourced: the agent that runs there later must not find it."""
        job_id = new_job_id()
        await self.repo.insert_job(JobRecord(
            job_id=job_id, box_name=rec.name, request_id=rec.request_id, command=label[:500], cwd=cwd,
            kind=kind, idempotency_key=None, state=JobState.RUNNING, exit_code=None, created_at=time.time(),
            finished_at=None))
        if env:
            self.secrets.remember_job(job_id, env)
        await jobs.launch(ex, job_id, script, cwd=cwd, env=env or {}, keep_secrets=False)
        return job_id

    async def follow(self, rec: BoxRecord, ex: jobs.BoxExec, job_id: str, what: str, timeout: float,
                     step: Step | None = None) -> list[str]:
        """Follow a job to its end, turning its step markers into progress; returns the marker lines it
        printed. A job that fails or outlives ``timeout`` raises with the (redacted) tail of its log."""
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
            markers += await self._markers(lines, step)
            if st.state != JobState.RUNNING and not st.more:
                break
        await self.repo.update_job(job_id, state=st.state, exit_code=st.exit_code, finished_at=st.finished_at)
        if st.state != JobState.SUCCEEDED:
            redact = await self.secrets.redactor(rec, ex, job_id)
            tail = await self._tail(ex, job_id, st)
            named = await self._named_logs(ex, tail)
            raise ForgeError(redact(f"{what} failed (exit {st.exit_code}); log tail:\n{tail}{named}"))
        return markers

    @staticmethod
    async def _markers(lines: list[bytes], step: Step | None) -> list[str]:
        """Report the step lines as progress; return the base-commit and installed-agent lines."""
        found = []
        for raw in lines:
            line = raw.decode(errors="replace")
            if line.startswith(STEP_MARKER) and step is not None:
                label = line[len(STEP_MARKER):].strip()
                if label in MARKED_STEPS:
                    await step(label)
            elif line.startswith((BASE_MARKER, AGENT_MARKER)):
                found.append(line)
        return found

    @staticmethod
    async def _named_logs(ex: jobs.BoxExec, tail: str) -> str:
        """The tails of the log files (on the box) that a failed job's output names, each under a heading."""
        shown = []
        for path in list(dict.fromkeys(NAMED_LOG.findall(tail)))[:NAMED_LOGS_READ]:
            call = OnboxCall(LOG_TAIL.script, {"path": path, "max_bytes": str(NAMED_LOG_TAIL)})
            try:
                result = await onbox.run(ex, call, 30.0)
            except (ForgeError, OSError, TimeoutError):
                continue
            if result.exit_status == 0 and result.stdout:
                shown.append(f"\n--- the end of {path} (on the box, burned with it) ---\n"
                             f"{decode_output(result.stdout)[0].strip()}")
        return "".join(shown)

    @staticmethod
    async def _tail(ex: jobs.BoxExec, job_id: str, st: jobs.JobStatus) -> str:
        parts = []
        for stream, size in (("err", st.stderr_size), ("out", st.stdout_size)):
            if size:
                data = await jobs.read_range(ex, job_id, stream, max(0, size - TAIL_SHOWN), TAIL_SHOWN)
                parts.append(decode_output(data)[0].strip())
        return "\n".join(p for p in parts if p)[-TAIL_SHOWN:]


async def read_boxfile(ex: jobs.BoxExec, project_dir: str) -> boxfile.BoxFile | None:
    """The repo's .boxforge.yml, parsed; None when the repo has none."""
    read = await ex(boxfile.read_script(project_dir), None, 30.0)
    if boxfile.missing(read.exit_status):
        return None
    if read.exit_status != 0:
        raise ForgeError(f"could not read {boxfile.BOXFILE_NAME} on the box: "
                         f"{read.stderr.decode(errors='replace').strip()[-300:]}")
    if len(read.stdout) > boxfile.MAX_BOXFILE_BYTES:
        raise InvalidInput(f"{boxfile.BOXFILE_NAME} is larger than 64 KiB; keep long scripts in the repo and "
                           "call them from it")
    return boxfile.parse_boxfile(read.stdout.decode(errors="replace"))
