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
- ``pid``      pid of the wrapper, leader of the job's own session and process group
- ``boot``     the kernel boot id at launch (a pid from an earlier boot is never "alive")
- ``out``/``err``  the job's stdout/stderr, append-only
- ``exit``     ``"<code> <finished unix time>"``, written atomically (tmp + mv) on finish;
               a signal the command died of shows as 128+n (TERM -> 143)
- ``killed``   ``"<SIGNAL> <unix time>"``, written by ``cancel`` before it signals
- ``run``      the wrapper script; ``env`` (0600) lives only until the wrapper has sourced it.
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
import secrets
import shlex
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from server.errors import InvalidInput, JobError, UnknownJob
from server.schemas import ENV_NAME_RE, JOB_ID_RE
from server.ssh import ExecResult, ShellCall, SSHPool, SSHTarget

log = logging.getLogger(__name__)

BoxExec = Callable[[str, bytes | None, float | None], Awaitable[ExecResult]]
JobState = Literal["running", "succeeded", "failed", "killed", "lost"]
Stream = Literal["out", "err"]
Signal = Literal["TERM", "KILL", "INT"]

JOB_STATES: tuple[JobState, ...] = ("running", "succeeded", "failed", "killed", "lost")
SIGNALS: tuple[Signal, ...] = ("TERM", "KILL", "INT")
CALL_TIMEOUT_S = 60.0
COMMAND_HEAD_CHARS = 200

# Exit codes of the box-side scripts.
_EXIT_NO_JOB = 44
_EXIT_NO_CWD = 45
_EXIT_CWD_DENIED = 46
_EXIT_NO_SETSID = 47
_EXIT_NOT_STARTED = 48

_STATUS_MAGIC = b"BOXFORGE-STATUS"


def new_job_id() -> str:
    return "j-" + secrets.token_hex(6)


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
class JobSummary:
    job_id: str
    state: JobState
    exit_code: int | None
    started_at: float | None
    finished_at: float | None
    command: str


# Shared by every script: where jobs live, and how a job's state is derived from its files.
_PRELUDE = r"""
J="$HOME/.boxforge/jobs"
# unix time with sub-second precision where date supports %N, else whole seconds
now() { _t=$(date +%s.%N 2>/dev/null); case $_t in ""|*[!0-9.]*|*.|.*) _t=$(date +%s) ;; esac; }
boot_id() { _boot=; { read -r _boot < /proc/sys/kernel/random/boot_id; } 2>/dev/null || _boot=; }
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  if [ -e /proc/self/stat ]; then
    { read -r _ps < "/proc/$1/stat"; } 2>/dev/null || return 1
    _ps=${_ps##*) }
    case ${_ps%% *} in Z|X|x) return 1 ;; esac
  fi
  return 0
}
job_state() {
  st=lost code= started= fin= pid=
  [ -d "$1" ] || return 0
  [ -r "$1/started" ] && read -r started _ < "$1/started"
  [ -r "$1/exit" ] && read -r code fin < "$1/exit"
  _up=0
  if [ -r "$1/pid" ]; then
    read -r pid < "$1/pid"
    _jb=; [ -r "$1/boot" ] && read -r _jb < "$1/boot"
    boot_id
    if { [ -z "$_jb" ] || [ "$_jb" = "$_boot" ]; } && alive "$pid"; then _up=1; fi
  elif [ -z "$code" ] && [ -n "$started" ] && [ $(( $(date +%s) - ${started%.*} )) -lt 30 ]; then
    _up=1
  fi
  # the wrapper may have written exit and died after the first read: read it again
  if [ -z "$code" ] && [ "$_up" = 0 ] && [ -r "$1/exit" ]; then read -r code fin < "$1/exit"; fi
  if [ -e "$1/killed" ] && { [ -n "$code" ] || [ "$_up" = 0 ]; }; then
    st=killed
    [ -n "$fin" ] || read -r _ fin < "$1/killed"
  elif [ -n "$code" ]; then
    if [ "$code" = 0 ]; then st=succeeded; else st=failed; fi
  elif [ "$_up" = 1 ]; then
    st=running
  fi
}
"""

