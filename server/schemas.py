"""Pydantic models of every tool's input and output.

Inputs are validated before anything touches a shell or a cloud: names are RFC 1123 labels,
TTLs are parsed here, job ids have one shape. Outputs are compact and say what to do next.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, PrivateAttr, WithJsonSchema

from server.domain.cost import cost_so_far
from server.domain.durations import TTL_JSON_SCHEMA, WARN_LEFT_S, format_duration, iso, parse_ttl, seconds_left
from server.domain.hints import Hint, HintKind
from server.domain.inputs import ENV_NAME_RE, PATH_PATTERN, check_path_text
from server.domain.names import BRANCH_RE, JOB_ID_RE, NAME_RE, check_branch, check_job_id, check_name

__all__ = [  # the domain rules the models use, importable from here as before
    "ENV_NAME_RE", "JOB_ID_RE", "NAME_RE", "check_name", "cost_so_far", "format_duration", "iso", "parse_ttl",
]

# Patterns go into the schema only (json_schema_extra): the validators give the worded error.
ServerName = Annotated[
    str,
    Field(json_schema_extra={"pattern": NAME_RE.pattern}),
    AfterValidator(check_name),
]
JobId = Annotated[
    str,
    Field(json_schema_extra={"pattern": JOB_ID_RE.pattern}),
    AfterValidator(check_job_id),
]
TtlSeconds = Annotated[
    int,
    BeforeValidator(parse_ttl),
    # what parse_ttl accepts, not the int it returns: a strict client sends '30m' as it is
    WithJsonSchema(TTL_JSON_SCHEMA),
]
Branch = Annotated[str, Field(json_schema_extra={"pattern": BRANCH_RE.pattern}), AfterValidator(check_branch)]


# Outputs


class Hinted(BaseModel):
    """A result whose next-step fields (``hint``, ``warning``, ...) hold ``Hint`` values until a surface
    renders them in its own words (``render_hints``)."""

    _hints: dict[str, tuple[str, Hint]] = PrivateAttr(default_factory=dict)

    def suggest(self, field: str, hint: Hint | None, prefix: str = "") -> None:
        """Fill ``field`` with ``prefix`` + the surface's wording of ``hint`` when rendered."""
        if hint is not None:
            self._hints[field] = (prefix, hint)

    def say(self, field: str, text: str | None) -> None:
        """Fill ``field`` with surface-neutral ``text``, replacing any hint suggested for it."""
        self._hints.pop(field, None)
        setattr(self, field, text)


def render_hints(result: object, words: Callable[[Hint], str]) -> None:
    """Fill every suggested field of ``result`` (and of the results it contains) with ``words(hint)``."""
    if isinstance(result, list):
        for item in result:
            render_hints(item, words)
        return
    if not isinstance(result, BaseModel):
        return
    if isinstance(result, Hinted):
        for field, (prefix, hint) in result._hints.items():
            setattr(result, field, prefix + words(hint))
    for value in result.__dict__.values():
        render_hints(value, words)


class ForwardInfo(BaseModel):
    server: str
    port: int = Field(description="The box's port")
    local_host: str
    local_port: int
    url: str = Field(description="Where to reach it on the orchestrator's machine (http:// for web servers; "
                                 "ws:// and plain TCP work on the same host and port)")
    created_at: float
    listening: bool = Field(True, description="Whether a connect to the box's port succeeded when it was last "
                                              "checked; false: nothing listens there yet")
    service: str | None = Field(None, description="The .boxforge.yml service this forward was opened for")


