"""The Hetzner Cloud API as the provider uses it: one hcloud ``Client`` whose synchronous calls run in
worker threads, errors translated at this boundary into ``providers.base`` errors whose messages say what to
do next, transient failures retried with cancellable anyio backoff.

Every call boxforge makes is safe to repeat: reads, label updates, deletes (gone is success) and creates
(their names are unique, so a repeat gets ``uniqueness_error``, which ``NameTaken`` carries).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from providers.base import (
    AuthError,
    CapacityError,
    NotFound,
    ProviderError,
    QuotaError,
    TransientError,
)
from server.lazy import lazy_import

if TYPE_CHECKING:
    import hcloud
    import requests
else:  # loaded by the first API call: an MCP server that never uses Hetzner does not hold them
    hcloud = lazy_import("hcloud")
    requests = lazy_import("requests")

T = TypeVar("T")
log = logging.getLogger("boxforge.hetzner")

DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
REQUEST_TIMEOUT_S = (10.0, 30.0)  # connect, read
API_CONCURRENCY = 4
API_ATTEMPTS = 6
MAX_BACKOFF_S = 30.0

TRANSIENT_CODES = {"rate_limit_exceeded", "conflict", "locked", "timeout", "bad_gateway", "server_error",
                   "unavailable", "maintenance", "service_error"}


class NameTaken(ProviderError):
    """uniqueness_error: a create or key name is in use (maybe by our own earlier attempt)."""


def _api_code(exc: hcloud.APIException) -> str:
    return exc.code if isinstance(exc.code, str) else str(exc.code)


def translate(exc: BaseException, what: str) -> ProviderError:
    """The providers.base error for an hcloud/requests exception raised while doing ``what``."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, hcloud.APIException):
        code = _api_code(exc)
        message = exc.message
        if code in ("unauthorized", "401"):
            return AuthError(
                f"the Hetzner API rejected HCLOUD_TOKEN while trying to {what} ({message}): create a Read & Write "
                "API token in the Hetzner Console (your project -> Security -> API tokens) and set HCLOUD_TOKEN"
            )
        if code == "token_readonly":
            return AuthError(f"HCLOUD_TOKEN is read-only, so boxforge cannot {what}: create a Read & Write token")
        if code in ("forbidden", "403"):
            return AuthError(f"the Hetzner API refused to {what} ({message}): check the token's project and rights")
        if code == "resource_limit_exceeded":
            return QuotaError(
                f"Hetzner project limit reached while trying to {what} ({message}): destroy unused servers "
                "(list_servers / destroy_server) or ask Hetzner support to raise the project's limits"
            )
        if code in ("rate_limit_exceeded", "429"):
            return TransientError(
                f"Hetzner API rate limit reached while trying to {what} (3600 requests per hour per project by "
                "default, refilled at 1 per second): wait a minute and retry, or create fewer boxes at once"
            )
        if code in ("resource_unavailable", "placement_error"):
            return CapacityError(f"Hetzner cannot {what} right now ({message})")
        if code in ("not_found", "404"):
            return NotFound(f"Hetzner says not found while trying to {what} ({message})")
        if code == "uniqueness_error":
            return NameTaken(f"cannot {what}: {message}")
        if code in TRANSIENT_CODES or (code.isdigit() and int(code) >= 500):
            return TransientError(f"the Hetzner API failed to {what} ({message}, {code}); retry shortly")
        return ProviderError(f"the Hetzner API rejected the request to {what}: {message} ({code})")
    if isinstance(exc, requests.exceptions.RequestException):
        return TransientError(f"cannot reach the Hetzner API to {what}: {type(exc).__name__}; check the network "
                              "(and HCLOUD_ENDPOINT if set)")
    return ProviderError(f"unexpected error from hcloud while trying to {what}: {type(exc).__name__}: {exc}")


class HetznerApi:
    """The project's API: ``call`` runs one hcloud call in a thread (at most ``API_CONCURRENCY`` at once),
    translates its errors and retries transient ones with backoff based on ``poll_interval_s``."""

    def __init__(self, token: str, *, endpoint: str | None, poll_interval_s: float,
                 attempts: int = API_ATTEMPTS) -> None:
        if not token:
            raise AuthError("HCLOUD_TOKEN is not set: create a Read & Write API token in a dedicated Hetzner "
                            "project and export HCLOUD_TOKEN")
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.client = hcloud.Client(token=token, api_endpoint=self.endpoint, application_name="boxforge",
                             timeout=REQUEST_TIMEOUT_S)
        # Retries happen in call() with anyio sleeps (cancellable); hcloud has no public switch for its own.
        if hasattr(self.client, "_client") and hasattr(self.client._client, "_retry_max_retries"):
            self.client._client._retry_max_retries = 0
        self.poll_interval_s = poll_interval_s
        self.attempts = max(1, attempts)
        self._limiter = anyio.CapacityLimiter(API_CONCURRENCY)

    async def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        attempt = 0
        while True:
            try:
                return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._limiter)
            except Exception as exc:
                error = translate(exc, what)
                if not isinstance(error, TransientError) or attempt + 1 >= self.attempts:
                    raise error from exc
                log.info("retrying %s after %s", what, type(error).__name__)
            await anyio.sleep(min(MAX_BACKOFF_S, self.poll_interval_s * 2**attempt))
            attempt += 1

    async def server(self, box_id: str) -> Any | None:
        """The hcloud server, or None when it is gone (or being deleted)."""
        if not box_id.isdigit():
            return None
        try:
            server = await self.call(f"get server {box_id}", self.client.servers.get_by_id, int(box_id))
        except NotFound:
            return None
        return None if server.status == "deleting" else server

    async def wait_action(self, action_id: int, what: str, timeout: float) -> None:
        """Poll an action until it succeeds; ProviderError with Hetzner's reason when it fails."""
        deadline = time.monotonic() + timeout
        while True:
            action = await self.call(f"poll the action of {what}", self.client.actions.get_by_id, action_id)
            if action.status == "success":
                return
            if action.status == "error":
                error = action.error or {}
                raise ProviderError(f"Hetzner failed to {what}: {error.get('message', 'unknown error')} "
                                    f"({error.get('code', 'error')})")
            if time.monotonic() >= deadline:
                raise TransientError(f"Hetzner did not finish to {what} within {timeout:g}s; retry later")
            await anyio.sleep(self.poll_interval_s)

    def close(self) -> None:
        """Close the HTTP session."""
        session = getattr(getattr(self.client, "_client", None), "_session", None)
        if session is not None:
            session.close()