# The wrapper: leader of the job's session, run as ``sh run <job dir> keep|forget``. It locks fd 9
# (``run``, opened by launch) for as long as it lives, records its pid, and runs the command in a
# subshell (without fd 9, so nothing the job leaves behind holds the lock) that sources the env
# files first: the box env, then the per-job one (kept as the 0600 `secrets` so any orchestrator
# can redact those values, or deleted with ``forget``). The env files may set any name, PATH
# included, so the wrapper's own state never lives in a variable they can reach: after sourcing,
# the subshell uses positional parameters only (the shell and rm resolved beforehand), and the
# wrapper itself never sources them. The trap keeps the wrapper alive through TERM/INT sent to
# the group (a handler, not '', so the command keeps the default dispositions).
_WRAPPER = r"""d=$1
trap : TERM INT
if command -v flock >/dev/null 2>&1; then flock -n 9 2>/dev/null || :; fi
echo $$ > "$d/pid.tmp" && mv -f "$d/pid.tmp" "$d/pid"
sh_=$(command -v bash 2>/dev/null) || sh_=$(command -v sh)
envf=
if [ -e "$d/env" ]; then
  envf=$d/env
  if [ "$2" = keep ]; then mv -f "$d/env" "$d/secrets" && envf=$d/secrets; fi
fi
(
  set -- "$d" "$sh_" "$envf" "$2" "$(command -v rm)" "$HOME/.boxforge/env"
  if [ -r "$6" ]; then . "$6"; fi
  if [ -n "$3" ]; then . "$3"; if [ "$4" != keep ]; then "$5" -f "$3"; fi; fi
  exec "$2" "$1/cmd" 9<&-
)
code=$?
t=$(date +%s.%N 2>/dev/null); case $t in ""|*[!0-9.]*|*.|.*) t=$(date +%s) ;; esac
printf '%s %s\n' "$code" "$t" > "$d/exit.tmp" && mv -f "$d/exit.tmp" "$d/exit"
"""

# stdin carries shell assignments of cmd, cwd and envfile (eval'd: no value is ever an argv).
_LAUNCH = r"""
um=$(umask)
umask 077
payload=$(cat) || exit 70
eval "$payload"
case $cwd in
  "~") cwd=$HOME ;;
  "~/"*) cwd=$HOME/${cwd#"~/"} ;;
  /*) ;;
  *) cwd=$HOME/$cwd ;;
esac
[ -d "$cwd" ] || exit __NO_CWD__
cd "$cwd" 2>/dev/null || exit __CWD_DENIED__
command -v setsid >/dev/null 2>&1 || exit __NO_SETSID__
d=$J/$job
[ -d "$J" ] || mkdir -p "$J" || exit 70
if ! mkdir "$d" 2>/dev/null; then
  # the same launch retried after a dropped connection: done once the first attempt's pid exists
  [ -d "$d" ] || exit 70
  i=0
  while [ ! -s "$d/pid" ] && [ "$i" -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
  [ -s "$d/pid" ] || exit __NOT_STARTED__
  exit 0
fi
fail() { rm -rf "$d"; exit 70; }
printf '%s' "$cmd" > "$d/cmd" || fail
printf '%s\n' "$cwd" > "$d/cwd" || fail
printf '%s' "$wrapper" > "$d/run" || fail
if [ -n "$envfile" ]; then printf '%s' "$envfile" > "$d/env" || fail; fi
boot_id
printf '%s\n' "$_boot" > "$d/boot" || fail
: > "$d/out" && : > "$d/err" || fail
now
printf '%s\n' "$_t" > "$d/started" || fail
umask "$um"
# fd 3 (where the caller reads output) must not leak into the job, or the caller waits for it.
# setsid -f, not &: an asynchronous command would start with SIGINT and SIGQUIT ignored.
setsid -f nohup /bin/sh "$d/run" "$d" "$keep" < /dev/null > "$d/out" 2> "$d/err" 3>&- 9< "$d/run" || fail
# the wrapper writes its pid once it holds its lock: poll briskly at first, it takes milliseconds
i=0
while [ ! -s "$d/pid" ]; do
  i=$((i + 1))
  [ "$i" -gt 1000 ] && exit __NOT_STARTED__
  if [ "$i" -le 50 ]; then sleep 0.002; else sleep 0.01; fi
done
exit 0
"""

