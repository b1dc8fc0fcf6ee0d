"""LocalProvider against real SSH servers (system OpenSSH and the embedded asyncssh server)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import asyncssh
import pytest

from providers.base import LABEL_EXPIRES_AT, Box, BoxState, Provider, ProviderError, owner_labels
from providers.local import UnisolatedLocalProvider as LocalProvider  # the unisolated mode keeps this suite
from providers.local.boxdir import read_pid, write_labels
from providers.probe import probe_ssh
from server.keys import create_box_keys, generate_keypair
from tests.conftest import BoxHandle, MakeBox, connect_pinned
from tests.support import box_pids

DETACHED_SLEEP = "setsid sleep 1000 >/dev/null 2>&1 </dev/null &"


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.05)


async def start_detached_sleep(handle: BoxHandle) -> None:
    async with await handle.connect() as conn:
        result = await conn.run(DETACHED_SLEEP, check=True, timeout=10)
        assert result.exit_status == 0

    async def sleeping() -> bool:
        return bool(box_pids(handle.box.id))

    await wait_for(sleeping, 5, "the detached sleep to show up")


async def assert_burned(box: Box) -> None:
    """The box's directory, server and processes are all gone."""
    assert not Path(box.data["box_dir"]).exists()
    assert not await probe_ssh(box.host or "", box.ssh_port, timeout=1)
    assert box_pids(box.id) == []


def test_local_provider_implements_the_provider_protocol(boxes_root: Path) -> None:
    assert isinstance(LocalProvider(boxes_root), Provider)


async def test_session_gets_box_home_and_box_id(ssh_server_kind: str, make_box: MakeBox) -> None:
    handle = await make_box(server=ssh_server_kind)
    async with await handle.connect() as conn:
        result = await conn.run("echo $HOME $BOXFORGE_BOX", check=True, timeout=10)
    assert result.stdout == f"{handle.box.data['home']} {handle.box.id}\n"
    assert handle.box.state is BoxState.RUNNING
    assert handle.box.data["server"] == ssh_server_kind


async def test_client_pinning_another_host_key_is_refused(ssh_server_kind: str, make_box: MakeBox) -> None:
    handle = await make_box(server=ssh_server_kind)
    _, other_host_public = generate_keypair("not-this-box")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await connect_pinned(handle.box, handle.client_key_path, other_host_public)


async def test_only_the_authorized_client_key_logs_in(
    ssh_server_kind: str, make_box: MakeBox, keys_root: Path
) -> None:
    handle = await make_box(server=ssh_server_kind)
    stranger = create_box_keys(keys_root, "stranger")
    with pytest.raises(asyncssh.PermissionDenied):
        await connect_pinned(handle.box, stranger.client_key_path, handle.host_public)


async def test_create_is_idempotent_by_request_id(ssh_server_kind: str, make_box: MakeBox) -> None:
    handle = await make_box(server=ssh_server_kind)
    again = await handle.provider.create(handle.spec)
    assert again.id == handle.box.id
    assert [box.id for box in await handle.provider.list({})] == [handle.box.id]


