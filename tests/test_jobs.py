"""The on-box job protocol against real boxes, over OpenSSH and the embedded asyncssh server."""

from __future__ import annotations

import os
import secrets
import time

import anyio
import pytest

from server import jobs
from server.errors import InvalidInput, UnknownJob
from server.ssh import SSHPool, SSHTarget
from tests.conftest import BoxHandle
from tests.support import eventually

DEADLINE_S = 30.0
# Outlasts any test (pytest-timeout ends one long before): a long-poll with this wait that answers
# "finished" was answered by the job's end, not by its wait running out.
UNENDING_WAIT_S = 3600.0
GATED = 'while [ ! -e "$HOME/gate" ]; do sleep 0.05; done; echo released'


@pytest.fixture
def ex(pool: SSHPool, target: SSHTarget) -> jobs.BoxExec:
    return jobs.box_exec(pool, target)


async def sh(ex: jobs.BoxExec, script: str) -> bytes:
    """Run a helper command on the box and return its stdout (it must succeed)."""
    result = await ex(script, None, 30.0)
    assert result.exit_status == 0, result.stderr
    return result.stdout


async def start(ex: jobs.BoxExec, command: str, *, cwd: str = "~", env: dict[str, str] | None = None) -> str:
    job_id = jobs.new_job_id()
    await jobs.launch(ex, job_id, command, cwd=cwd, env=env or {})
    return job_id


async def wait_finished(ex: jobs.BoxExec, job_id: str) -> jobs.JobStatus:
    """Long-poll until the job is no longer running (with a deadline), output not read."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        st = await jobs.status(ex, job_id, max_bytes=0, wait_s=min(5.0, max(0.0, deadline - time.monotonic())))
        if st.state != "running":
            return st
        assert time.monotonic() < deadline, f"job {job_id} still running after {DEADLINE_S}s"


async def read_all(ex: jobs.BoxExec, job_id: str, chunk: int) -> tuple[jobs.JobStatus, bytes, bytes, int]:
    """Poll by offsets until the job finished and all output is read; returns the last status,
    the concatenated stdout and stderr, and how many polls returned data."""
    out, err, calls = b"", b"", 0
    deadline = time.monotonic() + DEADLINE_S
    while True:
        st = await jobs.status(ex, job_id, stdout_offset=len(out), stderr_offset=len(err), max_bytes=chunk, wait_s=1.0)
        assert st.stdout_offset == len(out) and st.stderr_offset == len(err)
        out += st.stdout
        err += st.stderr
        calls += bool(st.stdout or st.stderr)
        if st.state != "running" and not st.more:
            return st, out, err, calls
        assert time.monotonic() < deadline, f"job {job_id} not done after {DEADLINE_S}s"


async def job_pgid(ex: jobs.BoxExec, job_id: str) -> int:
    return int(await sh(ex, f'cat "$HOME/.boxforge/jobs/{job_id}/pid"'))


async def live_members_of_group(ex: jobs.BoxExec, pgid: int) -> list[str]:
    """Processes of process group ``pgid`` on the box that are not zombies."""
    rows = (await sh(ex, "ps -eo pgid=,stat=,args=")).decode().splitlines()
    members = []
    for row in rows:
        group, stat, args = [*row.split(None, 2), "", "", ""][:3]
        if group == str(pgid) and not stat.startswith("Z"):
            members.append(args)
    return members


async def test_output_read_in_chunks_by_offset_equals_the_full_output(ex: jobs.BoxExec) -> None:
    expected_out = "".join(f"line {i}\n" for i in range(1, 2001)).encode()
    expected_err = "".join(f"warn {i}\n" for i in range(1, 301)).encode()
    job_id = await start(
        ex, "i=1; while [ $i -le 2000 ]; do echo line $i; [ $i -le 300 ] && echo warn $i >&2; i=$((i+1)); done"
    )
    st, out, err, calls = await read_all(ex, job_id, chunk=1000)
    assert (st.state, st.exit_code) == ("succeeded", 0)
    assert out == expected_out
    assert err == expected_err
    assert calls >= len(expected_out) // 1000
    assert (st.stdout_size, st.stderr_size) == (len(expected_out), len(expected_err))
    assert st.started_at is not None and st.finished_at is not None and st.finished_at >= st.started_at


async def test_failing_command_is_failed_with_its_exit_code(ex: jobs.BoxExec) -> None:
    job_id = await start(ex, "echo nope >&2; exit 7")
    st = await wait_finished(ex, job_id)
    assert (st.state, st.exit_code) == ("failed", 7)


async def test_cancel_term_kills_the_job_and_its_whole_process_group(ex: jobs.BoxExec) -> None:
    job_id = await start(ex, "sleep 300 & sleep 300; wait")
    pgid = await job_pgid(ex, job_id)
    assert len(await live_members_of_group(ex, pgid)) >= 3
    await jobs.cancel(ex, job_id, "TERM")
    st = await wait_finished(ex, job_id)
    assert (st.state, st.exit_code) == ("killed", 143)
    assert await live_members_of_group(ex, pgid) == []


async def test_cancel_kill_marks_the_job_killed_without_an_exit_code(ex: jobs.BoxExec) -> None:
    job_id = await start(ex, "trap '' TERM; sleep 300")
    pgid = await job_pgid(ex, job_id)
    await jobs.cancel(ex, job_id, "KILL")
    st = await wait_finished(ex, job_id)
    assert (st.state, st.exit_code) == ("killed", None)
    assert st.finished_at is not None
    assert await live_members_of_group(ex, pgid) == []


async def test_cancel_int_interrupts_the_job(ex: jobs.BoxExec) -> None:
    job_id = await start(ex, "sleep 300")
    await jobs.cancel(ex, job_id, "INT")
    st = await wait_finished(ex, job_id)
    assert (st.state, st.exit_code) == ("killed", 130)


async def test_cancel_of_a_finished_job_changes_nothing(ex: jobs.BoxExec) -> None:
    job_id = await start(ex, "echo done")
    await wait_finished(ex, job_id)
    await jobs.cancel(ex, job_id, "KILL")
    st = await jobs.status(ex, job_id)
    assert (st.state, st.exit_code, st.stdout) == ("succeeded", 0, b"done\n")


async def long_poll_waiting_on(ex: jobs.BoxExec, job_id: str) -> bool:
    """A status long-poll is waiting on the box for the job: a process holds the job's ``run`` file
    on fd 8, where the status script waits for the wrapper's lock."""
    script = (f'run=$(readlink -f "$HOME/.boxforge/jobs/{job_id}/run"); '
              'ls -l /proc/[0-9]*/fd/8 2>/dev/null | grep -cF -- "-> $run" || true')
    return int(await sh(ex, script)) > 0