_STATUS = r"""
d=$J/$job
cs() {
  if { read -r _u _ < /proc/uptime; } 2>/dev/null; then
    _c=$(( ${_u%.*} * 100 + 1${_u#*.} - 100 ))
  else
    _c=$(( ${_c:-0} + 5 ))
  fi
}
job_state "$d"
if [ "$st" = running ] && [ "$wait_cs" -gt 0 ]; then
  cs; t0=$_c; lk=0
  command -v flock >/dev/null 2>&1 && lk=1
  while :; do
    if [ "$lk" = 1 ]; then
      # returns when the wrapper's lock is released (the job ended) or the wait is over
      left=$((wait_cs - (_c - t0)))
      flock -s -w "$((left / 100)).$((left / 10 % 10))$((left % 10))" 8 8< "$d/run" 2>/dev/null
    else
      sleep 0.05
    fi
    job_state "$d"
    [ "$st" = running ] || break
    cs
    [ $((_c - t0)) -ge "$wait_cs" ] && break
    lk=0  # the lock was free (or unusable) while the job runs: poll instead
  done
fi
osz=0; esz=0
if [ -s "$d/out" ] || [ -s "$d/err" ]; then
  set -- $(stat -c %s "$d/out" "$d/err" 2>/dev/null)
  if [ $# -eq 2 ]; then
    osz=$1; esz=$2
  else
    if [ -f "$d/out" ]; then osz=$(wc -c < "$d/out"); set -- $osz; osz=${1:-0}; fi
    if [ -f "$d/err" ]; then esz=$(wc -c < "$d/err"); set -- $esz; esz=${1:-0}; fi
  fi
fi
oo=$ooff; [ "$oo" -gt "$osz" ] && oo=$osz
eo=$eoff; [ "$eo" -gt "$esz" ] && eo=$esz
on=$((osz - oo)); [ "$on" -gt "$maxb" ] && on=$maxb
en=$((esz - eo)); [ "$en" -gt "$maxb" ] && en=$maxb
printf '__MAGIC__ %s %s %s %s %s %s %s %s %s %s\n' \
  "$st" "${code:--}" "${started:--}" "${fin:--}" "$osz" "$esz" "$oo" "$on" "$eo" "$en"
if [ "$on" -gt 0 ]; then tail -c +$((oo + 1)) "$d/out" | head -c "$on" >&3; fi
if [ "$en" -gt 0 ]; then tail -c +$((eo + 1)) "$d/err" | head -c "$en" >&3; fi
exit 0
"""

_READ_RANGE = r"""
d=$J/$job
[ -d "$d" ] || exit __NO_JOB__
[ -f "$d/$stream" ] || exit 0
tail -c +$((off + 1)) "$d/$stream" | head -c "$length" >&3
"""

_CANCEL = r"""
d=$J/$job
[ -d "$d" ] || exit __NO_JOB__
i=0
while [ ! -s "$d/pid" ] && [ ! -e "$d/exit" ] && [ "$i" -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
job_state "$d"
[ "$st" = running ] || exit 0
[ -n "$pid" ] || exit __NOT_STARTED__
now
printf '%s %s\n' "$sig" "$_t" > "$d/killed.tmp" && mv -f "$d/killed.tmp" "$d/killed" || exit 70
kill -s "$sig" -- "-$pid" 2>/dev/null || kill -s "$sig" "$pid" 2>/dev/null
exit 0
"""

_LIST = r"""
for d in "$J"/j-*; do
  [ -d "$d" ] || continue
  job_state "$d"
  h=
  if [ -r "$d/cmd" ]; then IFS= read -r h < "$d/cmd" || :; fi
  printf '%s %s %s %s %s %s\n' "${d##*/}" "$st" "${code:--}" "${started:--}" "${fin:--}" "$h"
done
exit 0
"""

# stdin is the new file's content.
_WRITE_BOX_ENV = r"""
umask 077
mkdir -p "$HOME/.boxforge" || exit 70
t="$HOME/.boxforge/env.tmp.$$"
cat > "$t" && chmod 600 "$t" && mv -f "$t" "$HOME/.boxforge/env" || { rm -f "$t"; exit 70; }
"""


def _fill(template: str) -> str:
    return (
        template.replace("__NO_JOB__", str(_EXIT_NO_JOB))
        .replace("__NO_CWD__", str(_EXIT_NO_CWD))
        .replace("__CWD_DENIED__", str(_EXIT_CWD_DENIED))
        .replace("__NO_SETSID__", str(_EXIT_NO_SETSID))
        .replace("__NOT_STARTED__", str(_EXIT_NOT_STARTED))
        .replace("__MAGIC__", _STATUS_MAGIC.decode())
    )


