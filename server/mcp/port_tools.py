"""The port tool: reach a TCP port of a box on this machine's loopback, over the box's SSH connection.
One tool opens and closes forwards (the tool list has a byte budget)."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from pydantic import Field

from server.mcp.common import fleet_of
from server.schemas import ForwardList, ServerName


async def vm_forward(
    ctx: Context,
    server: ServerName,
    port: Annotated[int, Field(ge=1, le=65535)],
    local_port: Annotated[int | None, Field(ge=1024, le=65535)] = None,
    close: bool = False,
) -> ForwardList:
    """Reach a box's TCP port at a 127.0.0.1 url, over SSH; close=true ends it."""
    fleet = fleet_of(ctx)
    if close:
        return await fleet.close_forward(server, port)
    return ForwardList(forwards=[await fleet.forward(server, port, local_port=local_port)])
