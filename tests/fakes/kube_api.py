"""A stateful fake of the Kubernetes API: the subset the kubernetes provider uses, on loopback.

Pods, Secrets and NetworkPolicies in namespaces; list with ``labelSelector`` (equality terms) and
``fieldSelector=metadata.name=``; watch (JSON lines, ``timeoutSeconds``); merge/strategic patches merged as
dicts with ``null`` deleting a key; 404/409/401 Status bodies; port-forward over websocket
(``v4.channel.k8s.io``). There is no Sandbox CRD here: ``/apis/agents.x-k8s.io/v1beta1`` is 404.

Each Pod is backed by a REAL local box (the local provider's public interface): the "kubelet" reads the
Pod's Secret volume for the host key and the authorized key, as the box's init would, starts a local
box with them and marks the Pod Running and Ready; port-forwards connect to that box's sshd. Deleting a
Pod burns its box. Fault switches on ``fake.faults`` can be flipped at any time; ``evict(name)`` burns a
Pod's box and marks it Failed/Evicted, as a node-pressure eviction does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from providers.base import BoxSpec, ProviderContext
from providers.local import LocalProvider


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                              "reason": reason, "code": code}, status=code)


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _selected(obj: dict[str, Any], label_selector: str, field_selector: str) -> bool:
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, label_selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value.lstrip("="):
            return False
    for term in filter(None, field_selector.split(",")):
        key, _, value = term.partition("=")
        if key == "metadata.name" and obj["metadata"]["name"] != value:
            return False
    return True


@dataclass
class Faults:
    refuse_create: str | None = None  # an admission webhook's denial message: POST pods -> 403
    stuck_pending: bool = False  # new Pods are never scheduled (Unschedulable)
    throttle: int = 0  # the next N requests get 429 with Retry-After
    server_errors: int = 0  # the next N requests get 503
    drop_watch: int = 0  # the next N watches end right after their first event
    kubelet_paused: bool = False  # scheduled Pods wait (ContainerCreating) until ``fake.resume_kubelet()``


@dataclass
class FakePod:
    obj: dict[str, Any]
    box_id: str | None = None  # the local box behind it
    host: str | None = None
    port: int | None = None
    task: asyncio.Task[None] | None = None
    forwards: set[web.WebSocketResponse] = field(default_factory=set)  # open port-forwards into the Pod


@dataclass
class FakeKube:
    root: Path
    token: str
    faults: Faults = field(default_factory=Faults)
    pods: dict[tuple[str, str], FakePod] = field(default_factory=dict)
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    policies: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: int = 0
    url: str = ""

    def __post_init__(self) -> None:
        self._rv = itertools.count(1)
        self._changed: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._local = LocalProvider.from_settings(LocalProvider.Settings.load({}, {}, "local"),
                                                  ProviderContext(home=self.root, owner="kube-fake"))

    # --- the app -------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        ns = "/api/v1/namespaces/{ns}"
        app.router.add_get(ns + "/pods", self._pods_list)
        app.router.add_post(ns + "/pods", self._pods_create)
        app.router.add_get(ns + "/pods/{name}", self._pod_get)
        app.router.add_patch(ns + "/pods/{name}", self._pod_patch)
        app.router.add_delete(ns + "/pods/{name}", self._pod_delete)
        app.router.add_get(ns + "/pods/{name}/portforward", self._portforward)
        app.router.add_post(ns + "/secrets", self._secret_create)
        app.router.add_patch(ns + "/secrets/{name}", self._secret_patch)
        app.router.add_delete(ns + "/secrets/{name}", self._secret_delete)
        app.router.add_post("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies", self._policy_create)
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests += 1
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        if self.faults.throttle > 0:
            self.faults.throttle -= 1
            resp = _status(429, "TooManyRequests", "the server has received too many requests")
            resp.headers["Retry-After"] = "0.05"
            return resp
        if self.faults.server_errors > 0:
            self.faults.server_errors -= 1
            return _status(503, "ServiceUnavailable", "etcdserver: leader changed")
        return await handler(request)

    async def _touch(self, obj: dict[str, Any]) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    # --- pods ----------------------------------------------------------------------------------------

    async def _pods_list(self, request: web.Request) -> web.StreamResponse:
        ns = request.match_info["ns"]
        ls, fs = request.query.get("labelSelector", ""), request.query.get("fieldSelector", "")
        if request.query.get("watch", "").lower() in ("true", "1"):  # Go ParseBool: True too
            return await self._watch(request, ns, ls, fs)
        items = [p.obj for (n, _), p in self.pods.items() if n == ns and _selected(p.obj, ls, fs)]
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": {
            "resourceVersion": str(next(self._rv))}, "items": items})

    async def _watch(self, request: web.Request, ns: str, ls: str, fs: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        drop = self.faults.drop_watch > 0
        if drop:
            self.faults.drop_watch -= 1
        deadline = time.monotonic() + float(request.query.get("timeoutSeconds", "30"))
        with contextlib.suppress(ConnectionError):  # the client ends a watch by closing it
            await self._stream(resp, ns, ls, fs, drop, deadline)
        return resp

    async def _stream(self, resp: web.StreamResponse, ns: str, ls: str, fs: str, drop: bool, deadline: float) -> None:
        sent: dict[str, str] = {}
        assert self._changed is not None
        while time.monotonic() < deadline:
            for (n, name), pod in list(self.pods.items()):
                if n == ns and _selected(pod.obj, ls, fs) and sent.get(name) != pod.obj["metadata"]["resourceVersion"]:
                    kind = "ADDED" if name not in sent else "MODIFIED"
                    sent[name] = pod.obj["metadata"]["resourceVersion"]
                    await resp.write(json.dumps({"type": kind, "object": pod.obj}).encode() + b"\n")
            if drop:
                return  # the connection ends early, as a proxy or an API server restart does
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), max(0.01, deadline - time.monotonic()))

    async def _pods_create(self, request: web.Request) -> web.Response:
        ns, body = request.match_info["ns"], await request.json()
        name = body["metadata"]["name"]
        if (ns, name) in self.pods:
            return _status(409, "AlreadyExists", f'pods "{name}" already exists')
        if self.faults.refuse_create:
            return _status(403, "Forbidden", f'admission webhook "policy.example.com" denied the request: '
                                             f"{self.faults.refuse_create}")
        meta = body["metadata"]
        meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now())
        body["status"] = {"phase": "Pending", "conditions": []}
        pod = FakePod(body)
        self.pods[(ns, name)] = pod
        await self._touch(body)
        if self.faults.stuck_pending:
            body["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                             "message": "0/3 nodes are available: 3 Insufficient memory."}]
        else:
            pod.task = asyncio.create_task(self._kubelet(ns, pod))
        return web.json_response(body, status=201)

    async def _kubelet(self, ns: str, pod: FakePod) -> None:
        """Start the Pod's local box from its Secret volume (retrying while the Secret is missing)."""
        spec = pod.obj["spec"]
        secret_name = spec["volumes"][0]["secret"]["secretName"]
        assert self._changed is not None
        async with self._changed:  # the kubelet retries the mount until the Secret exists
            await self._changed.wait_for(lambda: (ns, secret_name) in self.secrets and not self.faults.kubelet_paused)
        data = self.secrets[(ns, secret_name)].get("stringData") or {}
        box = await self._local.create(BoxSpec(
            name=pod.obj["metadata"]["name"][:60], request_id=pod.obj["metadata"]["uid"],
            labels={"boxforge-expires-at": str(int(time.time() + 3600))},  # a safety net, nothing more
            host_key_private=data["ssh_host_ed25519_key"], host_key_public=data["ssh_host_ed25519_key.pub"],
            authorized_key=data["authorized_keys"].strip()))
        pod.box_id = box.id
        box = await self._local.wait_ready(box.id, timeout=30)
        pod.host, pod.port = box.host, box.ssh_port
        pod.obj["status"] = {"phase": "Running", "podIP": box.host, "startTime": _now(), "conditions": [
            {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]}
        await self._touch(pod.obj)

    def _pod(self, request: web.Request) -> FakePod | None:
        return self.pods.get((request.match_info["ns"], request.match_info["name"]))

    async def _pod_get(self, request: web.Request) -> web.Response:
        pod = self._pod(request)
        if pod is None:
            return _status(404, "NotFound", f'pods "{request.match_info["name"]}" not found')
        return web.json_response(pod.obj)

    async def _pod_patch(self, request: web.Request) -> web.Response:
        pod = self._pod(request)
        if pod is None:
            return _status(404, "NotFound", f'pods "{request.match_info["name"]}" not found')
        patch = await request.json()
        if "spec" in patch:
            return _status(422, "Invalid", "Pod spec is immutable here (the fake allows metadata only)")
        _merge(pod.obj, patch)
        await self._touch(pod.obj)
        return web.json_response(pod.obj)

    async def _pod_delete(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        pod = self.pods.pop(key, None)
        if pod is None:
            return _status(404, "NotFound", f'pods "{key[1]}" not found')
        await self._burn(pod)
        # the garbage collector deletes what the Pod owns
        for skey, secret in list(self.secrets.items()):
            if any(r.get("uid") == pod.obj["metadata"]["uid"] for r in secret["metadata"].get("ownerReferences", [])):
                self.secrets.pop(skey, None)
        await self._touch(pod.obj)
        return web.json_response(pod.obj)

    async def _burn(self, pod: FakePod) -> None:
        if pod.task is not None:
            pod.task.cancel()
            with contextlib.suppress(BaseException):
                await pod.task
        for ws in list(pod.forwards):  # the Pod's network namespace is gone, and every stream into it
            await ws.close()
        if pod.box_id is not None:
            await self._local.destroy(pod.box_id)
        pod.host = pod.port = None

    async def evict_now(self, ns: str, name: str) -> None:
        pod = self.pods[(ns, name)]
        await self._burn(pod)
        pod.obj["status"] = {"phase": "Failed", "reason": "Evicted",
                             "message": "The node was low on resource: memory."}
        await self._touch(pod.obj)

    async def _portforward(self, request: web.Request) -> web.StreamResponse:
        pod = self._pod(request)
        if pod is None or pod.host is None or pod.obj["status"].get("phase") != "Running":
            return _status(400, "BadRequest", "pod is not running")
        ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io",))
        await ws.prepare(request)
        port = int(request.query.get("ports", "22"))
        await ws.send_bytes(bytes([0]) + port.to_bytes(2, "little"))
        await ws.send_bytes(bytes([1]) + port.to_bytes(2, "little"))
        try:
            reader, writer = await asyncio.open_connection(pod.host, pod.port)
        except OSError as exc:
            await ws.send_bytes(bytes([1]) + str(exc).encode())
            await ws.close()
            return ws

        async def down() -> None:
            with contextlib.suppress(ConnectionError):  # the client or the Pod went away: the stream just ends
                while chunk := await reader.read(65536):
                    await ws.send_bytes(bytes([0]) + chunk)

        task = asyncio.create_task(down())
        pod.forwards.add(ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY and msg.data[:1] == b"\x00":
                    writer.write(msg.data[1:])
                    await writer.drain()
        except ConnectionError:
            pass  # the box's sshd went away (a burn, an eviction): the client sees the stream end
        finally:
            pod.forwards.discard(ws)
            task.cancel()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await ws.close()
        return ws

    # --- secrets, policies ---------------------------------------------------------------------------

    async def _secret_create(self, request: web.Request) -> web.Response:
        ns, body = request.match_info["ns"], await request.json()
        name = body["metadata"]["name"]
        if (ns, name) in self.secrets:
            return _status(409, "AlreadyExists", f'secrets "{name}" already exists')
        body["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now())
        self.secrets[(ns, name)] = body
        await self._touch(body)
        return web.json_response({"kind": "Secret", "metadata": body["metadata"]}, status=201)

    async def _secret_patch(self, request: web.Request) -> web.Response:
        secret = self.secrets.get((request.match_info["ns"], request.match_info["name"]))
        if secret is None:
            return _status(404, "NotFound", "secret not found")
        _merge(secret, await request.json())
        return web.json_response({"kind": "Secret", "metadata": secret["metadata"]})

    async def _secret_delete(self, request: web.Request) -> web.Response:
        if self.secrets.pop((request.match_info["ns"], request.match_info["name"]), None) is None:
            return _status(404, "NotFound", "secret not found")
        return web.json_response({"kind": "Status", "status": "Success"})

    async def _policy_create(self, request: web.Request) -> web.Response:
        ns, body = request.match_info["ns"], await request.json()
        key = (ns, body["metadata"]["name"])
        if key in self.policies:
            return _status(409, "AlreadyExists", "networkpolicy already exists")
        self.policies[key] = body
        return web.json_response(body, status=201)

    # --- running it ----------------------------------------------------------------------------------

    def run_coro(self, coro: Any, timeout: float = 60) -> Any:
        """Run a coroutine on the fake's loop (from the test's thread)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def resume_kubelet(self) -> None:
        async def resume() -> None:
            self.faults.kubelet_paused = False
            assert self._changed is not None
            async with self._changed:
                self._changed.notify_all()

        self.run_coro(resume())

    def evict(self, name: str, namespace: str = "boxforge") -> None:
        self.run_coro(self.evict_now(namespace, name))

    def live_pods(self, **labels: str) -> list[dict[str, Any]]:
        return [p.obj for p in list(self.pods.values())
                if all((p.obj["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())]

    def local_boxes(self) -> list[str]:
        return [b.id for b in self.run_coro(self._local.list({}))]

    def write_kubeconfig(self, path: Path, namespace: str = "boxforge") -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester", "namespace": namespace}}],
        }))
        path.chmod(0o600)
        return path


@contextlib.contextmanager
def running_kube(root: Path, *, token: str = "fake-kube-token") -> Iterator[FakeKube]:
    """A FakeKube serving on 127.0.0.1 (port 0) from its own thread and loop; every box burned at exit."""
    fake = FakeKube(root=root, token=token)
    started = threading.Event()
    loop = asyncio.new_event_loop()
    runner: web.AppRunner | None = None

    async def start() -> None:
        nonlocal runner
        fake._changed = asyncio.Condition()
        runner = web.AppRunner(fake.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        fake.url = f"http://127.0.0.1:{port}"

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    fake._loop = loop
    thread = threading.Thread(target=serve, name="fake-kube", daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield fake
    finally:
        async def stop() -> None:
            for pod in list(fake.pods.values()):
                await fake._burn(pod)
            fake.pods.clear()
            assert runner is not None
            await runner.cleanup()

        fake.run_coro(stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
