"""A box's cgroup: memory, pids and CPU limits, and the list of every process in it.

cgroup v1 controllers are used where mounted (this machine kind), else the unified v2 hierarchy. Each box gets
``boxforge-local/<box_id>`` under every controller; memory+swap is capped at the memory limit, so a box that
exceeds it is OOM-killed inside its cgroup, never the orchestrator.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from providers.base import SIZE_PRESETS

ROOT = Path("/sys/fs/cgroup")
PARENT = "boxforge-local"
V1_CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000
PIDS_PER_CORE = 1024
DEFAULT_SIZE = "small"


@dataclass(frozen=True)
class Limits:
    cores: int
    memory_bytes: int
    pids: int

    def describe(self) -> dict[str, int]:
        return {"cores": self.cores, "memory_mib": self.memory_bytes >> 20, "pids": self.pids}


def limits_for(size: str | None) -> tuple[str, Limits]:
    """The preset name and its limits; ValueError names the choices for an unknown size."""
    name = size or DEFAULT_SIZE
    preset = SIZE_PRESETS.get(name)
    if preset is None:
        raise ValueError(f"unknown size {name!r} for a local box; use one of {', '.join(SIZE_PRESETS)}")
    return name, Limits(preset.cores, int(preset.memory_gb * (1 << 30)), preset.cores * PIDS_PER_CORE)


def _v1() -> bool:
    return all((ROOT / c / "cgroup.procs").exists() for c in V1_CONTROLLERS)


def dirs(box_id: str) -> list[Path]:
    if _v1():
        return [ROOT / c / PARENT / box_id for c in V1_CONTROLLERS]
    return [ROOT / PARENT / box_id]


def _write(path: Path, value: str) -> None:
    with contextlib.suppress(FileNotFoundError):  # an optional knob (memsw without swap accounting)
        path.write_text(value)


def create(box_id: str, limits: Limits) -> list[Path]:
    made = dirs(box_id)
    if _v1():
        for d in made:
            d.mkdir(parents=True, exist_ok=True)
        mem, pids, cpu = made
        _write(mem / "memory.limit_in_bytes", str(limits.memory_bytes))
        _write(mem / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
        _write(pids / "pids.max", str(limits.pids))
        _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", str(limits.cores * CPU_PERIOD_US))
    else:
        parent = ROOT / PARENT
        parent.mkdir(exist_ok=True)
        _write(ROOT / "cgroup.subtree_control", "+memory +pids +cpu")
        _write(parent / "cgroup.subtree_control", "+memory +pids +cpu")
        (d,) = made
        d.mkdir(exist_ok=True)
        _write(d / "memory.max", str(limits.memory_bytes))
        _write(d / "memory.swap.max", "0")
        _write(d / "pids.max", str(limits.pids))
        _write(d / "cpu.max", f"{limits.cores * CPU_PERIOD_US} {CPU_PERIOD_US}")
    return made


def join(box_id: str, pid: int = 0) -> None:
    """Move ``pid`` (0: the caller) into every controller's cgroup of the box, before it execs the box."""
    for d in dirs(box_id):
        (d / "cgroup.procs").write_text(str(pid or os.getpid()))


def pids(box_id: str) -> set[int]:
    found: set[int] = set()
    for d in dirs(box_id):
        with contextlib.suppress(OSError):
            found |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
    return found


def memory_bytes(box_id: str) -> int | None:
    d = dirs(box_id)[0]
    for name in ("memory.usage_in_bytes", "memory.current"):
        with contextlib.suppress(OSError, ValueError):
            return int((d / name).read_text())
    return None


def oom_kills(box_id: str) -> int:
    d = dirs(box_id)[0]
    for name in ("memory.oom_control", "memory.events"):
        with contextlib.suppress(OSError):
            for line in (d / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    return 0


def remove(box_id: str) -> None:
    for d in dirs(box_id):
        with contextlib.suppress(FileNotFoundError, OSError):
            d.rmdir()
