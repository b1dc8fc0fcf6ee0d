"""The on-box job protocol: launch a command detached, read its state and output by byte offset,
long-poll it, cancel it, list jobs. The box needs POSIX sh and coreutils/util-linux, no python.

Each call is ONE round trip through a ``BoxExec`` (``async (script, stdin, timeout) ->
ExecResult``; ``script`` is a shell command line). ``box_exec(pool, target)`` builds one over an
``SSHPool`` that sends each call over the box's persistent control channel (plain exec as the
fallback): the scripts here are one shell library (``_LIBRARY``, defined once per channel) plus a
one-line call, and a ``BoxScript`` is the command line that also carries that split.

On the box, ``~/.boxforge/jobs/<job_id>/`` holds:

- ``cmd``      the command text, run with bash when the box has it, else sh
- ``cwd``      the absolute working directory
- ``started``  unix time at launch (fractional where ``date`` knows ``%N``, as all times here)
- ``pid``      pid of the wrapper, leader of the job's own session and process group (empty
               or missing while it starts)
- ``boot``     the kernel boot id at launch (a pid from an earlier boot is never "alive")
- ``out``/``err``  the job's stdout/stderr, append-only
- ``exit``     ``"<code> <finished unix time>"``, written on finish with one write (a reader
               that finds it empty while the wrapper lives reads a running job);
               a signal the command died of shows as 128+n (TERM -> 143)
- ``exit.res`` 64 bytes of room for ``exit``, taken at the start: on a full disk the record is written
               over it and it is renamed to ``exit`` (a job that fills the disk is still recorded)
- ``killed``   ``"<SIGNAL> <unix time>"``, written by ``cancel`` before it signals
- ``run``      the wrapper (``sh/job-wrapper.sh``); ``env`` (0600) lives only until the wrapper
               has sourced it (it becomes ``secrets``, or is deleted).
               The wrapper holds an exclusive ``flock`` on ``run`` while it lives, so a long-poll
               waits on that lock and answers the moment the job ends (polling every 50 ms
               where ``flock`` is missing or for jobs launched without the lock)

States: ``running`` (no exit file, wrapper alive), ``succeeded`` (exit 0), ``failed``
(exit != 0), ``killed`` (killed marker and the process is gone; ``exit_code`` is set when the
wrapper lived to record it, e.g. 143 after TERM), ``lost`` (job dir missing, or no exit file,
wrapper dead and no killed marker).

Secrets: the command text, the cwd and env values travel over stdin, never on a command line,
and env values reach the job through a 0600 file that the wrapper deletes before the command
starts. Nothing here logs them or puts them in an exception message.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from server.domain.inputs import ENV_NAME_RE, check_env
from server.domain.names import is_job_id, new_job_id
from server.domain.redaction import Redactor
from server.domain.states import JobState, Signal
from server.errors import InvalidInput, JobError, UnknownJob
from server.onbox import scripts
from server.onbox.protocol import STATUS_MAGIC, Exit
from server.ssh import ExecResult, ShellCall, SSHPool, SSHTarget
from server.transport.types import LEFT_CS

log = logging.getLogger(__name__)

BoxExec = Callable[[str, bytes | None, float | None], Awaitable[ExecResult]]
Stream = Literal["out", "err"]

__all__ = ["BoxExec", "JobStatus", "OnBoxJob", "Stream", "box_exec", "cancel", "launch", "list_jobs",
           "new_job_id", "parse_env_file", "read_box_env", "read_range", "read_secrets", "run", "status",
           "write_box_env"]

CALL_TIMEOUT_S = 60.0
DEADLINE_GRACE_S = 10.0  # past a foreground deadline, how long a status call that has reached the box may take
_STATES = frozenset(JobState)
_SIGNALS = tuple(Signal)
COMMAND_HEAD_CHARS = 200

# The job protocol's shell library (sh/protocol.sh + sh/jobs.sh), defined once per control channel,
# and the wrapper that launch writes into each job's `run` file.
_WRAPPER = scripts.text("job-wrapper.sh")
_LIBRARY = scripts.library("jobs.sh") + scripts.assignments({"BF_WRAPPER": _WRAPPER})


class BoxScript(str):
    """A job-protocol call: the full ``/bin/sh -c`` command line (what any ``BoxExec`` runs), which
    also carries its ``ShellCall`` form so that a control channel sends only the one-line call."""

    shell_call: ShellCall

    def __new__(cls, call: ShellCall) -> BoxScript:
        script = super().__new__(cls, call.command_line())
        script.shell_call = call
        return script


def box_exec(pool: SSHPool, target: SSHTarget) -> BoxExec:
    """A ``BoxExec`` on ``target``'s pooled connection: each script goes over one of the box's
    control channels, or one SSH exec when no channel can serve it (see ``SSHPool.channel_run``)."""

    async def run(script: str, stdin: bytes | None = None, timeout: float | None = None) -> ExecResult:
        call = script.shell_call if isinstance(script, BoxScript) else script
        return await pool.channel_run(target, call, stdin=stdin, timeout=timeout)

    return run


@dataclass(frozen=True)
class JobStatus:
    """A job's state plus one chunk of each stream, starting at ``stdout_offset``/``stderr_offset``
    (the requested offsets clamped to the sizes); ``*_size`` are the streams' total sizes."""

    job_id: str
    state: JobState
    exit_code: int | None
    started_at: float | None
    finished_at: float | None
    stdout: bytes = field(repr=False)
    stderr: bytes = field(repr=False)
    stdout_offset: int
    stderr_offset: int
    stdout_size: int
    stderr_size: int

    @property
    def next_stdout_offset(self) -> int:
        return self.stdout_offset + len(self.stdout)

    @property
    def next_stderr_offset(self) -> int:
        return self.stderr_offset + len(self.stderr)

    @property
    def more(self) -> bool:
        """Output remains beyond the returned chunks (call again from the next offsets)."""
        return self.next_stdout_offset < self.stdout_size or self.next_stderr_offset < self.stderr_size


