"""The published tool schemas against what the tools accept, through the real MCP client (in memory, no
box): a TTL string is a string, unknown and ill-typed arguments are refused with an error that names the
argument and shows a right value, and the server reports its package version."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp import Client

from server.domain.durations import parse_ttl
from server.mcp.app import build_server
from tests.support import call_error, make_settings

SCHEMAS = {tool.name: tool.parameters for tool in build_server()._tool_manager.list_tools()}
TTL_SCHEMA = SCHEMAS["extend_server"]["properties"]["ttl"]
ttl_texts = st.one_of(
    st.from_regex(r"\A ?0?[0-9]{1,8} ?[smhdw]? ?\Z"), st.text(max_size=12), st.integers(-5, 10**8),
    st.floats(allow_nan=False), st.booleans(), st.none(),
)


def schema_admits(schema: dict[str, Any], value: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def parses(value: Any) -> bool:
    try:
        parse_ttl(value)
    except ValueError:
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(ttl_texts)
def test_the_ttl_schema_admits_exactly_what_parse_ttl_accepts(value: Any) -> None:
    assert schema_admits(TTL_SCHEMA, value) == parses(value), value


def test_every_ttl_is_published_as_a_duration_string_or_minutes() -> None:
    ttl_tools = {name for name, schema in SCHEMAS.items() if "ttl" in schema["properties"]}
    assert {"create_server", "extend_server"} <= ttl_tools
    for name in ttl_tools:
        ttl = SCHEMAS[name]["properties"]["ttl"]
        assert schema_admits(ttl, "30m") and schema_admits(ttl, 30), name
        assert not schema_admits(ttl, "30 minutes") and not schema_admits(ttl, "30s"), name


def test_schemas_are_valid_json_schemas_refusing_unknown_arguments() -> None:
    for name, schema in SCHEMAS.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema.get("additionalProperties") is False, name
        assert "title" not in str(list(schema["properties"].values())), name


def connect(tmp_path: Path) -> Client:
    return Client(build_server(make_settings(tmp_path / "state")))


async def test_server_info_reports_the_package_version(tmp_path: Path) -> None:
    async with connect(tmp_path) as client:
        assert client.server_info.version == importlib.metadata.version("boxforge")


async def test_an_unparsable_ttl_is_an_error_naming_it_never_a_default(tmp_path: Path) -> None:
    async with connect(tmp_path) as client:
        text = await call_error(client, "extend_server", name="nobox", ttl="an hour")
        assert "ttl" in text and "'90m'" in text and "pydantic" not in text
        text = await call_error(client, "create_server", name="nobox", ttl="30 minutes")
        assert "ttl" in text and "pydantic" not in text


@pytest.mark.parametrize(("tool", "args", "named", "example"), [
    ("vm_bash", {"server": "b1", "command": "ls", "timeout": 5}, "timeout", "did you mean timeout_s"),
    ("vm_bash", {"server": "b1"}, "command", 'command="make test"'),
    ("vm_bash", {"server": "b1", "command": "ls", "background": "yes"}, "background", "background=true"),
    ("vm_job_status", {"job_id": "j-0123456789ab", "wait_s": "thirty"}, "wait_s", "wait_s=30"),
    ("vm_job_status", {"job_id": "job-1"}, "job_id", 'job_id="j-0123456789ab"'),
    ("vm_job_cancel", {"job_id": "j-0123456789ab", "signal": "HUP"}, "signal", 'signal="TERM"'),
    ("create_server", {"name": "Bad_Name"}, "name", 'name="feat-login"'),
    ("vm_bash", {"server": "b1", "command": "ls", "env": {"K": 1}}, "env[K]", "env="),
])
async def test_argument_errors_name_the_argument_the_problem_and_a_right_value(
        tmp_path: Path, tool: str, args: dict[str, Any], named: str, example: str) -> None:
    async with connect(tmp_path) as client:
        text = await call_error(client, tool, **args)
    assert named in text and example in text, text
    assert "errors.pydantic.dev" not in text and "For further information" not in text
    assert not schema_admits(SCHEMAS[tool], args), "the schema refuses what the tool refuses"


def test_required_output_fields_are_never_null() -> None:
    """Results leave null fields out: only a field the output schema does not require may be null."""
    for tool in build_server()._tool_manager.list_tools():
        schema = tool.output_schema or {}
        for defs in [schema, *schema.get("$defs", {}).values()]:
            for name in defs.get("required", []):
                kinds = defs["properties"][name].get("type")
                assert kinds != "null" and "null" not in (kinds or []), (tool.name, name)


# Issue 13's budget (12 KiB) was met for the 20 tools it covered (12,102 bytes); the plan tools and
# agent_version took the list to 17.8 KB, 16.9 KB since plan_start's schema was cut (4,184 -> 3,274 bytes).
# This ceiling keeps the list from growing further; docs/tools.md says the target is missed.
TOOL_LIST_CEILING = 17 * 1024


def test_the_model_visible_tool_list_stays_within_its_ceiling() -> None:
    from tests.benchmarks.tool_list_size import measure

    figures = anyio.run(measure)
    assert figures["model_visible_bytes"] <= TOOL_LIST_CEILING, figures["per_tool"]
