"""The control channel over a local process (server/transport/process.py): the job protocol and
file-free calls without SSH, under sh, dash and busybox sh; reconnect-once; reaping on close."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server import jobs
from server.errors import BoxTimeout, BoxUnreachable
from server.transport.process import ProcessExec


@pytest.fixture
async def pex(shell: tuple[str, ...], home: Path) -> AsyncIterator[ProcessExec]:
    ex = ProcessExec(shell, env={"HOME": str(home)}, where="a local shell")
    try:
        yield ex
    finally:
        await ex.aclose()


async def test_the_job_protocol_runs_over_a_process_channel(pex: ProcessExec) -> None:
    job_id = jobs.new_job_id()
    await jobs.launch(pex, job_id, "printf out; printf err >&2; exit 3", cwd="~")
    st = await jobs.status(pex, job_id, wait_s=30.0)
    assert (st.state, st.exit_code, st.stdout, st.stderr) == ("failed", 3, b"out", b"err")
    assert [j.job_id for j in await jobs.list_jobs(pex)] == [job_id]
    assert len(pex.channel_pids()) == 1  # every call above reused one channel


async def test_a_foreground_run_starts_and_answers_in_one_call_over_a_process_channel(pex: ProcessExec,
                                                                                      home: Path) -> None:
    # the command and env travel in-band as private lines: quotes, backslashes, newlines, non-ASCII
    command = "printf '%s|%s\\n' \"$TOKEN\" 'a\\b'\nprintf 'é\\n' >&2\nexit 4"
    job_id = jobs.new_job_id()
    st = await jobs.run(pex, job_id, command, cwd="~", env={"TOKEN": "it's \"quoted\"\nand two lines"},
                        wait_s=30.0)
    assert (st.state, st.exit_code) == ("failed", 4)
    assert (st.stdout, st.stderr) == (b"it's \"quoted\"\nand two lines|a\\b\n", "é\n".encode())
    assert st.started_at is not None and st.finished_at is not None and st.started_at <= st.finished_at
    assert abs(st.finished_at - time.time()) < 60  # the box's clock read from uptime, not date: unix time still
    assert (home / ".boxforge" / "jobs" / job_id / "cmd").read_text() == command
    assert not (home / ".boxforge" / "jobs" / job_id / "env").exists()


async def test_stdin_and_output_are_binary_safe(pex: ProcessExec) -> None:
    data = bytes(range(256)) * 64
    result = await pex("cat; printf 'e\\000r' >&2", data, 30.0)
    assert (result.exit_status, result.stdout, result.stderr) == (0, data, b"e\x00r")


async def test_a_channel_that_dies_mid_call_is_replaced_and_the_call_tried_once_more(pex: ProcessExec,
                                                                                       home: Path) -> None:
    # $$ in the call's subshell is the channel loop itself: the first attempt kills its own channel
    script = 'if [ -e "$HOME/m" ]; then echo second; else : > "$HOME/m"; kill -9 $$; fi'
    first_pids = pex.channel_pids()
    result = await pex(script, None, 30.0)
    assert (result.exit_status, result.stdout) == (0, b"second\n")
    assert pex.channel_pids() != first_pids


async def test_a_call_not_safe_to_repeat_is_not_repeated(pex: ProcessExec, home: Path) -> None:
    with pytest.raises(BoxUnreachable, match="may or may not have run"):
        await pex('echo x >> "$HOME/count"; kill -9 $$', None, 30.0, idempotent=False)
    assert (home / "count").read_text() == "x\n"


async def test_a_call_that_outlives_its_timeout_raises_and_is_not_retried(pex: ProcessExec, home: Path) -> None:
    with pytest.raises(BoxTimeout):
        await pex('echo x >> "$HOME/count"; sleep 30', None, 0.5)
    assert (home / "count").read_text() == "x\n"
    assert (await pex("echo still serving", None, 30.0)).stdout == b"still serving\n"


async def test_close_ends_every_local_process(shell: tuple[str, ...], home: Path) -> None:
    ex = ProcessExec(shell, env={"HOME": str(home)})
    await ex("true", None, 30.0)
    pids = ex.channel_pids()
    await ex.aclose()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not list((home / ".boxforge" / "ch").iterdir())  # each loop removed its scratch dir
