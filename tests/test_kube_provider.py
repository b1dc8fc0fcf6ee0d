"""The kubernetes provider against tests/fakes/kube_api.py (a stateful Kubernetes API whose Pods are real local
boxes): create -> ready -> pinned SSH through the port-forward -> labels -> destroy, and each fault switch."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from providers import provider_class
from providers.base import (
    LABEL_EXPIRES_AT,
    LABEL_NAME,
    Box,
    BoxSpec,
    BoxState,
    ProviderContext,
    ProviderError,
    ReadyTimeout,
    box_labels,
    owner_labels,
)
from providers.kubernetes import KubernetesProvider, KubeSettings
from server.keys import create_box_keys
from tests.conftest import connect_pinned
from tests.fakes.kube_api import FakeKube, FakePod, running_kube
from tests.support import eventually

READY_S = 30.0


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKube]:
    with running_kube(tmp_path_factory.mktemp("kube")) as fake:
        yield fake


@pytest.fixture
async def kube(fake: FakeKube, tmp_path: Path) -> AsyncIterator[KubernetesProvider]:
    fake.faults.__init__()  # type: ignore[misc]  # every test starts with no fault switched on
    config = fake.write_kubeconfig(tmp_path / "kubeconfig")
    settings = KubeSettings.load({"BOXFORGE_KUBECONFIG": str(config), "BOXFORGE_KUBE_KIND": "pod"}, {},
                                 "kubernetes")
    provider = KubernetesProvider.from_settings(settings, ProviderContext(home=tmp_path, owner="unused"))
    yield provider
    for pod in fake.live_pods(**{"managed-by": "boxforge"}):
        await provider.destroy(pod["metadata"]["name"])
    await provider.aclose()


def spec_for(tmp_path: Path, name: str = "kb", ttl_s: float = 600, owner: str | None = None) -> tuple[BoxSpec, Path,
                                                                                                       str]:
    owner = owner or "o" + secrets.token_hex(5)
    request_id = "r" + secrets.token_hex(6)
    keys = create_box_keys(tmp_path / "keys", request_id)
    spec = BoxSpec(name=name, request_id=request_id,
                   labels=box_labels(owner=owner, name=name, request_id=request_id, expires_at=time.time() + ttl_s),
                   host_key_private=keys.host_private, host_key_public=keys.host_public,
                   authorized_key=keys.client_public)
    return spec, keys.client_key_path, keys.host_public


def test_registry_names_it_and_settings_load_without_a_cluster() -> None:
    cls = provider_class("kubernetes")
    assert cls is KubernetesProvider
    settings = cls.Settings.load({"BOXFORGE_KUBECONFIG": "/nonexistent/kubeconfig"}, {}, "kubernetes")
    assert cls.configured(settings) is False
    with pytest.raises(ProviderError, match="namespace"):
        cls.Settings.load({"BOXFORGE_KUBE_NAMESPACE": "Bad_NS"}, {}, "kubernetes")


async def test_box_lifecycle_through_the_fake_api(kube: KubernetesProvider, fake: FakeKube, tmp_path: Path) -> None:
    spec, client_key, host_public = spec_for(tmp_path)
    box = await kube.create(spec)
    assert box.state is BoxState.PENDING and box.id.startswith("bf-kb-")
    again = await kube.create(spec)  # same request: same box
    assert again.id == box.id and len(fake.live_pods(**{"boxforge-request": spec.request_id})) == 1

    pod = fake.live_pods(**{"boxforge-request": spec.request_id})[0]
    assert pod["spec"]["automountServiceAccountToken"] is False and pod["spec"]["enableServiceLinks"] is False
    assert LABEL_EXPIRES_AT not in pod["metadata"]["labels"]  # schedule labels are annotations
    assert pod["metadata"]["annotations"][LABEL_EXPIRES_AT] == spec.labels[LABEL_EXPIRES_AT]
    assert spec.host_key_private.strip().splitlines()[1] not in str(pod), "keys live in the Secret only"
    assert ("boxforge", f"{box.id}-keys") in fake.secrets

    ready = await kube.wait_ready(box.id, timeout=READY_S)
    assert ready.state is BoxState.RUNNING and ready.host == "127.0.0.1"
    async with await connect_pinned(ready, client_key, host_public) as conn:
        result = await conn.run("echo hello-from-pod", check=True)
    assert result.stdout == "hello-from-pod\n"

    listed = await kube.list(owner_labels(spec.labels["boxforge-owner"]))
    assert [b.id for b in listed] == [box.id] and listed[0].labels[LABEL_NAME] == "kb"
    assert await kube.list(owner_labels("someone-else")) == []

    later = str(int(time.time()) + 7200)
    moved = await kube.set_labels(box.id, {**spec.labels, LABEL_EXPIRES_AT: later, "boxforge-ready": "1"})
    assert moved.labels[LABEL_EXPIRES_AT] == later and moved.ready
    with pytest.raises(ProviderError, match="identity labels"):
        await kube.set_labels(box.id, {**spec.labels, "boxforge-owner": "thief"})

    local_before = fake.local_boxes()
    assert len(local_before) == 1
    await kube.destroy(box.id)
    assert await kube.get(box.id) is None
    assert fake.live_pods(**{"boxforge-request": spec.request_id}) == []
    assert ("boxforge", f"{box.id}-keys") not in fake.secrets
    assert fake.local_boxes() == [], "the Pod's real box is burned"
    await kube.destroy(box.id)  # gone already: silent


async def test_refused_create_leaves_nothing_behind(kube: KubernetesProvider, fake: FakeKube, tmp_path: Path) -> None:
    fake.faults.refuse_create = "boxes need a team label"
    spec, _, _ = spec_for(tmp_path)
    with pytest.raises(ProviderError, match="boxes need a team label"):
        await kube.create(spec)
    assert fake.live_pods(**{"boxforge-request": spec.request_id}) == []
    assert not [k for k in fake.secrets if k[1].startswith("bf-kb-")], "the Secret of a refused create is deleted"


async def test_stuck_pending_times_out_with_the_schedulers_words(kube: KubernetesProvider, fake: FakeKube,
                                                                  tmp_path: Path) -> None:
    fake.faults.stuck_pending = True
    spec, _, _ = spec_for(tmp_path)
    box = await kube.create(spec)
    with pytest.raises(ReadyTimeout, match="Unschedulable: 0/3 nodes are available"):
        await kube.wait_ready(box.id, timeout=1.5)
    await kube.destroy(box.id)
    assert fake.live_pods(**{"boxforge-request": spec.request_id}) == []


async def test_throttling_server_errors_and_dropped_watches_are_ridden_out(
        kube: KubernetesProvider, fake: FakeKube, tmp_path: Path) -> None:
    spec, client_key, host_public = spec_for(tmp_path)
    fake.faults.throttle, fake.faults.server_errors, fake.faults.kubelet_paused = 2, 2, True
    box = await kube.create(spec)
    assert kube.api.retries >= 4, "each 429 and 503 was retried"
    fake.faults.drop_watch = 2
    async with anyio.create_task_group() as tg:
        waited: list[Box] = []

        async def wait() -> None:
            waited.append(await kube.wait_ready(box.id, timeout=READY_S))

        tg.start_soon(wait)
        await eventually(lambda: fake.faults.drop_watch == 0, what="wait_ready to watch again after each drop")
        fake.resume_kubelet()
    ready = waited[0]
    async with await connect_pinned(ready, client_key, host_public) as conn:
        assert (await conn.run("true")).exit_status == 0


async def test_an_evicted_pod_is_a_gone_box(kube: KubernetesProvider, fake: FakeKube, tmp_path: Path) -> None:
    spec, _, _ = spec_for(tmp_path)
    box = await kube.create(spec)
    await kube.wait_ready(box.id, timeout=READY_S)
    fake.evict(box.id)
    assert await kube.get(box.id) is None
    assert fake.live_pods(**{"boxforge-request": spec.request_id}) == [], "the failed Pod object is deleted"
    assert ("boxforge", f"{box.id}-keys") not in fake.secrets


async def test_list_never_returns_pods_without_our_labels(kube: KubernetesProvider, fake: FakeKube,
                                                          tmp_path: Path) -> None:
    spec, _, _ = spec_for(tmp_path)
    stranger = {"metadata": {"name": "bf-kb-0123456789", "namespace": "boxforge", "uid": "u1",
                             "labels": {"boxforge-owner": spec.labels["boxforge-owner"]}, "resourceVersion": "1"},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]}, "status": {"phase": "Running"}}
    fake.pods[("boxforge", "bf-kb-0123456789")] = FakePod(stranger)
    try:
        assert await kube.list({"boxforge-owner": spec.labels["boxforge-owner"]}) == []
        seen = await kube.get("bf-kb-0123456789")
        assert seen is not None and "managed-by" not in seen.labels, "a stranger's Pod is shown as it is, not as ours"
        with pytest.raises(ProviderError, match="refusing"):
            await kube.destroy("bf-kb-0123456789")
    finally:
        fake.pods.pop(("boxforge", "bf-kb-0123456789"))
