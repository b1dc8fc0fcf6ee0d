"""The MCP tools: thin functions that validate (pydantic, through their signatures), call the
Fleet and return schema models with their hints worded as tool calls. A ForgeError becomes a tool
error whose text says what happened and what to do next. Tools never touch providers, SSH or the
store directly."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, ParamSpec, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from providers.base import ProviderError
from server.errors import ForgeError
from server.mcp.hints import error_text, words
from server.schemas import (
    AgentRun,
    BoxPath,
    Branch,
    CancelResult,
    CommandResult,
    DestroyResult,
    DiffResult,
    DownloadResult,
    Encoding,
    FileContent,
    FileList,
    GrepResult,
    JobId,
    JobList,
    JobStatusResult,
    ServerInfo,
    ServerList,
    ServerName,
    Signal,
    TtlSeconds,
    WriteResult,
    render_hints,
)
from server.service import Fleet

P = ParamSpec("P")
R = TypeVar("R")

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
CREATES = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
RUNS = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True)
DESTROYS = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True)
UPDATES = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True)
# Writing a whole file replaces what was there; doing it twice leaves the same file.
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)
# A download with overwrite replaces a file on this machine.
WRITES_LOCAL = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                               open_world_hint=False)

EnvArg = Annotated[
    dict[str, str] | None,
    Field(description="Environment variables (e.g. API keys). Values are secret: written to a 0600 file on the "
                      "box, never echoed, logged or stored"),
]


def fleet_of(ctx: Context) -> Fleet:
    return ctx.request_context.lifespan_context.fleet


def forge_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Word the result's hints as tool calls; turn ForgeError/ProviderError into a ToolError carrying the
    actionable message."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = await fn(*args, **kwargs)
        except (ForgeError, ProviderError) as exc:
            raise ToolError(error_text(exc)) from exc
        render_hints(result, words)
        return result

    return wrapper


async def create_server(
    ctx: Context,
    name: ServerName,
    repo: Annotated[str | None, Field(max_length=2048, description="Git URL (https with optional token, ssh) "
                                      "or, for local boxes, a path on this machine")] = None,
    branch: Annotated[Branch | None, Field(description="Branch to check out; created from the default branch "
                                           "when it does not exist yet")] = None,
    agent: Annotated[str, Field(max_length=32, description="Agent to install: none, claude (Claude Code), codex "
                                "(OpenAI Codex CLI), or custom (give agent_command); run it with run_agent")] = "none",
    agent_install: Annotated[str | None, Field(max_length=4096, description="Shell command that installs the agent, "
                                               "run in the project dir after the clone (e.g. './tools/install-agent.sh'"
                                               "); replaces a preset's npm install. Run once per box")] = None,
    agent_command: Annotated[str | None, Field(max_length=4096, description="Command that runs the agent "
                                               "non-interactively with the prompt on stdin (required for custom; "
                                               "overrides a preset's, e.g. 'claude -p --model opus')")] = None,
    ttl: Annotated[TtlSeconds | None, Field(description="Time to live: '90m', '2h', '1d' or minutes; default 2h. "
                                            "The box is burned at expiry")] = None,
    env: EnvArg = None,
    size: Annotated[str | None, Field(max_length=64, description="Server type (cloud providers)")] = None,
    image: Annotated[str | None, Field(max_length=128, description="OS image (cloud providers)")] = None,
    location: Annotated[str | None, Field(max_length=64, description="Location (cloud providers)")] = None,
    provider: Annotated[str | None, Field(max_length=32, description="local or hetzner; default from "
                                          "BOXFORGE_PROVIDER")] = None,
    ready_timeout_s: Annotated[float | None, Field(gt=0, le=3600, description="How long to wait for the box to "
                                                   "become reachable and bootstrapped")] = None,
    wait: Annotated[bool, Field(description="false: return at once in state 'provisioning' and finish in the "
                                            "background (poll list_servers)")] = True,
) -> ServerInfo:
    """Forge a box: a machine with the repo checked out on `branch`, the agent installed, `env` set, and a TTL.

    Steps (reported as progress): provision, ssh, clone, agent, setup (the repo's .boxforge.yml), ready.
    Any failure burns the box and the error carries the log tail. Returns the box's name, address, project
    dir, base_commit, bootstrap_job_id, expires_at and time left. Next: vm_bash(server=name, command=...),
    run_agent(server=name, prompt=...), or the file tools (vm_read, vm_write, vm_ls, vm_grep). Burn it with
    destroy_server when done (it is burned at expiry anyway).
    """

    async def progress(step: str, index: int, total: int) -> None:
        await ctx.report_progress(index, total, f"{name}: {step}")

    return await fleet_of(ctx).create_server(
        name, ttl_s=ttl, repo=repo, branch=branch, agent=agent, agent_install=agent_install,
        agent_command=agent_command, env=env, size=size, image=image, location=location, provider=provider,
        ready_timeout_s=ready_timeout_s, wait=wait, progress=progress,
    )


async def vm_bash(
    ctx: Context,
    server: ServerName,
    command: Annotated[str, Field(min_length=1, max_length=262144, description="Shell command (bash if present)")],
    background: Annotated[bool, Field(description="Return a job_id at once instead of waiting")] = False,
    timeout_s: Annotated[float | None, Field(gt=0, le=300, description="Foreground wait (default 50s); a command "
                                             "still running then continues as a background job")] = None,
    cwd: Annotated[str | None, Field(max_length=4096, description="Working dir; relative paths resolve in the "
                                     "project dir (the default)")] = None,
    env: EnvArg = None,
    kill_on_timeout: Annotated[bool, Field(description="Kill the command at timeout_s instead of leaving it "
                                           "running")] = False,
    idempotency_key: Annotated[str | None, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$",
                                                 description="Same key on the same server starts the job once and "
                                                 "returns the same job_id (safe retries)")] = None,
) -> CommandResult:
    """Run a shell command on a box, in the project dir by default.

    Foreground: waits up to timeout_s and returns exit code, stdout, stderr (each capped at 64 KiB, keeping
    head and tail), duration. If it is still running then, it keeps running and the result has its job_id.
    background=true returns the job_id at once: poll it with vm_job_status(job_id, wait_s=30).
    """
    return await fleet_of(ctx).run(
        server, command, background=background, timeout_s=timeout_s, cwd=cwd, env=env,
        kill_on_timeout=kill_on_timeout, idempotency_key=idempotency_key,
    )


async def vm_job_status(
    ctx: Context,
    job_id: JobId,
    stdout_offset: Annotated[int, Field(ge=0, description="Byte offset of stdout already read")] = 0,
    stderr_offset: Annotated[int, Field(ge=0, description="Byte offset of stderr already read")] = 0,
    wait_s: Annotated[float, Field(ge=0, le=300, description="Wait up to this long for the job to finish "
                                   "(long-poll)")] = 0,
) -> JobStatusResult:
    """State of a job (running, succeeded, failed, killed, lost), its exit code, and the output after the offsets.

    Pass back the returned stdout_offset/stderr_offset to read only new output. wait_s long-polls: the call
    returns as soon as the job finishes, or after wait_s.
    """
    return await fleet_of(ctx).job_status(job_id, stdout_offset=stdout_offset, stderr_offset=stderr_offset,
                                          wait_s=wait_s)


async def vm_job_list(
    ctx: Context,
    server: Annotated[ServerName | None, Field(description="Only this box; all boxes when omitted")] = None,
) -> JobList:
    """Jobs on one box, or on all boxes, with state and exit code. Use vm_job_status for output."""
    return await fleet_of(ctx).list_jobs(server)


async def vm_job_cancel(
    ctx: Context,
    job_id: JobId,
    signal: Annotated[Signal, Field(description="TERM (default), INT or KILL")] = "TERM",
) -> CancelResult:
    """Signal a job's whole process group. Cancelling a finished job changes nothing and says so."""
    return await fleet_of(ctx).cancel_job(job_id, signal)


async def destroy_server(ctx: Context, name: ServerName) -> DestroyResult:
    """Burn a box: stop it, delete it at the provider, drop its keys. Safe to call twice.

    Save work first (e.g. vm_bash(command='git push')): everything on the box is lost.
    """
    return await fleet_of(ctx).destroy_server(name)


async def list_servers(ctx: Context) -> ServerList:
    """Live boxes with address, state, the create step of boxes still provisioning, expires_at and time left
    (warns when under 10 minutes), plus creates that failed in the last hour with their error."""
    return await fleet_of(ctx).list_servers()


async def extend_server(
    ctx: Context,
    name: ServerName,
    ttl: Annotated[TtlSeconds, Field(description="New time to live from now: '90m', '2h', '1d' or minutes")],
) -> ServerInfo:
    """Push a box's expiry: it will now expire `ttl` from now."""
    return await fleet_of(ctx).extend_server(name, ttl)


async def vm_read(
    ctx: Context,
    server: ServerName,
    path: BoxPath,
    offset: Annotated[int, Field(ge=0, description="Lines to skip (text); pass a result's next_offset to go on")] = 0,
    limit: Annotated[int, Field(ge=1, le=100000, description="Lines to return at most (text)")] = 2000,
    encoding: Annotated[Encoding, Field(description="text (UTF-8 lines, at most 256 KiB per call) or base64 (the "
                                                    "exact bytes of a file up to 1 MiB)")] = "text",
) -> FileContent:
    """Read a file on a box: lines `offset`..`offset+limit` as text, or the whole file as base64 for binaries.

    Relative paths resolve in the project dir. Text files up to 10 MiB; next_offset says where to go on.
    Secret env values in the text are redacted. Bigger files: vm_download, or vm_bash with head/sed.
    """
    return await fleet_of(ctx).read_file(server, path, offset=offset, limit=limit, encoding=encoding)


async def vm_write(
    ctx: Context,
    server: ServerName,
    path: BoxPath,
    content: Annotated[str, Field(max_length=6 * 1024 * 1024, description="The whole new file: text, or base64 "
                                                                          "with encoding='base64'")],
    encoding: Annotated[Encoding, Field(description="text (written as UTF-8) or base64 (decoded to bytes)")] = "text",
    create_dirs: Annotated[bool, Field(description="Create missing parent directories")] = True,
    mode: Annotated[str | None, Field(pattern=r"^0?[0-7]{3}$", description="File mode in octal, e.g. '755' for a "
                                      "script; default: kept for an existing file, 644 for a new one")] = None,
) -> WriteResult:
    """Write a whole file on a box (atomically: readers never see half a file), creating parent dirs.

    Relative paths resolve in the project dir; at most 4 MiB (use vm_upload beyond). Next: vm_bash to use it,
    or vm_diff to see it among the box's changes.
    """
    return await fleet_of(ctx).write_file(server, path, content, encoding=encoding, create_dirs=create_dirs,
                                          mode=int(mode, 8) if mode else None)


async def vm_ls(
    ctx: Context,
    server: ServerName,
    pattern: Annotated[str, Field(min_length=1, max_length=1024, description="Glob relative to path: '*' lists the "
                                  "directory, '**/*.py' every .py file at any depth, 'src/*/test_*.py'")] = "*",
    path: Annotated[BoxPath, Field(description="Directory to list; relative to the project dir")] = ".",
    max_entries: Annotated[int, Field(ge=1, le=5000, description="Entries to return at most")] = 500,
) -> FileList:
    """List files on a box matching a glob: type, size and modification time of each, sorted by path.

    .git and node_modules are skipped unless the pattern names them. Next: vm_read a file, vm_grep for text.
    """
    return await fleet_of(ctx).list_files(server, path, pattern, max_entries=max_entries)


async def vm_grep(
    ctx: Context,
    server: ServerName,
    pattern: Annotated[str, Field(min_length=1, max_length=4096, description="Regular expression (Perl-compatible "
                                  "where the box's grep has -P, else POSIX extended)")],
    path: Annotated[BoxPath, Field(description="File or directory to search; relative to the project dir")] = ".",
    glob: Annotated[str | None, Field(max_length=256, description="Only files whose name matches, e.g. '*.py'")] = None,
    ignore_case: Annotated[bool, Field(description="Case-insensitive match")] = False,
    max_results: Annotated[int, Field(ge=1, le=1000, description="Matching lines to return at most")] = 100,
) -> GrepResult:
    """Search file contents on a box: each matching line with its file and line number.

    Binary files, .git and node_modules are skipped. Next: vm_read(path, offset=line-1) to see the context.
    """
    return await fleet_of(ctx).grep(server, pattern, path, glob=glob, ignore_case=ignore_case,
                                    max_results=max_results)


async def vm_upload(
    ctx: Context,
    server: ServerName,
    local_path: Annotated[str, Field(min_length=1, max_length=4096, description="File on the orchestrator's machine: "
                                     "inside its working directory, the temp dir or BOXFORGE_TRANSFER_ROOTS")],
    remote_path: Annotated[BoxPath, Field(description="Destination on the box; relative to the project dir")],
    create_dirs: Annotated[bool, Field(description="Create missing parent directories on the box")] = True,
    overwrite: Annotated[bool, Field(description="Replace an existing file on the box")] = True,
) -> WriteResult:
    """Copy a file from the orchestrator's machine to a box over SFTP (at most 256 MiB), atomically.

    Directories: tar them first, upload the archive, unpack it with vm_bash. Credential dirs (boxforge's state
    and config, ~/.ssh, ~/.aws, the hcloud config, ~/.netrc) can never be uploaded.
    """
    return await fleet_of(ctx).upload(server, local_path, remote_path, create_dirs=create_dirs, overwrite=overwrite)


async def vm_download(
    ctx: Context,
    server: ServerName,
    remote_path: Annotated[BoxPath, Field(description="File on the box; relative to the project dir")],
    local_path: Annotated[str, Field(min_length=1, max_length=4096, description="Destination on the orchestrator's "
                                     "machine (a file, or an existing directory to put it in): inside its working "
                                     "directory, the temp dir or BOXFORGE_TRANSFER_ROOTS")],
    overwrite: Annotated[bool, Field(description="Replace an existing local file")] = False,
) -> DownloadResult:
    """Copy a file from a box to the orchestrator's machine over SFTP (at most 256 MiB): build artifacts,
    logs, reports. Save what you need before destroy_server.

    Credential dirs (boxforge's state and config, ~/.ssh, ~/.aws, the hcloud config, ~/.netrc) and dotfiles
    directly in the home dir are refused.
    """
    return await fleet_of(ctx).download(server, remote_path, local_path, overwrite=overwrite)


async def vm_diff(
    ctx: Context,
    server: ServerName,
    max_bytes: Annotated[int, Field(ge=0, le=1024 * 1024, description="Cut the unified diff at this many bytes "
                                    "(0: the file list and stat only)")] = 64 * 1024,
) -> DiffResult:
    """What the work on a box changed: the working tree, untracked files included (.gitignore respected), and
    the commits made since, against the base commit recorded when the box was created.

    The reviewer's first look after run_agent: commits, files with lines added/deleted, git diff --stat and the
    diff (capped). Next: vm_read single files, vm_bash('git push') to keep the work, destroy_server to burn it.
    """
    return await fleet_of(ctx).diff(server, max_bytes=max_bytes)


async def run_agent(
    ctx: Context,
    server: ServerName,
    prompt: Annotated[str, Field(min_length=1, max_length=1024 * 1024, description="The task for the agent")],
    args: Annotated[list[str] | None, Field(max_length=64, description="Extra arguments for the agent command, "
                                            "e.g. ['--model', 'opus']")] = None,
    env: EnvArg = None,
    cwd: Annotated[str | None, Field(max_length=4096, description="Working dir; default the project dir")] = None,
    idempotency_key: Annotated[str | None, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$",
                                                 description="Same key on the same server starts the agent once "
                                                 "(safe retries)")] = None,
) -> AgentRun:
    """Run the box's coding agent (chosen at create_server: claude, codex or custom) non-interactively on `prompt`,
    as a background job with the box's env (API keys) sourced. The prompt reaches the agent on stdin, never on a
    command line. Returns the job_id at once.

    Next: vm_job_status(job_id, wait_s=60) until it ends (stdout is the agent's answer), then vm_diff(server) to
    review what it changed.
    """
    return await fleet_of(ctx).run_agent(server, prompt, args=args, env=env, cwd=cwd,
                                         idempotency_key=idempotency_key)


