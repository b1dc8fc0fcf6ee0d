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
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, ValidationError

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


def _omittable(arg_model: type[BaseModel]) -> frozenset[str]:
    """Arguments whose default is None: a null for one of them means "not given"."""
    return frozenset(field.alias or name for name, field in arg_model.model_fields.items()
                     if not field.is_required() and field.default is None)


def _without_null(schema: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """The schema with ``null`` dropped from the types of ``names``: omitting them says it in fewer bytes."""
    properties = {}
    for name, prop in schema.get("properties", {}).items():
        if name in names and isinstance(prop.get("type"), list) and "null" in prop["type"]:
            kinds = [k for k in prop["type"] if k != "null"]
            prop = {**prop, "type": kinds[0] if len(kinds) == 1 else kinds}
            if "enum" in prop:
                prop["enum"] = [v for v in prop["enum"] if v is not None]
        properties[name] = prop
    return {**schema, "properties": properties}


class SurfaceTool(Tool):
    """A tool whose argument errors are worded by ``argument_errors`` and whose optional arguments given as
    null count as not given (clients that send every field send null for the ones they leave out)."""

    async def run(self, arguments: dict[str, Any], context: Context[Any, Any], convert_result: bool = False) -> Any:
        omittable = _omittable(self.fn_metadata.arg_model)
        arguments = {k: v for k, v in arguments.items() if not (v is None and k in omittable)}
        try:
            self.fn_metadata.validate_arguments(arguments)
        except ValidationError as exc:
            raise ToolError(argument_errors(self.name, exc, self.parameters)) from None
        result = await super().run(arguments, context, convert_result=False)
        if not convert_result or not isinstance(result, BaseModel):
            return self.fn_metadata.convert_result(result) if convert_result else result
        # Null fields are left out (the output schemas require none of them): fewer bytes for the model to read.
        data = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(data, indent=2))],
                              structured_content=data)


def share_defs(schema: dict[str, Any], shared: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each subschema equal to one of ``shared`` said once, in ``$defs``, and referred to where it recurs."""
    refs = {json.dumps(sub, sort_keys=True): {"$ref": f"#/$defs/{name}"} for name, sub in shared.items()}

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        ref = refs.get(json.dumps(node, sort_keys=True))
        return ref if ref is not None else {key: walk(value) for key, value in node.items()}

    out = walk(schema)
    out["$defs"] = {**out.get("$defs", {}), **shared}
    return out


def make_tool(fn: Callable[..., Any], *, title: str, annotations: ToolAnnotations,
              shared: dict[str, dict[str, Any]] | None = None) -> SurfaceTool:
    """A strict, compact tool from a thin tool function: its docstring is the description; ``shared``
    subschemas are said once (``share_defs``)."""
    tool = SurfaceTool.from_function(fn, name=fn.__name__, title=title, description=inspect.cleandoc(fn.__doc__ or ""),
                                     annotations=annotations, structured_output=True)
    loose = tool.fn_metadata.arg_model
    # Strict types and no unknown arguments: what the schema does not admit is refused, never coerced or dropped.
    strict = type(loose.__name__, (loose,), {"model_config": ConfigDict(strict=True, extra="forbid"),
                                             "__module__": loose.__module__})
    tool.fn_metadata.arg_model = strict
    tool.parameters = _without_null(compact_schema(strict.model_json_schema(by_alias=True)), _omittable(strict))
    if shared:
        tool.parameters = share_defs(tool.parameters, shared)
    if tool.fn_metadata.output_schema is not None:
        tool.fn_metadata.output_schema = compact_schema(tool.fn_metadata.output_schema)
    return tool
