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
    include_uncommitted: Annotated[bool, Field(
        description="Capture uncommitted and untracked changes as one extra commit on top (the box's working tree "
                    "is untouched)")] = True,
    local_branch: Annotated[Branch | None, Field(description="Also point this local branch of the user's repo at "
                                                             "the fetched tip (never the checked-out branch)")] = None,
) -> FetchResult:
    """Bring a box's branch home into the user's repo as refs/boxforge/<box>/<branch>, through the orchestrator
    (no credentials needed on the box). Returns the ref, the commits ahead of base (short id, subject), what is
    new since the last fetch, the files touched and the diffstat. Safe to repeat. Next: vm_compare across boxes,
    vm_push to publish; boxes are also harvested like this automatically before they are burned."""
    return await fleet_of(ctx).fetch(server, include_uncommitted=include_uncommitted, local_branch=local_branch)


async def vm_compare(
    ctx: Context,
    servers: Annotated[list[ServerName], Field(min_length=1, max_length=50, description="Boxes to compare")],
) -> CompareResult:
    """Compare boxes of a fan-out before merging: per box, commits ahead of base, files touched (uncommitted
    included), diffstat and the last job's end state; across boxes, the pairs that touch the same files (where a
    merge will conflict). Reads only."""
    return await fleet_of(ctx).compare(servers)


async def vm_push(
    ctx: Context,
    server: ServerName,
    remote: Annotated[str, Field(min_length=1, max_length=2048, description="Remote name of the user's repo, or a "
                                                                            "URL")] = "origin",
) -> PushResult:
    """Push a box's committed branch (fetched first) to the user's remote with the orchestrator's git credentials
    (the box has none). Never forces: a rejected push says why. Uncommitted changes are not pushed."""
    return await fleet_of(ctx).push(server, remote=remote)