@dataclass(frozen=True)
class OnBoxJob:
    """A job as ``list_jobs`` finds it on the box (the tools' ``JobSummary`` is built from it)."""

    job_id: str
    state: JobState
    exit_code: int | None
    started_at: float | None
    finished_at: float | None
    command: str


def _script(operation: str, *, long: bool = False, deadline: float | None = None, private: str = "",
            **params: str | int) -> BoxScript:
    """The call of ``operation`` with ``params`` set first, as a command line running under /bin/sh
    (whatever the login shell). Params are only ever validated job ids, numbers and fixed words (and
    ``LEFT_CS``, which a call with a ``deadline`` gets filled in when it is sent); ``private`` assignments
    (a command, env values) travel as ``ShellCall.private``."""
    assigns = "".join(f"{name}={shlex.quote(str(value))}; " for name, value in params.items())
    return BoxScript(ShellCall(_LIBRARY, f"{assigns}bf_{operation}", long=long, foreground=deadline is not None,
                               deadline=deadline, private=private))


async def _call(
    ex: BoxExec,
    operation: str,
    *,
    stdin: bytes | None = None,
    timeout: float | None = CALL_TIMEOUT_S,
    long: bool = False,
    deadline: float | None = None,
    private: str = "",
    **params: str | int,
) -> ExecResult:
    log.debug("jobs: %s %s", operation, params.get("job", ""))
    script = _script(operation, long=long, deadline=deadline, private=private, **params)
    return await ex(script, script.shell_call.stdin if private else stdin, timeout)


def _check_job_id(job_id: str) -> None:
    if not isinstance(job_id, str) or not is_job_id(job_id):
        raise UnknownJob(f"unknown job {str(job_id)[:40]!r}: job ids look like 'j-' followed by 12 hex digits")


def _env_file(env: Mapping[str, str]) -> str:
    """``export NAME='value'`` lines (what the wrapper sources), after the domain's env checks."""
    check_env(env)
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def parse_env_file(text: str) -> dict[str, str]:
    """The ``export NAME='value'`` lines ``_env_file`` writes, back into a mapping."""
    values: dict[str, str] = {}
    try:
        words = shlex.split(text)
    except ValueError:
        return values
    for word in words:
        name, sep, value = word.partition("=")
        if sep and ENV_NAME_RE.fullmatch(name):
            values[name] = value
    return values