# Every operation as a function of one library: stdout carries text only, output bytes go to fd 3.
_OPERATIONS = {
    "launch": _LAUNCH,
    "status": _STATUS,
    "read_range": _READ_RANGE,
    "cancel": _CANCEL,
    "list": _LIST,
    "write_box_env": _WRITE_BOX_ENV,
}
_LIBRARY = _PRELUDE + "".join(f"bf_{name}() {{\n{_fill(body).strip()}\n}}\n" for name, body in _OPERATIONS.items())


def _script(operation: str, *, long: bool = False, **params: str | int) -> BoxScript:
    """The call of ``operation`` with ``params`` set first, as a command line running under /bin/sh
    (whatever the login shell). Params are only ever validated job ids, numbers and fixed words."""
    assigns = "".join(f"{name}={shlex.quote(str(value))}; " for name, value in params.items())
    return BoxScript(ShellCall(_LIBRARY, f"{assigns}bf_{operation}", long=long))


async def _call(
    ex: BoxExec,
    operation: str,
    *,
    stdin: bytes | None = None,
    timeout: float | None = CALL_TIMEOUT_S,
    long: bool = False,
    **params: str | int,
) -> ExecResult:
    log.debug("jobs: %s %s", operation, params.get("job", ""))
    return await ex(_script(operation, long=long, **params), stdin, timeout)


def _check_job_id(job_id: str) -> None:
    if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
        raise UnknownJob(f"unknown job {str(job_id)[:40]!r}: job ids look like 'j-' followed by 12 hex digits")


def _env_file(env: Mapping[str, str]) -> str:
    lines = []
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
            raise InvalidInput(
                f"invalid env name {str(name)[:40]!r}: use up to 128 letters, digits and '_', not starting with a digit"
            )
        if not isinstance(value, str) or "\x00" in value:
            raise InvalidInput(f"env {name} must be a string without NUL bytes")
        lines.append(f"export {name}={shlex.quote(value)}\n")
    return "".join(lines)


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


def _redact(text: str, env: Mapping[str, str]) -> str:
    for value in env.values():
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _failure(what: str, result: ExecResult, env: Mapping[str, str] | None = None) -> JobError:
    detail = result.stderr.decode(errors="replace").strip()
    detail = _redact(detail, env or {})[-500:]
    status = "a signal" if result.exit_status is None else f"exit {result.exit_status}"
    return JobError(f"{what} failed on the box ({status}){': ' + detail if detail else ''}")


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
    if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
        raise InvalidInput(f"invalid job id {str(job_id)[:40]!r}: use new_job_id()")
    if "\x00" in command:
        raise InvalidInput("the command must not contain NUL bytes")
    if not cwd or "\x00" in cwd:
        raise InvalidInput("cwd must be a non-empty path without NUL bytes")
    payload = "".join(
        f"{name}={shlex.quote(value)}\n"
        for name, value in (("cmd", command), ("cwd", cwd), ("envfile", _env_file(env)),
                            ("wrapper", _WRAPPER), ("keep", "keep" if keep_secrets else "forget"))
    )
    result = await _call(ex, "launch", stdin=payload.encode(), job=job_id)
    if result.exit_status == 0:
        return
    if result.exit_status == _EXIT_NO_CWD:
        raise InvalidInput(f"working directory {cwd!r} does not exist on the box; create it or pass another cwd")
    if result.exit_status == _EXIT_CWD_DENIED:
        raise InvalidInput(f"working directory {cwd!r} on the box is not accessible")
    if result.exit_status == _EXIT_NO_SETSID:
        raise JobError("the box has no 'setsid' (util-linux), which detached jobs need; install util-linux")
    if result.exit_status == _EXIT_NOT_STARTED:
        raise JobError(f"job {job_id} did not start on the box in time; check the box's load and disk space")
    raise _failure(f"launching job {job_id}", result, env)


