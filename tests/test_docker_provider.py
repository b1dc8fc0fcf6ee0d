"""The Docker provider against a real daemon: the provider contract, limits from sizes, the box's init
(sshd plus the TTL watchdog), what a box cannot reach (the escape items that apply to a container), and
that destroy leaves no container, network, bridge, iptables rule or file behind.

One box per module serves the read-only checks; tests that burn or expire a box make their own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncssh
import pytest
import pytest_asyncio

from providers.base import (
    LABEL_EXPIRES_AT,
    LABEL_OWNER,
    LABEL_READY,
    Box,
    BoxState,
    ProviderError,
)
from providers.capabilities import Isolated, PinsHostKey, capabilities
from providers.docker import DockerProvider, network
from server.keys import BoxKeys
from tests.docker_daemon import bridges
from tests.docker_fixtures import docker_env, docker_provider_factory, make_docker_spec  # noqa: F401
from tests.support import eventually

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]
READY_TIMEOUT_S = 60.0


async def connect(box: Box, keys: BoxKeys) -> asyncssh.SSHClientConnection:
    """A connection that trusts only the box's pinned host key and offers only its client key."""
    assert box.host is not None
    return await asyncssh.connect(box.host, box.ssh_port, username=box.ssh_user,
                                  client_keys=[str(keys.client_key_path)],
                                  known_hosts=([asyncssh.import_public_key(keys.host_public)], [], []),
                                  agent_path=None, config=None, connect_timeout=10)


async def run(box: Box, keys: BoxKeys, command: str) -> asyncssh.SSHCompletedProcess:
    async with await connect(box, keys) as conn:
        return await conn.run(command, check=False, timeout=30)


def container_attrs(provider: DockerProvider, box_id: str) -> dict:
    return provider.engine.call(lambda: provider.engine.client.api.inspect_container(box_id))


def leftovers(provider: DockerProvider, box_id: str) -> list[str]:
    """What of a box is still anywhere: container, network, bridge, guard rules, orchestrator-side files."""
    found = []
    client = provider.engine.client
    if any(c["Names"] == [f"/{box_id}"] for c in client.api.containers(all=True)):
        found.append("container")
    if client.api.networks(names=[box_id]):
        found.append("network")
    bridge = network.bridge_name(box_id)
    if bridge in bridges():
        found.append("bridge")
    if provider.guarded and network.guard_rules_present(bridge):
        found.append("iptables rules")
    if provider._mount_dir(box_id).exists() or provider._labels_file(box_id).exists():
        found.append("state files")
    return found


BURNED: list[str] = []  # ids of the boxes this module destroyed, for the leak check at its end


async def burn(provider: DockerProvider, box_id: str) -> None:
    await provider.destroy(box_id)
    BURNED.append(box_id)


class Shared:
    def __init__(self, provider: DockerProvider, box: Box, keys: BoxKeys, owner: str, home: Path) -> None:
        self.provider, self.box, self.keys, self.owner, self.home = provider, box, keys, owner, home


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(docker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory  # noqa: F811
                 ) -> AsyncIterator[Shared]:
    from providers.base import ProviderContext
    from providers.docker import DockerSettings

    home = tmp_path_factory.mktemp("docker-home")
    owner = "o-shared" + os.urandom(3).hex()
    provider = DockerProvider.from_settings(DockerSettings.load(docker_env, {}, "docker"),
                                            ProviderContext(home, owner))
    spec, keys = make_docker_spec(home / "keys", owner=owner, name="shared", size="medium")
    box = await provider.create(spec)
    try:
        box = await provider.wait_ready(box.id, timeout=READY_TIMEOUT_S)
        yield Shared(provider, box, keys, owner, home)
    finally:
        await burn(provider, box.id)
        await provider.aclose()


# --- the contract ---


async def test_create_is_idempotent_by_request_id_and_the_box_presents_the_pinned_host_key(
        docker_provider_factory: Callable[..., DockerProvider], tmp_path: Path) -> None:  # noqa: F811
    provider = docker_provider_factory(tmp_path)
    spec, keys = make_docker_spec(tmp_path / "keys", owner="o-idem", name="idem")
    first = await provider.create(spec)
    try:
        again = await provider.create(spec)
        assert again.id == first.id
        ready = await provider.wait_ready(first.id, timeout=READY_TIMEOUT_S)
        assert ready.state is BoxState.RUNNING and ready.host == "127.0.0.1"
        result = await run(ready, keys, "id -u; hostname")
        assert result.stdout.split() == ["0", "idem"]
        listed = await provider.list({LABEL_OWNER: "o-idem"})
        assert [b.id for b in listed] == [first.id], "one container for one request"
    finally:
        await burn(provider, first.id)


async def test_get_of_an_unknown_box_is_none_and_destroy_of_it_is_silent(shared: Shared) -> None:
    assert await shared.provider.get("boxforge-nope-r000000000000") is None
    assert await shared.provider.get("not-ours-at-all") is None
    await shared.provider.destroy("boxforge-nope-r000000000000")


