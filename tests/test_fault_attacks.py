"""Issue 12, faults from outside: the orchestrator SIGKILLed mid-create, its state.db lost or corrupt,
an expiry label moved behind the reaper's back. Real processes, real local boxes, a real SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from providers.base import LABEL_EXPIRES_AT, LABEL_NAME, LABEL_READY, BoxSpec, box_labels
from server.config import Settings
from server.keys import create_box_keys
from server.service import open_fleet
from tests.support import REPO_ROOT, cli_env, eventually, local_boxes_dir, make_settings, readline_with_deadline


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


async def _rebuilt_box_is_usable(settings: Settings, name: str, capsys: pytest.CaptureFixture[str]) -> str:
    """After the store was lost: the box is listed, extendable, runs commands and burns; returns stderr."""
    async with open_fleet(settings) as fleet:
        listed = await fleet.list_servers()
        assert [s.name for s in listed.servers] == [name]
        assert listed.servers[0].state == "ready"
        extended = await fleet.extend_server(name, 7200)
        assert extended.expires_at is not None
        ran = await fleet.run(name, "echo alive")
        assert ran.stdout == "alive\n"
        await fleet.destroy_server(name)
        assert (await fleet.list_servers()).count == 0
        assert await fleet.provider("local").list({}) == []
    return capsys.readouterr().err


@pytest.mark.parametrize("damage", ["garbage", "emptied"])
async def test_a_lost_or_corrupt_store_is_moved_aside_and_rebuilt_from_labels(
        tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Attack 8: a garbage state.db gave a raw sqlite3.DatabaseError; an emptied one hid a live box from
    ls, burn, burn --all and reap until its TTL."""
    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as fleet:
        await fleet.create_server("keeper")
    for leftover in settings.home.glob("state.db*"):
        leftover.unlink()
    if damage == "garbage":
        settings.db_path.write_bytes(b"this is not a database, it is garbage " * 200)
    else:
        settings.db_path.write_bytes(b"")
    err = await _rebuilt_box_is_usable(settings, "keeper", capsys)
    assert "rebuilt 1 box" in err and "job output" in err and "idempotency keys" in err, err
    if damage == "garbage":
        (aside,) = settings.home.glob("state.db.corrupt-*")
        assert aside.read_bytes().startswith(b"this is not a database") and str(aside) in err


async def test_the_reaper_burns_at_its_own_expiry_not_a_moved_label(tmp_path: Path) -> None:
    """Attack 10, on real boxes: an expiry label pushed 10 years out by someone other than extend_server."""
    settings = make_settings(tmp_path / "state")
    far = str(int(time.time()) + 10 * 365 * 86400)
    async with open_fleet(settings) as fleet:
        await fleet.create_server("moved", ttl_s=3600)
        prov = fleet.provider("local")
        (made,) = await prov.list({LABEL_NAME: "moved"})
        await prov.set_labels(made.id, {**made.labels, LABEL_EXPIRES_AT: far})
        assert (await fleet.reap_once())[0] == []  # our record says one hour: not yet
        rec = fleet.store.live_box("moved")
        assert rec is not None
        fleet.store.update_box(rec.request_id, expires_at=time.time() - 1)  # stands in for the hour passing
        burned, _ = await fleet.reap_once()
        assert burned == ["moved"] and await prov.list({LABEL_NAME: "moved"}) == []
    # without any record (a store lost): max_ttl from the box's creation
    short = make_settings(tmp_path / "short", max_ttl_s=1, auto_extend=False)
    keys = create_box_keys(tmp_path / "keys", "k")
    async with open_fleet(short) as fleet:
        prov = fleet.provider("local")
        labels = {**box_labels(owner=short.owner, name="unrecorded", request_id="r-x", expires_at=int(far)),
                  LABEL_READY: "1"}
        made = await prov.create(BoxSpec(name="unrecorded", request_id="r-x", labels=labels,
                                         host_key_private=keys.host_private, host_key_public=keys.host_public,
                                         authorized_key=keys.client_public))
        await eventually(lambda: time.time() > made.created_at + 1.5, what="the box to pass max_ttl (1 s)")
        burned, _ = await fleet.reap_once()
        assert burned == ["unrecorded"] and await prov.list({}) == []
