"""The docker SDK behind worker threads, its errors translated into providers.base errors at this boundary.

The SDK is synchronous and is imported on first use (extra ``docker``). Every call runs in a worker
thread; the SDK's per-request timeout bounds a stalled daemon, so no thread waits forever.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from providers.base import NotFound, ProviderError, TransientError
from providers.docker.settings import API_VERSION

T = TypeVar("T")
API_CONCURRENCY = 8


class Conflict(ProviderError):
    """The daemon refused because a name is taken or an object is in use (HTTP 409)."""


def _sdk() -> Any:
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ProviderError("the Docker provider needs the docker SDK: pip install 'boxforge[docker]'") from exc
    return docker


def translate(exc: Exception, host: str) -> ProviderError:
    """An SDK or transport exception as a ProviderError whose message says what to do."""
    docker = _sdk()
    import requests

    if isinstance(exc, docker.errors.NotFound):
        return NotFound(str(exc.explanation or exc))
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code or 0
        message = str(exc.explanation or exc)
        if status == 409:
            return Conflict(message)
        if status >= 500 or status == 429:
            return TransientError(f"the Docker daemon failed ({status}): {message}")
        return ProviderError(f"the Docker daemon refused ({status}): {message}")
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return TransientError(f"cannot reach the Docker daemon at {host} ({type(exc).__name__}); is dockerd "
                              f"running and DOCKER_HOST right?")
    if isinstance(exc, docker.errors.DockerException):
        return ProviderError(f"Docker: {exc}")
    return ProviderError(f"Docker: {type(exc).__name__}: {exc}")


def make_client(host: str, timeout_s: float) -> Any:
    """A DockerClient for ``host`` pinned to the Engine API version Debian's docker.io 20.10 speaks."""
    return _sdk().DockerClient(base_url=host, version=API_VERSION, timeout=int(max(1, timeout_s)))


def ping(host: str, timeout_s: float) -> bool:
    """True when a daemon answers at ``host`` within about ``timeout_s`` (blocking)."""
    try:
        client = make_client(host, timeout_s)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


class Engine:
    """One SDK client, shared by the provider's calls; ``await engine.run(fn, ...)`` in a worker thread."""

    def __init__(self, host: str, timeout_s: float) -> None:
        self.host = host
        self.timeout_s = timeout_s
        self._client: Any = None
        self._limiter = anyio.CapacityLimiter(API_CONCURRENCY)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.host, self.timeout_s)
        return self._client

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` here (already in a worker thread) with errors translated."""
        try:
            return fn(*args, **kwargs)
        except ProviderError:
            raise
        except Exception as exc:
            raise translate(exc, self.host) from exc

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(self.call, fn, *args, **kwargs),
                                              limiter=self._limiter)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
