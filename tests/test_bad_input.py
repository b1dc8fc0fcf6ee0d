"""Malformed and hostile tool calls get a clear error (or capped output), and the server keeps serving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import Client

from server.mcp.app import build_server
from tests.support import make_settings

BAD_CALLS: list[tuple[str, str, dict[str, Any], str]] = [
    ("uppercase name", "create_server", {"name": "Bad_Name"}, "invalid server name"),
    ("shell metacharacters in name", "create_server", {"name": "a;rm -rf /"}, "invalid server name"),
    ("command substitution in name", "create_server", {"name": "$(reboot)"}, "invalid server name"),
    ("name too long", "create_server", {"name": "a" * 64}, "name"),
    ("name with trailing dash", "create_server", {"name": "box-"}, "invalid server name"),
    ("negative ttl", "create_server", {"name": "x1", "ttl": "-5"}, "invalid ttl"),
    ("word ttl", "create_server", {"name": "x1", "ttl": "abc"}, "invalid ttl"),
    ("huge ttl", "create_server", {"name": "x1", "ttl": "9999d"}, "exceeds the maximum"),
    ("zero ttl", "create_server", {"name": "x1", "ttl": "0"}, "too short"),
    ("unknown agent", "create_server", {"name": "x1", "agent": "hal9000"}, "agent: input should be 'none'"),
    ("branch without repo", "create_server", {"name": "x1", "branch": "feat/a"}, "branch needs a repo"),
    ("missing repo path", "create_server", {"name": "x1", "repo": "/nonexistent/repo"}, "does not exist"),
    ("bad env name", "create_server", {"name": "x1", "env": {"BAD-NAME": "v"}}, "invalid env name"),
    ("unknown provider", "create_server", {"name": "x1", "provider": "aws"}, "provider: input should be 'local'"),
    ("duplicate name", "create_server", {"name": "ok-box"}, "already exists"),
    ("unknown server", "vm_bash", {"server": "nope", "command": "true"}, "unknown server 'nope'; live servers: ok-box"),
    ("NUL in command", "vm_bash", {"server": "ok-box", "command": "echo a\x00b"}, "NUL"),
    ("blank command", "vm_bash", {"server": "ok-box", "command": "   "}, "command is empty"),
    ("missing cwd", "vm_bash", {"server": "ok-box", "command": "true", "cwd": "/nonexistent/dir"}, "does not exist"),
    ("negative timeout", "vm_bash", {"server": "ok-box", "command": "true", "timeout_s": -1}, "timeout_s"),
    ("string for bool", "vm_bash", {"server": "ok-box", "command": "true", "background": "maybe"}, "background"),
    ("unknown job", "vm_job_status", {"job_id": "j-000000000000"}, "unknown job"),
    ("malformed job id", "vm_job_status", {"job_id": "../../etc"}, "invalid job id"),
    ("negative offset", "vm_job_status", {"job_id": "j-000000000000", "stdout_offset": -1}, "stdout_offset"),
    ("unknown signal", "vm_job_cancel", {"job_id": "j-000000000000", "signal": "HUP"}, "signal"),
    ("extend unknown server", "extend_server", {"name": "nope", "ttl": "1h"}, "unknown server"),
    ("extend with bad ttl", "extend_server", {"name": "ok-box", "ttl": "soon"}, "invalid ttl"),
    ("unicode name", "create_server", {"name": "bøx"}, "invalid server name"),
    ("newline in name", "create_server", {"name": "a\n"}, "invalid server name"),
    ("control char in name", "create_server", {"name": "a\x07b"}, "invalid server name"),
    ("1 MB name", "create_server", {"name": "a" * 1_000_000}, "name"),
    ("number as name", "create_server", {"name": 42}, "name"),
    ("list as ttl", "create_server", {"name": "x1", "ttl": []}, "ttl"),
    ("fractional ttl", "create_server", {"name": "x1", "ttl": "1.5h"}, "invalid ttl"),
    ("1 MB env value", "create_server", {"name": "x1", "env": {"BIG": "v" * 1_000_000}}, "at most 64 KiB"),
    ("env as a list", "create_server", {"name": "x1", "env": ["A=1"]}, "env"),
    ("env value not a string", "create_server", {"name": "x1", "env": {"A": 1}}, "env"),
    ("newline in repo", "create_server", {"name": "x1", "repo": "/tmp\nrm -rf /"}, "control characters"),
    ("ftp repo", "create_server", {"name": "x1", "repo": "ftp://example.com/r.git"}, "scheme"),
    ("branch traversal", "create_server", {"name": "x1", "repo": "/tmp", "branch": "../../etc"}, "invalid branch"),
    ("branch like an option", "create_server", {"name": "x1", "repo": "/tmp", "branch": "-rf"}, "invalid branch"),
    ("oversized size", "create_server", {"name": "x1", "size": "s" * 65}, "size"),
    ("1 MB command", "vm_bash", {"server": "ok-box", "command": "x" * 1_000_000}, "command"),
    ("missing command", "vm_bash", {"server": "ok-box"}, "command"),
    ("NUL in cwd", "vm_bash", {"server": "ok-box", "command": "true", "cwd": "a\x00b"}, "NUL"),
    ("idempotency key with spaces", "vm_bash", {"server": "ok-box", "command": "true", "idempotency_key": "a b"},
     "idempotency_key"),
    ("timeout as text", "vm_bash", {"server": "ok-box", "command": "true", "timeout_s": "soon"}, "timeout_s"),
    ("huge wait", "vm_job_status", {"job_id": "j-000000000000", "wait_s": 1e9}, "wait_s"),
    ("unicode job id", "vm_job_status", {"job_id": "j-00000000000é"}, "invalid job id"),
    ("cancel unknown job", "vm_job_cancel", {"job_id": "j-000000000000"}, "unknown job"),
    ("list jobs of a bad name", "vm_job_list", {"server": "Bad!"}, "invalid server name"),
    ("destroy a traversal name", "destroy_server", {"name": "../x"}, "invalid server name"),
    ("extend too short", "extend_server", {"name": "ok-box", "ttl": "0"}, "too short"),
    ("extend too long", "extend_server", {"name": "ok-box", "ttl": "9999d"}, "exceeds the maximum"),
]


@asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[Client]:
    """An in-memory MCP client with one live box, 'ok-box'."""
    settings = make_settings(tmp_path / "state")
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("create_server", {"name": "ok-box"})
        assert not result.is_error, result.content
        try:
            yield client
        finally:
            await client.call_tool("destroy_server", {"name": "ok-box"})


async def test_bad_calls_get_clear_errors_and_the_server_keeps_serving(tmp_path: Path) -> None:
    async with serving(tmp_path) as client:
        for label, tool, args, expected in BAD_CALLS:
            result = await client.call_tool(tool, args)
            assert result.is_error, f"{label}: expected an error, got {result.structured_content}"
            text = result.content[0].text
            assert expected in text, f"{label}: {expected!r} not in {text!r}"
        listed = await client.call_tool("list_servers", {})
        assert [s["name"] for s in listed.structured_content["servers"]] == ["ok-box"]
        ok = await client.call_tool("vm_bash", {"server": "ok-box", "command": "echo still serving"})
        assert ok.structured_content["stdout"] == "still serving\n"
        assert len(BAD_CALLS) >= 40


async def test_binary_output_comes_back_as_text_with_replacements(tmp_path: Path) -> None:
    async with serving(tmp_path) as client:
        result = await client.call_tool("vm_bash", {"server": "ok-box", "command": "printf 'ok\\377\\000\\376end'"})
        assert not result.is_error
        out = result.structured_content
        assert out["exit_code"] == 0
        assert out["stdout"].startswith("ok") and out["stdout"].endswith("end")
        assert "\ufffd" in out["stdout"]


async def test_five_megabytes_of_output_is_capped_keeping_head_and_tail(tmp_path: Path) -> None:
    async with serving(tmp_path) as client:
        command = "head -c 5000000 /dev/zero | tr '\\0' a; echo; echo THE-END"
        result = await client.call_tool("vm_bash", {"server": "ok-box", "command": command})
        out = result.structured_content
        assert out["state"] == "succeeded"
        assert out["stdout"].startswith("aaaa")
        assert out["stdout"].endswith("THE-END\n")
        assert out["stdout_dropped_bytes"] == 5000000 + 1 + 8 - 64 * 1024
        assert f"[... {out['stdout_dropped_bytes']} bytes dropped ...]" in out["stdout"]
        assert len(out["stdout"]) < 70 * 1024


async def test_destroy_twice_is_safe_and_then_the_name_is_unknown(tmp_path: Path) -> None:
    async with serving(tmp_path) as client:
        first = await client.call_tool("destroy_server", {"name": "ok-box"})
        second = await client.call_tool("destroy_server", {"name": "ok-box"})
        assert first.structured_content["destroyed"] is True
        assert second.structured_content["destroyed"] is False
        gone = await client.call_tool("vm_bash", {"server": "ok-box", "command": "true"})
        assert gone.is_error and "server 'ok-box' was burned at " in gone.content[0].text


async def test_long_foreground_command_continues_as_a_background_job(tmp_path: Path) -> None:
    async with serving(tmp_path) as client:
        result = await client.call_tool("vm_bash", {"server": "ok-box", "command": "echo started; sleep 2; echo done",
                                                    "timeout_s": 0.5})
        out = result.structured_content
        assert out["state"] == "running" and "vm_job_status" in out["hint"]
        status = await client.call_tool("vm_job_status", {"job_id": out["job_id"], "wait_s": 20})
        assert status.structured_content["state"] == "succeeded"
        assert status.structured_content["stdout"] == "started\ndone\n"


async def test_kill_on_timeout_ends_the_command(tmp_path: Path) -> None:
    async with serving(tmp_path) as client:
        result = await client.call_tool("vm_bash", {"server": "ok-box", "command": "sleep 60", "timeout_s": 0.3,
                                                    "kill_on_timeout": True})
        assert result.structured_content["state"] == "killed"


async def test_idempotency_key_starts_the_job_once(tmp_path: Path) -> None:
    async with serving(tmp_path) as client:
        args = {"server": "ok-box", "command": "echo run >> runs.log", "background": True, "idempotency_key": "task-7"}
        first = (await client.call_tool("vm_bash", args)).structured_content
        second = (await client.call_tool("vm_bash", args)).structured_content
        assert first["job_id"] == second["job_id"]
        await client.call_tool("vm_job_status", {"job_id": first["job_id"], "wait_s": 10})
        count = await client.call_tool("vm_bash", {"server": "ok-box", "command": "wc -l < runs.log"})
        assert count.structured_content["stdout"].strip() == "1"


async def test_calls_on_a_destroyed_box_and_finished_jobs_are_clear(tmp_path: Path) -> None:
    async with serving(tmp_path) as client:
        job = await client.call_tool("vm_bash", {"server": "ok-box", "command": "echo hi"})
        job_id = job.structured_content["job_id"]
        finished = await client.call_tool("vm_job_cancel", {"job_id": job_id})
        assert finished.structured_content["state"] == "succeeded"
        assert "nothing to cancel" in finished.structured_content["message"]
        await client.call_tool("destroy_server", {"name": "ok-box"})
        for tool, args in [("vm_bash", {"server": "ok-box", "command": "true"}),
                           ("extend_server", {"name": "ok-box", "ttl": "1h"}),
                           ("vm_job_list", {"server": "ok-box"})]:
            result = await client.call_tool(tool, args)
            assert result.is_error and "server 'ok-box' was burned at " in result.content[0].text, tool
        gone = await client.call_tool("vm_job_status", {"job_id": job_id})
        assert gone.structured_content["state"] == "succeeded"
        assert "is gone" in gone.structured_content["hint"]
        await client.call_tool("create_server", {"name": "ok-box"})  # for the context's own destroy
