"""Shared fixtures: real local boxes (OpenSSH or embedded SSH server) and pinned SSH clients.

- ``boxes_root``: a fresh directory for local boxes.
- ``ssh_server_kind``: parametrized over "openssh" and "embedded"; the OpenSSH variant is
  skipped when sshd is absent, and fails instead when BOXFORGE_REQUIRE_OPENSSH=1.
- ``make_box``: ``await make_box(server=..., ttl_s=600, name="t1")`` -> a ready ``BoxHandle``;
  every box it made is destroyed at teardown.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from providers.base import Box, BoxSpec, box_labels
from providers.local import LocalProvider, UnisolatedLocalProvider
from providers.local.servers import find_sshd
from server.keys import create_box_keys
from server.ssh import SSHPool, SSHTarget

SERVER_KINDS = ("openssh", "embedded")
# Isolated local boxes (the default provider of the suite) boot from one cached base image. CI points
# BOXFORGE_IMAGE_CACHE at a cache kept across runs; elsewhere the suite keeps its own under ~/.cache.
os.environ.setdefault("BOXFORGE_IMAGE_CACHE", str(Path.home() / ".cache" / "boxforge-test-images"))
# The npm cache the agent tests' boxes install from (CI keeps it across runs too, like the image).
os.environ.setdefault("BOXFORGE_NPM_CACHE", str(Path.home() / ".cache" / "boxforge-test-npm"))


# The suite runs on two xdist workers (`-n 2 --dist loadgroup`, see README). A test file is the unit of work, so
# its module-scoped fixtures (a shared box, a shared fleet) are built once. Every file that talks to Docker joins
# one group, because one of them restarts the daemon under a running job: no other worker may be using it then.
DOCKER_GROUP_FILES = ("tests/contract/", "tests/test_docker_", "tests/test_agents_e2e.py",
                      "tests/test_benchmarks_smoke.py")


def xdist_group_of(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return "docker" if path.startswith(DOCKER_GROUP_FILES) else path


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(xdist_group_of(item.nodeid)))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Build (or find) the base image once per run, under its file lock, before any test forges a box."""
    from providers.local import image, isolation_problems

    if isolation_problems():
        return  # the isolated tests fail on their own, saying why
    cache = Path(os.environ["BOXFORGE_IMAGE_CACHE"])
    if image.find_image(cache) is None:
        print(f"\nbuilding the base image of local boxes into {cache} (once per cache, about a minute)")
    image.ensure_image(cache, progress=lambda line: None)
READY_TIMEOUT_S = 20.0


def require_server(kind: str) -> None:
    """Skip (or, with BOXFORGE_REQUIRE_OPENSSH=1, fail) when ``kind`` cannot run here."""
    if kind == "openssh" and find_sshd() is None:
        message = "OpenSSH sshd is not installed"
        if os.environ.get("BOXFORGE_REQUIRE_OPENSSH") == "1":
            pytest.fail(f"{message}, but BOXFORGE_REQUIRE_OPENSSH=1")
        pytest.skip(message)


@pytest.fixture(params=[pytest.param("openssh", marks=pytest.mark.openssh), "embedded"])
def ssh_server_kind(request: pytest.FixtureRequest) -> str:
    require_server(request.param)
    return request.param


@pytest.fixture
def boxes_root(tmp_path: Path) -> Path:
    root = tmp_path / "boxes"
    root.mkdir(mode=0o700)
    return root


@pytest.fixture
def keys_root(tmp_path: Path) -> Path:
    root = tmp_path / "keys"
    root.mkdir(mode=0o700)
    return root


async def connect_pinned(
    box: Box, client_key_path: Path, host_public: str, **options: object
) -> asyncssh.SSHClientConnection:
    """An SSH connection to ``box`` that trusts only ``host_public`` and uses only the client key."""
    return await asyncssh.connect(
        box.host,
        box.ssh_port,
        username=box.ssh_user,
        client_keys=[str(client_key_path)],
        known_hosts=([asyncssh.import_public_key(host_public)], [], []),
        agent_path=None,
        config=None,
        connect_timeout=10,
        **options,
    )


@dataclass
class BoxHandle:
    """A ready local box and what a test needs to reach it."""

    box: Box
    provider: LocalProvider
    spec: BoxSpec
    client_key_path: Path
    host_public: str
    owner: str

    async def connect(self, **options: object) -> asyncssh.SSHClientConnection:
        return await connect_pinned(self.box, self.client_key_path, self.host_public, **options)


MakeBox = Callable[..., Awaitable[BoxHandle]]


@pytest.fixture
async def make_box(boxes_root: Path, keys_root: Path) -> AsyncIterator[MakeBox]:
    owner = "o" + secrets.token_hex(5)
    made: list[BoxHandle] = []

    async def factory(
        server: str = "auto", ttl_s: float = 600, name: str = "t1", labels: dict[str, str] | None = None
    ) -> BoxHandle:
        require_server(server)
        request_id = "r-" + secrets.token_hex(6)
        keys = create_box_keys(keys_root, request_id)
        spec = BoxSpec(
            name=name,
            request_id=request_id,
            labels={
                **box_labels(owner=owner, name=name, request_id=request_id, expires_at=time.time() + ttl_s),
                **(labels or {}),
            },
            host_key_private=keys.host_private,
            host_key_public=keys.host_public,
            authorized_key=keys.client_public,
        )
        provider = UnisolatedLocalProvider(boxes_root, server=server)  # type: ignore[arg-type]
        box = await provider.create(spec)
        handle = BoxHandle(box, provider, spec, keys.client_key_path, keys.host_public, owner)
        made.append(handle)
        handle.box = await provider.wait_ready(box.id, timeout=READY_TIMEOUT_S)
        return handle

    yield factory
    for handle in made:
        await handle.provider.destroy(handle.box.id)
        await handle.provider.aclose()


@pytest.fixture
async def pool() -> AsyncIterator[SSHPool]:
    """An SSH pool for the pool, channel and job-protocol tests, closed afterwards."""
    pool = SSHPool(connect_timeout=5.0)
    yield pool
    await pool.aclose()


@pytest.fixture
async def box(make_box: MakeBox, ssh_server_kind: str) -> BoxHandle:
    """A box on each SSH server kind."""
    return await make_box(server=ssh_server_kind)


@pytest.fixture
def target(box: BoxHandle) -> SSHTarget:
    from tests.ssh_helpers import target_for  # it imports BoxHandle from here

    return target_for(box)
