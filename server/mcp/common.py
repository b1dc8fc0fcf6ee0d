"""What every MCP tool shares: the tool annotations, the env argument, the Fleet of the request and the
wrapper that words results' hints as tool calls and turns errors into tool errors."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal, ParamSpec, TypeVar

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import AfterValidator, Field, WithJsonSchema

from providers import REGISTRY
from providers.base import ProviderError
from server.agents import AGENT_NAMES
from server.domain.inputs import ENV_NAME_RE, PATH_PATTERN
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

# Argument types several tools share: one definition, one wording.
EnvName = Annotated[str, Field(pattern=ENV_NAME_RE.pattern)]
EnvArg = Annotated[
    dict[str, str] | None,
    WithJsonSchema({"type": ["object", "null"], "propertyNames": {"pattern": ENV_NAME_RE.pattern},
                    "additionalProperties": {"type": "string"}}),
    AfterValidator(lambda env: _checked_env(env)),
    Field(description="Env vars (secret)"),
]
EnvFromArg = Annotated[
    list[EnvName] | None,
    Field(max_length=64, description="Names of keys the orchestrator fills in"),
]
CwdArg = Annotated[str | None, Field(max_length=4096, json_schema_extra={"pattern": PATH_PATTERN})]
IdempotencyKey = Annotated[str | None, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$",
                                             description="Same key: one job")]
WaitArg = Annotated[float, Field(ge=0, le=300)]
AgentName = Literal[AGENT_NAMES]  # type: ignore[valid-type]
ProviderName = Literal[tuple(REGISTRY)]  # type: ignore[valid-type]


def _checked_env(env: dict[str, str] | None) -> dict[str, str] | None:
    if env is not None:
        for key in env:
            if not ENV_NAME_RE.fullmatch(key):
                raise ValueError(f"invalid env name {key[:40]!r}: use letters, digits and '_', not starting with a "
                                 "digit")
    return env


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
