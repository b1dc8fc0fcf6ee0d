"""Issue 12, faults from outside: the orchestrator SIGKILLed mid-create, its state.db lost or corrupt,
an expiry label moved behind the reaper's back. Real processes, real local boxes, a real SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from server.service import open_fleet
from tests.support import REPO_ROOT, cli_env, local_boxes_dir, make_settings, readline_with_deadline


async def test_a_create_whose_orchestrator_was_killed_is_failed_and_burned_at_once(tmp_path: Path) -> None:
    """Attack 7: SIGKILL mid-create left the record `provisioning` (vm_bash: "try again shortly", the name
    "already exists") until an orphan sweep 2 x ready_timeout + 15 min later."""
    settings = make_settings(tmp_path / "state")  # the default orphan grace: 15 min
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.drivers.orchestrator", "create", str(settings.home), settings.owner, "", "60"],
        env=cli_env(settings), cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert readline_with_deadline(proc).strip() == "creating"
        (box_dir,) = local_boxes_dir(settings).glob("lb-*")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    async with open_fleet(settings) as fleet:  # a new orchestrator starts: no reaper pass, no waiting
        listed = await fleet.list_servers()
        assert listed.count == 0
        (failed,) = listed.failed
        assert failed.name == "halfmade" and failed.state == "failed"
        assert f"pid {proc.pid}" in (failed.error or "") and "step" in (failed.error or ""), failed.error
        assert "burned" in (failed.error or "")
        assert not box_dir.exists()
        info = await fleet.create_server("halfmade")  # the name is free again
        assert info.state == "ready"
        await fleet.destroy_server("halfmade")
