"""``python -m tests.benchmarks.tool_list_size``: the bytes of the tool list as an MCP client sends it
to the model on every turn, measured through the real MCP client (in memory).

Model-visible: name, description and input schema of every tool, compact JSON (what Claude Code puts in
the request). With output schemas: the same plus each tool's output schema."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio
from mcp import Client

from server.mcp.app import build_server


def compact(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


async def measure() -> dict[str, Any]:
    async with Client(build_server()) as client:
        tools = (await client.list_tools()).tools
    visible = [{"name": t.name, "description": t.description or "", "input_schema": t.input_schema} for t in tools]
    with_output = [{**v, "output_schema": t.output_schema} for v, t in zip(visible, tools, strict=True)]
    per_tool = {v["name"]: compact(v) for v in visible}
    return {"tools": len(tools), "model_visible_bytes": compact(visible),
            "with_output_schemas_bytes": compact(with_output), "per_tool": per_tool}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-tool", action="store_true", help="also print each tool's bytes")
    args = parser.parse_args(argv)
    figures = anyio.run(measure)
    print(f"{figures['tools']} tools: {figures['model_visible_bytes']} bytes model-visible "
          f"(name + description + input schema), {figures['with_output_schemas_bytes']} with output schemas")
    if args.per_tool:
        for name, size in sorted(figures["per_tool"].items(), key=lambda kv: -kv[1]):
            print(f"  {size:6d}  {name}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
