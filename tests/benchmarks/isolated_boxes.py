"""Isolated vs unisolated local boxes, measured in one run: create -> first command (median of N), 10 at once
vs one, host memory per idle box. ``python -m tests.benchmarks.isolated_boxes [N]``; figures go to
docs/performance.md by hand, with the load average printed here. Never a timed assertion."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import asyncssh

from providers.base import BoxSpec, box_labels
from providers.local import LocalProvider, UnisolatedLocalProvider, cgroup
from providers.local.boxdir import read_pid
from providers.local.procs import supervisor_pid
from server.keys import create_box_keys


def _spec(keys_root: Path, name: str) -> tuple[BoxSpec, object]:
    rid = "r-" + os.urandom(6).hex()
    keys = create_box_keys(keys_root, rid)
    return BoxSpec(name=name, request_id=rid, labels=box_labels(owner="o-bench", name=name, request_id=rid,
                                                                  expires_at=time.time() + 600),
                   host_key_private=keys.host_private, host_key_public=keys.host_public,
                   authorized_key=keys.client_public), keys


async def _first_command(provider, keys_root: Path, name: str) -> tuple[float, object]:
    spec, keys = _spec(keys_root, name)
    started = time.monotonic()
    box = await provider.wait_ready((await provider.create(spec)).id, timeout=60)
    async with asyncssh.connect(box.host, box.ssh_port, username=box.ssh_user, client_keys=[str(keys.client_key_path)],
                                known_hosts=([asyncssh.import_public_key(keys.host_public)], [], []),
                                agent_path=None, config=None) as conn:
        await conn.run("true", check=True)
    return time.monotonic() - started, box


def _rss_kib(pid: int | None) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, TypeError):
        pass
    return 0


async def run(n: int) -> None:
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        kinds = {"isolated": LocalProvider(root / "iso"), "unisolated": UnisolatedLocalProvider(root / "plain")}
        for kind, provider in kinds.items():
            times = []
            for i in range(n):
                took, box = await _first_command(provider, root / "keys", f"{kind}-{i}")
                times.append(took)
                if i == n - 1 and kind == "isolated":
                    box_dir = Path(box.data["box_dir"])
                    sup = supervisor_pid(box_dir)
                    box_mem = (cgroup.memory_bytes(box.id) or 0) // 1024
                    print(f"idle isolated box: cgroup {box_mem} KiB (box processes, page cache included), "
                          f"supervisor RSS {_rss_kib(sup)} KiB, bwrap+sshd pid {read_pid(box_dir / 'server.pid')}")
                await provider.destroy(box.id)
            one = statistics.median(times)
            print(f"{kind}: create->first command median {one * 1000:.0f} ms (n={n}, min {min(times) * 1000:.0f})",
                  flush=True)
            results: list[float] = []
            boxes: list[object] = []

            async def one_of_ten(i: int) -> None:
                took, box = await _first_command(provider, root / "keys", f"{kind}-par-{i}")
                results.append(took)
                boxes.append(box)

            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(one_of_ten, i)
            wall = time.monotonic() - started
            for box in boxes:
                await provider.destroy(box.id)
            print(f"{kind}: create->first command median {one * 1000:.0f} ms (n={n}, min {min(times) * 1000:.0f}); "
                  f"10 at once: median {statistics.median(results) * 1000:.0f} ms, all ten in {wall * 1000:.0f} ms")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    anyio.run(run, int(sys.argv[1]) if len(sys.argv) > 1 else 5)