async def test_long_poll_returns_with_the_job_finished(ex: jobs.BoxExec) -> None:
    job_id = await start(ex, "echo done")
    st = await jobs.status(ex, job_id, wait_s=UNENDING_WAIT_S)
    assert (st.state, st.exit_code, st.stdout) == ("succeeded", 0, b"done\n")


async def test_long_poll_on_a_running_job_answers_once_a_gate_ends_the_job(ex: jobs.BoxExec) -> None:
    job_id = await start(ex, GATED)
    answers: list[jobs.JobStatus] = []

    async def long_poll() -> None:
        answers.append(await jobs.status(ex, job_id, wait_s=UNENDING_WAIT_S))

    async with anyio.create_task_group() as tg:
        tg.start_soon(long_poll)
        await eventually(lambda: long_poll_waiting_on(ex, job_id), what="the long-poll to wait on the box")
        await sh(ex, 'touch "$HOME/gate"')
    assert [(st.state, st.stdout) for st in answers] == [("succeeded", b"released\n")]


async def test_long_poll_whose_wait_runs_out_answers_running(ex: jobs.BoxExec) -> None:
    job_id = await start(ex, GATED)
    st = await jobs.status(ex, job_id, wait_s=0.2)
    assert st.state == "running"
    await jobs.cancel(ex, job_id, "KILL")


async def test_binary_output_with_nul_bytes_round_trips(ex: jobs.BoxExec) -> None:
    data = bytes(range(256)) * 8
    octal = "".join(f"\\{b:03o}" for b in bytes(range(256)))
    job_id = await start(ex, f"for i in 1 2 3 4 5 6 7 8; do printf '{octal}'; printf '{octal}' >&2; done")
    st, out, err, _ = await read_all(ex, job_id, chunk=777)
    assert st.state == "succeeded"
    assert out == data
    assert err == data


