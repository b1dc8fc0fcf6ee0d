"""Issue 12, tool semantics: attacks on idempotency keys and on secrets through the file tools,
replayed with the real MCP client (in memory) against a real local box."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mcp import Client

from server.mcp.app import build_server
from tests.support import make_settings


@asynccontextmanager
async def serving(tmp_path: Path, **create: object) -> AsyncIterator[Client]:
    """An in-memory MCP client with one live box, 'atk-box'."""
    async with Client(build_server(make_settings(tmp_path / "state"))) as client:
        result = await client.call_tool("create_server", {"name": "atk-box", **create})
        assert not result.is_error, result.content
        try:
            yield client
        finally:
            await client.call_tool("destroy_server", {"name": "atk-box"})


async def test_an_idempotency_key_reused_for_another_request_is_refused(tmp_path: Path) -> None:
    """Attack 4: a reused key with another command / cwd / env names silently returned the first job (and a
    foreground call the first command's output)."""
    async with serving(tmp_path) as client:
        before = (await client.call_tool("vm_job_list", {"server": "atk-box"})).structured_content["count"]
        first = await client.call_tool("vm_bash", {"server": "atk-box", "command": "echo first",
                                                   "idempotency_key": "k-1"})
        assert first.structured_content["stdout"] == "first\n"
        job = first.structured_content["job_id"]
        same = await client.call_tool("vm_bash", {"server": "atk-box", "command": "echo first",
                                                  "idempotency_key": "k-1"})
        assert not same.is_error and same.structured_content["job_id"] == job
        for label, changed in [("command", {"command": "echo second"}),
                               ("cwd", {"command": "echo first", "cwd": "/tmp"}),
                               ("env names", {"command": "echo first", "env": {"EXTRA": "x"}})]:
            other = await client.call_tool("vm_bash", {"server": "atk-box", "idempotency_key": "k-1", **changed})
            assert other.is_error, label
            text = other.content[0].text
            assert "idempotency_key 'k-1'" in text and job in text and "different" in text, (label, text)
            assert "second" not in text and "first\n" not in text
        background = await client.call_tool("vm_bash", {"server": "atk-box", "command": "echo bg",
                                                        "idempotency_key": "k-2", "background": True})
        again = await client.call_tool("vm_bash", {"server": "atk-box", "command": "echo bg",
                                                   "idempotency_key": "k-2", "background": True})
        assert again.structured_content["job_id"] == background.structured_content["job_id"]
        runs = await client.call_tool("vm_job_list", {"server": "atk-box"})
        assert runs.structured_content["count"] == before + 2  # the refused calls started nothing
