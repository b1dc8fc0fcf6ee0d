"""The installed agent's versions, from the bootstrap's BOXFORGE_AGENT line to ServerInfo and the CLI table."""

from __future__ import annotations

import time

from rich.console import Console

from server.bootstrap import InstalledAgent, installed_agent_from
from server.cli.render import servers_table
from server.service.views import AGENT_INSTALLED, server_info
from server.store import BoxRecord


def test_the_last_agent_line_of_the_bootstrap_is_what_was_installed() -> None:
    out = ("BOXFORGE_STEP=agent\n[boxforge] agent claude: 2.1.332 (Claude Code) runs\n"
           "BOXFORGE_AGENT=2.1.300 20.1.0 box\nBOXFORGE_AGENT=2.1.332 22.12.0 npm\nBOXFORGE_BASE=abc\n")
    assert installed_agent_from(out) == InstalledAgent("2.1.332", "22.12.0", "npm")


def test_a_malformed_agent_line_reports_nothing_rather_than_a_guess() -> None:
    for line in ("BOXFORGE_AGENT=2.1.332 22.12.0 apt", "BOXFORGE_AGENT=2.1.332", "BOXFORGE_AGENT= 1 2 3 4",
                 "BOXFORGE_AGENT=" + "9" * 65 + " 22.0.0 box"):
        assert installed_agent_from(f"{line}\nBOXFORGE_BASE=\n") is None, line
    assert installed_agent_from("BOXFORGE_BASE=abc\n") is None


def _record(agent: str, data: dict | None) -> BoxRecord:
    now = time.time()
    return BoxRecord(name="ag", box_id="lb-1", provider="local", state="ready", step="ready", key_id="k",
                     request_id="r1", host="127.0.0.1", ssh_port=2222, ssh_user="u", home="/h", project_dir="/h/p",
                     repo=None, branch=None, base_commit=None, agent=agent, size=None, location=None, data=data,
                     error=None, created_at=now - 60, ready_at=now - 50, expires_at=now + 3000, destroyed_at=None)


def test_server_info_shows_the_agent_release_and_its_node_and_the_table_names_them() -> None:
    rec = _record("codex", {AGENT_INSTALLED: {"version": "0.171.0", "node_version": "22.12.0", "node_source": "npm"}})
    info = server_info(rec, None)
    shown = info.model_dump(mode="json", exclude_none=True)
    assert (shown["agent"], shown["agent_version"], shown["node_version"], shown["node_source"]) == \
        ("codex", "0.171.0", "22.12.0", "npm")
    console = Console(width=250, record=True)
    console.print(servers_table([info]))
    assert "codex 0.171.0 (node 22.12.0, npm)" in console.export_text()


def test_a_box_without_an_npm_agent_shows_no_version_fields_and_no_agent_column() -> None:
    info = server_info(_record("none", None), None)
    assert not {"agent_version", "node_version", "node_source"} & set(info.model_dump(mode="json"))
    console = Console(width=250, record=True)
    console.print(servers_table([info]))
    assert "agent" not in console.export_text().splitlines()[1]
