"""Jobs survive the orchestrator: SIGKILL it mid-job, start a new one on the same state dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from server.service import Fleet, open_fleet
from tests.support import REPO_ROOT, cli_env, eventually, make_settings, readline_with_deadline


async def test_job_survives_orchestrator_sigkill(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    command = "for i in $(seq 1 30); do echo tick-$i; sleep 0.05; done"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.drivers.orchestrator", "job", str(settings.home), settings.owner, command],
        env=cli_env(settings), cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        job_id = readline_with_deadline(proc).strip()
        assert job_id.startswith("j-"), "the driver printed no job id"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    async with open_fleet(settings) as fleet:
        status = await fleet.job_status(job_id, wait_s=30)
        assert status.state == "succeeded"
        assert status.stdout == "".join(f"tick-{i}\n" for i in range(1, 31))
        listed = await fleet.list_servers()
        assert [s.name for s in listed.servers] == ["survivor"]
        await fleet.destroy_server("survivor")


async def test_a_foreground_command_survives_orchestrator_sigkill(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    command = "for i in $(seq 1 30); do echo fg-$i; sleep 0.05; done"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.drivers.orchestrator", "foreground", str(settings.home), settings.owner,
         command], env=cli_env(settings), cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert readline_with_deadline(proc).strip() == "ready"
        async with open_fleet(settings) as fleet:
            # the driver is inside its foreground call once the job runs on the box: kill it there
            listed = await eventually(lambda: _running_jobs(fleet, command), what="the foreground job to start")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            (job_id,) = listed
            status = await fleet.job_status(job_id, wait_s=30)
            assert status.state == "succeeded"
            assert status.stdout == "".join(f"fg-{i}\n" for i in range(1, 31))
            await fleet.destroy_server("survivor")
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


async def _running_jobs(fleet: Fleet, command: str) -> list[str]:
    return [j.job_id for j in (await fleet.list_jobs("survivor")).jobs if j.state == "running" and j.command == command]