async def status(
    ex: BoxExec,
    job_id: str,
    *,
    stdout_offset: int = 0,
    stderr_offset: int = 0,
    max_bytes: int = 65536,
    wait_s: float = 0.0,
) -> JobStatus:
    """State, exit code, times, stream sizes and up to ``max_bytes`` of each stream after the
    given offsets, in one round trip. With ``wait_s > 0`` and a running job, the box waits up to
    ``wait_s`` for the job to end: it blocks on a shared ``flock`` of the job's ``run`` file, which
    the wrapper holds exclusively while it lives, so the answer comes as soon as the job ends.
    Where ``flock`` is missing, or the lock is free while the job still runs (a job launched
    without it), it re-checks every 50 ms instead. A job dir that is missing reads as ``lost``.
    """
    _check_job_id(job_id)
    if min(stdout_offset, stderr_offset, max_bytes) < 0 or wait_s < 0:
        raise InvalidInput("offsets, max_bytes and wait_s must not be negative")
    result = await _call(
        ex,
        "status",
        timeout=CALL_TIMEOUT_S + wait_s,
        long=wait_s > 0,
        job=job_id,
        ooff=int(stdout_offset),
        eoff=int(stderr_offset),
        maxb=int(max_bytes),
        wait_cs=round(wait_s * 100),
    )
    if result.exit_status != 0:
        raise _failure(f"reading the status of job {job_id}", result)
    return _parse_status(job_id, result.stdout)


def _parse_status(job_id: str, raw: bytes) -> JobStatus:
    header, sep, body = raw.partition(b"\n")
    fields = header.decode(errors="replace").split(" ")
    if not sep or len(fields) != 11 or fields[0] != _STATUS_MAGIC.decode() or fields[1] not in JOB_STATES:
        raise JobError(f"the box answered the status of job {job_id} in an unexpected format; retry")
    try:
        osz, esz, oo, on, eo, en = (int(f) for f in fields[5:])
    except ValueError as exc:
        raise JobError(f"the box answered the status of job {job_id} in an unexpected format; retry") from exc
    if len(body) != on + en:
        raise JobError(f"the output of job {job_id} changed size while it was read (truncated?); retry")
    return JobStatus(
        job_id=job_id,
        state=fields[1],  # type: ignore[arg-type]
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
    if result.exit_status == _EXIT_NO_JOB:
        raise UnknownJob(f"job {job_id} does not exist on the box")
    if result.exit_status != 0:
        raise _failure(f"reading the output of job {job_id}", result)
    return result.stdout


async def cancel(ex: BoxExec, job_id: str, signal: Signal = "TERM") -> None:
    """Mark the job killed and send ``signal`` to its process group. Cancelling a job that
    already finished does nothing; read ``status`` for the outcome."""
    _check_job_id(job_id)
    if signal not in SIGNALS:
        raise InvalidInput(f"signal must be one of {', '.join(SIGNALS)}, not {str(signal)[:20]!r}")
    result = await _call(ex, "cancel", job=job_id, sig=signal)
    if result.exit_status == _EXIT_NO_JOB:
        raise UnknownJob(f"job {job_id} does not exist on the box")
    if result.exit_status == _EXIT_NOT_STARTED:
        raise JobError(f"job {job_id} has not finished starting; retry the cancel")
    if result.exit_status != 0:
        raise _failure(f"cancelling job {job_id}", result)


async def list_jobs(ex: BoxExec) -> list[JobSummary]:
    """Every job on the box, oldest first, with the first line of its command."""
    result = await _call(ex, "list")
    if result.exit_status != 0:
        raise _failure("listing jobs", result)
    jobs = []
    for line in result.stdout.decode(errors="replace").splitlines():
        parts = line.split(" ", 5)
        if len(parts) < 5 or not JOB_ID_RE.fullmatch(parts[0]) or parts[1] not in JOB_STATES:
            continue
        head = parts[5] if len(parts) == 6 else ""
        jobs.append(
            JobSummary(
                job_id=parts[0],
                state=parts[1],  # type: ignore[arg-type]
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
    result = await ex(f'cat "$HOME/.boxforge/jobs/{job_id}/secrets" 2>/dev/null || true', None, CALL_TIMEOUT_S)
    return parse_env_file(result.stdout.decode(errors="replace"))


async def read_box_env(ex: BoxExec) -> dict[str, str]:
    """The box-wide env of ``~/.boxforge/env``; empty if none."""
    result = await ex('cat "$HOME/.boxforge/env" 2>/dev/null || true', None, CALL_TIMEOUT_S)
    return parse_env_file(result.stdout.decode(errors="replace"))


async def write_box_env(ex: BoxExec, env: Mapping[str, str]) -> None:
    """Replace the box-wide env file ``~/.boxforge/env`` (0600) that every job sources first."""
    content = _env_file(env)
    result = await _call(ex, "write_box_env", stdin=content.encode())
    if result.exit_status != 0:
        raise _failure("writing the box env file", result, env)
