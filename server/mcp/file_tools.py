"""The MCP tools on a box's files, its review diff and its agent (thin: validate, call the Fleet)."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from pydantic import Field

from server.mcp.common import EnvArg, fleet_of
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
