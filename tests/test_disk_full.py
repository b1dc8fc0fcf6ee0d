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


async def test_a_full_box_disk_is_named_and_a_writing_job_keeps_its_state_and_output(tmp_path: Path) -> None:
    """Attack 9, box side: the box's own disk (its overlay's upper dir: the local boxes on a 32 MiB tmpfs this test
    mounts, the state dir elsewhere) filled from inside while a job writes. vm_write said only `Failure`; the job
    that was writing could end with no exit record (its `exit` file needs a page the disk has not got)."""
    home = tmp_path / "state"
    home.mkdir()
    with small_fs(home / BOXES_DIR_NAME, "32m"):
        async with Client(build_server(make_settings(home))) as client:
            made = await client.call_tool("create_server", {"name": "box-full"})
            assert not made.is_error, made.content
            try:
                # 20 lines of 300 bytes, then (once the disk is full) 20 more, each one a write that may fail
                writer = await client.call_tool("vm_bash", {"server": "box-full", "background": True, "command": (
                    "touch /root/flag.pending; for i in $(seq 1 40); do printf 'line-%03d %0290d\\n' $i 0; "
                    "if [ $i = 20 ]; then while [ ! -e /root/full ]; do sleep 0.05; done; fi; done; echo done")})
                job_id = writer.structured_content["job_id"]
                filled = await client.call_tool("vm_bash", {"server": "box-full", "timeout_s": 60, "command": (
                    "while [ ! -e /root/flag.pending ]; do sleep 0.05; done; sleep 0.3; "
                    "dd if=/dev/zero of=/root/filler bs=64k 2>/dev/null; head -c 1 /dev/zero >> /root/filler; "
                    "mv /root/flag.pending /root/full; df -k /root | tail -1")})
                # the filler's own exit could not be written the ordinary way (no page left): recorded, not lost,
                # and it says why its last writes failed
                assert filled.structured_content["state"] in ("succeeded", "failed"), filled.structured_content
                wrote = await client.call_tool("vm_write", {"server": "box-full", "path": "notes.txt",
                                                            "content": "x" * 300_000})
                assert wrote.is_error
                text = wrote.content[0].text
                assert "no space left" in text and "notes.txt" in text and "free" in text, text
                status = await client.call_tool("vm_job_status", {"job_id": job_id, "wait_s": 30})
                assert not status.is_error, status.content
                st = status.structured_content
                assert st["state"] == "failed" and st["exit_code"] is not None, st  # not lost: printf failed
                lines = st["stdout"].splitlines()
                assert lines[:20] == [f"line-{i:03d} {0:0290d}" for i in range(1, 21)], lines[:3]
                box_dir = next((home / BOXES_DIR_NAME).glob("lb-*"))
                out = next(box_dir.glob(f"fs/upper/root/.boxforge/jobs/{job_id}/out")).read_text()
                assert st["stdout"] == out  # every byte the job managed to write, and nothing else
                assert "no space left" in (st.get("hint") or ""), st
                queued = await client.call_tool("vm_bash", {"server": "box-full", "command": "true", "background": True})
                assert queued.is_error and "no space left on the box's disk" in queued.content[0].text, queued.content
                # no job can start (its record needs room): a foreground command runs directly, and frees space
                freed = await client.call_tool("vm_bash", {"server": "box-full", "command": "rm /root/filler; echo ok"})
                assert not freed.is_error, freed.content
                assert freed.structured_content["stdout"] == "ok\n", freed.structured_content
                assert "ran directly" in freed.structured_content["hint"]
                again = await client.call_tool("vm_write", {"server": "box-full", "path": "notes.txt", "content": "y"})
                assert not again.is_error, again.content
            finally:
                await client.call_tool("destroy_server", {"name": "box-full"})
