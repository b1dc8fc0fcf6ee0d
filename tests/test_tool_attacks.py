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


BOX_SECRET = "box-secret-value-1234"
JOB_SECRET = "job-secret-value-5678"


def holds_secret(text: str) -> bool:
    return BOX_SECRET in text or JOB_SECRET in text


async def test_file_tools_redact_every_secret_of_the_box_and_refuse_secrets_files(tmp_path: Path) -> None:
    """Attack 5: vm_read / vm_grep / vm_download of a file holding a job's env value (its output, its
    `secrets` file, anything under ~/.boxforge) returned it in clear."""
    async with serving(tmp_path, env={"BOX_TOKEN": BOX_SECRET}) as client:
        ran = await client.call_tool("vm_bash", {
            "server": "atk-box", "env": {"JOB_TOKEN": JOB_SECRET},
            "command": 'echo "$JOB_TOKEN" > leak.txt; echo "$BOX_TOKEN" >> leak.txt; echo "$JOB_TOKEN"'})
        assert ran.structured_content["stdout"] == "[redacted:JOB_TOKEN]\n"
        job = ran.structured_content["job_id"]
        secrets_file = f"~/.boxforge/jobs/{job}/secrets"
        # another job (no env of its own) prints the first job's secrets and output files
        other = await client.call_tool("vm_bash", {"server": "atk-box", "command":
                                                   f"cat {secrets_file} ~/.boxforge/jobs/{job}/*; "
                                                   f"ln -sf {secrets_file} link; ln -sf ~/.boxforge/jobs/{job} jobdir"})
        assert not other.is_error and not holds_secret(str(other.structured_content))
        assert "[redacted:JOB_TOKEN]" in other.structured_content["stdout"]
        read = await client.call_tool("vm_read", {"server": "atk-box", "path": "leak.txt"})
        assert read.structured_content["content"] == "[redacted:JOB_TOKEN]\n[redacted:BOX_TOKEN]\n"
        seen = [str(read.structured_content)]
        for path in (secrets_file, f"~/.boxforge/jobs/{job}/env", "jobdir/secrets", "link"):
            refused = await client.call_tool("vm_read", {"server": "atk-box", "path": path})
            assert refused.is_error and "secret" in refused.content[0].text, path
            seen.append(refused.content[0].text)
        raw = await client.call_tool("vm_read", {"server": "atk-box", "path": "leak.txt", "encoding": "base64"})
        assert raw.is_error and "secret" in raw.content[0].text
        for where in ("~/.boxforge", ".", "~"):
            grep = await client.call_tool("vm_grep", {"server": "atk-box", "pattern": "secret-value", "path": where})
            assert not grep.is_error, grep.content
            seen.append(str(grep.structured_content))
        assert "[redacted:JOB_TOKEN]" in seen[-1]
        local = tmp_path / "down"
        local.mkdir()
        for remote in ("leak.txt", "link", secrets_file):
            down = await client.call_tool("vm_download", {"server": "atk-box", "remote_path": remote,
                                                          "local_path": str(local / "leak.txt")})
            assert down.is_error and "secret" in down.content[0].text, remote
            seen.append(down.content[0].text)
        assert list(local.iterdir()) == []  # nothing written, not even a temp file
        assert not any(holds_secret(text) for text in seen)