class ServerInfo(Hinted):
    """One box."""

    name: str = Field(description="Box name; pass it as `server` to vm_bash")
    provider: str = Field(description="Where the box runs (local, hetzner)")
    state: str = Field(description="provisioning | ready | destroyed | failed")
    step: str | None = Field(None, description="Create step while provisioning: provision, ssh, clone, agent, "
                                                "setup, ready")
    address: str | None = Field(None, description="user@host:port of the box's SSH server")
    project_dir: str | None = Field(None, description="Absolute path of the checkout; vm_bash runs there by default")
    repo: str | None = Field(None, description="Repository the box cloned (credentials stripped)")
    branch: str | None = Field(None, description="Branch checked out")
    base_commit: str | None = Field(None, description="Commit the branch started from; vm_diff compares with it")
    agent: str | None = Field(None, description="Agent installed on the box (none, claude, codex, custom); "
                                                "run it with run_agent")
    agent_version: str | None = Field(None, exclude_if=lambda v: v is None,
                                      description="Release of the npm agent (claude, codex) installed and checked "
                                                  "to run (its --version)")
    node_version: str | None = Field(None, exclude_if=lambda v: v is None,
                                     description="Version of the Node.js the agent runs on")
    node_source: str | None = Field(None, exclude_if=lambda v: v is None,
                                    description="Where that Node came from: box (the box's own, new enough) or npm "
                                                "(the npm registry's node package, installed because the box's was "
                                                "missing or too old for the agent's engines)")
    bootstrap_job_id: str | None = Field(None, description="Job that cloned the repo and installed the agent; "
                                                           "read its log with vm_job_status")
    setup_job_id: str | None = Field(None, description="Job that ran the setup commands of the repo's .boxforge.yml")
    services: dict[str, str] | None = Field(None, description="Services from .boxforge.yml: name -> job_id of the "
                                                              "background job running it")
    from_pool: str | None = Field(None, exclude_if=lambda v: v is None,
                                  description="The warm pool profile this box was taken from (only the repo was seeded)")
    forwards: list[ForwardInfo] | None = Field(None, exclude_if=lambda v: not v,
                                               description="Ports of .boxforge.yml services forwarded to this machine")
    created_at: str | None = Field(None, description="UTC ISO time of creation")
    expires_at: str | None = Field(None, description="UTC ISO time at which the box is burned")
    time_left: str | None = Field(None, description="Time until expiry, e.g. '29m'")
    time_left_s: int | None = Field(None, description="Seconds until expiry")
    warning: str | None = Field(None, description="Something to act on, e.g. expiry is near")
    error: str | None = Field(None, description="Why the box failed, when it did")
    hint: str | None = Field(None, description="What to do next")
    reachable: bool | None = Field(None, description="Whether the box answered over SSH just now")
    last_seen: str | None = Field(None, description="UTC ISO time the box last answered, when it is unreachable")
    ip: str | None = Field(None, description="Public IP of a cloud box")
    price_per_hour: float | None = Field(None, description="Gross hourly price of a cloud box (EUR on Hetzner)")
    size: str | None = Field(None, exclude_if=lambda v: v is None,
                             description="What the provider made (a server type, a local size preset)")
    warnings: list[str] | None = Field(None, exclude_if=lambda v: not v,
                                       description="Facts about the box to know, e.g. that it is not isolated")
    auto_extended: str | None = Field(None, exclude_if=lambda v: v is None,
                                      description="The expiry was pushed automatically (to when, and for which "
                                                  "running job), up to max_ttl")
    cost_so_far: float | None = Field(
        None, description="Estimated cost of a cloud box so far: hours started x hourly price, capped at the monthly "
                          "price (Hetzner bills per started hour)",
    )


class ServerList(BaseModel):
    servers: list[ServerInfo] = Field(description="Live boxes of this owner")
    count: int = Field(description="Number of live boxes")
    failed: list[ServerInfo] = Field(default_factory=list, description="Creates that failed in the last hour (the "
                                     "boxes were burned), with the error: how a create_server(wait=false) that did "
                                     "not make it shows")


