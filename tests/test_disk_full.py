"""Issue 12.9, disk full: the state dir on a small tmpfs this test mounts (root only), filled to the last
byte. The store's writes fail with a message that names the path and what to free."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client

from providers.local import BOXES_DIR_NAME
from server.errors import ForgeError
from server.mcp.app import build_server
from server.store import JobRecord, Repository
from tests.support import make_settings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@contextlib.contextmanager
def small_fs(where: Path, size: str = "1m") -> Iterator[Path]:
    where.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(fs: Path) -> Path:
    """Fill ``fs`` to the last byte with one file; returns it (delete it to free the space)."""
    filler = fs / "filler"
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as f:
        while True:
            f.write(b"\0" * 65536)
    with contextlib.suppress(OSError), filler.open("ab", buffering=0) as f:
        while True:
            f.write(b"\0")
    return filler


def job(i: int) -> JobRecord:
    return JobRecord(job_id=f"j-{i:012x}", box_name="b", request_id="r1", command="x" * 400, cwd="~",
                     kind="command", idempotency_key=None, state="running", exit_code=None,
                     created_at=time.time(), finished_at=None)


async def test_a_full_state_dir_is_named_in_the_error_and_nothing_is_lost(tmp_path: Path) -> None:
    """Attack 9: with the state dir on a full filesystem, vm_bash said only `Error executing tool vm_bash`."""
    with small_fs(tmp_path / "state") as fs:
        repo = await Repository.open(fs / "state.db")
        try:
            await repo.insert_job(job(0))
            filler = fill(fs)
            with pytest.raises(ForgeError) as caught:
                for i in range(1, 2000):  # until the WAL needs a page the disk has not got
                    await repo.insert_job(job(i))
            message = str(caught.value)
            assert "no space left" in message and str(fs) in message and "free" in message, message
            written = i
            filler.unlink()
            await repo.insert_job(job(written))  # space again: the store goes on, nothing written before is lost
            assert (await repo.job_and_box(job(0).job_id))[0] is not None
            assert (await repo.job_and_box(job(written).job_id))[0] is not None
        finally:
            repo.close()


async def test_vm_bash_on_a_full_state_dir_says_so_and_a_running_job_is_not_lost(tmp_path: Path) -> None:
    """Attack 9 through MCP: the state dir (store, keys) on a full tmpfs, the local boxes on another fs
    (bind-mounted) so the box itself still has room; a background job writing 40 lines meanwhile."""
    home = tmp_path / "state"
    with small_fs(home, "8m"):
        boxes = tmp_path / "boxes"
        boxes.mkdir()
        (home / BOXES_DIR_NAME).mkdir()
        subprocess.run(["mount", "--bind", str(boxes), str(home / BOXES_DIR_NAME)], check=True)
        try:
            async with Client(build_server(make_settings(home))) as client:
                made = await client.call_tool("create_server", {"name": "full-disk"})
                assert not made.is_error, made.content
                try:
                    started = await client.call_tool("vm_bash", {
                        "server": "full-disk", "background": True,
                        "command": "for i in $(seq 1 40); do echo line-$i; sleep 0.05; done"})
                    job_id = started.structured_content["job_id"]
                    filler = fill(home)
                    errors = []
                    for _ in range(200):  # until the store needs a page the disk has not got
                        ran = await client.call_tool("vm_bash", {"server": "full-disk", "command": "echo hi"})
                        if ran.is_error:
                            errors.append(ran.content[0].text)
                            break
                    assert errors and "no space left" in errors[0] and str(home) in errors[0], errors
                    status = await client.call_tool("vm_job_status", {"job_id": job_id, "wait_s": 30})
                    assert not status.is_error, status.content
                    assert status.structured_content["state"] == "succeeded"
                    assert status.structured_content["stdout"] == "".join(f"line-{i}\n" for i in range(1, 41))
                    filler.unlink()
                    again = await client.call_tool("vm_bash", {"server": "full-disk", "command": "echo back"})
                    assert again.structured_content["stdout"] == "back\n"
                finally:
                    await client.call_tool("destroy_server", {"name": "full-disk"})
        finally:
            subprocess.run(["umount", "-l", str(home / BOXES_DIR_NAME)], check=False)