async def test_list_works_from_labels_alone_in_a_fresh_provider(
        shared: Shared, docker_provider_factory: Callable[..., DockerProvider], tmp_path: Path) -> None:  # noqa: F811
    fresh = docker_provider_factory(tmp_path / "empty-home", owner=shared.owner)
    found = await fresh.list({LABEL_OWNER: shared.owner})
    assert [b.id for b in found] == [shared.box.id]
    assert found[0].expires_at == shared.box.expires_at, "the create-time deadline label stands without state"
    assert await fresh.list({LABEL_OWNER: shared.owner + "-other"}) == []


async def test_set_labels_moves_the_expiry_the_watchdog_reads_and_keeps_identity(shared: Shared) -> None:
    later = (shared.box.expires_at or 0) + 3600
    moved = await shared.provider.set_labels(shared.box.id, {**shared.box.labels, LABEL_EXPIRES_AT: str(later),
                                                             LABEL_READY: "1", LABEL_OWNER: "someone-else"})
    assert moved.expires_at == later and moved.ready
    assert moved.owner == shared.owner, "identity labels never change"
    assert (await shared.provider.get(shared.box.id)).expires_at == later  # type: ignore[union-attr]
    stop_at = await run(shared.box, shared.keys, "cat /run/boxforge/stop-at")
    assert int(stop_at.stdout) == later + int(shared.provider.settings.watchdog_grace_s)


async def test_size_presets_become_cpu_memory_and_pids_limits(shared: Shared) -> None:
    host_config = container_attrs(shared.provider, shared.box.id)["HostConfig"]
    host_cpus = shared.provider.engine.client.info()["NCPU"]
    assert host_config["NanoCpus"] == min(4, host_cpus) * 10**9
    assert host_config["Memory"] == 8 * 1024**3 and host_config["MemorySwap"] == 8 * 1024**3
    assert host_config["PidsLimit"] == 4096
    assert shared.box.size == "medium"
    capped = [w for w in shared.box.warnings if "CPUs" in w]
    assert bool(capped) == (host_cpus < 4), shared.box.warnings
    pids_max = await run(shared.box, shared.keys, "cat /sys/fs/cgroup/pids.max 2>/dev/null || "
                                                   "cat /sys/fs/cgroup/pids/pids.max")
    assert pids_max.stdout.strip() == "4096"


async def test_an_unknown_size_is_refused_before_anything_is_made(
        docker_provider_factory: Callable[..., DockerProvider], tmp_path: Path) -> None:  # noqa: F811
    provider = docker_provider_factory(tmp_path)
    spec, _ = make_docker_spec(tmp_path / "keys", owner="o-size", name="huge", size="gigantic")
    with pytest.raises(ProviderError, match="small, medium, large"):
        await provider.create(spec)
    assert leftovers(provider, f"boxforge-huge-{spec.request_id}") == []
    BURNED.append(f"boxforge-huge-{spec.request_id}")


async def test_capabilities_are_declared_not_special_cased(shared: Shared) -> None:
    assert isinstance(shared.provider, PinsHostKey) and isinstance(shared.provider, Isolated)
    assert "SeesLocalPaths" not in capabilities(shared.provider)
    assert "own bridge network" in shared.provider.isolation().summary


async def test_the_daemon_answering_makes_the_provider_configured(docker_env: dict[str, str],  # noqa: F811
                                                                  tmp_path: Path) -> None:
    from providers.docker import DockerSettings

    assert DockerProvider.configured(DockerSettings.load(docker_env, {}, "docker"))
    missing = DockerSettings.load({"DOCKER_HOST": f"unix://{tmp_path}/no.sock"}, {}, "docker")
    assert not DockerProvider.configured(missing)


# --- destroy and the watchdog ---


async def test_destroy_removes_container_network_bridge_rules_and_files_and_is_idempotent(
        docker_provider_factory: Callable[..., DockerProvider], tmp_path: Path) -> None:  # noqa: F811
    provider = docker_provider_factory(tmp_path)
    spec, keys = make_docker_spec(tmp_path / "keys", owner="o-burn", name="burn")
    box = await provider.wait_ready((await provider.create(spec)).id, timeout=READY_TIMEOUT_S)
    await run(box, keys, "nohup sleep 600 >/dev/null 2>&1 &")
    present = leftovers(provider, box.id)
    assert {"container", "network", "bridge", "state files"} <= set(present)
    await burn(provider, box.id)
    assert leftovers(provider, box.id) == []
    assert await provider.get(box.id) is None
    await provider.destroy(box.id)


async def test_the_watchdog_stops_an_expired_box_with_no_orchestrator_watching(
        docker_provider_factory: Callable[..., DockerProvider], tmp_path: Path) -> None:  # noqa: F811
    provider = docker_provider_factory(tmp_path, BOXFORGE_DOCKER_WATCHDOG_GRACE_S="1")
    spec, _ = make_docker_spec(tmp_path / "keys", owner="o-ttl", name="ttl", ttl_s=3)
    box = await provider.create(spec)
    try:
        async def stopped() -> bool:
            found = await provider.get(box.id)
            return found is not None and found.data["status"] == "exited"

        await eventually(stopped, timeout=30, what="the box's init to stop the container after its expiry")
        logs = provider.engine.call(lambda: provider.engine.client.containers.get(box.id).logs().decode())
        assert "expired" in logs
    finally:
        await burn(provider, box.id)


