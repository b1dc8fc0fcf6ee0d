"""Issue 12 item 6: ``timeout_s`` is a promise. Long-polls of background jobs must not take the sessions a
foreground command needs, and when a box's capacity is truly exhausted a foreground call says so before its
deadline instead of waiting past it. A real isolated box, the real pool, real long-polls."""

from __future__ import annotations

import time
from pathlib import Path

import anyio

from server.errors import BoxBusy
from server.service import open_fleet
from tests.support import eventually, make_settings

LONG_POLLS = 6


async def test_a_foreground_command_keeps_its_timeout_behind_six_long_polls_and_six_jobs(tmp_path: Path) -> None:
    """The reviewer's run: 6 background jobs, each long-polled (vm_job_status wait_s=30), then
    vm_bash("echo hi", timeout_s=5) took 28.6 s. It must answer, and well within its 5 s."""
    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as fleet:
        await fleet.create_server("lanes", ttl_s=600)
        job_ids = [(await fleet.run("lanes", f"sleep 40 # {i}", background=True)).job_id for i in range(LONG_POLLS)]
        polling: list[str] = []

        async def long_poll(job_id: str) -> None:
            polling.append(job_id)
            await fleet.job_status(job_id, wait_s=30)

        async with anyio.create_task_group() as tg:
            for job_id in job_ids:
                tg.start_soon(long_poll, job_id)
            await eventually(lambda: len(polling) == LONG_POLLS, what="the long-polls to start")
            await anyio.sleep(0.5)  # let the long-polls reach the box and hold their sessions (not a wait for state)
            started = time.monotonic()
            result = await fleet.run("lanes", "echo hi", timeout_s=5)
            took = time.monotonic() - started
            assert result.state == "succeeded" and result.stdout == "hi\n", result
            assert took < 5, f"vm_bash(timeout_s=5) answered after {took:.1f}s"
            # a second foreground call, and one that has to run out its own timeout, keep their promises too
            started = time.monotonic()
            slow = await fleet.run("lanes", "sleep 30", timeout_s=2)
            took = time.monotonic() - started
            assert slow.state == "running" and took < 2 + 1.5, (slow, took)
            tg.cancel_scope.cancel()
        for job_id in job_ids:
            await fleet.cancel_job(job_id, "KILL")


async def test_when_the_box_is_truly_full_a_foreground_call_says_so_before_its_deadline(tmp_path: Path) -> None:
    """Every session of the box held by other foreground waits: each call still answers before its deadline,
    either waited on (running at its timeout) or refused with an error that says every session was taken, and
    then nothing was started (a retry cannot run it twice)."""
    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as fleet:
        await fleet.create_server("full", ttl_s=600)
        results: list = []

        async def foreground(i: int) -> None:
            started = time.monotonic()
            try:
                result = await fleet.run("full", f"sleep 20 # {i}", timeout_s=4)
            except BoxBusy as exc:
                result = exc
            results.append((result, time.monotonic() - started))

        async with anyio.create_task_group() as tg:
            for i in range(12):  # more than the box's 8 sessions
                tg.start_soon(foreground, i)
        assert len(results) == 12
        waited = [r for r, _ in results if not isinstance(r, BoxBusy)]
        refused = [r for r, _ in results if isinstance(r, BoxBusy)]
        for result, took in results:
            assert took < 4 + 1.5, (result, took)
        assert all(r.state == "running" for r in waited), waited
        assert refused and "no SSH session" in str(refused[0]) and "hold them all" in str(refused[0]), refused
        on_box = await fleet.list_jobs("full")
        assert sorted(j.job_id for j in on_box.jobs if j.command.startswith("sleep 20")) == \
            sorted(r.job_id for r in waited)
        for result in waited:
            await fleet.cancel_job(result.job_id, "KILL")