def _failure(what: str, result: ExecResult, env: Mapping[str, str] | None = None) -> JobError:
    detail = result.stderr.decode(errors="replace").strip()
    detail = Redactor.of(env or {}, 4).text(detail)[-500:]
    status = "a signal" if result.exit_status is None else f"exit {result.exit_status}"
    return JobError(f"{what} failed on the box ({status}){': ' + detail if detail else ''}")


def _start_params(job_id: str, command: str, cwd: str, env: Mapping[str, str], keep_secrets: bool) -> str:
    """The private assignments that start a job (checked first): its command, cwd and env file."""
    if not isinstance(job_id, str) or not is_job_id(job_id):
        raise InvalidInput(f"invalid job id {str(job_id)[:40]!r}: use new_job_id()")
    if "\x00" in command:
        raise InvalidInput("the command must not contain NUL bytes")
    if not cwd or "\x00" in cwd:
        raise InvalidInput("cwd must be a non-empty path without NUL bytes")
    return scripts.assignments({"cmd": command, "cwd": cwd, "envfile": _env_file(env),
                                "keep": "keep" if keep_secrets else "forget"})


def _check_started(job_id: str, cwd: str, result: ExecResult, env: Mapping[str, str]) -> None:
    """Raise what a failed start means (a start's exit statuses are the launch's)."""
    if result.exit_status == Exit.NO_CWD:
        raise InvalidInput(f"working directory {cwd!r} does not exist on the box; create it or pass another cwd")
    if result.exit_status == Exit.CWD_DENIED:
        raise InvalidInput(f"working directory {cwd!r} on the box is not accessible")
    if result.exit_status == Exit.NO_SETSID:
        raise JobError("the box has no 'setsid' (util-linux), which detached jobs need; install util-linux")
    if result.exit_status == Exit.NOT_STARTED:
        raise JobError(f"job {job_id} did not start on the box in time; check the box's load and disk space")
    if result.exit_status != 0:
        raise _failure(f"launching job {job_id}", result, env)


async def launch(ex: BoxExec, job_id: str, command: str, *, cwd: str, env: Mapping[str, str] = {},
                 keep_secrets: bool = True) -> None:
    """Start ``command`` detached in ``cwd`` with ``env`` on top of the box env; returns once the
    job's pid file exists. One round trip. Launching an already-launched ``job_id`` again is a
    no-op, so a launch retried after a dropped connection never runs the command twice.

    The per-job env file becomes the job's 0600 ``secrets`` file once sourced, so any orchestrator
    can redact those values from the output; ``keep_secrets=False`` deletes it instead (for values
    that must not outlive their use on the box, such as a repo token).

    ``cwd`` may be absolute, ``~``-relative or relative to the box's home; a missing one raises
    ``InvalidInput`` and leaves no job behind.
    """
    private = _start_params(job_id, command, cwd, env, keep_secrets)
    result = await _call(ex, "launch", private=private, job=job_id)
    _check_started(job_id, cwd, result, env)


async def run(ex: BoxExec, job_id: str, command: str, *, cwd: str, env: Mapping[str, str] = {},
              keep_secrets: bool = True, wait_s: float = 0.0, max_bytes: int = 65536,
              deadline: float | None = None) -> JobStatus:
    """``launch`` then ``status(wait_s=..., max_bytes=...)`` in ONE round trip: what a foreground
    command needs. The job is the same detached job ``launch`` starts (it outlives the call, the
    connection and the orchestrator); a retry after a dropped connection never runs it twice.
    ``deadline`` instead of ``wait_s``: as ``status`` (no session before it: ``BoxBusy``, nothing started)."""
    private = _start_params(job_id, command, cwd, env, keep_secrets)
    if max_bytes < 0 or wait_s < 0:
        raise InvalidInput("max_bytes and wait_s must not be negative")
    timeout, wait_cs = _wait_params(wait_s, deadline)
    result = await _call(ex, "run", private=private, timeout=timeout, long=wait_s > 0 or deadline is not None,
                         deadline=deadline, job=job_id, ooff=0, eoff=0, maxb=int(max_bytes), wait_cs=wait_cs)
    _check_started(job_id, cwd, result, env)
    return _parse_status(job_id, result.stdout)