async def test_box_dir_is_private(make_box: MakeBox) -> None:
    handle = await make_box(server="embedded")
    box_dir = Path(handle.box.data["box_dir"])
    assert box_dir.name.startswith("lb-")
    assert stat.S_IMODE(box_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((box_dir / "home").stat().st_mode) == 0o700
    assert stat.S_IMODE((box_dir / "ssh_host_ed25519_key").stat().st_mode) == 0o600


async def test_list_by_labels_works_from_a_fresh_provider(make_box: MakeBox, boxes_root: Path) -> None:
    first = await make_box(server="embedded", name="a", labels={"team": "red"})
    second = await make_box(server="embedded", name="b", labels={"team": "blue"})
    fresh = LocalProvider(boxes_root)
    red = await fresh.list({"team": "red"})
    assert [box.id for box in red] == [first.box.id]
    assert red[0].state is BoxState.RUNNING
    mine = await fresh.list(owner_labels(first.owner))
    assert {box.id for box in mine} == {first.box.id, second.box.id}
    assert await fresh.list({"team": "green"}) == []


async def test_set_labels_replaces_the_labels_on_disk(make_box: MakeBox, boxes_root: Path) -> None:
    handle = await make_box(server="embedded")
    new_labels = {**handle.box.labels, LABEL_EXPIRES_AT: str(int(time.time()) + 3600), "team": "red"}
    updated = await handle.provider.set_labels(handle.box.id, new_labels)
    assert dict(updated.labels) == new_labels
    reread = await LocalProvider(boxes_root).get(handle.box.id)
    assert reread is not None and dict(reread.labels) == new_labels


async def test_destroy_stops_server_kills_detached_processes_and_removes_dir(
    ssh_server_kind: str, make_box: MakeBox
) -> None:
    handle = await make_box(server=ssh_server_kind)
    await start_detached_sleep(handle)
    await handle.provider.destroy(handle.box.id)
    await assert_burned(handle.box)
    assert await handle.provider.get(handle.box.id) is None


async def test_destroy_kills_job_process_groups_even_without_the_box_env(
    ssh_server_kind: str, make_box: MakeBox
) -> None:
    handle = await make_box(server=ssh_server_kind)
    pid_file = Path(handle.box.data["home"]) / ".boxforge" / "jobs" / "j-000000000001" / "pid"
    launch = (
        f"mkdir -p {pid_file.parent}; "
        f"setsid sh -c 'echo $$ > {pid_file}; exec env -i sleep 1000' >/dev/null 2>&1 </dev/null &"
    )
    async with await handle.connect() as conn:
        await conn.run(launch, check=True, timeout=10)

    async def job_started() -> bool:
        return pid_file.exists() and pid_file.read_text().strip().isdigit()

    await wait_for(job_started, 5, "the job to write its pid")
    job_pid = int(pid_file.read_text())
    await handle.provider.destroy(handle.box.id)
    assert not Path(f"/proc/{job_pid}").exists() or "Z" in Path(f"/proc/{job_pid}/stat").read_text().split()[2]
    await assert_burned(handle.box)


def start_stranger() -> subprocess.Popen[bytes]:
    """A process outside any box, leading its own process group (its pgid is its pid)."""
    env = {k: v for k, v in os.environ.items() if k != "BOXFORGE_BOX"}
    return subprocess.Popen(["sleep", "1000"], env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def write_job_pid(handle: BoxHandle, pid: int) -> Path:
    """A job dir of the box whose pid file names ``pid``, as if the job's wrapper had written it."""
    job_dir = Path(handle.box.data["home"]) / ".boxforge" / "jobs" / "j-00000000000f"
    job_dir.mkdir(parents=True)
    (job_dir / "pid").write_text(f"{pid}\n")
    return job_dir


async def test_destroy_spares_a_process_group_that_took_the_pid_of_a_finished_job(make_box: MakeBox) -> None:
    handle = await make_box(server="embedded")
    stranger = start_stranger()  # started after the box, as a process that reused the pid would be
    try:
        job_dir = write_job_pid(handle, stranger.pid)
        (job_dir / "exit").write_text(f"0 {time.time()}\n")
        await handle.provider.destroy(handle.box.id)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


async def test_destroy_spares_a_process_group_that_took_the_pid_of_a_lost_job(make_box: MakeBox) -> None:
    handle = await make_box(server="embedded")
    pid_written_at = time.time() - 1.0  # by the job's leader, which died (no exit file) before the stranger started
    stranger = start_stranger()
    try:
        pid_file = write_job_pid(handle, stranger.pid) / "pid"
        os.utime(pid_file, (pid_written_at, pid_written_at))
        await handle.provider.destroy(handle.box.id)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


async def test_destroy_twice_and_destroy_unknown_are_silent(make_box: MakeBox) -> None:
    handle = await make_box(server="embedded")
    await handle.provider.destroy(handle.box.id)
    await handle.provider.destroy(handle.box.id)
    await handle.provider.destroy("lb-000000000000")
    await handle.provider.destroy("not-a-box-id")
    assert await handle.provider.get(handle.box.id) is None


async def test_watchdog_burns_expired_box_without_provider(ssh_server_kind: str, make_box: MakeBox) -> None:
    handle = await make_box(server=ssh_server_kind)
    await start_detached_sleep(handle)
    box_dir = Path(handle.box.data["box_dir"])
    write_labels(box_dir, {**handle.box.labels, LABEL_EXPIRES_AT: str(int(time.time()) + 2)})

    async def dir_gone() -> bool:
        return not box_dir.exists()

    await wait_for(dir_gone, 20, "the watchdog to burn the box (at expiry + its grace)")
    await assert_burned(handle.box)


async def test_destroy_burns_a_box_whose_supervisor_died(ssh_server_kind: str, make_box: MakeBox) -> None:
    handle = await make_box(server=ssh_server_kind)
    await start_detached_sleep(handle)
    os.kill(read_pid(Path(handle.box.data["box_dir"]) / "supervisor.pid") or 0, signal.SIGKILL)
    await handle.provider.destroy(handle.box.id)
    await assert_burned(handle.box)


async def test_wait_ready_reports_a_dead_supervisor_with_its_log(make_box: MakeBox) -> None:
    handle = await make_box(server="embedded")
    pid = read_pid(Path(handle.box.data["box_dir"]) / "supervisor.pid")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    async def errored() -> bool:
        box = await handle.provider.get(handle.box.id)
        return box is not None and box.state is BoxState.ERROR

    await wait_for(errored, 5, "the box to show its dead supervisor")
    with pytest.raises(ProviderError, match=r"ready on 127\.0\.0\.1"):
        await handle.provider.wait_ready(handle.box.id, timeout=5)


async def test_box_outlives_the_process_that_created_it(
    boxes_root: Path, keys_root: Path, tmp_path: Path
) -> None:
    keys = create_box_keys(keys_root, "outlive")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(
        json.dumps(
            {
                "name": "outlive",
                "request_id": "r-outlive",
                "labels": {"managed-by": "boxforge", LABEL_EXPIRES_AT: str(int(time.time()) + 600)},
                "host_key_private": keys.host_private,
                "host_key_public": keys.host_public,
                "authorized_key": keys.client_public,
            }
        )
    )
    script = (
        "import anyio, json, sys\n"
        "from providers.base import BoxSpec\n"
        "from providers.local import UnisolatedLocalProvider as LocalProvider\n"
        "async def main():\n"
        "    provider = LocalProvider(sys.argv[1], server='embedded')\n"
        "    box = await provider.create(BoxSpec(**json.loads(open(sys.argv[2]).read())))\n"
        "    await provider.wait_ready(box.id, timeout=20)\n"
        "anyio.run(main)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(boxes_root), str(spec_file)], check=True, timeout=60)
    provider = LocalProvider(boxes_root)
    [box] = await provider.list({"managed-by": "boxforge"})
    try:
        assert box.state is BoxState.RUNNING
        async with await connect_pinned(box, keys.client_key_path, keys.host_public) as conn:
            result = await conn.run("echo $BOXFORGE_BOX", check=True, timeout=10)
        assert result.stdout == f"{box.id}\n"
    finally:
        await provider.destroy(box.id)


async def test_embedded_reports_exit_status(make_box: MakeBox) -> None:
    handle = await make_box(server="embedded")
    async with await handle.connect() as conn:
        result = await conn.run("echo out; echo err >&2; exit 7", timeout=10)
    assert (result.exit_status, result.stdout, result.stderr) == (7, "out\n", "err\n")


async def test_embedded_round_trips_binary_stdin_and_stdout(make_box: MakeBox) -> None:
    handle = await make_box(server="embedded")
    payload = bytes(range(256)) * 4096
    async with await handle.connect() as conn:
        result = await conn.run("cat", input=payload, encoding=None, check=True, timeout=20)
    assert result.stdout == payload


async def test_embedded_reports_exit_signal(make_box: MakeBox) -> None:
    handle = await make_box(server="embedded")
    async with await handle.connect() as conn:
        result = await conn.run("kill -KILL $$", timeout=10)
    assert result.exit_signal is not None and result.exit_signal[0] == "KILL"


async def test_embedded_forwards_client_signals(make_box: MakeBox) -> None:
    handle = await make_box(server="embedded")
    async with await handle.connect() as conn:
        process = await conn.create_process("exec sleep 30")
        process.send_signal("TERM")
        with anyio.fail_after(10):
            result = await process.wait()
    assert result.exit_signal is not None and result.exit_signal[0] == "TERM"


async def test_sftp_writes_and_reads_files_in_the_box(ssh_server_kind: str, make_box: MakeBox) -> None:
    handle = await make_box(server=ssh_server_kind)
    home = handle.box.data["home"]
    payload = os.urandom(100_000)
    async with await handle.connect() as conn, conn.start_sftp_client() as sftp:
        assert await sftp.realpath(".") == home
        async with sftp.open("upload.bin", "wb") as fh:
            await fh.write(payload)
        async with sftp.open(f"{home}/upload.bin", "rb") as fh:
            assert await fh.read() == payload
    assert (Path(home) / "upload.bin").read_bytes() == payload
