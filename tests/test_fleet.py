"""Fleet behaviour through the MCP tools: pinned host keys, failure burns, repo credentials."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from server.errors import HostKeyMismatch
from server.keys import HOST_PUB_FILE, generate_keypair
from server.mcp.app import build_server
from server.service import open_fleet
from tests.support import box_pids, local_boxes_dir, make_settings


async def test_a_box_presenting_another_host_key_is_refused(tmp_path: Path) -> None:
    # Any SSH server (the image's OpenSSH in an isolated box, the embedded one, a host without OpenSSH): the
    # pin this orchestrator holds for the box is replaced, so the key the box presents is no longer the one
    # pinned, as when another machine answers at the box's address.
    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as fleet:
        await fleet.create_server("pinned")
        rec = await fleet.repo.live_box("pinned")
        assert rec is not None
        (settings.keys_dir / rec.key_id / HOST_PUB_FILE).write_text(generate_keypair("impostor")[1] + "\n")
        try:
            async with open_fleet(settings) as fresh:  # another process: it reads the pin anew
                with pytest.raises(HostKeyMismatch, match="pinned"):
                    await fresh.run("pinned", "true")
        finally:
            await fleet.destroy_server("pinned", harvest=False)


async def test_a_failing_clone_burns_the_box_and_says_why(tmp_path: Path) -> None:
    # unisolated: the test checks the box's dirs on the host are gone
    settings = make_settings(tmp_path / "state", local_isolation="none")
    not_a_repo = tmp_path / "plain-dir"
    not_a_repo.mkdir()
    async with Client(build_server(settings)) as client:
        # a clone on the box (repo_via='box') of a URL naming no repository: the box's git fails
        result = await client.call_tool("create_server", {"name": "doomed", "repo": f"file://{not_a_repo}/none.git",
                                                          "repo_via": "box"})
        assert result.is_error
        text = result.content[0].text
        assert "box was burned" in text and "bootstrap failed" in text and "STEP=clone" in text
        listed = await client.call_tool("list_servers", {})
        assert listed.structured_content["count"] == 0
    assert not list(local_boxes_dir(settings).glob("lb-*"))
    assert not list(settings.keys_dir.iterdir())


async def test_destroy_kills_detached_processes_of_the_box(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with Client(build_server(settings)) as client:
        await client.call_tool("create_server", {"name": "daemon"})
        await client.call_tool("vm_bash", {"server": "daemon", "command": "(setsid sleep 900 &) ; echo spawned"})
        (box_dir,) = local_boxes_dir(settings).glob("lb-*")
        assert box_pids(box_dir.name)
        await client.call_tool("destroy_server", {"name": "daemon"})
    assert not box_pids(box_dir.name)