class CommandResult(Hinted):
    """Result of vm_bash."""

    server: str = Field(description="Box the command ran on")
    job_id: str = Field(description="Job id; poll with vm_job_status if state is running")
    state: str = Field(description="running | succeeded | failed | killed | lost")
    exit_code: int | None = Field(None, description="Exit code when finished")
    stdout: str = Field("", description="Standard output (UTF-8, invalid bytes replaced)")
    stderr: str = Field("", description="Standard error (UTF-8, invalid bytes replaced)")
    stdout_dropped_bytes: int = Field(0, description="Bytes cut from the middle of stdout to respect the cap")
    stderr_dropped_bytes: int = Field(0, description="Bytes cut from the middle of stderr to respect the cap")
    stdout_offset: int = Field(0, description="Byte offset to pass to vm_job_status to read further stdout")
    stderr_offset: int = Field(0, description="Byte offset to pass to vm_job_status to read further stderr")
    duration_s: float | None = Field(None, description="Seconds the command ran (so far)")
    hint: str | None = Field(None, description="What to do next")
    warning: str | None = Field(None, description="Something to act on, e.g. the box expires soon")


class JobStatusResult(Hinted):
    """Result of vm_job_status."""

    job_id: str
    server: str = Field(description="Box the job runs on")
    state: str = Field(description="running | succeeded | failed | killed | lost")
    exit_code: int | None = Field(None, description="Exit code when finished")
    stdout: str = Field("", description="Stdout after the given stdout_offset (UTF-8, invalid bytes replaced)")
    stderr: str = Field("", description="Stderr after the given stderr_offset")
    stdout_offset: int = Field(description="Next stdout offset: pass it back to read only new output")
    stderr_offset: int = Field(description="Next stderr offset: pass it back to read only new output")
    stdout_size: int = Field(description="Total stdout bytes so far")
    stderr_size: int = Field(description="Total stderr bytes so far")
    more: bool = Field(False, description="More output is already available beyond the returned chunks")
    binary: bool = Field(False, description="The output held bytes that are not UTF-8 text")
    duration_s: float | None = Field(None, description="Seconds the job ran (so far)")
    box_reachable: bool = Field(True, description="False when the box did not answer; state is then the last known")
    last_seen: str | None = Field(None, description="UTC ISO time the box last answered, when it is unreachable")
    hint: str | None = Field(None, description="What to do next")
    warning: str | None = None


class JobBrief(BaseModel):
    """One job in vm_job_wait: its state and how much output it has, no output."""

    job_id: str
    server: str
    state: str
    exit_code: int | None = None
    stdout_size: int | None = Field(None, description="Stdout bytes so far (read from your offset with vm_job_status)")
    stderr_size: int | None = None
    box_reachable: bool = True


class JobWaitResult(Hinted):
    """Result of vm_job_wait."""

    jobs: list[JobBrief]
    ended: list[str] = Field(description="Ids of the jobs that are no longer running")
    running: list[str] = Field(description="Ids still running")
    hint: str | None = None


class JobSummary(BaseModel):
    job_id: str
    server: str
    state: str
    exit_code: int | None = None
    command: str = Field(description="Start of the command")
    started_at: str | None = None
    duration_s: float | None = None


class JobList(BaseModel):
    jobs: list[JobSummary]
    count: int
    unreachable: list[str] = Field(default_factory=list, description="Boxes whose jobs could not be read now")


class ForkFailure(BaseModel):
    name: str
    error: str = Field(description="Why this fork failed (it was burned)")


class ForkResult(BaseModel):
    """Result of fork_server."""

    source: str
    forks: list[ServerInfo] = Field(description="The new boxes, ready, each on its own branch")
    failed: list[ForkFailure] = Field(default_factory=list, description="Forks that failed and were burned")
    jobs_not_copied: list[str] = Field(default_factory=list, description="Jobs running on the source: the forks "
                                       "have their files but not their processes (start them again there)")
    note: str = Field(description="What a fork copies and what it does not")


class PoolProfileStatus(BaseModel):
    profile: str
    provider: str
    count: int = Field(description="Boxes to keep ready")
    ready: int = Field(description="Boxes ready to be taken")
    starting: int = Field(description="Boxes on their way")
    boxes: list[str] = Field(description="Names of the waiting boxes")
    off: str | None = Field(None, description="Why this pool does not run (a cloud pool without its ceiling)")


class PoolStatus(BaseModel):
    profiles: list[PoolProfileStatus]


