"""The reaper burns expired boxes through provider labels, within seconds, and nothing else."""

from __future__ import annotations

import time
from pathlib import Path

import anyio.lowlevel
from mcp import Client

from providers.base import LABEL_EXPIRES_AT, LABEL_OWNER
from server.mcp.app import build_server
from server.service import open_fleet
from tests.support import eventually, make_settings


async def expire_soon(fleet, name: str, seconds: float) -> None:
    """Rewrite the box's expiry label (as another orchestrator sharing the owner could)."""
    rec = fleet.store.live_box(name)
    prov = fleet.provider(rec.provider)
    box = await prov.get(rec.box_id)
    await prov.set_labels(box.id, {**box.labels, LABEL_EXPIRES_AT: str(int(time.time() + seconds))})


async def test_reaper_in_the_server_burns_an_expired_box(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", reaper_max_sleep_s=1.0, local_watchdog_grace_s=600)
    async with Client(build_server(settings)) as client:
        await client.call_tool("create_server", {"name": "short"})
        keep = await client.call_tool("create_server", {"name": "keep"})
        assert not keep.is_error
        async with open_fleet(settings) as other:
            await expire_soon(other, "short", 1)

        async def gone() -> bool:
            names = [s["name"] for s in (await client.call_tool("list_servers", {})).structured_content["servers"]]
            return names == ["keep"]

        await eventually(gone, timeout=15, interval=0.1, what="the reaper to burn 'short'")
        await client.call_tool("destroy_server", {"name": "keep"})


async def test_reap_works_with_an_empty_store_and_spares_other_owners(tmp_path: Path) -> None:
    # The boxes' own watchdogs wait long enough that only the reaper can act here.
    settings = make_settings(tmp_path / "state", local_watchdog_grace_s=600)
    async with open_fleet(settings) as fleet:
        await fleet.create_server("mine")
        await fleet.create_server("theirs")
        await expire_soon(fleet, "mine", -1)
        rec = fleet.store.live_box("theirs")
        prov = fleet.provider("local")
        box = await prov.get(rec.box_id)
        await prov.set_labels(box.id, {**box.labels, LABEL_OWNER: "someone-else",
                                       LABEL_EXPIRES_AT: str(int(time.time() - 5))})
    settings.db_path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(settings.db_path) + suffix).unlink(missing_ok=True)

    async with open_fleet(settings) as fleet:
        burned, _ = await fleet.reap_once()
        assert burned == ["mine"]
        remaining = await fleet.provider("local").list({})
        assert [b.name for b in remaining] == ["theirs"]
        await fleet.provider("local").destroy(remaining[0].id)
    await anyio.lowlevel.checkpoint()
