"""Agent installs on isolated local boxes without egress (issue 20): create_server(agent=...) wall time with the
orchestrator's npm cache cold (a fresh cache dir: everything comes from the registry once) and warm (the same
dir again), and the bootstrap's own account of its install (its log line "... runs (node X from npm; N s,
node M s)"). ``python -m tests.benchmarks.agent_install [claude|codex ...]``; figures go to docs/performance.md
by hand, with the load average printed here. Never a timed assertion."""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

import anyio

from server.service import open_fleet
from tests.support import make_settings

INSTALL_LINE = re.compile(r"runs \(node (\S+) from (\w+); (\d+) s, node (\d+) s\)")


async def _one(cache: Path, agent: str, label: str) -> str:
    with tempfile.TemporaryDirectory(prefix="bf-agent-bench-") as tmp:
        settings = make_settings(Path(tmp) / "state", npm_cache=str(cache))
        async with open_fleet(settings) as fleet:
            started = time.monotonic()
            info = await fleet.create_server(name="bench", agent=agent, egress="none", ready_timeout_s=900)
            wall = time.monotonic() - started
            try:
                log = await fleet.job_status(info.bootstrap_job_id, max_bytes=1 << 20)  # type: ignore[arg-type]
                found = INSTALL_LINE.search(log.stdout)
            finally:
                await fleet.destroy_server("bench", harvest=False)
    box_side = f"install {found[3]} s on the box (Node {found[4]} s)" if found else "no install line"
    return f"{agent} {info.agent_version} ({label} cache): create {wall:.1f} s; {box_side}; node {info.node_version}"


async def main(agents: list[str]) -> None:
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bf-npm-cache-") as cache:
        for agent in agents:
            for label in ("cold", "warm"):
                print(await _one(Path(cache), agent, label), flush=True)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:] or ["claude", "codex"])