# --- escapes: what a box must not reach ---


async def test_the_box_cannot_move_its_own_deadline_or_reach_the_daemon(shared: Shared) -> None:
    result = await run(shared.box, shared.keys,
                       "echo 1 > /run/boxforge/stop-at; echo rc=$?; ls /run/boxforge; "
                       "ls /var/run/docker.sock /run/docker.sock 2>&1; mount -o remount,rw /run/boxforge; echo m=$?")
    assert "rc=1" in result.stdout and "Read-only file system" in result.stderr
    assert result.stdout.split()[1:3] == ["init.sh", "stop-at"], "only the init and its deadline are mounted"
    assert "m=0" not in result.stdout
    assert "No such file" in result.stdout
    still = await shared.provider.get(shared.box.id)
    assert still is not None and still.state is BoxState.RUNNING


async def test_the_box_sees_no_orchestrator_state_keys_or_processes(shared: Shared) -> None:
    key_text = shared.keys.client_key_path.read_text().splitlines()[1]
    result = await run(shared.box, shared.keys,
                       f"ls {shared.home} 2>&1; ps -eo comm; grep -rl '{key_text}' /etc /root /run 2>/dev/null; "
                       "cat /proc/1/environ | tr '\\0' '\\n'")
    assert "No such file or directory" in result.stdout
    comms = set(result.stdout.split())
    assert not comms & {"dockerd", "containerd", "python", "pytest"}, comms
    assert key_text not in result.stdout
    assert "BOXFORGE" not in result.stdout and "DOCKER_HOST" not in result.stdout


class _Listener:
    """A TCP server on this host that counts connections (for the reachability checks)."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


def _tcp_probe(addr: str, port: int) -> str:
    return f"timeout 1 bash -c 'echo > /dev/tcp/{addr}/{port}' 2>/dev/null && echo open-{port} || echo shut-{port}"


async def test_the_box_reaches_neither_host_services_nor_host_loopback(shared: Shared) -> None:
    if not shared.provider.guarded:
        pytest.skip("the host guard needs root on the daemon's host; boxes carry a warning instead")
    attrs = container_attrs(shared.provider, shared.box.id)
    gateway = attrs["NetworkSettings"]["Networks"][shared.box.id]["Gateway"]
    wide, loop = _Listener("0.0.0.0"), _Listener("127.0.0.1")
    try:
        with socket.create_connection((gateway, wide.port), timeout=3):
            pass  # the host itself reaches the listener: the probes below can fail
        result = await run(shared.box, shared.keys, "; ".join([
            _tcp_probe("127.0.0.1", 22), _tcp_probe(gateway, wide.port), _tcp_probe("127.0.0.1", loop.port),
            _tcp_probe(gateway, loop.port)]))
        assert result.stdout.split() == ["open-22", f"shut-{wide.port}", f"shut-{loop.port}", f"shut-{loop.port}"]
        assert wide.accepted == 1 and loop.accepted == 0
    finally:
        wide.close()
        loop.close()


async def test_one_box_cannot_reach_another(shared: Shared, tmp_path: Path) -> None:
    spec, keys = make_docker_spec(tmp_path / "keys", owner=shared.owner, name="neighbour")
    other = await shared.provider.create(spec)
    try:
        other = await shared.provider.wait_ready(other.id, timeout=READY_TIMEOUT_S)
        other_ip = container_attrs(shared.provider, other.id)["NetworkSettings"]["Networks"][other.id]["IPAddress"]
        assert (await run(other, keys, _tcp_probe(other_ip, 22))).stdout.strip() == "open-22"
        result = await run(shared.box, shared.keys,
                           f"{_tcp_probe(other_ip, 22)}; {_tcp_probe('127.0.0.1', other.ssh_port)}")
        assert result.stdout.split() == ["shut-22", f"shut-{other.ssh_port}"]
    finally:
        await burn(shared.provider, other.id)


async def test_no_bridge_or_guard_rule_of_a_burned_box_is_left(shared: Shared) -> None:
    # Only this module's burned boxes: other test sessions on this host may run daemons with boxes of their own.
    assert len(BURNED) >= 4, BURNED
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=False).stdout
    for box_id in BURNED:
        bridge = network.bridge_name(box_id)
        assert bridge not in bridges(), f"the bridge of burned box {box_id} leaked"
        assert f"-i {bridge} " not in rules, f"a guard rule of burned box {box_id} leaked"


async def test_expiry_label_on_the_container_is_the_create_time_deadline(shared: Shared) -> None:
    labels = container_attrs(shared.provider, shared.box.id)["Config"]["Labels"]
    assert labels[LABEL_OWNER] == shared.owner
    assert int(labels[LABEL_EXPIRES_AT]) <= time.time() + 601
