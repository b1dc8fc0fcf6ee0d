"""Plans on local boxes with the stand-in agent (tests/plans/agent.sh), in one process (a Fleet with its own
task group, as ``boxforge plan run`` has):

- scheduling overhead per task: in a chain, the time from a task's success to its dependent's agent start,
  minus the dependent's box create (issue 14: <= 200 ms median);
- a 20-task plan (five chains of four) with a pool of 5: its wall time against its critical path, the
  longest chain's sum of task times (issue 14: <= 1.3x);
- a 500-task plan read and checked (``boxforge plan check``'s work).

``python -m tests.benchmarks.plans [--chain N]``; figures go to docs/performance.md by hand, with the load
average printed here. Never a timed assertion."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from server.plans.board import PlanBoard
from server.plans.model import Plan
from server.plans.validate import check_plan, load_plan_text
from server.service import open_fleet
from tests.plans.support import plan_repo
from tests.support import make_settings

BOXES = {"ttl": "30m", "agent": "custom", "agent_command": "sh tools/agent.sh"}


async def _run(home: Path, plan: dict[str, Any]) -> PlanBoard:
    settings = make_settings(home / "state")
    async with anyio.create_task_group() as tg, open_fleet(settings, background=tg) as fleet:
        board = await fleet.plan_start(Plan.model_validate(plan))
        while board.state == "running":
            board = await fleet.plan_status(board.plan_id, wait_s=30)
    assert board.state == "succeeded", board.model_dump_json(indent=1)
    return board


async def overhead(home: Path, chain: int) -> list[float]:
    """Per dependent of a chain (pool 2, so a task's box burns while its dependent starts): seconds from the
    prerequisite's success to the dependent's agent start, minus the dependent's box create."""
    repo = plan_repo(home / "repo")
    tasks = [{"id": f"t{i}", "branch": f"feat/t{i}", "prompt": f"write t{i}.txt {i}",
              **({"depends_on": [f"t{i - 1}"]} if i else {})} for i in range(chain)]
    board = await _run(home, {"name": "chain", "repo": str(repo), "boxes": {**BOXES, "max": 2}, "tasks": tasks})
    by_id = {t.id: t for t in board.tasks}
    gaps = []
    for i in range(1, chain):
        prev, cur = by_id[f"t{i - 1}"], by_id[f"t{i}"]
        assert prev.finished_at and cur.agent_started_at and cur.forge_s is not None
        gaps.append(cur.agent_started_at - prev.finished_at - cur.forge_s)
    return gaps


async def fan_out(home: Path, chains: int = 5, length: int = 4) -> tuple[float, float, list[float]]:
    """(wall time, critical path, task times) of ``chains`` chains of ``length`` tasks on a pool of ``chains``."""
    repo = plan_repo(home / "repo")
    tasks = []
    for c in range(chains):
        for i in range(length):
            tasks.append({"id": f"c{c}-{i}", "branch": f"feat/c{c}-{i}", "prompt": f"write c{c}/t{i}.txt x",
                          "owns": [f"c{c}/**"], **({"depends_on": [f"c{c}-{i - 1}"]} if i else {})})
    board = await _run(home, {"name": "fan", "repo": str(repo), "boxes": {**BOXES, "max": chains}, "tasks": tasks})
    took = {t.id: (t.finished_at or 0) - (t.started_at or 0) for t in board.tasks}
    critical = max(sum(took[f"c{c}-{i}"] for i in range(length)) for c in range(chains))
    assert board.finished_at is not None
    return board.finished_at - board.started_at, critical, sorted(took.values())


def validate_500() -> list[float]:
    lines = []
    for i in range(500):
        deps = f", depends_on: [t{i - 1}]" if i % 50 else ""
        lines.append(f"  - {{id: t{i}, branch: feat/t{i}, prompt: x, owns: [pkg{i // 50}/**, shared/f{i}.txt]{deps}}}")
    text = "name: huge\nboxes: {max: 5, agent: custom}\ntasks:\n" + "\n".join(lines) + "\n"
    times = []
    for _ in range(5):
        started = time.perf_counter()
        report = check_plan(load_plan_text(text))
        times.append(time.perf_counter() - started)
        assert report.ok
    return times


async def main_async(chain: int) -> None:
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    times = validate_500()
    print(f"500-task plan read and checked: median {statistics.median(times) * 1000:.0f} ms "
          f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}; 5 runs)")
    home = Path(tempfile.mkdtemp(prefix="boxforge-bench-plans-"))
    try:
        gaps = await overhead(home / "chain", chain)
        print(f"scheduling overhead per task ({len(gaps)} dependents): median {statistics.median(gaps) * 1000:.0f} ms "
              f"(min {min(gaps) * 1000:.0f}, max {max(gaps) * 1000:.0f}); target <= 200 ms")
        print(f"load average: {os.getloadavg()[0]:.1f}")
        wall, critical, took = await fan_out(home / "fan")
        print(f"20 tasks, pool 5: wall {wall:.1f} s, critical path {critical:.1f} s, ratio {wall / critical:.2f} "
              f"(target <= 1.3); task times {took[0]:.1f}-{took[-1]:.1f} s, median {statistics.median(took):.1f} s")
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=int, default=8, help="tasks in the overhead chain (default 8)")
    args = parser.parse_args(argv)
    os.environ.setdefault("BOXFORGE_IMAGE_CACHE", str(Path.home() / ".cache" / "boxforge-test-images"))  # as the suite
    anyio.run(main_async, args.chain)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
