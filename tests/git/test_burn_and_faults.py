"""No work lost at burn, and faults during a fetch, on real local boxes through the Fleet: the TTL reaper
harvests before it burns with no call from anyone, a running job extends a box at its TTL (event logged),
a fetch whose connection is cut mid-transfer leaves nothing half-written and comes out the same on retry,
two fetches at once agree, and a burn during a fetch waits for it and burns after the harvest."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
from mcp import Client

from providers.base import LABEL_EXPIRES_AT
from server.mcp.app import build_server
from server.service import open_fleet
from tests.support import call, eventually, git, make_repo, make_settings

# A clean filter that blocks `git add` of *.slow files until ~/release exists: the harvest of a box with such
# a file stops at a known point, so the test can cut its connection (or burn the box) right there.
BLOCKING_FILTER = (
    "git config filter.slow.clean 'sh -c \"touch $HOME/blocked; "
    "while [ ! -e $HOME/release ]; do sleep 0.05; done; cat\"' "
    "&& echo '*.slow filter=slow' > .git/info/attributes && echo data > work.slow")


async def _expire(fleet, name: str, seconds: float) -> None:
    rec = fleet.store.live_box(name)
    prov = fleet.provider(rec.provider)
    box = await prov.get(rec.box_id)
    await prov.set_labels(box.id, {**box.labels, LABEL_EXPIRES_AT: str(int(time.time() + seconds))})


async def test_the_ttl_reaper_harvests_first_and_a_running_job_extends_the_box(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", reaper_max_sleep_s=1.0, local_watchdog_grace_s=600,
                             auto_extend_step_s=300)
    repo = make_repo(tmp_path / "repo")
    async with Client(build_server(settings)) as client:
        await call(client, "create_server", name="ttl", repo=str(repo), branch="feat/ttl")
        await call(client, "create_server", name="busy")
        await call(client, "vm_bash", server="ttl", command="echo unsaved > unsaved.txt")
        job = await call(client, "vm_bash", server="busy", command="sleep 120", background=True)
        async with open_fleet(settings) as other:
            await _expire(other, "ttl", 1)
            await _expire(other, "busy", 1)

        async def ttl_gone() -> bool:
            names = {s["name"] for s in (await call(client, "list_servers"))["servers"]}
            return "ttl" not in names

        await eventually(ttl_gone, timeout=30, interval=0.2, what="the reaper to burn 'ttl'")
        assert git(repo, "show", "refs/boxforge/ttl/feat/ttl:unsaved.txt") == "unsaved"

        async def extended() -> dict | None:
            return next((e for e in settings_events(settings) if e["kind"] == "auto-extend"), None)

        event = await eventually(extended, timeout=30, interval=0.2, what="the busy box to be extended")
        assert event["box_name"] == "busy" and job["job_id"] in event["detail"]
        busy = next(s for s in (await call(client, "list_servers"))["servers"] if s["name"] == "busy")
        assert busy["time_left_s"] > 200 and job["job_id"] in busy["auto_extended"]
        await call(client, "vm_job_cancel", job_id=job["job_id"], signal="KILL")
        await call(client, "destroy_server", name="busy")
    reaped = [e for e in settings_events(settings) if e["kind"] == "reap" and e["box_name"] == "ttl"]
    assert reaped and "came home" in reaped[0]["detail"]


def settings_events(settings) -> list[dict]:
    from server.store import Store

    store = Store(settings.db_path)
    try:
        return store.events(500)
    finally:
        store.close()


async def test_a_cut_fetch_leaves_nothing_and_retries_to_the_same_commit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_repo(tmp_path / "repo")
    async with open_fleet(settings) as fleet:
        name = "cut"
        await fleet.create_server("cut", repo=str(repo), branch="feat/cut")
        try:
            await fleet.run("cut", BLOCKING_FILTER)
            results: list = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: _append(results, fleet.fetch("cut")))
                await eventually(lambda: _ran(fleet, name, "test -e ~/blocked"), timeout=30,
                                 what="the harvest to block")
                assert "refs/boxforge" not in git(repo, "for-each-ref")  # nothing half-written
                assert not list((settings.home / "git" / "tmp").glob("fetch-*"))
                await fleet.pool.drop("cut")  # the connection is cut mid-transfer
                await fleet.run("cut", "touch ~/release")
            (first,) = results
            again = await fleet.fetch("cut")
            assert again.tip == first.tip == git(repo, "rev-parse", first.ref)
            assert git(repo, "show", f"{first.tip}:work.slow") == "data"
        finally:
            await fleet.destroy_server("cut", harvest=False)


async def test_two_fetches_at_once_agree_and_a_burn_during_a_fetch_harvests_after_it(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_repo(tmp_path / "repo")
    async with open_fleet(settings) as fleet:
        name = "both"
        await fleet.create_server("both", repo=str(repo), branch="feat/both")
        await fleet.run("both", BLOCKING_FILTER)
        fetched: list = []
        burned: list = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _append(fetched, fleet.fetch("both")))
            tg.start_soon(lambda: _append(fetched, fleet.fetch("both")))
            await eventually(lambda: _ran(fleet, name, "test -e ~/blocked"), timeout=30, what="the harvest to block")
            tg.start_soon(lambda: _append(burned, fleet.destroy_server("both")))
            await fleet.run("both", "touch ~/release")
        assert fetched[0].tip == fetched[1].tip and fetched[1].new_commits == []
        (result,) = burned
        assert result.destroyed and result.harvested
        assert git(repo, "rev-parse", "refs/boxforge/both/feat/both") == fetched[0].tip


async def _append(into: list, awaitable) -> None:
    into.append(await awaitable)


async def _ran(fleet, server: str, command: str) -> bool:
    return (await fleet.run(server, command)).exit_code == 0
