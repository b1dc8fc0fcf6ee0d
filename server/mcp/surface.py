"""What a client and its model see of a tool: the description without docstring indentation, a compact
input schema that admits exactly what the tool accepts (strict types, no unknown arguments), and argument
errors that name the argument, say what was wrong and show a right value, instead of pydantic's text.

The model pays for every byte of the tool list on every turn: ``compact_schema`` drops what a schema
repeats without saying anything (titles, ``default: null``, ``anyOf`` with null), nothing that changes
what it admits."""

from __future__ import annotations

import difflib
import inspect
import json
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations
from pydantic import ConfigDict, ValidationError

# A right value for each argument name that recurs across tools, shown in argument errors.
EXAMPLES: dict[str, Any] = {
    "name": "feat-login", "server": "feat-login", "ttl": "90m", "job_id": "j-0123456789ab",
    "job_ids": ["j-0123456789ab", "j-ba9876543210"], "command": "make test", "branch": "feat/login",
    "repo": "https://github.com/org/repo", "env": {"DEBUG": "1"}, "env_from": ["ANTHROPIC_API_KEY"],
    "path": "src/app.py", "remote_path": "dist/app.tar.gz", "local_path": "./app.tar.gz", "pattern": "TODO",
    "prompt": "Fix the failing test in tests/test_api.py", "args": ["--model", "opus"], "wait_s": 30,
    "timeout_s": 120, "signal": "TERM", "agent": "claude", "mode": "755", "cwd": "src",
    "idempotency_key": "build-1", "encoding": "text", "glob": "*.py",
}


def compact_schema(schema: Any) -> Any:
    """The same schema in fewer bytes: no titles, no ``default: null``, ``anyOf: [X, null]`` as X with a
    ``null`` type added."""
    if isinstance(schema, list):
        return [compact_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" or (key == "default" and value is None):
            continue
        if key in ("properties", "$defs"):  # maps of names to schemas: the names are not keywords
            out[key] = {name: compact_schema(sub) for name, sub in value.items()}
        else:
            out[key] = compact_schema(value)
    merged = _merge_nullable(out.get("anyOf"))
    if merged is not None:
        del out["anyOf"]
        out = {**merged, **out}
    return out


def _merge_nullable(any_of: Any) -> dict[str, Any] | None:
    """``[X, {"type": "null"}]`` with X of one plain type -> X admitting null as well; else None."""
    if not isinstance(any_of, list) or len(any_of) != 2 or {"type": "null"} not in any_of:
        return None
    other = next(s for s in any_of if s != {"type": "null"})
    kind = other.get("type")
    if not isinstance(kind, (str, list)) or "anyOf" in other or "$ref" in other:
        return None
    merged = {**other, "type": [*([kind] if isinstance(kind, str) else kind), "null"]}
    if "enum" in merged:
        merged["enum"] = [*merged["enum"], None]
    return merged


def _example(argument: str, schema: dict[str, Any]) -> str | None:
    if argument in EXAMPLES:
        value = EXAMPLES[argument]
    elif "enum" in schema:
        value = next(v for v in schema["enum"] if v is not None)
    else:
        kinds = schema.get("type")
        kind = next((k for k in kinds if k != "null"), None) if isinstance(kinds, list) else kinds
        value = {"integer": 10, "number": 30, "boolean": True}.get(kind or "")
        if value is None:
            return None
    return f"{argument}={json.dumps(value)}"


def argument_errors(tool: str, exc: ValidationError, schema: dict[str, Any]) -> str:
    """One line per bad argument: which, what was wrong, an example of a right value. No input values
    (they may be secrets) and no pydantic links."""
    properties: dict[str, Any] = schema.get("properties", {})
    lines: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(part) for part in error["loc"]]
        argument = loc[0] if loc else "arguments"
        where = argument + "".join(f"[{part}]" for part in loc[1:])
        kind = error["type"]
        if kind == "missing":
            problem = "is required"
        elif kind == "extra_forbidden":
            close = difflib.get_close_matches(argument, properties, n=1)
            problem = "is not an argument of this tool" + (f" (did you mean {close[0]}?)" if close else "")
            lines.append(f"{where} {problem}; it takes {', '.join(properties)}")
            continue
        else:
            problem = str(error["msg"]).removeprefix("Value error, ")
            problem = problem[:1].lower() + problem[1:]
        example = _example(argument, properties.get(argument, {}))
        lines.append(f"{where}: {problem}" + (f" (e.g. {example})" if example else ""))
    return f"invalid arguments for {tool}: " + "; ".join(lines)


class SurfaceTool(Tool):
    """A tool whose argument errors are worded by ``argument_errors``."""

    async def run(self, arguments: dict[str, Any], context: Context[Any, Any], convert_result: bool = False) -> Any:
        try:
            self.fn_metadata.validate_arguments(arguments)
        except ValidationError as exc:
            raise ToolError(argument_errors(self.name, exc, self.parameters)) from None
        return await super().run(arguments, context, convert_result=convert_result)


def make_tool(fn: Callable[..., Any], *, title: str, annotations: ToolAnnotations) -> SurfaceTool:
    """A strict, compact tool from a thin tool function: its docstring is the description."""
    tool = SurfaceTool.from_function(fn, name=fn.__name__, title=title, description=inspect.cleandoc(fn.__doc__ or ""),
                                     annotations=annotations, structured_output=True)
    loose = tool.fn_metadata.arg_model
    # Strict types and no unknown arguments: what the schema does not admit is refused, never coerced or dropped.
    strict = type(loose.__name__, (loose,), {"model_config": ConfigDict(strict=True, extra="forbid"),
                                             "__module__": loose.__module__})
    tool.fn_metadata.arg_model = strict
    tool.parameters = compact_schema(strict.model_json_schema(by_alias=True))
    if tool.fn_metadata.output_schema is not None:
        tool.fn_metadata.output_schema = compact_schema(tool.fn_metadata.output_schema)
    return tool
