"""Fixtures for the Docker provider's tests: a daemon, the base image in it, providers and boxes.

- ``docker_env``: ``DOCKER_HOST`` and ``BOXFORGE_IMAGE_CACHE`` for the session. It uses the daemon that
  ``DOCKER_HOST`` names (CI starts one in ``.ci/services/docker.sh``), else starts a private one for the
  session (root and Debian's dockerd needed); without either the tests skip, or fail when
  ``BOXFORGE_REQUIRE_DOCKER=1``. The base image is imported once (built first if the cache lacks it).
- ``docker_provider_factory``: ``make(home, owner)`` -> a DockerProvider on that daemon; closed at teardown.
- ``make_docker_spec``: a BoxSpec with fresh keys (keys under ``keys_root``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from providers.base import BoxSpec, ProviderContext, box_labels
from providers.docker import DockerProvider, DockerSettings
from server.keys import BoxKeys, create_box_keys
from tests.docker_daemon import SERVE_PID_FILE, DockerDaemon, restart_served

DEFAULT_CACHE = Path("/var/cache/boxforge-test-images")


def _require(message: str) -> None:
    if os.environ.get("BOXFORGE_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{message}, but BOXFORGE_REQUIRE_DOCKER=1")
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    cache = os.environ.get("BOXFORGE_IMAGE_CACHE") or str(DEFAULT_CACHE)
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    daemon = None
    if not DockerProvider.configured(DockerSettings.load({"DOCKER_HOST": host}, {}, "docker")):
        if os.environ.get("DOCKER_HOST"):
            _require(f"no Docker daemon answers at DOCKER_HOST={host}")
        if os.geteuid() != 0 or shutil.which("dockerd") is None:
            _require("no Docker daemon here, and none can be started (needs root and dockerd)")
        daemon = DockerDaemon(Path(tempfile.mkdtemp(prefix="bfd-", dir="/tmp")))  # containerd wants a short path
        daemon.start()
        host = daemon.url
    env = {"DOCKER_HOST": host, "BOXFORGE_IMAGE_CACHE": cache}
    _owned_daemon[:] = [daemon] if daemon is not None else []
    settings = DockerSettings.load(env, {}, "docker")
    provider = DockerProvider(settings, state_dir=Path(tmp_path_factory.mktemp("image-home")) / "docker",
                              image_cache=Path(cache))
    provider.engine.call(provider._ensure_base_image)
    provider.engine.close()
    yield env
    if daemon is not None:
        daemon.remove_containers()
        daemon.stop()
        daemon.clean_host()
        shutil.rmtree(daemon.root, ignore_errors=True)


_owned_daemon: list[DockerDaemon] = []


@pytest.fixture(scope="session")
def docker_restart(docker_env: dict[str, str]) -> Callable[[], None]:
    """Restart the session's dockerd: the one this session started, or one ``python -m tests.docker_daemon serve``
    runs (CI's); skip (fail with BOXFORGE_REQUIRE_DOCKER=1) when the daemon is someone else's."""
    host = docker_env["DOCKER_HOST"]
    if _owned_daemon:
        return _owned_daemon[0].restart
    sock = Path(host.removeprefix("unix://"))
    if not host.startswith("unix://") or not (sock.parent / SERVE_PID_FILE).exists():
        _require(f"the Docker daemon at {host} is not one this suite may restart")

    def restart() -> None:
        if not restart_served(sock):
            raise RuntimeError(f"nothing serves the Docker daemon at {host} any more")

    return restart


@pytest.fixture
def docker_provider_factory(docker_env: dict[str, str]) -> Iterator[Callable[..., DockerProvider]]:
    made: list[DockerProvider] = []

    def make(home: Path, owner: str = "o-test", **env: str) -> DockerProvider:
        settings = DockerSettings.load({**docker_env, **env}, {}, "docker")
        provider = DockerProvider.from_settings(settings, ProviderContext(home, owner))
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.engine.close()


def make_docker_spec(keys_root: Path, *, owner: str, name: str, ttl_s: float = 600, size: str | None = None,
                     expires_at: float | None = None) -> tuple[BoxSpec, BoxKeys]:
    request_id = "r" + secrets.token_hex(6)
    keys = create_box_keys(keys_root, f"{name}-{request_id}")
    labels = box_labels(owner=owner, name=name, request_id=request_id,
                        expires_at=expires_at if expires_at is not None else time.time() + ttl_s)
    spec = BoxSpec(name=name, request_id=request_id, labels=labels, host_key_private=keys.host_private,
                   host_key_public=keys.host_public, authorized_key=keys.client_public, size=size)
    return spec, keys


__all__ = ["docker_env", "docker_provider_factory", "docker_restart", "make_docker_spec"]
