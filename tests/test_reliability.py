"""Nothing leaked, nothing lost: fault injection against real local boxes.

Faults are injected with real parts: a provider subclass that fails after the box exists, a
box that authorizes the wrong key, an orchestrator process SIGKILLed mid-create, a box
burned behind the fleet's back, a box whose SSH server is frozen with SIGSTOP.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from providers.base import LABEL_OWNER, Box, BoxSpec, CapacityError, box_labels
from providers.local import LocalProvider
from providers.local.procs import supervisor_pid
from server.errors import NotOwned, ProvisionFailed
from server.keys import create_box_keys, generate_keypair
from server.service import Fleet, open_fleet, open_resources
from tests.support import (
    REPO_ROOT,
    box_pids,
    cli_env,
    eventually,
    local_boxes_dir,
    make_repo,
    make_settings,
    readline_with_deadline,
)


def live_box_dirs(fleet: Fleet) -> list[Path]:
    return list(local_boxes_dir(fleet.settings).glob("lb-*"))


class FailsAfterCreate(LocalProvider):
    """The cloud made the server, then the create call failed (a lost response, say)."""

    async def create(self, spec: BoxSpec) -> Box:
        await super().create(spec)
        raise CapacityError("injected: the create call failed after the server was made")


class WrongKey(LocalProvider):
    """The box comes up but authorizes another client key: SSH is refused."""

    async def create(self, spec: BoxSpec) -> Box:
        return await super().create(dataclasses.replace(spec, authorized_key=generate_keypair("other")[1]))


@pytest.mark.parametrize(("provider_cls", "expected"), [
    (FailsAfterCreate, "injected"),
    (WrongKey, "rejected our client key"),
])
async def test_a_failed_create_burns_the_box(tmp_path: Path, provider_cls: type, expected: str) -> None:
    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as fleet:
        fleet.providers["local"] = provider_cls(local_boxes_dir(settings))
        with pytest.raises(ProvisionFailed, match="box was burned") as info:
            await fleet.create_server("faulty")
        assert expected in str(info.value)
        assert live_box_dirs(fleet) == []
        assert list(settings.keys_dir.iterdir()) == []
        assert (await fleet.list_servers()).count == 0
        fleet.providers["local"] = LocalProvider(local_boxes_dir(settings))
        await fleet.create_server("faulty")  # the name is free again
        await fleet.destroy_server("faulty")


async def test_a_ready_timeout_burns_the_box(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as fleet:
        with pytest.raises(ProvisionFailed, match="did not become reachable"):
            await fleet.create_server("slow", ready_timeout_s=0.001)
        assert live_box_dirs(fleet) == []


async def test_a_create_cancelled_midway_burns_the_box(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_repo(tmp_path / "repo")
    async with open_fleet(settings) as fleet:
        boxes_at_cancel: list[Path] = []
        keys_at_cancel: list[Path] = []
        with anyio.CancelScope() as scope:

            async def cancel_once_cloning(step: str, index: int, total: int) -> None:
                if step == "clone":  # the box is up and its bootstrap job is running
                    boxes_at_cancel.extend(live_box_dirs(fleet))
                    keys_at_cancel.extend(settings.keys_dir.iterdir())
                    scope.cancel()

            await fleet.create_server("cancelled", repo=str(repo), progress=cancel_once_cloning)
        assert scope.cancelled_caught
        assert len(boxes_at_cancel) == 1 and len(keys_at_cancel) == 1
        assert live_box_dirs(fleet) == []
        assert box_pids(boxes_at_cancel[0].name) == []
        assert list(settings.keys_dir.iterdir()) == []
        assert (await fleet.list_servers()).count == 0


async def test_orchestrator_killed_mid_create_leaves_an_orphan_the_sweep_burns(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", orphan_grace_s=1.0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.drivers.orchestrator", "create", str(settings.home), settings.owner],
        env=cli_env(settings), cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert readline_with_deadline(proc).strip() == "creating"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    (box_dir,) = local_boxes_dir(settings).glob("lb-*")
    # a Fleet that skips the start-up recovery (tests/test_fault_attacks.py covers that): the sweep alone
    async with open_resources(settings) as res:
        fleet = Fleet(res)

        async def swept() -> bool:
            burned, _ = await fleet.reap_once()
            return burned == ["halfmade"]

        await eventually(swept, timeout=15, interval=0.2, what="the orphan sweep to burn the half-made box")
        assert not box_dir.exists()
        assert (await fleet.list_servers()).count == 0
        info = await fleet.create_server("halfmade")  # the name is usable again
        assert info.state == "ready"
        await fleet.destroy_server("halfmade")


async def test_a_create_still_running_in_another_process_is_not_taken_for_an_orphan(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", orphan_grace_s=0.0)
    proc = subprocess.Popen(  # its create deadline is 2 x 60 s away
        [sys.executable, "-m", "tests.drivers.orchestrator", "create", str(settings.home), settings.owner, "", "60"],
        env=cli_env(settings), cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert readline_with_deadline(proc).strip() == "creating"
        (box_dir,) = local_boxes_dir(settings).glob("lb-*")
        async with open_fleet(settings) as fleet:
            burned, _ = await fleet.reap_once()
            await fleet.list_servers()  # reconcile must not fail the other process's record either
            rec = fleet.store.live_box("halfmade")
        assert burned == [] and box_dir.exists()
        assert rec is not None and rec.state == "provisioning"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for leftover in local_boxes_dir(settings).glob("lb-*"):
            await LocalProvider(local_boxes_dir(settings)).destroy(leftover.name)


async def test_the_sweep_spares_ready_boxes_and_boxes_without_our_owner_label(tmp_path: Path) -> None:
    # the box's own watchdog is held back (it would burn the expired foreign box itself, racing the listing)
    settings = make_settings(tmp_path / "state", orphan_grace_s=0.0, local_watchdog_grace_s=600)
    async with open_fleet(settings) as fleet:
        await fleet.create_server("ready-one")
        prov = fleet.provider("local")
        keys = create_box_keys(tmp_path / "foreign-keys", "foreign")
        labels = {k: v for k, v in box_labels(owner="x", name="foreign", request_id="rf",
                                              expires_at=time.time() - 1).items()
                  if k != LABEL_OWNER}  # expired, never ready, but not ours
        foreign = await prov.create(BoxSpec(name="foreign", request_id="rf", labels=labels,
                                            host_key_private=keys.host_private, host_key_public=keys.host_public,
                                            authorized_key=keys.client_public))
        burned, _ = await fleet.reap_once()
        assert burned == []
        assert {b.name for b in await prov.list({})} == {"ready-one", "foreign"}
        await prov.destroy(foreign.id)
        await fleet.destroy_server("ready-one")


async def test_a_job_survives_a_dropped_connection(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as fleet:
        await fleet.create_server("cut")
        job = await fleet.run("cut", "for i in $(seq 1 20); do echo $i; sleep 0.05; done", background=True)
        await fleet.job_status(job.job_id)
        await fleet.access.pool.drop("cut")  # the connection goes away mid-job
        status = await fleet.job_status(job.job_id, wait_s=20)
        assert status.state == "succeeded"
        assert status.stdout == "".join(f"{i}\n" for i in range(1, 21))
        await fleet.destroy_server("cut")


async def test_a_foreground_command_survives_a_dropped_connection_and_its_call_answers(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    command = "for i in $(seq 1 20); do echo $i; sleep 0.05; done"
    async with open_fleet(settings) as fleet:
        await fleet.create_server("cutfg")
        results = []
        async with anyio.create_task_group() as tg:
            async def foreground() -> None:
                results.append(await fleet.run("cutfg", command))

            tg.start_soon(foreground)
            await eventually(lambda: _jobs_running(fleet, "cutfg", command), what="the foreground job to start")
            await fleet.access.pool.drop("cutfg")  # the connection goes away mid-call: the call retries, never reruns
        (result,) = results
        assert (result.state, result.exit_code) == ("succeeded", 0)
        assert result.stdout == "".join(f"{i}\n" for i in range(1, 21))
        ran = [j.job_id for j in (await fleet.list_jobs("cutfg")).jobs if j.command == command]
        assert ran == [result.job_id]  # run once, not again by the retry
        await fleet.destroy_server("cutfg")


async def _jobs_running(fleet: Fleet, name: str, command: str) -> bool:
    return any(j.command == command and j.state == "running" for j in (await fleet.list_jobs(name)).jobs)


async def test_a_vanished_box_turns_running_jobs_lost_with_the_output_read_so_far(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as fleet:
        await fleet.create_server("vanish")
        job = await fleet.run("vanish", "echo first-line; sleep 600", background=True)
        seen = await eventually(lambda: _stdout(fleet, job.job_id), what="the first line")
        assert seen == "first-line\n"
        rec = fleet.store.live_box("vanish")
        await fleet.provider("local").destroy(rec.box_id)  # burned behind the fleet's back
        await fleet.access.pool.drop("vanish")
        status = await fleet.job_status(job.job_id)
        assert status.state == "lost"
        assert status.stdout == "first-line\n"
        assert "vanished" in status.hint and status.box_reachable is False
        assert (await fleet.list_servers()).count == 0


async def _stdout(fleet: Fleet, job_id: str) -> str:
    return (await fleet.job_status(job_id)).stdout


async def test_an_unanswering_box_is_shown_unreachable_then_reconnected(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", local_isolation="none", local_sshd="embedded", probe_timeout_s=1.0,
                             keepalive_interval_s=0.5)
    async with open_fleet(settings) as fleet:
        await fleet.create_server("frozen")
        job = await fleet.run("frozen", "sleep 0.5; echo done", background=True)
        (box_dir,) = live_box_dirs(fleet)
        server_pid = supervisor_pid(box_dir)  # the embedded SSH server lives in the supervisor
        os.kill(server_pid, signal.SIGSTOP)
        try:
            listed = (await fleet.list_servers()).servers[0]
            assert listed.reachable is False
            assert listed.last_seen is not None and "not answering" in listed.warning
            status = await fleet.job_status(job.job_id)
            assert status.box_reachable is False and status.state == "running"
            assert "not answering" in status.hint
        finally:
            os.kill(server_pid, signal.SIGCONT)
        assert await eventually(lambda: _reachable(fleet), timeout=20, what="the box to answer again")
        done = await fleet.job_status(job.job_id, wait_s=10)
        assert done.state == "succeeded" and done.stdout == "done\n"
        await fleet.destroy_server("frozen")


async def _reachable(fleet: Fleet) -> bool:
    return bool((await fleet.list_servers()).servers[0].reachable)


async def test_tools_refuse_a_box_labelled_with_another_owner(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as fleet:
        await fleet.create_server("shared")
        rec = fleet.store.live_box("shared")
        prov = fleet.provider("local")
        box = await prov.get(rec.box_id)
        await prov.set_labels(box.id, {**box.labels, LABEL_OWNER: "teammate"})
        with pytest.raises(NotOwned, match="teammate"):
            await fleet.destroy_server("shared")
        with pytest.raises(NotOwned):
            await fleet.extend_server("shared", 3600)
        assert await prov.get(box.id) is not None
        await prov.set_labels(box.id, box.labels)
        await fleet.destroy_server("shared")


async def test_two_destroys_at_once_burn_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as fleet:
        await fleet.create_server("twice")
        results = []

        async def destroy() -> None:
            results.append(await fleet.destroy_server("twice"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(destroy)
            tg.start_soon(destroy)
        assert sorted(r.destroyed for r in results) == [False, True]
        assert live_box_dirs(fleet) == []


async def test_cli_and_mcp_server_share_a_state_dir_without_losing_or_doubling_jobs(tmp_path: Path) -> None:
    from mcp import Client

    from server.mcp.app import build_server

    settings = make_settings(tmp_path / "state")
    async with Client(build_server(settings)) as client:
        await client.call_tool("create_server", {"name": "shared-state"})
        mcp_jobs = []

        async def via_mcp(i: int) -> None:
            result = await client.call_tool("vm_bash", {"server": "shared-state", "command": f"echo mcp-{i}",
                                                        "background": True, "idempotency_key": f"mcp-{i}"})
            mcp_jobs.append(result.structured_content["job_id"])

        def via_cli(i: int) -> str:
            done = subprocess.run([sys.executable, "-m", "server.cli", "run", "shared-state", f"echo cli-{i}",
                                   "--background", "--json"], env=cli_env(settings), capture_output=True,
                                  text=True, timeout=60, cwd=REPO_ROOT)
            assert done.returncode == 0, done.stderr
            return done.stdout

        cli_out: list[str] = []

        async def cli(i: int) -> None:
            cli_out.append(await anyio.to_thread.run_sync(via_cli, i))

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(via_mcp, i)
                tg.start_soon(cli, i)
        listed = (await client.call_tool("vm_job_list", {"server": "shared-state"})).structured_content
        ids = [j["job_id"] for j in listed["jobs"]]
        assert len(ids) == len(set(ids)) == 12 + 1  # + the bootstrap job
        for i in range(6):  # a retried MCP dispatch does not start a second job
            again = await client.call_tool("vm_bash", {"server": "shared-state", "command": f"echo mcp-{i}",
                                                       "background": True, "idempotency_key": f"mcp-{i}"})
            assert again.structured_content["job_id"] in mcp_jobs
        await client.call_tool("destroy_server", {"name": "shared-state"})
    db = sqlite3.connect(settings.db_path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT count(*) FROM jobs WHERE kind = 'command'").fetchone()[0] == 12


async def test_state_dir_and_keys_are_private(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as fleet:
        await fleet.create_server("private")
        (key_dir,) = settings.keys_dir.iterdir()
        assert settings.home.stat().st_mode & 0o777 == 0o700
        assert settings.keys_dir.stat().st_mode & 0o777 == 0o700
        assert key_dir.stat().st_mode & 0o777 == 0o700
        for key_file in key_dir.iterdir():
            assert key_file.stat().st_mode & 0o777 == 0o600, key_file
        assert settings.db_path.stat().st_mode & 0o777 == 0o600
        (box_dir,) = live_box_dirs(fleet)
        assert box_dir.stat().st_mode & 0o077 == 0
        await fleet.destroy_server("private")
        assert not box_pids(box_dir.name)