TOOLS: list[tuple[Callable[..., Awaitable[Any]], ToolAnnotations, str]] = [
    (create_server, CREATES, "Create a box"),
    (vm_bash, RUNS, "Run a command on a box"),
    (vm_job_status, READ_ONLY, "Job status and output"),
    (vm_job_list, READ_ONLY, "List jobs"),
    (vm_job_cancel, RUNS, "Cancel a job"),
    (destroy_server, DESTROYS, "Destroy a box"),
    (list_servers, READ_ONLY, "List boxes"),
    (extend_server, UPDATES, "Extend a box's TTL"),
    (vm_read, READ_ONLY, "Read a file on a box"),
    (vm_write, WRITES, "Write a file on a box"),
    (vm_ls, READ_ONLY, "List files on a box"),
    (vm_grep, READ_ONLY, "Search files on a box"),
    (vm_upload, WRITES, "Upload a file to a box"),
    (vm_download, WRITES_LOCAL, "Download a file from a box"),
    (vm_diff, READ_ONLY, "Review a box's changes"),
    (run_agent, RUNS, "Run the box's agent"),
]


def register_tools(mcp: MCPServer[Any]) -> None:
    for fn, hints, title in TOOLS:
        mcp.add_tool(forge_errors(fn), name=fn.__name__, title=title, annotations=hints,
                     structured_output=True)

