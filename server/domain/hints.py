"""What to do next, as a value: the service says which step fits, each surface says it in its own words.

The MCP layer renders a ``Hint`` as a tool call (``vm_job_status(job_id=...)``), the CLI as a command
(``boxforge logs j-... --follow``); neither wording leaks into the other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class HintKind(enum.StrEnum):
    """The next steps the service can suggest."""

    FORGING = "forging"  #: a create goes on in the background: watch the box list
    POLL_JOB = "poll_job"  #: a job was started in the background: poll it
    STILL_RUNNING = "still_running"  #: a foreground command outlived its wait and goes on as a job
    MORE_OUTPUT = "more_output"  #: more output is ready past the returned offsets
    WAIT_JOB = "wait_job"  #: the job is still running: wait for it from the offsets
    AGENT_STARTED = "agent_started"  #: an agent runs as a job: follow it, then review the box's diff
    EXPIRES_SOON = "expires_soon"  #: the box is close to its expiry: extend it or save the work
    NO_BOXES = "no_boxes"  #: there is no live box: make one
    LIST_JOBS = "list_jobs"  #: an unknown job id: see the job list
    KILL_JOB = "kill_job"  #: a cancel left the job running: send KILL
    EXTEND_LATER = "extend_later"  #: a TTL over the maximum: start shorter, extend later
    BURN_FIRST = "burn_first"  #: the name is taken by a live box: burn it to reuse the name
    NEEDS_AGENT = "needs_agent"  #: the box has no agent: make one with an agent, or run the command directly
    EXTEND_AGAIN = "extend_again"  #: the box's own backstop did not move: extend again once it answers
    DIFF_CUT = "diff_cut"  #: the review diff was cut: ask for more, or read single files
    KEEP_WORK = "keep_work"  #: the box changed things: bring the work home before it is burned
    JOBS_ENDED = "jobs_ended"  #: some of the jobs waited on ended: read their output, wait for the rest
    FETCHED = "fetched"  #: a box's work came home as a ref: compare, land or push it
    COMPARED = "compared"  #: boxes compared: fetch and land them in an order
    BURN_UNHARVESTED = "burn_unharvested"  #: the harvest failed: burn anyway only on purpose
    KEY_TAKEN = "key_taken"  #: an idempotency key names another request's job: read that job, or use a new key
    BOX_BUSY = "box_busy"  #: every session to the box was taken until the deadline: the command runs on as a job


@dataclass(frozen=True)
class Hint:
    """One next step and the values it needs (ids, offsets)."""

    kind: HintKind
    server: str | None = None
    job_id: str | None = None
    stdout_offset: int | None = None
    stderr_offset: int | None = None
    wait_s: float | None = None
    left_s: int | None = None
    reused: bool = False  # the job existed already (same idempotency key)
    job_ids: tuple[str, ...] = ()  # the jobs still running (JOBS_ENDED)
