"""Docker boxes end to end: through the real MCP client (create -> bash -> background job -> poll -> fetch a
file -> destroy), the reaper with the orchestrator's store deleted, and a daemon restart under a running job."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from mcp import Client

from providers.base import LABEL_EXPIRES_AT, owner_labels
from providers.docker import DockerProvider
from server.config import Settings, load_settings
from server.mcp.app import build_server
from server.service import open_fleet
from tests.docker_fixtures import docker_env, docker_restart  # noqa: F401
from tests.support import call, eventually, make_repo
from tests.test_docker_provider import leftovers

pytestmark = pytest.mark.docker


def docker_settings(home: Path, docker_env: dict[str, str], **env: str) -> Settings:  # noqa: F811
    return load_settings({"BOXFORGE_HOME": str(home), "BOXFORGE_OWNER": "od" + secrets.token_hex(3),
                          "BOXFORGE_CONFIG": str(home / "no-config.toml"), "BOXFORGE_PROVIDER": "docker",
                          **docker_env, **env})


async def poll_job(client: Client, job_id: str) -> tuple[dict, str]:
    collected, offset = "", 0
    for _ in range(400):
        st = await call(client, "vm_job_status", job_id=job_id, stdout_offset=offset, wait_s=0.5)
        collected += st["stdout"]
        offset = st["stdout_offset"]
        if st["state"] != "running" and not st["more"]:
            return st, collected
    raise AssertionError(f"job {job_id} still running: {st}")


async def test_full_flow_through_the_mcp_client(docker_env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    settings = docker_settings(tmp_path / "state", docker_env)
    repo = make_repo(tmp_path / "repo")
    async with Client(build_server(settings)) as client:
        created = await call(client, "create_server", name="dock-a", repo=str(repo), branch="feat/a", ttl="30m")
        assert created["state"] == "ready" and created["provider"] == "docker"
        assert created["size"] == "small"

        fg = await call(client, "vm_bash", server="dock-a", command="git status && ls && cat /proc/1/cmdline")
        assert fg["state"] == "succeeded", fg
        assert "On branch feat/a" in fg["stdout"] and "README.md" in fg["stdout"]
        assert "docker-init" in fg["stdout"], "the container's init runs the box"

        bg = await call(client, "vm_bash", server="dock-a", background=True,
                        command="for i in $(seq 1 30); do echo line-$i; sleep 0.02; done > made.txt; cat made.txt")
        st, out = await poll_job(client, bg["job_id"])
        assert st["state"] == "succeeded" and out == "".join(f"line-{i}\n" for i in range(1, 31))

        fetched = tmp_path / "made.txt"
        await call(client, "vm_download", server="dock-a", remote_path="made.txt",
                   local_path=str(fetched))
        assert fetched.read_text() == out

        rec_box = (await call(client, "list_servers"))["servers"][0]
        assert rec_box["name"] == "dock-a"
        provider = DockerProvider.from_settings(settings.provider_settings("docker"), settings.provider_context())
        (box,) = await provider.list(owner_labels(settings.owner))
        assert box.ready, "the ready label is kept where the box cannot write it"
        destroyed = await call(client, "destroy_server", name="dock-a")
        assert destroyed["destroyed"] is True
        assert leftovers(provider, box.id) == []
        provider.engine.close()


async def test_the_reaper_burns_an_expired_box_with_the_store_deleted(docker_env: dict[str, str],  # noqa: F811
                                                                      tmp_path: Path) -> None:
    settings = docker_settings(tmp_path / "state", docker_env)
    async with open_fleet(settings) as fleet:
        await fleet.create_server("keep")
        await fleet.create_server("doomed")
        prov = fleet.provider("docker")
        boxes = {b.name: b for b in await prov.list(owner_labels(settings.owner))}
        await prov.set_labels(boxes["doomed"].id, {**boxes["doomed"].labels,
                                                   LABEL_EXPIRES_AT: str(int(time.time() - 5))})
    for suffix in ("", "-wal", "-shm"):
        Path(str(settings.db_path) + suffix).unlink(missing_ok=True)

    async with open_fleet(settings) as fleet:
        burned, _ = await fleet.reap_once()
        assert burned == ["doomed"]
        prov = fleet.provider("docker")
        assert isinstance(prov, DockerProvider)
        assert leftovers(prov, boxes["doomed"].id) == []
        assert [b.name for b in await prov.list(owner_labels(settings.owner))] == ["keep"]
        await prov.destroy(boxes["keep"].id)


async def test_with_its_schedule_lost_the_reaper_trusts_the_containers_deadline_label(
        docker_env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    settings = docker_settings(tmp_path / "state", docker_env, BOXFORGE_DOCKER_WATCHDOG_GRACE_S="600")
    async with open_fleet(settings) as fleet:
        await fleet.create_server("short", ttl_s=3)
    # The whole orchestrator state is gone: store, keys and the provider's schedule files.
    for path in sorted(settings.home.rglob("*"), reverse=True):
        if path.name != "owner":
            path.unlink() if path.is_file() else path.rmdir()
    async with open_fleet(settings) as fleet:
        prov = fleet.provider("docker")
        (box,) = await prov.list(owner_labels(settings.owner))
        assert box.expires_at is not None and box.expires_at <= time.time() + 3

        async def reaped() -> bool:
            burned, _ = await fleet.reap_once()
            return burned == ["short"]

        await eventually(reaped, timeout=20, what="the reaper to burn the box at its create-time deadline")
        assert await prov.list(owner_labels(settings.owner)) == []


async def test_a_job_survives_a_daemon_restart(docker_restart: Callable[[], None], docker_env: dict[str, str],  # noqa: F811
                                               tmp_path: Path) -> None:
    settings = docker_settings(tmp_path / "state", docker_env)
    async with Client(build_server(settings)) as client:
        await call(client, "create_server", name="steady")
        bg = await call(client, "vm_bash", server="steady", background=True,
                        command="for i in $(seq 1 20); do echo tick-$i; sleep 0.25; done")
        first = await call(client, "vm_job_status", job_id=bg["job_id"], wait_s=5)
        assert first["state"] == "running"
        await anyio.to_thread.run_sync(docker_restart)
        st, out = await poll_job(client, bg["job_id"])
        assert st["state"] == "succeeded", st
        assert out == "".join(f"tick-{i}\n" for i in range(1, 21))
        after = await call(client, "vm_bash", server="steady", command="echo still-here")
        assert after["stdout"] == "still-here\n"
        await call(client, "destroy_server", name="steady")
