"""The kubernetes provider end to end: the real MCP client against a server whose provider is kubernetes, talking
to tests/fakes/kube_api.py (Pods backed by real local boxes, reached through port-forwards over the API).

create -> bash -> background job -> poll -> Pod evicted mid-job (the job reads lost with its output so far, the box
is reported gone) -> destroy; and the reaper, with the store deleted, burns an expired box from labels alone and
never a Pod without our owner label."""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client

from providers.base import LABEL_EXPIRES_AT
from server.config import Settings, load_settings
from server.mcp.app import build_server
from server.service.fleet import open_fleet
from tests.fakes.kube_api import FakeKube, running_kube
from tests.support import call, eventually


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKube]:
    with running_kube(tmp_path_factory.mktemp("kube")) as fake:
        yield fake


def kube_settings(home: Path, fake: FakeKube, owner: str | None = None, **overrides: object) -> Settings:
    home.mkdir(parents=True, exist_ok=True)
    config = fake.write_kubeconfig(home.parent / f"{home.name}.kubeconfig")
    env = {"BOXFORGE_HOME": str(home), "BOXFORGE_OWNER": owner or "otest" + secrets.token_hex(3),
           "BOXFORGE_CONFIG": str(home / "no-config.toml"), "BOXFORGE_PROVIDER": "kubernetes",
           "BOXFORGE_KUBECONFIG": str(config), "BOXFORGE_KUBE_KIND": "pod"}
    return load_settings(env, **overrides)


async def test_flow_and_eviction_mid_job_through_mcp(tmp_path: Path, fake: FakeKube) -> None:
    settings = kube_settings(tmp_path / "state", fake)
    async with Client(build_server(settings)) as client:
        created = await call(client, "create_server", name="kube-a", ttl="30m")
        assert created["state"] == "ready" and created["provider"] == "kubernetes"
        pods = fake.live_pods(**{"boxforge-owner": settings.owner})
        assert len(pods) == 1 and pods[0]["metadata"]["annotations"]["boxforge-ready"] == "1"

        fg = await call(client, "vm_bash", server="kube-a", command="echo through-the-api; hostname")
        assert fg["state"] == "succeeded" and fg["stdout"].startswith("through-the-api\n")

        bg = await call(client, "vm_bash", server="kube-a", background=True,
                        command="echo first-half; sleep 600; echo never")
        st = {"stdout": ""}
        seen = ""

        async def printed() -> bool:
            nonlocal st, seen
            st = await call(client, "vm_job_status", job_id=bg["job_id"], wait_s=0.2)
            seen += st["stdout"]
            return "first-half" in seen

        await eventually(printed, what="the job's first output")
        fake.evict(pods[0]["metadata"]["name"])

        async def lost() -> bool:
            nonlocal st
            st = await call(client, "vm_job_status", job_id=bg["job_id"], stdout_offset=len(seen.encode()))
            return st["state"] == "lost"

        await eventually(lost, timeout=30, what="the evicted Pod's job to read lost")
        assert "first-half" in st["stdout"] and st["box_reachable"] is False, st
        assert "vanished" in st["hint"]
        servers = await call(client, "list_servers")
        assert servers["count"] == 0, "the evicted box is reported gone"
        assert fake.live_pods(**{"boxforge-owner": settings.owner}) == [], "its Pod object and Secret are deleted"
        assert fake.local_boxes() == []


async def test_reaper_burns_from_labels_alone_and_spares_strangers(tmp_path: Path, fake: FakeKube) -> None:
    owner = "oreap" + secrets.token_hex(3)
    first = kube_settings(tmp_path / "first", fake, owner=owner)
    async with Client(build_server(first)) as client:
        await call(client, "create_server", name="doomed", ttl="30m")
        await call(client, "create_server", name="kept", ttl="30m")
    doomed = fake.live_pods(**{"boxforge-name": "doomed"})[0]["metadata"]["name"]
    # Expire one box at the API (as time passing would), then lose the orchestrator's state entirely.
    fake.run_coro(_expire(fake, doomed))
    shutil.rmtree(tmp_path / "first")
    stranger = fake.live_pods(**{"boxforge-name": "kept"})[0]
    del stranger["metadata"]["labels"]["boxforge-owner"]  # someone else's Pod now: never ours to touch

    fresh = kube_settings(tmp_path / "fresh", fake, owner=owner)
    async with open_fleet(fresh) as fleet:
        burned, _ = await fleet.reap_once()
    assert burned == [doomed] or [b for b in burned if "doomed" in b], burned
    assert fake.live_pods(**{"boxforge-name": "doomed"}) == []
    assert [p["metadata"]["name"] for p in fake.live_pods(**{"boxforge-name": "kept"})] == [
        stranger["metadata"]["name"]], "a Pod without our owner label is left alone"
    fake.run_coro(fake._burn(fake.pods.pop(("boxforge", stranger["metadata"]["name"]))))


async def _expire(fake: FakeKube, name: str) -> None:
    pod = fake.pods[("boxforge", name)]
    pod.obj["metadata"]["annotations"][LABEL_EXPIRES_AT] = str(int(time.time()) - 5)
    await fake._touch(pod.obj)
