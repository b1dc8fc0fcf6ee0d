"""Warm pools on real local boxes: the filler boots a profile's boxes ahead of time; concurrent creates that
match take distinct ready boxes (never one box twice) and only get the repo seeded, a create beyond the
pool is forged cold; a taken box carries the user's name and expiry and no pool label; pooled boxes stay out
of list_servers; through the MCP server the lifespan keeps the pool filled and `boxforge pool status`
shows it."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import anyio

from providers.base import LABEL_EXPIRES_AT, LABEL_NAME, LABEL_OWNER
from server.config import Settings
from server.service import open_fleet
from server.service.pool import LABEL_POOL
from server.store.sqlite import Store
from tests.support import assert_cli_words, boxforge_cmd, call, cli_env, eventually, make_repo, make_settings
from tests.workflow_support import session

POOL = '[pool.warm]\ncount = 2\nttl = "1h"\n'


def pool_status(settings: Settings) -> dict[str, object]:
    done = assert_cli_words(subprocess.run([*boxforge_cmd(), "pool", "status", "--json"], env=cli_env(settings),
                                           capture_output=True, text=True, timeout=120))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["profiles"][0]


async def test_concurrent_creates_take_distinct_warm_boxes_and_the_rest_forge_cold(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    async with open_fleet(make_settings(tmp_path / "state", config=POOL)) as fleet:
        made = await fleet.fill_pools()
        assert len(made) == 2 and all(n.startswith("pool-warm-") for n in made)
        status = (await fleet.pool_status()).profiles[0]
        assert (status.count, status.ready, status.starting, sorted(status.boxes)) == (2, 2, 0, sorted(made))
        assert (await fleet.list_servers()).servers == [], "waiting pool boxes are not the user's"
        pooled_ids = {(await fleet.repo.live_box(n)).box_id for n in made}  # type: ignore[union-attr]
        for box_id in pooled_ids:
            waiting = await fleet.provider("local").get(box_id)  # type: ignore[arg-type]
            assert waiting is not None and waiting.labels[LABEL_POOL] == "warm"
            assert waiting.labels[LABEL_OWNER] == fleet.settings.owner and LABEL_EXPIRES_AT in waiting.labels

        infos = {}

        async def create(name: str) -> None:
            infos[name] = await fleet.create_server(name, repo=str(repo), branch=f"feat/{name}", ttl_s=1800)

        async with anyio.create_task_group() as tg:
            for name in ("c1", "c2", "c3"):
                tg.start_soon(create, name)
        warm = sorted(n for n, i in infos.items() if i.from_pool == "warm")
        assert len(warm) == 2 and all(i.state == "ready" for i in infos.values())
        boxes = {n: (await fleet.repo.live_box(n)).box_id for n in infos}  # type: ignore[union-attr]
        assert {boxes[n] for n in warm} == pooled_ids, "each warm box went to exactly one create"
        assert len(set(boxes.values())) == 3
        for name, info in infos.items():
            out = await fleet.run(name, "git branch --show-current; cat README.md")
            assert out.stdout.split("\n")[:2] == [f"feat/{name}", "hello from the test repo"]
            box = await fleet.provider("local").get(boxes[name])
            assert box is not None and box.labels[LABEL_NAME] == name and LABEL_POOL not in box.labels
            assert box.labels[LABEL_OWNER] == fleet.settings.owner
            assert abs(int(box.labels[LABEL_EXPIRES_AT]) - (time.time() + 1800)) < 120
        assert (await fleet.pool_status()).profiles[0].ready == 0
        assert {s.name for s in (await fleet.list_servers()).servers} == {"c1", "c2", "c3"}
        for name in infos:
            await fleet.destroy_server(name, harvest=False)


def ready_in_pool(store: Store) -> int:
    return sum(1 for r in store.live_boxes() if (r.data or {}).get("pool") == "warm" and r.state == "ready")


async def test_the_mcp_server_keeps_the_pool_filled(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    settings = make_settings(tmp_path / "state", config=POOL.replace("count = 2", "count = 1"))
    async with session(settings) as client:
        store = Store(settings.db_path)  # the server's store, read beside it (WAL)
        try:
            await eventually(lambda: ready_in_pool(store) == 1, timeout=60, what="the lifespan's filler to fill it")
            made = await call(client, "create_server", name="warm1", repo=str(repo))
            assert made["from_pool"] == "warm" and made["state"] == "ready"
            await eventually(lambda: ready_in_pool(store) == 1, timeout=60, what="the pool to be refilled")
        finally:
            store.close()
        shown = await anyio.to_thread.run_sync(pool_status, settings)
        assert (shown["profile"], shown["count"], shown["ready"]) == ("warm", 1, 1)
    async with open_fleet(settings) as fleet:  # the pool's boxes are boxes: burned like any
        for rec in await fleet.repo.live_boxes():
            await fleet.destroy_server(rec.name, harvest=False)