class DestroyResult(BaseModel):
    name: str
    destroyed: bool = Field(description="True if a box was burned by this call, False if it was already gone")
    message: str
    harvested: bool | None = Field(None, description="Whether the box's work was brought home before the burn "
                                                     "(None: nothing to harvest, or harvest=false)")
    harvest: str | None = Field(None, description="What came home (the ref or bundle) or why nothing did")


class CancelResult(Hinted):
    job_id: str
    server: str
    state: str = Field(description="State after the signal")
    exit_code: int | None = None
    message: str


Signal = Literal["TERM", "KILL", "INT"]  # the values of server.domain.states.Signal (a test keeps them equal)


def time_left(expires_at: float | None, now: float | None = None,
              warn_s: int = WARN_LEFT_S) -> tuple[str | None, int | None, Hint | None]:
    """(human time left, seconds left, the warning to give) for an expiry."""
    if expires_at is None:
        return None, None, None
    left = seconds_left(expires_at, time.time() if now is None else now)
    warning = Hint(HintKind.EXPIRES_SOON, left_s=left) if left <= warn_s else None
    return format_duration(left), max(left, 0), warning


# File tools, review and agents

BoxPath = Annotated[
    str,
    Field(min_length=1, max_length=4096, json_schema_extra={"pattern": PATH_PATTERN}),
    AfterValidator(check_path_text),
]
Encoding = Literal["text", "base64"]


class FileContent(BaseModel):
    """Result of vm_read."""

    server: str
    path: str = Field(description="Absolute path read")
    size: int = Field(description="File size in bytes")
    encoding: Encoding = Field(description="text: UTF-8 lines; base64: the exact bytes of the whole file")
    content: str = Field(description="The lines read (text) or the file's bytes in base64")
    offset: int = Field(0, description="Lines skipped before the content (text)")
    lines: int = Field(0, description="Number of lines in content (text)")
    total_lines: int | None = Field(None, description="Lines in the whole file (text)")
    next_offset: int | None = Field(None, description="Pass as offset to read on; null at the end of the file")
    truncated: bool = Field(False, description="A line longer than the output cap was cut")
    binary: bool = Field(False, description="The bytes are not clean UTF-8 text (invalid bytes were replaced); use "
                                            "encoding='base64' for the exact bytes")
    hint: str | None = Field(None, description="What to do next")


class WriteResult(BaseModel):
    """Result of vm_write and vm_upload."""

    server: str
    path: str = Field(description="Absolute path written on the box")
    bytes_written: int
    created: bool = Field(description="True if the file did not exist before")
    hint: str | None = None


class FileEntry(BaseModel):
    path: str = Field(description="Path relative to the listed directory")
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    modified: str | None = Field(None, description="UTC ISO modification time")


class FileList(BaseModel):
    """Result of vm_ls."""

    server: str
    path: str = Field(description="Absolute directory listed")
    pattern: str
    entries: list[FileEntry]
    count: int
    truncated: bool = Field(False, description="More entries matched than were returned: narrow the pattern")
    hint: str | None = None


class GrepMatch(BaseModel):
    path: str = Field(description="File, relative to the searched path")
    line: int = Field(description="1-based line number")
    text: str = Field(description="The matching line (cut at 500 characters)")


class GrepResult(BaseModel):
    """Result of vm_grep."""

    server: str
    path: str = Field(description="Absolute path searched")
    pattern: str
    regex_flavor: Literal["pcre", "posix-extended"] = Field(description="Regex dialect the box's grep used")
    matches: list[GrepMatch]
    count: int
    truncated: bool = Field(False, description="More matches exist than were returned: narrow the search")
    hint: str | None = None


class DownloadResult(BaseModel):
    """Result of vm_download."""

    server: str
    remote_path: str = Field(description="Absolute path read on the box")
    local_path: str = Field(description="Absolute path written on the orchestrator")
    bytes: int


class DiffFile(BaseModel):
    path: str
    status: str = Field(description="A added, M modified, D deleted, T type changed")
    added: int | None = Field(None, description="Lines added (null for binary files)")
    deleted: int | None = Field(None, description="Lines deleted (null for binary files)")
    untracked: bool = Field(False, description="The file is new and not yet added to git")


