"""The MCP tools: thin functions that validate (pydantic, through their signatures), call the
Fleet and return schema models with their hints worded as tool calls. A ForgeError becomes a tool
error whose text says what happened and what to do next. Tools never touch providers, SSH or the
store directly. The file, review and agent tools are in ``file_tools``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp_types import ToolAnnotations
from pydantic import Field

from server.mcp import file_tools, git_tools, port_tools
from server.mcp.common import (
    CREATES,
    DESTROYS,
    READ_ONLY,
    RUNS,
    UPDATES,
    WRITES,
    WRITES_LOCAL,
    EnvArg,
    fleet_of,
    forge_errors,
)
from server.mcp.surface import SurfaceTool, make_tool
from server.schemas import (
    Branch,
    CancelResult,
    CommandResult,
    DestroyResult,
    JobId,
    JobList,
    JobStatusResult,
    ServerInfo,
    ServerList,
    ServerName,
    Signal,
    TtlSeconds,
)


async def create_server(
    ctx: Context,
    name: ServerName,
    repo: Annotated[str | None, Field(max_length=2048, description="Git URL or a path on the orchestrator's "
                                      "machine; the orchestrator reads it with its own git credentials and seeds "
                                      "the box (the box never gets a token)")] = None,
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
    size: Annotated[str | None, Field(max_length=64, description="small, medium or large on any provider, or the "
                                      "provider's own (a Hetzner server type, e.g. cx33); default: the cheapest "
                                      "that fits. The result's size says what was made")] = None,
    image: Annotated[str | None, Field(max_length=128, description="OS image (cloud providers)")] = None,
    location: Annotated[str | None, Field(max_length=64, description="Location (cloud providers)")] = None,
    egress: Annotated[Literal["nat", "none"] | None, Field(
        description="Outbound internet for the box: 'nat' or 'none' (local boxes; default from "
                    "BOXFORGE_LOCAL_EGRESS, nat)")] = None,
    provider: Annotated[str | None, Field(max_length=32, description="local or hetzner; default from "
                                          "BOXFORGE_PROVIDER")] = None,
    ready_timeout_s: Annotated[float | None, Field(gt=0, le=3600, description="How long to wait for the box to "
                                                   "become reachable and bootstrapped")] = None,
    wait: Annotated[bool, Field(description="false: return at once in state 'provisioning' and finish in the "
                                            "background (poll list_servers)")] = True,
    repo_via: Annotated[Literal["orchestrator", "box"], Field(
        description="'box': clone a public URL on the box itself (large repos on cloud boxes); never with a "
                    "token")] = "orchestrator",
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
        ready_timeout_s=ready_timeout_s, wait=wait, progress=progress, repo_via=repo_via, egress=egress,
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


async def destroy_server(
    ctx: Context,
    name: ServerName,
    harvest: Annotated[bool, Field(description="false: burn without bringing the box's work home first")] = True,
) -> DestroyResult:
    """Burn a box: first its branch (commits and uncommitted changes) comes home as refs/boxforge/<box>/<branch>
    (the `harvest` field says where), then the box is deleted at the provider and its keys dropped. A box whose
    work cannot be brought home is not burned unless harvest=false. Safe to call twice."""
    return await fleet_of(ctx).destroy_server(name, harvest=harvest)


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

TOOLS: list[tuple[Callable[..., Awaitable[Any]], ToolAnnotations, str]] = [
    (create_server, CREATES, "Create a box"),
    (vm_bash, RUNS, "Run a command on a box"),
    (vm_job_status, READ_ONLY, "Job status and output"),
    (vm_job_list, READ_ONLY, "List jobs"),
    (vm_job_cancel, RUNS, "Cancel a job"),
    (destroy_server, DESTROYS, "Destroy a box"),
    (list_servers, READ_ONLY, "List boxes"),
    (extend_server, UPDATES, "Extend a box's TTL"),
    (file_tools.vm_read, READ_ONLY, "Read a file on a box"),
    (file_tools.vm_write, WRITES, "Write a file on a box"),
    (file_tools.vm_ls, READ_ONLY, "List files on a box"),
    (file_tools.vm_grep, READ_ONLY, "Search files on a box"),
    (file_tools.vm_upload, WRITES, "Upload a file to a box"),
    (file_tools.vm_download, WRITES_LOCAL, "Download a file from a box"),
    (file_tools.vm_diff, READ_ONLY, "Review a box's changes"),
    (file_tools.run_agent, RUNS, "Run the box's agent"),
    (git_tools.vm_fetch, WRITES_LOCAL, "Bring a box's work home"),
    (git_tools.vm_compare, READ_ONLY, "Compare boxes before merging"),
    (git_tools.vm_push, RUNS, "Push a box's branch"),
    (port_tools.vm_forward, CREATES, "Forward a box's port"),
    (port_tools.vm_forward_list, READ_ONLY, "List port forwards"),
    (port_tools.vm_forward_close, DESTROYS, "Close a port forward"),
]


def build_tools() -> list[SurfaceTool]:
    """Every tool, strict and compact, its results' hints worded as tool calls."""
    return [make_tool(forge_errors(fn), title=title, annotations=hints) for fn, hints, title in TOOLS]

