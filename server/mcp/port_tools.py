"""The port tool: reach a TCP port of a box on this machine's loopback, over the box's SSH connection.
One tool opens, lists and closes forwards (the tool list has a byte budget: three tools cost about three
times the bytes of one)."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from pydantic import Field

from server.errors import InvalidInput
from server.mcp.common import fleet_of
from server.schemas import ForwardList, ServerName


async def vm_forward(
    ctx: Context,
    server: ServerName,
    port: Annotated[int | None, Field(ge=1, le=65535)] = None,
    local_port: Annotated[int | None, Field(ge=1024, le=65535)] = None,
    close: bool = False,
) -> ForwardList:
    """Forward a box's TCP port to a 127.0.0.1 url; no port lists, close=true closes."""
    fleet = fleet_of(ctx)
    if close:
        return await fleet.close_forward(server, port)
    if port is None:
        if local_port is not None:
            raise InvalidInput("local_port needs the box's port: pass port too")
        return await fleet.list_forwards(server)
    return ForwardList(forwards=[await fleet.forward(server, port, local_port=local_port)])