class DiffResult(Hinted):
    """Result of vm_diff: the working tree (untracked files included) against the base commit."""

    server: str
    base_commit: str = Field(description="Commit the box started from")
    head_commit: str | None = Field(None, description="Current HEAD on the box")
    branch: str | None = None
    commits: list[str] = Field(default_factory=list, description="Commits made on the box since the base, newest "
                                                                 "first (at most 50), as 'sha subject'")
    files: list[DiffFile] = Field(default_factory=list, description="Changed files")
    stat: str = Field("", description="git diff --stat of the same comparison")
    diff: str = Field("", description="The unified diff, cut at max_bytes")
    diff_bytes: int = Field(0, description="Size of the whole diff")
    truncated: bool = Field(False, description="The diff was cut: read single files with vm_read, or raise max_bytes")
    hint: str | None = None


class AgentRun(Hinted):
    """Result of run_agent."""

    server: str
    job_id: str = Field(description="The agent's background job: poll it with vm_job_status")
    agent: str
    state: str
    prompt_path: str = Field(description="Where the prompt was stored on the box (0600)")
    hint: str


# Git through the orchestrator

class CommitLine(BaseModel):
    id: str = Field(description="Short commit id")
    subject: str


class FetchResult(Hinted):
    """The box's branch brought home into the user's repo."""

    server: str
    repo: str = Field(description="The repo the work came home to (the user's repo, or boxforge's cache of a URL)")
    ref: str = Field(description="refs/boxforge/<box>/<branch>: merge, diff or check it out from there")
    tip: str = Field(description="Commit the ref points at (the extra commit of uncommitted changes, if any)")
    head: str = Field(description="The box's HEAD commit")
    branch: str | None = Field(None, description="The box's branch (None: detached HEAD)")
    base_commit: str | None = None
    uncommitted_commit: str | None = Field(None, description="The extra commit holding uncommitted and untracked "
                                                             "changes (marked 'boxforge: uncommitted changes')")
    commits: list[CommitLine] = Field(default_factory=list, description="Commits ahead of base, newest first")
    new_commits: list[CommitLine] = Field(default_factory=list, description="Commits new since the last fetch")
    files: list[str] = Field(default_factory=list, description="Files touched since base")
    diffstat: str = ""
    rewritten: bool = Field(False, description="The box's branch was force-moved: the ref was reset, not advanced")
    local_branch: str | None = Field(None, description="Local branch updated to the tip, when asked")
    skipped_files: list[str] = Field(default_factory=list, description="Untracked or modified files over the size "
                                                                       "cap, left out of the uncommitted commit")
    time_left: str | None = None
    warning: str | None = None
    hint: str | None = None


class CompareBox(BaseModel):
    server: str
    branch: str | None = None
    base_commit: str | None = None
    ahead: int = Field(0, description="Commits ahead of base on the box")
    commits: list[CommitLine] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list, description="Files touched since base, uncommitted included")
    diffstat: str = ""
    uncommitted: bool = False
    last_job: str | None = Field(None, description="The last job's id and end state, e.g. 'j-... succeeded (exit 0)'")
    time_left: str | None = None
    error: str | None = Field(None, description="Why this box could not be compared")


class Overlap(BaseModel):
    servers: list[str] = Field(description="Two boxes that touch the same files")
    files: list[str]


class CompareResult(Hinted):
    boxes: list[CompareBox]
    overlaps: list[Overlap] = Field(default_factory=list, description="Pairs of boxes touching the same files: where a "
                                                                      "merge will conflict")
    hint: str | None = None


class PushResult(Hinted):
    server: str
    remote: str = Field(description="The remote pushed to (credentials never shown)")
    branch: str = Field(description="Branch on the remote")
    commit: str
    message: str
    hint: str | None = None


class ForwardList(BaseModel):
    forwards: list[ForwardInfo] = Field(description="The forwards opened, listed or closed")