async def test_five_megabytes_of_output_read_by_offsets_is_intact(ex: jobs.BoxExec) -> None:
    data = os.urandom(5 * 1024 * 1024)
    assert (await ex('cat > "$HOME/big.bin"', data, 60.0)).exit_status == 0
    job_id = await start(ex, "cat big.bin")
    st, out, _, calls = await read_all(ex, job_id, chunk=1024 * 1024)
    assert st.state == "succeeded"
    assert st.stdout_size == len(data)
    assert calls >= 5
    assert out == data


async def test_read_range_returns_the_tail_of_a_large_output(ex: jobs.BoxExec) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    assert (await ex('cat > "$HOME/big.bin"', data, 60.0)).exit_status == 0
    job_id = await start(ex, "cat big.bin >&2")
    st = await wait_finished(ex, job_id)
    tail = await jobs.read_range(ex, job_id, "err", st.stderr_size - 100_000, 100_000)
    assert tail == data[-100_000:]
    assert await jobs.read_range(ex, job_id, "err", st.stderr_size, 10) == b""
    assert await jobs.read_range(ex, job_id, "out", 0, 10) == b""


async def test_env_values_with_hostile_characters_reach_the_job_exactly(ex: jobs.BoxExec) -> None:
    env = {
        "QUOTES": "it's \"double\" and 'single'",
        "NEWLINES": "line1\nline2\n\n",
        "DOLLARS": "$HOME ${PATH} $(id) `id` \\ \\n",
        "UNICODE": "ünïcødé ☃ 日本語 🚀",
        "INJECTION": "'; touch /tmp/pwned-boxforge; echo '",
        "EMPTY": "",
        "SPACES": "  lead and trail  ",
    }
    names = list(env)
    job_id = await start(ex, "printf '%s\\0' " + " ".join(f'"${name}"' for name in names), env=env)
    st, out, err, _ = await read_all(ex, job_id, chunk=65536)
    assert (st.state, err) == ("succeeded", b"")
    assert out.split(b"\0")[:-1] == [env[name].encode() for name in names]


async def test_job_env_values_never_show_in_ps_and_stay_only_in_the_private_secrets_file(ex: jobs.BoxExec) -> None:
    secret = "s3cr3t-" + secrets.token_hex(8)
    sampler = await start(ex, "end=$((SECONDS + 2)); while [ $SECONDS -lt $end ]; do ps -eo args; done")
    job_id = await start(ex, "sleep 1", env={"TOKEN": secret})
    sample_st, samples, _, _ = await read_all(ex, sampler, chunk=16 * 1024 * 1024)
    assert sample_st.state == "succeeded"
    assert f"jobs/{job_id}/".encode() in samples  # ps really ran while the job was alive
    assert secret.encode() not in samples
    await wait_finished(ex, job_id)
    job_dir = f'"$HOME/.boxforge/jobs/{job_id}"'
    assert await sh(ex, f"ls -A {job_dir}; cd {job_dir} && grep -rlF {secret} . || true") == b"".join(
        name + b"\n" for name in sorted([b"boot", b"cmd", b"cwd", b"err", b"exit", b"exit.res", b"out", b"pid", b"run",
                                          b"secrets", b"started"])
    ) + b"./secrets\n"
    assert await sh(ex, f"stat -c %a {job_dir}/secrets") == b"600\n"
    assert await jobs.read_secrets(ex, job_id) == {"TOKEN": secret}


async def test_job_env_reaches_the_job_process_environment(ex: jobs.BoxExec) -> None:
    job_id = await start(ex, 'printf %s "$TOKEN"', env={"TOKEN": "value"})
    st, out, _, _ = await read_all(ex, job_id, chunk=1024)
    assert (st.state, out) == ("succeeded", b"value")


