"""The SSH pool's control channels against real boxes (OpenSSH and the embedded asyncssh server):
framing, large payloads, concurrency, a killed loop, a dropped connection, exec fallback, clean close."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from server import jobs
from server.errors import BoxTimeout, BoxUnreachable
from server.ssh import ExecResult, ShellCall, SSHPool, SSHTarget
from tests.conftest import BoxHandle
from tests.ssh_helpers import target_for
from tests.support import eventually

ALL_BYTES = bytes(range(256))
# a library function writing text on stdout and bytes (NUL included) on fd 3
LIBRARY = r"""bf_test_echo() {
  printf 'text %s\n\n' "$1"
  cat >&3
  printf 'warn\000ing' >&2
  return "${2:-0}"
}
"""


def pid_alive(pid: int) -> bool:
    """The local boxes run on this machine: a box-side pid is a local pid (zombies count as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def scratch_dirs(box: BoxHandle) -> list[str]:
    root = Path(box.box.data["home"]) / ".boxforge" / "ch"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


async def test_a_command_line_round_trips_binary_stdin_stdout_and_stderr(pool: SSHPool, target: SSHTarget) -> None:
    data = ALL_BYTES * 64
    result = await pool.channel_run(target, "cat; printf 'e\\000r' >&2; exit 3", stdin=data)
    assert (result.exit_status, result.stdout, result.stderr) == (3, data, b"e\x00r")
    assert pool.channel_pids(target.key), "the call went over a control channel"


async def test_a_shell_call_returns_text_then_fd3_bytes(pool: SSHPool, target: SSHTarget) -> None:
    call = ShellCall(LIBRARY, "bf_test_echo 'ünï ☃' 5")
    for _ in range(3):  # the library is defined once, then only the call is sent
        result = await pool.channel_run(target, call, stdin=ALL_BYTES)
        assert result.exit_status == 5
        assert result.stdout == "text ünï ☃\n\n".encode() + ALL_BYTES
        assert result.stderr == b"warn\x00ing"


async def test_a_shell_call_over_exec_gives_the_same_result(pool: SSHPool, target: SSHTarget) -> None:
    call = ShellCall(LIBRARY, "bf_test_echo x 0")
    over_exec = await pool.run(target, call.command_line(), stdin=ALL_BYTES)
    over_channel = await pool.channel_run(target, call, stdin=ALL_BYTES)
    assert over_exec == over_channel


async def test_empty_and_newline_only_outputs_are_kept_exactly(pool: SSHPool, target: SSHTarget) -> None:
    assert (await pool.channel_run(target, "true")).stdout == b""
    assert (await pool.channel_run(target, "printf '\\n\\n\\n'")).stdout == b"\n\n\n"
    shell_call = ShellCall("bf_test_nl() { printf '\\n\\n'; }\n", "bf_test_nl")
    assert (await pool.channel_run(target, shell_call)).stdout == b"\n\n"


async def test_five_megabytes_each_way_arrive_intact(pool: SSHPool, target: SSHTarget) -> None:
    data = os.urandom(5 * 1024 * 1024)
    plain = await pool.channel_run(target, "cat", stdin=data, timeout=60.0)
    assert plain.stdout == data
    shell = await pool.channel_run(target, ShellCall(LIBRARY, "bf_test_echo big"), stdin=data, timeout=60.0)
    assert shell.stdout == b"text big\n\n" + data
    assert (await pool.channel_run(target, "echo still in step")).stdout == b"still in step\n"


async def test_many_concurrent_callers_each_get_their_own_answer(pool: SSHPool, target: SSHTarget) -> None:
    async def one(i: int) -> None:
        payload = f"caller {i}\n".encode() * (i + 1)
        script = f"cat; printf %s {i} >&2; exit {i % 7}"
        result = await pool.channel_run(target, script, stdin=payload)
        assert (result.exit_status, result.stdout, result.stderr) == (i % 7, payload, str(i).encode())
        call = await pool.channel_run(target, ShellCall(LIBRARY, f"bf_test_echo {i} {i % 5}"), stdin=payload)
        assert (call.exit_status, call.stdout) == (i % 5, f"text {i}\n\n".encode() + payload)

    await asyncio.gather(*(one(i) for i in range(60)))
    assert 1 <= len(pool.channel_pids(target.key)) <= 2, "short calls share the short lane's channels"


async def test_long_calls_do_not_hold_up_short_calls(pool: SSHPool, target: SSHTarget, box: BoxHandle) -> None:
    gate = Path(box.box.data["home"]) / "gate"
    waiter = ShellCall('bf_test_wait() { while [ ! -e "$HOME/gate" ]; do sleep 0.02; done; echo released; }\n',
                       "bf_test_wait", long=True)
    long_calls = [asyncio.create_task(pool.channel_run(target, waiter, timeout=60.0)) for _ in range(4)]
    try:
        # the long lane and then exec carry the long calls; the short lane stays free
        for i in range(5):
            assert (await pool.channel_run(target, f"echo {i}", timeout=30.0)).stdout == f"{i}\n".encode()
        assert not any(task.done() for task in long_calls)
    finally:
        gate.touch()
        results = await asyncio.gather(*long_calls)
    assert [r.stdout for r in results] == [b"released\n"] * 4


async def test_a_killed_channel_loop_is_detected_and_replaced(pool: SSHPool, target: SSHTarget) -> None:
    await pool.channel_run(target, "true")
    (old,) = pool.channel_pids(target.key)
    await pool.run(target, f"kill -KILL {old}")
    await eventually(lambda: not pid_alive(old), what="the channel loop to die")
    for i in range(3):
        assert (await pool.channel_run(target, f"echo {i}")).stdout == f"{i}\n".encode()
    new = pool.channel_pids(target.key)
    assert new and old not in new


async def test_a_channel_dying_mid_call_is_retried_over_exec(pool: SSHPool, target: SSHTarget) -> None:
    # $__bft is only set inside the channel loop, where $$ is the loop itself
    script = 'if [ -n "$__bft" ]; then kill -KILL $$; fi; echo ran'
    result = await pool.channel_run(target, script)
    assert (result.exit_status, result.stdout) == (0, b"ran\n")
    assert (await pool.channel_run(target, "echo next")).stdout == b"next\n"


async def test_a_channel_dying_mid_call_is_not_retried_when_not_idempotent(pool: SSHPool, target: SSHTarget) -> None:
    with pytest.raises(BoxUnreachable, match="may or may not have run"):
        await pool.channel_run(target, 'kill -KILL $$; echo ran', idempotent=False)
    assert (await pool.channel_run(target, "echo next")).stdout == b"next\n"


async def test_a_dropped_connection_reconnects_transparently(pool: SSHPool, target: SSHTarget) -> None:
    await pool.channel_run(target, "true")
    first = await pool.connection(target)
    first.abort()  # the connection dies under the pool's feet
    assert (await pool.channel_run(target, "echo back")).stdout == b"back\n"
    assert await pool.connection(target) is not first
    await pool.drop(target.key)
    assert (await pool.channel_run(target, "echo again")).stdout == b"again\n"


async def test_a_timeout_raises_box_timeout_and_the_next_call_works(pool: SSHPool, target: SSHTarget) -> None:
    with pytest.raises(BoxTimeout):
        await pool.channel_run(target, "sleep 30", timeout=0.5)
    assert (await pool.channel_run(target, "echo fine")).stdout == b"fine\n"


async def test_a_box_that_cannot_run_the_loop_is_served_over_exec(
    pool: SSHPool, target: SSHTarget, box: BoxHandle
) -> None:
    scratch = Path(box.box.data["home"]) / ".boxforge" / "ch"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    scratch.write_text("not a directory")  # the loop cannot make its scratch dir and exits
    for i in range(3):
        result = await pool.channel_run(target, ShellCall(LIBRARY, f"bf_test_echo {i}"), stdin=b"in")
        assert result.stdout == f"text {i}\n\n".encode() + b"in"
    assert pool.channel_pids(target.key) == []


async def test_a_pool_without_channels_uses_exec(target: SSHTarget) -> None:
    pool = SSHPool(connect_timeout=5.0, short_channels=0, long_channels=0)
    try:
        assert (await pool.channel_run(target, "echo plain")).stdout == b"plain\n"
        assert pool.channel_pids(target.key) == []
    finally:
        await pool.aclose()


async def test_closing_the_pool_ends_the_loops_and_removes_their_scratch_dirs(box: BoxHandle) -> None:
    pool = SSHPool(connect_timeout=5.0)
    target = target_for(box)
    waiter = ShellCall("bf_test_nap() { sleep 0.2; }\n", "bf_test_nap", long=True)
    await asyncio.gather(pool.channel_run(target, "true"), pool.channel_run(target, waiter),
                         pool.channel_run(target, "sleep 0.1"))
    pids = pool.channel_pids(target.key)
    assert len(pids) >= 2 and sorted(scratch_dirs(box)) == sorted(map(str, pids))
    await pool.drop(target.key)
    await eventually(lambda: not any(map(pid_alive, pids)), what="the loops to exit after drop")
    await eventually(lambda: scratch_dirs(box) == [], what="the scratch dirs to go")
    await pool.channel_run(target, "true")
    (pid,) = pool.channel_pids(target.key)
    await pool.aclose()
    await eventually(lambda: not pid_alive(pid), what="the loop to exit after aclose")
    await eventually(lambda: scratch_dirs(box) == [], what="the scratch dir to go")


async def test_a_scratch_dir_left_by_a_killed_loop_is_swept_by_the_next(pool: SSHPool, target: SSHTarget,
                                                                         box: BoxHandle) -> None:
    await pool.channel_run(target, "true")
    (old,) = pool.channel_pids(target.key)
    await pool.run(target, f"kill -KILL {old}")
    await eventually(lambda: not pid_alive(old), what="the channel loop to die")
    assert str(old) in scratch_dirs(box)
    for _ in range(2):  # the first call may find the dead channel and go over exec; the next opens one
        await pool.channel_run(target, "true")
    assert str(old) not in scratch_dirs(box)


def exec_only(pool: SSHPool, target: SSHTarget) -> jobs.BoxExec:
    async def run(script: str, stdin: bytes | None = None, timeout: float | None = None) -> ExecResult:
        return await pool.run(target, script, stdin=stdin, timeout=timeout)

    return run


@pytest.mark.parametrize("transport", ["channel", "exec"])
async def test_a_job_holds_nothing_of_the_call_that_launched_it(
    pool: SSHPool, target: SSHTarget, box: BoxHandle, transport: str
) -> None:
    ex = jobs.box_exec(pool, target) if transport == "channel" else exec_only(pool, target)
    gate = Path(box.box.data["home"]) / f"gate-{transport}"
    command = (f'for f in 3 8 9; do [ -e /proc/$$/fd/$f ] && echo "fd $f open"; done\n'
               f'while [ ! -e "{gate}" ]; do sleep 0.02; done; echo done')
    job_id = jobs.new_job_id()
    async with asyncio.timeout(30):  # a launch waiting for its job would never return: the job waits for us
        await jobs.launch(ex, job_id, command, cwd="~")
        assert (await jobs.status(ex, job_id)).state == "running"
    gate.touch()
    deadline = time.monotonic() + 30
    while (st := await jobs.status(ex, job_id, wait_s=5.0)).state == "running":
        assert time.monotonic() < deadline
    assert (st.state, st.stdout) == ("succeeded", b"done\n")


async def test_waiting_for_a_free_session_counts_inside_the_timeout(target: SSHTarget, box: BoxHandle) -> None:
    pool = SSHPool(connect_timeout=5.0, max_sessions=2, short_channels=1, long_channels=0)  # one channel, one exec
    home = Path(box.box.data["home"])

    def hold(name: str) -> str:
        return f'touch "{home}/{name}"; while [ ! -e "{home}/release" ]; do sleep 0.02; done'

    holders = [asyncio.create_task(pool.channel_run(target, hold("on-channel"), timeout=60.0)),
               asyncio.create_task(pool.run(target, hold("on-exec"), timeout=60.0))]
    try:
        await eventually(lambda: (home / "on-channel").exists() and (home / "on-exec").exists(),
                         what="the channel and the exec session to be taken")
        async with asyncio.timeout(30):  # a wait outside the timeout would last until the release: forever
            with pytest.raises(BoxTimeout, match=r"no SSH session .* came free within 0\.5s"):
                await pool.run(target, "true", timeout=0.5)
            with pytest.raises(BoxTimeout, match=r"no SSH session .* came free within 0\.5s"):
                await pool.channel_run(target, "true", timeout=0.5)
    finally:
        (home / "release").touch()
        assert [(await holder).exit_status for holder in holders] == [0, 0]
        await pool.aclose()


async def test_a_long_command_line_takes_the_long_lane(pool: SSHPool, target: SSHTarget, box: BoxHandle) -> None:
    gate = Path(box.box.data["home"]) / "gate-long"
    waiter = f'while [ ! -e "{gate}" ]; do sleep 0.02; done; echo released'
    long_calls = [asyncio.create_task(pool.channel_run(target, waiter, timeout=60.0, long=True)) for _ in range(3)]
    try:
        for i in range(3):  # the short lane stays free for short calls
            assert (await pool.channel_run(target, f"echo {i}", timeout=30.0)).stdout == f"{i}\n".encode()
        assert not any(task.done() for task in long_calls)
    finally:
        gate.touch()
        results = await asyncio.gather(*long_calls)
    assert [r.stdout for r in results] == [b"released\n"] * 3
