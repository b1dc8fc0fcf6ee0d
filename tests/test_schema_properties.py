"""Property tests of the input schemas: any input is either accepted as valid or refused with a
validation error (never another exception), and what is accepted is safe to use."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from server.mcp.app import build_server
from server.schemas import NAME_RE, check_name, parse_ttl

TOOLS = build_server()._tool_manager
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


@given(st.text(max_size=100))
def test_names_are_accepted_only_when_they_are_rfc1123_labels(text: str) -> None:
    try:
        accepted = check_name(text)
    except ValueError:
        return
    assert NAME_RE.fullmatch(accepted) and len(accepted) <= 63
    assert not set(accepted) & set(" ;|&$`'\"\\\n\x00/.")


@given(st.one_of(st.text(max_size=20), st.integers(), st.floats(), st.none(), st.booleans()))
def test_ttls_parse_to_positive_seconds_or_are_refused(value: Any) -> None:
    try:
        seconds = parse_ttl(value)
    except ValueError:
        return
    assert isinstance(seconds, int) and seconds >= 60


@settings(max_examples=300, deadline=None)
@given(tool=st.sampled_from(["create_server", "vm_bash", "vm_job_status", "vm_job_list", "vm_job_cancel",
                             "destroy_server", "extend_server"]),
       args=st.dictionaries(st.sampled_from(["name", "server", "command", "ttl", "job_id", "env", "cwd",
                                             "background", "wait_s", "stdout_offset", "signal", "repo",
                                             "branch", "timeout_s", "idempotency_key"]),
                            json_values, max_size=6))
def test_tool_arguments_validate_or_refuse_cleanly(tool: str, args: dict[str, Any]) -> None:
    model = TOOLS.get_tool(tool).fn_metadata.arg_model
    try:
        parsed = model.model_validate(args)
    except ValidationError:
        return
    for field in ("name", "server"):
        value = getattr(parsed, field, None)
        if isinstance(value, str):
            assert NAME_RE.fullmatch(value)
