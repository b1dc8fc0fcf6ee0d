"""The providers the contract suite runs against: one fixture per target, named ``<name>_target``.

To add a provider, write a fixture ``<name>_target`` returning a ``ContractTarget`` (backed by a real
engine or, where none can run here, a stateful fake whose machines are real boxes) and add ``<name>`` to
``TARGETS``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.base import ProviderContext
from providers.contract import ContractTarget
from providers.docker import DockerProvider, DockerSettings
from providers.docker.image import base_tag
from providers.hetzner import HetznerProvider
from providers.local import LocalProvider
from providers.local.boxdir import current_user
from tests.docker_fixtures import docker_env  # noqa: F401 - the session's Docker daemon
from tests.fakes.hetzner_api import FakeHetzner, running_fake
from tests.fakes.kube_api import FakeKube, FakePod, running_kube

TARGETS = ["local", "hetzner", "docker", "kubernetes"]


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> ContractTarget:
    return request.getfixturevalue(f"{request.param}_target")


@pytest.fixture
def local_target(tmp_path: Path) -> ContractTarget:
    root = tmp_path / "local-boxes"
    return ContractTarget("local", lambda: LocalProvider(root), tmp_path / "keys", ready_timeout_s=30)


@pytest.fixture(scope="module")
def hetzner_fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHetzner]:
    with running_fake(tmp_path_factory.mktemp("contract-hetzner") / "boxes") as fake:
        yield fake


@pytest.fixture
def hetzner_target(hetzner_fake: FakeHetzner, tmp_path: Path) -> Iterator[ContractTarget]:
    fake = hetzner_fake

    def make() -> HetznerProvider:
        return HetznerProvider(fake.token, endpoint=fake.url, ssh_user=current_user(), ssh_port=fake.ssh_port,
                               poll_interval_s=0.02)

    async def add_foreign() -> str:
        return str(fake.add_server("foreign-web-1", {"team": "web"}).id)

    async def remove_foreign(server_id: str) -> None:
        with fake._lock:
            fake.servers.pop(int(server_id), None)

    target = ContractTarget("hetzner", make, tmp_path / "keys", ready_timeout_s=30, add_foreign=add_foreign,
                            remove_foreign=remove_foreign)
    yield target
    assert fake.live_servers(**{"boxforge-owner": target.owner}) == []
    assert not [k for k in fake.ssh_keys.values() if k["labels"].get("boxforge-owner") == target.owner], \
        "the owner's ssh key outlived the owner's last server"


@pytest.fixture
def docker_target(docker_env: dict[str, str], tmp_path: Path) -> Iterator[ContractTarget]:  # noqa: F811
    settings = DockerSettings.load(docker_env, {}, "docker")
    home = tmp_path / "home"
    made: list[DockerProvider] = []
    owner_holder: list[str] = []

    def make() -> DockerProvider:
        provider = DockerProvider.from_settings(settings, ProviderContext(home, owner_holder[0]))
        made.append(provider)
        return provider

    async def add_foreign() -> str:
        client = made[0].engine.client
        container = await made[0].engine.run(client.containers.run, base_tag(), ["sleep", "300"], detach=True,
                                             labels={"team": "web"}, network_mode="none")
        return container.name

    async def remove_foreign(container_name: str) -> None:
        await made[0].engine.run(made[0].engine.client.api.remove_container, container_name, force=True)

    target = ContractTarget("docker", make, tmp_path / "keys", ready_timeout_s=60, add_foreign=add_foreign,
                            remove_foreign=remove_foreign)
    owner_holder.append(target.owner)
    yield target
    for provider in made:
        provider.engine.close()


@pytest.fixture(scope="module")
def kube_fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKube]:
    with running_kube(tmp_path_factory.mktemp("contract-kube")) as fake:
        yield fake


@pytest.fixture
def kubernetes_target(kube_fake: FakeKube, tmp_path: Path) -> Iterator[ContractTarget]:
    from providers.kubernetes import KubernetesProvider, KubeSettings

    fake = kube_fake
    config = fake.write_kubeconfig(tmp_path / "kubeconfig")
    settings = KubeSettings.load({"BOXFORGE_KUBECONFIG": str(config), "BOXFORGE_KUBE_KIND": "pod"}, {}, "kubernetes")

    def make() -> KubernetesProvider:
        return KubernetesProvider.from_settings(settings, ProviderContext(tmp_path / "home", "unused"))

    async def add_foreign() -> str:  # a Pod of another team in the same namespace, named like one of ours
        name = "bf-web-0123456789"
        fake.pods[("boxforge", name)] = FakePod({
            "metadata": {"name": name, "namespace": "boxforge", "uid": "u-web", "labels": {"team": "web"},
                         "resourceVersion": "1"},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]}, "status": {"phase": "Running"}})
        return name

    async def remove_foreign(name: str) -> None:
        fake.pods.pop(("boxforge", name), None)

    target = ContractTarget("kubernetes", make, tmp_path / "keys", ready_timeout_s=30, add_foreign=add_foreign,
                            remove_foreign=remove_foreign)
    yield target
    assert fake.live_pods(**{"boxforge-owner": target.owner}) == []