async def test_the_box_env_file_is_private_and_sourced_before_the_job_env(ex: jobs.BoxExec) -> None:
    await jobs.write_box_env(ex, {"BOX_ONLY": "from the box's $env", "SHARED": "box"})
    assert await sh(ex, 'stat -c %a "$HOME/.boxforge/env"') == b"600\n"
    job_id = await start(ex, 'printf "%s|%s" "$BOX_ONLY" "$SHARED"', env={"SHARED": "job"})
    st, out, _, _ = await read_all(ex, job_id, chunk=1024)
    assert (st.state, out) == ("succeeded", b"from the box's $env|job")


async def test_missing_cwd_raises_invalid_input_and_leaves_no_job(ex: jobs.BoxExec) -> None:
    with pytest.raises(InvalidInput, match="'/nonexistent/dir' does not exist"):
        await jobs.launch(ex, jobs.new_job_id(), "true", cwd="/nonexistent/dir")
    assert await jobs.list_jobs(ex) == []


async def test_job_runs_in_its_cwd_resolved_under_home(ex: jobs.BoxExec, box: BoxHandle) -> None:
    await sh(ex, 'mkdir -p "$HOME/proj/sub"')
    job_id = await start(ex, "pwd", cwd="proj/sub")
    st, out, _, _ = await read_all(ex, job_id, chunk=1024)
    assert (st.state, out.decode()) == ("succeeded", f"{box.box.data['home']}/proj/sub\n")


async def test_list_jobs_reports_each_job_with_state_and_command_head(ex: jobs.BoxExec) -> None:
    first = await start(ex, "echo one")
    await wait_finished(ex, first)
    second = await start(ex, "echo two\nexit 3")
    await wait_finished(ex, second)
    third = await start(ex, "sleep 300")
    listed = await jobs.list_jobs(ex)
    assert [(j.job_id, j.state, j.exit_code, j.command) for j in listed] == [
        (first, "succeeded", 0, "echo one"),
        (second, "failed", 3, "echo two"),
        (third, "running", None, "sleep 300"),
    ]
    assert all(j.started_at for j in listed)
    await jobs.cancel(ex, third, "KILL")


async def test_job_keeps_running_and_stays_readable_after_the_connection_drops(
    ex: jobs.BoxExec, pool: SSHPool, target: SSHTarget
) -> None:
    job_id = await start(ex, 'echo before; while [ ! -e "$HOME/go" ]; do sleep 0.05; done; echo after')
    old = await pool.connection(target)
    await pool.drop(target.key)
    st = await jobs.status(ex, job_id)
    assert st.state == "running"
    assert await pool.connection(target) is not old
    await sh(ex, 'touch "$HOME/go"')
    st, out, _, _ = await read_all(ex, job_id, chunk=1024)
    assert (st.state, out) == ("succeeded", b"before\nafter\n")


async def test_launching_the_same_job_id_twice_runs_it_once(ex: jobs.BoxExec) -> None:
    job_id = jobs.new_job_id()
    for _ in range(2):
        await jobs.launch(ex, job_id, 'echo ran >> "$HOME/runs"', cwd="~")
    await wait_finished(ex, job_id)
    assert await sh(ex, 'cat "$HOME/runs"') == b"ran\n"


async def test_job_killed_behind_our_back_is_lost(ex: jobs.BoxExec) -> None:
    job_id = await start(ex, "sleep 300")
    pgid = await job_pgid(ex, job_id)
    await sh(ex, f"kill -s KILL -- -{pgid}")
    st = await wait_finished(ex, job_id)
    assert (st.state, st.exit_code) == ("lost", None)


async def test_status_of_an_unknown_job_is_lost(ex: jobs.BoxExec) -> None:
    st = await jobs.status(ex, "j-000000000000")
    assert (st.state, st.exit_code, st.stdout_size, st.stderr_size) == ("lost", None, 0, 0)


async def test_cancel_and_read_of_an_unknown_job_raise_unknown_job(ex: jobs.BoxExec) -> None:
    with pytest.raises(UnknownJob):
        await jobs.cancel(ex, "j-000000000000")
    with pytest.raises(UnknownJob):
        await jobs.read_range(ex, "j-000000000000", "out", 0, 10)


async def test_malformed_job_id_raises_unknown_job(ex: jobs.BoxExec) -> None:
    with pytest.raises(UnknownJob, match="job ids look like"):
        await jobs.status(ex, "j-1; rm -rf ~")
