"""The Kubernetes API as the provider needs it: kubernetes_asyncio calls, retries and error translation.

Everything comes back as plain dicts (the API's own camelCase JSON); every SDK or HTTP failure leaves
this module as a ``ProviderError`` subclass. 429 and 5xx are retried with backoff (honouring
``Retry-After``) inside the request budget; the SDK is imported here only, when a client is made.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio

from providers.base import AuthError, NotFound, ProviderError, QuotaError, TransientError
from providers.kubernetes.manifests import SANDBOX_GROUP, SANDBOX_PLURAL, SANDBOX_VERSION
from providers.kubernetes.settings import IN_CLUSTER_ENV, KubeSettings, found_config, kubeconfig_paths

RETRY_ATTEMPTS = 6
RETRY_BASE_S = 0.2
RETRY_CAP_S = 5.0


class AlreadyExists(ProviderError):
    """A create found an object of that name (HTTP 409)."""


def _translate(what: str, exc: BaseException) -> ProviderError:
    """An SDK/HTTP failure as the ProviderError a person can act on (no headers or tokens in it)."""
    status = getattr(exc, "status", None)
    reason = _api_message(exc)
    if status in (401,):
        return AuthError(f"kubernetes refused our credentials for {what} ({reason}); check the kubeconfig's user "
                         "(kubectl auth whoami)")
    if status == 403:
        if "quota" in reason.lower():
            return QuotaError(f"kubernetes quota reached on {what}: {reason}")
        return AuthError(f"kubernetes forbids {what}: {reason}; the kubeconfig's user needs create/get/list/patch/"
                         "delete on pods, pods/portforward and secrets in the namespace")
    if status == 404:
        return NotFound(f"kubernetes has no such object for {what}: {reason}")
    if status == 409:
        return AlreadyExists(f"kubernetes already has the object of {what}: {reason}")
    if status == 429 or (isinstance(status, int) and status >= 500):
        return TransientError(f"kubernetes API busy on {what} (HTTP {status}: {reason}); try again shortly")
    if isinstance(status, int):
        return ProviderError(f"kubernetes rejected {what} (HTTP {status}): {reason}")
    return TransientError(f"kubernetes API unreachable on {what}: {type(exc).__name__}: {exc}")


def _api_message(exc: BaseException) -> str:
    import json

    body = getattr(exc, "body", None)
    if body:
        try:
            return str(json.loads(body).get("message") or body)[:500]
        except (ValueError, AttributeError):
            return str(body)[:500]
    return str(getattr(exc, "reason", "") or exc)[:500]


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    raw = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


class KubeApi:
    """One API client pair (REST and websocket) for one namespace."""

    def __init__(self, settings: KubeSettings) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self._client: Any = None
        self._ws_client: Any = None
        self._core: Any = None
        self._custom: Any = None
        self._lock = anyio.Lock()
        self.retries = 0  # how many 429/5xx answers were retried (for tests and logs)

    async def _ensure(self) -> None:
        if self._client is not None:
            return
        async with self._lock:
            if self._client is not None:
                return
            try:
                from kubernetes_asyncio import client, config
                from kubernetes_asyncio.stream import WsApiClient
            except ImportError as exc:  # the extra is not installed
                raise ProviderError("the kubernetes provider needs its extra: pip install 'boxforge[kubernetes]'") \
                    from exc
            conf = client.Configuration()
            paths = [p for p in kubeconfig_paths(self.settings) if p.is_file()]
            try:
                if paths:
                    await config.load_kube_config(config_file=":".join(str(p) for p in paths),
                                                  context=self.settings.context, client_configuration=conf)
                elif found_config(self.settings):
                    config.load_incluster_config(client_configuration=conf)
                else:
                    raise AuthError("no kubeconfig found (looked at the kubeconfig setting, $KUBECONFIG, "
                                    f"~/.kube/config and ${IN_CLUSTER_ENV}); point BOXFORGE_KUBECONFIG at one")
            except ProviderError:
                raise
            except Exception as exc:  # the loaders raise ConfigException, ValueError, OSError...
                raise AuthError(f"cannot load the kubeconfig: {exc}") from None
            self._client = client.ApiClient(conf)
            self._ws_client = WsApiClient(conf)
            self._core = client.CoreV1Api(self._client)
            self._custom = client.CustomObjectsApi(self._client)
            self._sanitize = self._client.sanitize_for_serialization

    async def _call(self, what: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run one API call with the request timeout, retrying 429/5xx/unreachable with jittered backoff."""
        await self._ensure()
        deadline = time.monotonic() + self.settings.request_timeout_s
        for attempt in range(RETRY_ATTEMPTS):
            try:
                with anyio.fail_after(max(0.1, deadline - time.monotonic())):
                    return await fn()
            except TimeoutError:
                raise TransientError(f"kubernetes API did not answer {what} within "
                                     f"{self.settings.request_timeout_s:g}s") from None
            except Exception as exc:
                err = _translate(what, exc)
                if not isinstance(err, TransientError) or attempt == RETRY_ATTEMPTS - 1:
                    raise err from None
                delay = _retry_after(exc) or min(RETRY_CAP_S, RETRY_BASE_S * 2 ** attempt) * random.uniform(0.5, 1)
                if time.monotonic() + delay >= deadline:
                    raise err from None
                self.retries += 1
                await anyio.sleep(delay)
        raise AssertionError("unreachable")

    async def _maybe(self, what: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Like ``_call``, but a 404 is None."""
        try:
            return await self._call(what, fn)
        except NotFound:
            return None

    def _dict(self, obj: Any) -> dict[str, Any]:
        return obj if isinstance(obj, dict) else self._sanitize(obj)

    # --- Pods and Secrets -------------------------------------------------------------------------------

    async def create_secret(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The created Secret, or None when one of that name exists already."""
        try:
            return self._dict(await self._call(f"create secret {body['metadata']['name']}", lambda: (
                self._core.create_namespaced_secret(self.namespace, body))))
        except AlreadyExists:
            return None

    async def create_pod(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The created Pod, or None when one of that name exists already (a retried create)."""
        try:
            return self._dict(await self._call(f"create pod {body['metadata']['name']}", lambda: (
                self._core.create_namespaced_pod(self.namespace, body))))
        except AlreadyExists:
            return None

    async def read_pod(self, name: str) -> dict[str, Any] | None:
        pod = await self._maybe(f"get pod {name}", lambda: self._core.read_namespaced_pod(name, self.namespace))
        return None if pod is None else self._dict(pod)

    async def list_pods(self, selector: str) -> list[dict[str, Any]]:
        pods = await self._call("list pods", lambda: self._core.list_namespaced_pod(
            self.namespace, label_selector=selector))
        return [self._dict(p) for p in pods.items]

    async def patch_pod(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._dict(await self._call(f"patch pod {name}", lambda: self._core.patch_namespaced_pod(
            name, self.namespace, patch)))

    async def patch_secret(self, name: str, patch: dict[str, Any]) -> None:
        await self._maybe(f"patch secret {name}", lambda: self._core.patch_namespaced_secret(
            name, self.namespace, patch))

    async def delete_pod(self, name: str) -> None:
        await self._maybe(f"delete pod {name}", lambda: self._core.delete_namespaced_pod(
            name, self.namespace, grace_period_seconds=0))

    async def delete_secret(self, name: str) -> None:
        await self._maybe(f"delete secret {name}", lambda: self._core.delete_namespaced_secret(
            name, self.namespace))

    async def ensure_network_policy(self, body: dict[str, Any]) -> None:
        """Create the NetworkPolicy unless one of that name exists."""
        from kubernetes_asyncio import client

        await self._ensure()
        net = client.NetworkingV1Api(self._client)
        try:
            await self._call(f"create networkpolicy {body['metadata']['name']}", lambda: (
                net.create_namespaced_network_policy(self.namespace, body)))
        except AlreadyExists:
            pass

    async def watch_pod(self, name: str, timeout_s: int) -> AsyncIterator[dict[str, Any]]:
        """The Pod as it changes, until the server ends the watch (or drops it) or ``timeout_s`` passes."""
        from kubernetes_asyncio import watch

        await self._ensure()
        stream = watch.Watch()
        try:
            async with stream.stream(self._core.list_namespaced_pod, self.namespace,
                                     field_selector=f"metadata.name={name}", timeout_seconds=timeout_s) as events:
                async for event in events:
                    raw = event.get("raw_object")
                    if isinstance(raw, dict) and raw.get("kind") != "Status":
                        yield raw
        except ProviderError:
            raise
        except Exception as exc:
            raise _translate(f"watch pod {name}", exc) from None
        finally:
            stream.stop()

    def portforward(self, name: str, port: int) -> AbstractAsyncContextManager[Any]:
        """A websocket (``v4.channel.k8s.io``) forwarding to ``port`` of Pod ``name``."""
        assert self._ws_client is not None, "call an API method first"
        from kubernetes_asyncio import client

        core = client.CoreV1Api(self._ws_client)
        return _Awaiting(core.connect_get_namespaced_pod_portforward(
            name, self.namespace, ports=port, _preload_content=False))

    # --- agent-sandbox Sandboxes ----------------------------------------------------------------------

    async def has_sandbox_crd(self) -> bool:
        """Whether the cluster serves ``agents.x-k8s.io/v1beta1`` sandboxes."""
        await self._ensure()
        try:
            found = await self._call("discover agents.x-k8s.io", lambda: self._custom.get_api_resources(
                SANDBOX_GROUP, SANDBOX_VERSION))
        except NotFound:
            return False
        resources = self._dict(found).get("resources") or []
        return any(r.get("name") == SANDBOX_PLURAL for r in resources)

    async def create_sandbox(self, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return await self._call(f"create sandbox {body['metadata']['name']}", lambda: (
                self._custom.create_namespaced_custom_object(SANDBOX_GROUP, SANDBOX_VERSION, self.namespace,
                                                             SANDBOX_PLURAL, body)))
        except AlreadyExists:
            return None

    async def read_sandbox(self, name: str) -> dict[str, Any] | None:
        return await self._maybe(f"get sandbox {name}", lambda: self._custom.get_namespaced_custom_object(
            SANDBOX_GROUP, SANDBOX_VERSION, self.namespace, SANDBOX_PLURAL, name))

    async def list_sandboxes(self, selector: str) -> list[dict[str, Any]]:
        found = await self._call("list sandboxes", lambda: self._custom.list_namespaced_custom_object(
            SANDBOX_GROUP, SANDBOX_VERSION, self.namespace, SANDBOX_PLURAL, label_selector=selector))
        return list(found.get("items") or [])

    async def patch_sandbox(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._call(f"patch sandbox {name}", lambda: self._custom.patch_namespaced_custom_object(
            SANDBOX_GROUP, SANDBOX_VERSION, self.namespace, SANDBOX_PLURAL, name, patch))

    async def delete_sandbox(self, name: str) -> None:
        await self._maybe(f"delete sandbox {name}", lambda: self._custom.delete_namespaced_custom_object(
            SANDBOX_GROUP, SANDBOX_VERSION, self.namespace, SANDBOX_PLURAL, name))

    async def aclose(self) -> None:
        for c in (self._ws_client, self._client):
            if c is not None:
                await c.close()
        self._client = self._ws_client = None


class _Awaiting:
    """Turn the SDK's coroutine-returning-a-ws-context into one async context manager."""

    def __init__(self, pending: Awaitable[Any]) -> None:
        self._pending = pending
        self._ctx: Any = None

    async def __aenter__(self) -> Any:
        self._ctx = await self._pending
        return await self._ctx.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        await self._ctx.__aexit__(*exc)
