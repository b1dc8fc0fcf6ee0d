"""Which process is creating a box: recorded with the create, so a later orchestrator can tell at once
that a create's process died (SIGKILL, OOM, power loss) instead of waiting for the orphan sweep.

A process is named by its pid, its start time (so a reused pid is not taken for it) and the boot id
(a reboot ends every process). Where /proc is not there, liveness is unknown and nothing is decided.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CREATOR = "creator"  # key of BoxRecord.data


def _start_ticks(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22: starttime, in clock ticks since boot


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def this_process() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "start": _start_ticks(pid), "boot": _boot_id()}


def creator_alive(creator: dict[str, Any]) -> bool | None:
    """True while the recorded process runs, False once it is gone, None when this machine cannot tell."""
    boot, start = _boot_id(), creator.get("start")
    if boot is None or start is None or creator.get("boot") is None:
        return None
    if creator["boot"] != boot:
        return False
    return _start_ticks(int(creator["pid"])) == start