def _wait_params(wait_s: float, deadline: float | None) -> tuple[float, str]:
    """A waiting call's timeout and its box-side wait (centiseconds, or ``LEFT_CS`` for a deadline)."""
    if deadline is None:
        return CALL_TIMEOUT_S + wait_s, str(round(wait_s * 100))
    return max(deadline - time.monotonic(), 0.0) + DEADLINE_GRACE_S, LEFT_CS


async def status(
    ex: BoxExec,
    job_id: str,
    *,
    stdout_offset: int = 0,
    stderr_offset: int = 0,
    max_bytes: int = 65536,
    wait_s: float = 0.0,
    deadline: float | None = None,
) -> JobStatus:
    """State, exit code, times, stream sizes and up to ``max_bytes`` of each stream after the
    given offsets, in one round trip. With ``wait_s > 0`` and a running job, the box waits up to
    ``wait_s`` for the job to end: it blocks on a shared ``flock`` of the job's ``run`` file, which
    the wrapper holds exclusively while it lives, so the answer comes as soon as the job ends.
    Where ``flock`` is missing, or the lock is free while the job still runs (a job launched
    without it), it re-checks every 50 ms instead. A job dir that is missing reads as ``lost``.

    ``deadline`` (``time.monotonic()``; instead of ``wait_s``) is a foreground caller's promise: the call may use
    the sessions background long-polls leave free, waits for one only until just before the deadline
    (``BoxBusy``), and the box waits for the job only for what is left once the call is sent.
    """
    _check_job_id(job_id)
    if min(stdout_offset, stderr_offset, max_bytes) < 0 or wait_s < 0:
        raise InvalidInput("offsets, max_bytes and wait_s must not be negative")
    timeout, wait_cs = _wait_params(wait_s, deadline)
    result = await _call(
        ex,
        "status",
        timeout=timeout,
        long=wait_s > 0 or deadline is not None,
        deadline=deadline,
        job=job_id,
        ooff=int(stdout_offset),
        eoff=int(stderr_offset),
        maxb=int(max_bytes),
        wait_cs=wait_cs,
    )
    if result.exit_status != 0:
        raise _failure(f"reading the status of job {job_id}", result)
    return _parse_status(job_id, result.stdout)


def _parse_status(job_id: str, raw: bytes) -> JobStatus:
    header, sep, body = raw.partition(b"\n")
    fields = header.decode(errors="replace").split(" ")
    if not sep or len(fields) != 11 or fields[0] != STATUS_MAGIC or fields[1] not in _STATES:
        raise JobError(f"the box answered the status of job {job_id} in an unexpected format; retry")
    try:
        osz, esz, oo, on, eo, en = (int(f) for f in fields[5:])
    except ValueError as exc:
        raise JobError(f"the box answered the status of job {job_id} in an unexpected format; retry") from exc
    if len(body) != on + en:
        raise JobError(f"the output of job {job_id} changed size while it was read (truncated?); retry")
    return JobStatus(
        job_id=job_id,
        state=JobState(fields[1]),
        exit_code=_opt_int(fields[2]),
        started_at=_opt_float(fields[3]),
        finished_at=_opt_float(fields[4]),
        stdout=body[:on],
        stderr=body[on:],
        stdout_offset=oo,
        stderr_offset=eo,
        stdout_size=osz,
        stderr_size=esz,
    )


def _opt_int(text: str) -> int | None:
    return int(text) if text.lstrip("-").isdigit() else None


def _opt_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


