"""Hints are values; each surface words them: MCP as tool calls, the CLI as commands (no MCP word in it)."""

from __future__ import annotations

import time

import pytest

from server.cli import render as cli
from server.domain.hints import Hint, HintKind
from server.errors import UnknownServer
from server.mcp import hints as mcp
from server.schemas import CommandResult, ServerInfo, ServerList, render_hints
from server.service.views import server_info
from server.store import BoxRecord

EVERY_HINT = [Hint(kind, server="feat-a", job_id="j-0123456789ab", stdout_offset=3, stderr_offset=4, wait_s=50,
                   left_s=300) for kind in HintKind]
MCP_WORDS = ("vm_", "create_server", "list_servers", "extend_server", "destroy_server", "run_agent")


@pytest.mark.parametrize("hint", EVERY_HINT, ids=[h.kind.value for h in EVERY_HINT])
def test_cli_words_never_name_an_mcp_tool(hint: Hint) -> None:
    text = cli.words(hint)
    assert text and not any(word in text for word in MCP_WORDS)


@pytest.mark.parametrize("hint", EVERY_HINT, ids=[h.kind.value for h in EVERY_HINT])
def test_every_hint_has_mcp_words(hint: Hint) -> None:
    assert mcp.words(hint)


def test_a_background_job_hint_is_a_tool_call_over_mcp_and_a_command_in_the_cli() -> None:
    hint = Hint(HintKind.POLL_JOB, job_id="j-0123456789ab")
    assert mcp.words(hint).endswith("poll with vm_job_status(job_id='j-0123456789ab', wait_s=30)")
    assert "boxforge logs j-0123456789ab --follow" in cli.words(hint)


def test_render_fills_suggested_fields_in_nested_results_and_keeps_plain_text() -> None:
    info = ServerInfo(name="feat-a", provider="local", state="ready")
    info.suggest("warning", Hint(HintKind.EXPIRES_SOON, left_s=120))
    listed = ServerList(servers=[info], count=1)
    render_hints(listed, mcp.words)
    assert listed.servers[0].warning is not None and "extend_server" in listed.servers[0].warning
    result = CommandResult(server="feat-a", job_id="j-0123456789ab", state="killed", hint="the command was killed")
    render_hints(result, cli.words)
    assert result.hint == "the command was killed"


def test_said_text_replaces_a_suggested_hint() -> None:
    info = ServerInfo(name="feat-a", provider="local", state="ready")
    info.suggest("warning", Hint(HintKind.EXPIRES_SOON, left_s=120))
    info.say("warning", "not answering")
    render_hints(info, mcp.words)
    assert info.warning == "not answering"


def test_error_hints_are_worded_per_surface() -> None:
    exc = UnknownServer("unknown server 'x'; live servers: none", hint=Hint(HintKind.NO_BOXES))
    assert mcp.error_text(exc) == "unknown server 'x'; live servers: none (create one with create_server)"
    assert cli.error_text(exc) == "unknown server 'x'; live servers: none (create one with boxforge up)"
    assert str(exc) == "unknown server 'x'; live servers: none"


def test_size_and_warnings_show_only_when_set() -> None:
    bare = ServerInfo(name="a", provider="local", state="ready").model_dump(mode="json")
    assert "size" not in bare and "warnings" not in bare
    made = ServerInfo(name="a", provider="local", state="ready", size="cx22", warnings=["not isolated"])
    assert made.model_dump(mode="json")["size"] == "cx22"
    assert made.model_dump(mode="json")["warnings"] == ["not isolated"]


def test_the_expiry_warning_names_the_box_and_what_its_burn_harvests_on_each_surface() -> None:
    now = time.time()
    rec = BoxRecord(name="fix-12", box_id="lb-1", provider="local", state="ready", step="ready", key_id="k",
                    request_id="r1", host="127.0.0.1", ssh_port=2222, ssh_user="u", home="/h", project_dir="/h/p",
                    repo="/src", branch="fix/12", base_commit="abc", agent="none", size=None, location=None,
                    data=None, error=None, created_at=now - 60, ready_at=now - 50, expires_at=now + 300,
                    destroyed_at=None)
    for words, next_step in ((mcp.words, "vm_fetch"), (cli.words, "boxforge fetch")):
        info = server_info(rec, None, now)
        render_hints(info, words)
        assert "refs/boxforge/fix-12/" in info.warning and next_step in info.warning
    calm = server_info(rec, None, now, warn_s=60)
    render_hints(calm, mcp.words)
    assert calm.warning is None
