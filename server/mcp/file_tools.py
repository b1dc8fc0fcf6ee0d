"""The MCP tools on a box's files, its review diff and its agent (thin: validate, call the Fleet)."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from pydantic import Field

from server.mcp.common import CwdArg, EnvArg, EnvFromArg, IdempotencyKey, fleet_of
from server.schemas import (
    AgentRun,
    BoxPath,
    DiffResult,
    DownloadResult,
    Encoding,
    FileContent,
    FileList,
    GrepResult,
    ServerName,
    WriteResult,
)


async def vm_read(
    ctx: Context,
    server: ServerName,
    path: BoxPath,
    offset: Annotated[int, Field(ge=0, description="Lines to skip (next_offset)")] = 0,
    limit: Annotated[int, Field(ge=1, le=100000)] = 2000,
    encoding: Annotated[Encoding, Field(description="base64: whole file, 1 MiB")] = "text",
) -> FileContent:
    """Read lines of a file on a box, or a binary as base64."""
    return await fleet_of(ctx).read_file(server, path, offset=offset, limit=limit, encoding=encoding)


async def vm_write(
    ctx: Context,
    server: ServerName,
    path: BoxPath,
    content: Annotated[str, Field(max_length=6 * 1024 * 1024, description="The whole file")],
    encoding: Encoding = "text",
    create_dirs: bool = True,
    mode: Annotated[str | None, Field(pattern=r"^0?[0-7]{3}$", description="Octal, e.g. '755'")] = None,
) -> WriteResult:
    """Write a whole file on a box (4 MiB max; beyond: vm_upload)."""
    return await fleet_of(ctx).write_file(server, path, content, encoding=encoding, create_dirs=create_dirs,
                                          mode=int(mode, 8) if mode else None)


async def vm_ls(
    ctx: Context,
    server: ServerName,
    pattern: Annotated[str, Field(min_length=1, max_length=1024, description="Glob, e.g. '**/*.py'")] = "*",
    path: BoxPath = ".",
    max_entries: Annotated[int, Field(ge=1, le=5000)] = 500,
) -> FileList:
    """List files matching a glob, with type, size and mtime."""
    return await fleet_of(ctx).list_files(server, path, pattern, max_entries=max_entries)


async def vm_grep(
    ctx: Context,
    server: ServerName,
    pattern: Annotated[str, Field(min_length=1, max_length=4096, description="Regex")],
    path: BoxPath = ".",
    glob: Annotated[str | None, Field(max_length=256, description="File names, e.g. '*.py'")] = None,
    ignore_case: bool = False,
    max_results: Annotated[int, Field(ge=1, le=1000)] = 100,
) -> GrepResult:
    """Search files on a box: matching lines, file and line number."""
    return await fleet_of(ctx).grep(server, pattern, path, glob=glob, ignore_case=ignore_case,
                                    max_results=max_results)


LocalPath = Annotated[str, Field(min_length=1, max_length=4096, description="Under cwd, temp dir or "
                                 "BOXFORGE_TRANSFER_ROOTS")]


async def vm_upload(
    ctx: Context,
    server: ServerName,
    local_path: LocalPath,
    remote_path: BoxPath,
    create_dirs: bool = True,
    overwrite: bool = True,
) -> WriteResult:
    """Copy a file (256 MiB max) from this machine to a box."""
    return await fleet_of(ctx).upload(server, local_path, remote_path, create_dirs=create_dirs, overwrite=overwrite)


async def vm_download(
    ctx: Context,
    server: ServerName,
    remote_path: BoxPath,
    local_path: LocalPath,
    overwrite: bool = False,
) -> DownloadResult:
    """Copy a file (256 MiB max) from a box to this machine."""
    return await fleet_of(ctx).download(server, remote_path, local_path, overwrite=overwrite)


async def vm_diff(
    ctx: Context,
    server: ServerName,
    max_bytes: Annotated[int, Field(ge=0, le=1024 * 1024, description="0: files and stat only")] = 64 * 1024,
) -> DiffResult:
    """A box's work since its base commit: commits, files, stat, diff. Next: vm_fetch or destroy_server."""
    return await fleet_of(ctx).diff(server, max_bytes=max_bytes)


async def run_agent(
    ctx: Context,
    server: ServerName,
    prompt: Annotated[str, Field(min_length=1, max_length=1024 * 1024)],
    args: Annotated[list[str] | None, Field(max_length=64)] = None,
    env: EnvArg = None,
    env_from: EnvFromArg = None,
    cwd: CwdArg = None,
    idempotency_key: IdempotencyKey = None,
) -> AgentRun:
    """Run the box's agent on prompt as a background job. Next: vm_job_status(job_id, wait_s=60), vm_diff."""
    return await fleet_of(ctx).run_agent(server, prompt, args=args, env=env, env_from=env_from, cwd=cwd,
                                         idempotency_key=idempotency_key)
