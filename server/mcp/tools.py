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

from server.mcp import file_tools, git_tools, plan_tools, port_tools
from server.mcp.common import (
    CREATES,
    DESTROYS,
    READ_ONLY,
    RUNS,
    UPDATES,
    WRITES,
    WRITES_LOCAL,
    AgentName,
    CwdArg,
    EnvArg,
    EnvFromArg,
    IdempotencyKey,
    ProviderName,
    WaitArg,
    fleet_of,
    forge_errors,
)
from server.mcp.surface import SurfaceTool, make_tool
from server.schemas import (
    Branch,
    CancelResult,
    CommandResult,
    DestroyResult,
    ForkResult,
    JobId,
    JobList,
    JobStatusResult,
    JobWaitResult,
    ServerInfo,
    ServerList,
    ServerName,
    Signal,
    TtlSeconds,
)


async def create_server(
    ctx: Context,
    name: ServerName,
    repo: Annotated[str | None, Field(max_length=2048, description="Git URL or local path")] = None,
    branch: Annotated[Branch | None, Field(description="Created if missing")] = None,
    agent: Annotated[AgentName, Field(description="custom needs agent_command")] = "none",
    agent_version: Annotated[str | None, Field(max_length=64, pattern=r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$",
                                               description="Exact npm release; default latest")] = None,
    agent_install: Annotated[str | None, Field(max_length=4096)] = None,
    agent_command: Annotated[str | None, Field(max_length=4096, description="Prompt on stdin")] = None,
    ttl: Annotated[TtlSeconds | None, Field(description="'90m', '2h', '1d' or minutes; default 2h")] = None,
    env: EnvArg = None,
    env_from: EnvFromArg = None,
    size: Annotated[str | None, Field(max_length=64, description="small, medium, large or the provider's")] = None,
    image: Annotated[str | None, Field(max_length=128)] = None,
    location: Annotated[str | None, Field(max_length=64)] = None,
    egress: Annotated[Literal["nat", "none"] | None, Field(description="Outbound internet (local boxes)")] = None,
    provider: Annotated[ProviderName | None, Field()] = None,
    ready_timeout_s: Annotated[float | None, Field(gt=0, le=3600)] = None,
    wait: Annotated[bool, Field(description="false: return at once")] = True,
    repo_via: Annotated[Literal["orchestrator", "box"], Field(
        description="box: clone on the box")] = "orchestrator",
) -> ServerInfo:
    """Forge a box: repo on branch, agent installed, burned at its TTL. Next: vm_bash, run_agent;
    destroy_server when done."""

    async def progress(step: str, index: int, total: int) -> None:
        await ctx.report_progress(index, total, f"{name}: {step}")

    return await fleet_of(ctx).create_server(
        name, ttl_s=ttl, repo=repo, branch=branch, agent=agent, agent_install=agent_install,
        agent_command=agent_command, env=env, env_from=env_from, size=size, image=image, location=location,
        provider=provider, ready_timeout_s=ready_timeout_s, wait=wait, progress=progress, repo_via=repo_via,
        egress=egress, agent_version=agent_version,
    )


async def fork_server(
    ctx: Context,
    source: ServerName,
    names: Annotated[list[ServerName], Field(min_length=1, max_length=10)],
    branches: Annotated[list[Branch] | None, Field(description="One per name; default <branch>-<name>")] = None,
) -> ForkResult:
    """Copy a ready box's files into new boxes (own keys, default TTL, branch); jobs are not copied."""
    return await fleet_of(ctx).fork_server(source, names, branches=branches)


