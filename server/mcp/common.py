"""What every MCP tool shares: the tool annotations, the env argument, the Fleet of the request and the
wrapper that words results' hints as tool calls and turns errors into tool errors."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, ParamSpec, TypeVar

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from providers.base import ProviderError
from server.errors import ForgeError
from server.mcp.hints import error_text, words
from server.schemas import render_hints
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