async def read_range(ex: BoxExec, job_id: str, stream: Stream, offset: int, length: int) -> bytes:
    """Up to ``length`` bytes of the job's ``out`` or ``err`` starting at byte ``offset``."""
    _check_job_id(job_id)
    if stream not in ("out", "err"):
        raise InvalidInput(f"stream must be 'out' or 'err', not {str(stream)[:20]!r}")
    if offset < 0 or length < 0:
        raise InvalidInput("offset and length must not be negative")
    if length == 0:
        return b""
    result = await _call(ex, "read_range", job=job_id, stream=stream, off=int(offset), length=int(length))
    if result.exit_status == Exit.NO_JOB:
        raise UnknownJob(f"job {job_id} does not exist on the box")
    if result.exit_status != 0:
        raise _failure(f"reading the output of job {job_id}", result)
    return result.stdout


async def cancel(ex: BoxExec, job_id: str, signal: Signal | str = Signal.TERM) -> None:
    """Mark the job killed and send ``signal`` to its process group. Cancelling a job that
    already finished does nothing; read ``status`` for the outcome."""
    _check_job_id(job_id)
    if signal not in _SIGNALS:
        raise InvalidInput(f"signal must be one of {', '.join(_SIGNALS)}, not {str(signal)[:20]!r}")
    result = await _call(ex, "cancel", job=job_id, sig=signal)
    if result.exit_status == Exit.NO_JOB:
        raise UnknownJob(f"job {job_id} does not exist on the box")
    if result.exit_status == Exit.NOT_STARTED:
        raise JobError(f"job {job_id} has not finished starting; retry the cancel")
    if result.exit_status != 0:
        raise _failure(f"cancelling job {job_id}", result)


async def list_jobs(ex: BoxExec) -> list[OnBoxJob]:
    """Every job on the box, oldest first, with the first line of its command."""
    result = await _call(ex, "list")
    if result.exit_status != 0:
        raise _failure("listing jobs", result)
    jobs = []
    for line in result.stdout.decode(errors="replace").splitlines():
        parts = line.split(" ", 5)
        if len(parts) < 5 or not is_job_id(parts[0]) or parts[1] not in _STATES:
            continue
        head = parts[5] if len(parts) == 6 else ""
        jobs.append(
            OnBoxJob(
                job_id=parts[0],
                state=JobState(parts[1]),
                exit_code=_opt_int(parts[2]),
                started_at=_opt_float(parts[3]),
                finished_at=_opt_float(parts[4]),
                command=head[:COMMAND_HEAD_CHARS],
            )
        )
    jobs.sort(key=lambda job: (job.started_at or 0.0, job.job_id))
    return jobs


async def read_secrets(ex: BoxExec, job_id: str) -> dict[str, str]:
    """The job's secret env, from its 0600 ``secrets`` file (kept for redaction); empty if none."""
    _check_job_id(job_id)
    result = await _call(ex, "read_secrets", job=job_id)
    return parse_env_file(result.stdout.decode(errors="replace"))


async def read_many_secrets(ex: BoxExec, job_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """The secret env of several jobs in one call (``read_secrets`` for each); empty for a job without one."""
    for job_id in job_ids:
        _check_job_id(job_id)
    if not job_ids:
        return {}
    result = await _call(ex, "read_many_secrets", jobs=" ".join(job_ids))
    parts = result.stdout.split(b"\0")[1:]
    found = {parts[i].decode(): parse_env_file(parts[i + 1].decode(errors="replace"))
             for i in range(0, len(parts) - 1, 2)}
    return {job_id: found.get(job_id, {}) for job_id in job_ids}


async def read_box_env(ex: BoxExec) -> dict[str, str]:
    """The box-wide env of ``~/.boxforge/env``; empty if none."""
    result = await _call(ex, "read_box_env")
    return parse_env_file(result.stdout.decode(errors="replace"))


async def write_box_env(ex: BoxExec, env: Mapping[str, str]) -> None:
    """Replace the box-wide env file ``~/.boxforge/env`` (0600) that every job sources first."""
    content = _env_file(env)
    result = await _call(ex, "write_box_env", stdin=content.encode())
    if result.exit_status != 0:
        raise _failure("writing the box env file", result, env)
