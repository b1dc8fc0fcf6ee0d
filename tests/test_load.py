"""Load: 20 boxes and 200 background jobs at once through one orchestrator, all output intact."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import anyio

from server.service import open_fleet
from tests.support import local_boxes_dir, make_settings

BOXES = 20
JOBS_PER_BOX = 10
LINES = 200


def expected_output(box: int, job: int) -> str:
    return "".join(f"b{box}-j{job}-{n}\n" for n in range(1, LINES + 1))


async def test_twenty_boxes_two_hundred_jobs(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", max_parallel_creates=10)
    names = [f"load-{i}" for i in range(BOXES)]
    async with open_fleet(settings) as fleet:
        started = time.monotonic()
        limiter = anyio.CapacityLimiter(settings.max_parallel_creates)

        async def create(name: str) -> None:
            async with limiter:
                await fleet.create_server(name)

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(create, name)
        assert (await fleet.list_servers()).count == BOXES

        job_ids: dict[tuple[int, int], str] = {}

        async def launch(box: int, job: int) -> None:
            command = f"seq 1 {LINES} | sed 's/^/b{box}-j{job}-/'"
            result = await fleet.run(names[box], command, background=True)
            job_ids[(box, job)] = result.job_id

        async with anyio.create_task_group() as tg:
            for box in range(BOXES):
                for job in range(JOBS_PER_BOX):
                    tg.start_soon(launch, box, job)
        assert len(set(job_ids.values())) == BOXES * JOBS_PER_BOX

        outputs: dict[tuple[int, int], str] = {}

        async def poll(key: tuple[int, int]) -> None:
            status = await fleet.job_status(job_ids[key], wait_s=60)
            assert status.state == "succeeded", (key, status.state, status.stderr)
            outputs[key] = status.stdout

        async with anyio.create_task_group() as tg:
            for key in job_ids:
                tg.start_soon(poll, key)
        elapsed = time.monotonic() - started
        mismatched = [key for key, out in outputs.items() if out != expected_output(*key)]
        assert mismatched == []
        listed = await fleet.list_jobs()
        assert listed.unreachable == []
        assert sum(1 for j in listed.jobs if j.state == "succeeded") == BOXES * (JOBS_PER_BOX + 1)

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(fleet.destroy_server, name)
        assert list(local_boxes_dir(settings).glob("lb-*")) == []
    db = sqlite3.connect(settings.db_path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT count(*) FROM jobs WHERE state = 'succeeded' AND kind = 'command'").fetchone()[0] \
        == BOXES * JOBS_PER_BOX
    print(f"\n{BOXES} boxes, {BOXES * JOBS_PER_BOX} jobs: created, run and polled in {elapsed:.1f}s")
