"""The git tools: bring a box's work home (vm_fetch), see where a fan-out collided (vm_compare), push a
box's branch with the orchestrator's credentials (vm_push). Merging is the user's: ``boxforge land``."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from pydantic import Field

from server.mcp.common import fleet_of
from server.schemas import Branch, CompareResult, FetchResult, PushResult, ServerName


async def vm_fetch(
    ctx: Context,
    server: ServerName,
    include_uncommitted: Annotated[bool, Field(description="Uncommitted work as one extra commit")] = True,
    local_branch: Annotated[Branch | None, Field(description="Also point this local branch at the tip")] = None,
) -> FetchResult:
    """Bring a box's branch home as refs/boxforge/<box>/<branch>: commits, files, diffstat. Next: vm_push."""
    return await fleet_of(ctx).fetch(server, include_uncommitted=include_uncommitted, local_branch=local_branch)


async def vm_compare(
    ctx: Context,
    servers: Annotated[list[ServerName], Field(min_length=1, max_length=50)],
) -> CompareResult:
    """Before merging: commits, files, diffstat per box; pairs of boxes touching the same files."""
    return await fleet_of(ctx).compare(servers)


async def vm_push(
    ctx: Context,
    server: ServerName,
    remote: Annotated[str, Field(min_length=1, max_length=2048, description="Remote name or URL")] = "origin",
) -> PushResult:
    """Push a box's committed branch to the user's remote (orchestrator's credentials; never forces)."""
    return await fleet_of(ctx).push(server, remote=remote)
