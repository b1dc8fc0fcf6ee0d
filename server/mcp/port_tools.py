"""The port tools: reach a TCP port of a box on this machine's loopback, over the box's SSH connection."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from pydantic import Field

from server.mcp.common import fleet_of
from server.schemas import ForwardInfo, ForwardList, ServerName

BoxPort = Annotated[int, Field(ge=1, le=65535, description="TCP port on the box")]


async def vm_forward(
    ctx: Context,
    server: ServerName,
    port: BoxPort,
    local_port: Annotated[int | None, Field(ge=1024, le=65535, description="Port on 127.0.0.1; default: a free "
                                                                           "one")] = None,
) -> ForwardInfo:
    """Forward a box's TCP port (HTTP, WebSocket, any TCP) to 127.0.0.1 here over the box's SSH connection;
    returns the local url. Fails if nothing listens yet. Closed by vm_forward_close or when the box burns."""
    return await fleet_of(ctx).forward(server, port, local_port=local_port)


async def vm_forward_list(
    ctx: Context,
    server: Annotated[ServerName | None, Field(description="Only this box")] = None,
) -> ForwardList:
    """Open port forwards of one box or all boxes, with their local urls."""
    return await fleet_of(ctx).list_forwards(server)


async def vm_forward_close(
    ctx: Context,
    server: ServerName,
    port: Annotated[int | None, Field(ge=1, le=65535, description="Box port; all of the box's when omitted")] = None,
) -> ForwardList:
    """Close a box's port forward (or all of them); returns those closed."""
    return await fleet_of(ctx).close_forward(server, port)