async def vm_bash(
    ctx: Context,
    server: ServerName,
    command: Annotated[str, Field(min_length=1, max_length=262144)],
    background: Annotated[bool, Field(description="Return a job_id at once")] = False,
    timeout_s: Annotated[float | None, Field(gt=0, le=300, description="Default 50; then it runs on as a job")] = None,
    cwd: CwdArg = None,
    env: EnvArg = None,
    env_from: EnvFromArg = None,
    kill_on_timeout: bool = False,
    idempotency_key: IdempotencyKey = None,
) -> CommandResult:
    """Run a shell command in the project dir: exit code, stdout, stderr (64 KiB each). Past timeout_s, or
    background: a job for vm_job_status / vm_job_wait."""
    return await fleet_of(ctx).run(
        server, command, background=background, timeout_s=timeout_s, cwd=cwd, env=env, env_from=env_from,
        kill_on_timeout=kill_on_timeout, idempotency_key=idempotency_key,
    )


async def vm_job_status(
    ctx: Context,
    job_id: JobId,
    stdout_offset: Annotated[int, Field(ge=0)] = 0,
    stderr_offset: Annotated[int, Field(ge=0)] = 0,
    wait_s: WaitArg = 0,
) -> JobStatusResult:
    """A job's state, exit code and output after the offsets (pass back the returned ones). wait_s: long-poll."""
    return await fleet_of(ctx).job_status(job_id, stdout_offset=stdout_offset, stderr_offset=stderr_offset,
                                          wait_s=wait_s)


async def vm_job_wait(
    ctx: Context,
    job_ids: Annotated[list[JobId], Field(min_length=1, max_length=100)],
    wait_s: WaitArg = 60,
) -> JobWaitResult:
    """Return when any of the jobs ends: each one's state and output sizes. Read the ended with vm_job_status,
    wait on the rest."""
    return await fleet_of(ctx).wait_jobs(job_ids, wait_s)


async def vm_job_list(
    ctx: Context,
    server: ServerName | None = None,
) -> JobList:
    """Jobs with state and exit code."""
    return await fleet_of(ctx).list_jobs(server)


async def vm_job_cancel(ctx: Context, job_id: JobId, signal: Signal = "TERM") -> CancelResult:
    """Signal a job's process group."""
    return await fleet_of(ctx).cancel_job(job_id, signal)


async def destroy_server(
    ctx: Context,
    name: ServerName,
    harvest: Annotated[bool, Field()] = True,
) -> DestroyResult:
    """Burn a box after bringing its work home (refs/boxforge/<box>/<branch>); refused if that fails, unless
    harvest=false."""
    return await fleet_of(ctx).destroy_server(name, harvest=harvest)


async def list_servers(ctx: Context) -> ServerList:
    """Live boxes (state, address, time left) and creates failed in the last hour."""
    return await fleet_of(ctx).list_servers()


async def extend_server(
    ctx: Context,
    name: ServerName,
    ttl: Annotated[TtlSeconds, Field(description="From now: '90m', '2h', '1d' or minutes")],
) -> ServerInfo:
    """Set a box's expiry to ttl from now."""
    return await fleet_of(ctx).extend_server(name, ttl)

TOOLS: list[tuple[Callable[..., Awaitable[Any]], ToolAnnotations, str]] = [
    (create_server, CREATES, "Create a box"),
    (fork_server, CREATES, "Fork a box"),
    (vm_bash, RUNS, "Run a command on a box"),
    (vm_job_status, READ_ONLY, "Job status and output"),
    (vm_job_wait, READ_ONLY, "Wait for any of several jobs"),
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
    (plan_tools.plan_start, CREATES, "Start a plan of tasks on a pool of boxes"),
    (plan_tools.plan_status, READ_ONLY, "A plan's board"),
    (plan_tools.plan_cancel, DESTROYS, "Cancel a plan"),
    (port_tools.vm_forward, CREATES, "Forward a box's port"),
]


def build_tools() -> list[SurfaceTool]:
    """Every tool, strict and compact, its results' hints worded as tool calls."""
    return [make_tool(forge_errors(fn), title=title, annotations=hints, shared=getattr(fn, "shared_defs", None))
            for fn, hints, title in TOOLS]

