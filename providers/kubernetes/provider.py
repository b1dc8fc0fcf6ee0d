"""KubernetesProvider: boxes as Pods (or agent-sandbox Sandboxes) in one namespace of a cluster.

See providers.base.Provider for the contract and providers.kubernetes.manifests for what is created.
The orchestrator reaches a box's sshd through a port-forward over the API (providers.kubernetes.forward),
so ``Box.host``/``ssh_port`` of a RUNNING box are a loopback address of this process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar, Literal

import anyio

from providers.base import (
    LABEL_OWNER,
    LABEL_REQUEST,
    Box,
    BoxSpec,
    BoxState,
    NotFound,
    Provider,
    ProviderContext,
    ProviderError,
    ProviderSettings,
    ReadyTimeout,
    TransientError,
    expires_at_from_labels,
)
from providers.capabilities import Isolated, Isolation, PinsHostKey
from providers.kubernetes import manifests as mf
from providers.kubernetes.api import KubeApi
from providers.kubernetes.forward import Forwards
from providers.kubernetes.settings import KubeSettings, found_config

Kind = Literal["pod", "sandbox"]
DESTROY_WAIT_S = 30.0
GONE_POLL_S = 0.2
WATCH_RETRY_S = 0.5
BANNER_TIMEOUT_S = 5.0
NETWORK_POLICY = "boxforge-boxes-isolated"


class KubernetesProvider(Provider, PinsHostKey, Isolated):
    """Boxes on a Kubernetes cluster. Settings: providers.kubernetes.settings.KubeSettings."""

    name: ClassVar[str] = "kubernetes"
    Settings: ClassVar[type[ProviderSettings]] = KubeSettings

    @classmethod
    def configured(cls, settings: ProviderSettings) -> bool:
        """A kubeconfig is found the way kubectl finds it (or we run inside a cluster)."""
        assert isinstance(settings, KubeSettings)
        return found_config(settings)

    @classmethod
    def from_settings(cls, settings: ProviderSettings, ctx: ProviderContext) -> KubernetesProvider:
        assert isinstance(settings, KubeSettings)
        return cls(settings)

    def __init__(self, settings: KubeSettings) -> None:
        self.settings = settings
        self.api = KubeApi(settings)
        self.forwards = Forwards(self.api)
        self._kind: Kind | None = None if settings.kind == "auto" else settings.kind
        self._policy_made = False

    async def kind(self) -> Kind:
        """``pod`` or ``sandbox``; ``auto`` asks the cluster once whether it serves the Sandbox CRD."""
        if self._kind is None:
            self._kind = "sandbox" if await self.api.has_sandbox_crd() else "pod"
        return self._kind

    async def verify(self) -> None:
        """List our Pods once: credentials, namespace and permissions are checked by the API server itself."""
        await self.api.list_pods(mf.label_selector({"managed-by": "boxforge"}))

    # --- create and readiness ----------------------------------------------------------------------------

    async def create(self, spec: BoxSpec) -> Box:
        """A Secret with the box's keys, then its Pod or Sandbox; idempotent by ``spec.request_id`` (the object
        name is derived from it). Returns the box PENDING."""
        box_id = mf.object_name(spec.name, spec.request_id)
        kind = await self.kind()
        existing = await self._read(box_id, kind)
        if existing is not None:
            meta = existing.get("metadata") or {}
            if (meta.get("labels") or {}).get(LABEL_REQUEST) != spec.request_id:
                raise ProviderError(f"kubernetes object {box_id} exists but belongs to another request")
            return mf.box_from(existing, kind=kind, state=BoxState.PENDING, ssh_user=self.settings.ssh_user)
        await self._isolate_namespace()
        await self.api.create_secret(mf.secret_manifest(box_id, spec, self.settings.namespace))
        try:
            if kind == "sandbox":
                made = await self.api.create_sandbox(mf.sandbox_manifest(box_id, spec, self.settings))
            else:
                made = await self.api.create_pod(mf.pod_manifest(box_id, spec, self.settings))
        except ProviderError:
            await self.api.delete_secret(mf.secret_name(box_id))  # nothing may outlive a refused create
            raise
        made = made or await self._read(box_id, kind)
        if made is None:
            raise TransientError(f"kubernetes {kind} {box_id} vanished right after it was created; retry")
        meta = made.get("metadata") or {}
        if meta.get("uid"):  # the Secret goes with its box, even when nobody deletes it
            api_version = f"{mf.SANDBOX_GROUP}/{mf.SANDBOX_VERSION}" if kind == "sandbox" else "v1"
            await self.api.patch_secret(mf.secret_name(box_id), {"metadata": {"ownerReferences": [{
                "apiVersion": api_version, "kind": "Sandbox" if kind == "sandbox" else "Pod",
                "name": box_id, "uid": meta["uid"]}]}})
        return mf.box_from(made, kind=kind, state=BoxState.PENDING, ssh_user=self.settings.ssh_user)

    async def _isolate_namespace(self) -> None:
        """A NetworkPolicy admitting no ingress to any box Pod: boxes cannot reach each other (port-forwards
        enter the Pod's own network namespace through the kubelet and are not affected)."""
        if self._policy_made:
            return
        body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": NETWORK_POLICY, "namespace": self.settings.namespace},
                "spec": {"podSelector": {"matchLabels": {"managed-by": "boxforge"}}, "policyTypes": ["Ingress"],
                         "ingress": []}}
        await self.api.ensure_network_policy(body)
        self._policy_made = True

    async def wait_ready(self, box_id: str, *, timeout: float) -> Box:
        """Until the Pod runs, is Ready and its sshd greets through the port-forward; watches the Pod and falls
        back to reading it when the watch drops. ReadyTimeout names what the scheduler or kubelet said."""
        deadline = time.monotonic() + timeout
        pod: dict[str, Any] | None = None
        while True:
            box, pod = await self._current(box_id)
            if box is None:
                raise NotFound(f"kubernetes box {box_id} does not exist (any more)")
            if box.state is BoxState.GONE:
                raise ProviderError(f"kubernetes box {box_id} ended before it was ready: "
                                    f"{mf.why_pending(pod) or 'no reason given'}")
            if box.state is BoxState.RUNNING and await self._greets(box):
                return box
            left = deadline - time.monotonic()
            if left <= 0:
                why = mf.why_pending(pod)
                raise ReadyTimeout(f"kubernetes box {box_id} was not ready within {timeout:g}s"
                                   + (f" ({why})" if why else ""))
            await self._until_change(box_id, pod, left)

    async def _until_change(self, box_id: str, pod: dict[str, Any] | None, left: float) -> None:
        """Wait for the Pod to change (a watch event), at most ``left`` seconds; a dropped watch returns early."""
        seen = ((pod or {}).get("metadata") or {}).get("resourceVersion")
        started = time.monotonic()
        with anyio.move_on_after(left):
            try:
                async for event in self.api.watch_pod(box_id, max(1, int(left))):
                    if (event.get("metadata") or {}).get("resourceVersion") != seen:
                        return
            except TransientError:
                pass
            if time.monotonic() - started < WATCH_RETRY_S:  # dropped at once: do not spin on it
                await anyio.sleep(WATCH_RETRY_S)

    async def _greets(self, box: Box) -> bool:
        """Whether an SSH banner arrives through the port-forward."""
        assert box.host is not None
        try:
            with anyio.fail_after(BANNER_TIMEOUT_S):
                stream = await anyio.connect_tcp(box.host, box.ssh_port)
                async with stream:
                    return (await stream.receive(256)).startswith(b"SSH-")
        except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError):
            return False

    # --- reading -----------------------------------------------------------------------------------------

    async def _read(self, box_id: str, kind: Kind) -> dict[str, Any] | None:
        return await (self.api.read_sandbox(box_id) if kind == "sandbox" else self.api.read_pod(box_id))

    async def _current(self, box_id: str) -> tuple[Box | None, dict[str, Any] | None]:
        """(the box, its Pod): the box None when gone; ended boxes have their leftovers deleted on sight."""
        if not mf.is_box_name(box_id):
            return None, None
        kind = await self.kind()
        obj = await self._read(box_id, kind)
        if obj is None:
            return None, None
        pod = obj if kind == "pod" else await self.api.read_pod(box_id)
        return await self._box(obj, pod, kind), pod

    async def _box(self, obj: dict[str, Any], pod: dict[str, Any] | None, kind: Kind) -> Box:
        if pod is None:  # a Sandbox whose controller has not made its Pod yet
            state = BoxState.PENDING
        else:
            state = mf.pod_state(pod)
            if kind == "sandbox" and state is BoxState.RUNNING and not mf.condition_true(obj.get("status") or {},
                                                                                         "Ready"):
                state = BoxState.PENDING
        box = mf.box_from(obj, kind=kind, state=state, ssh_user=self.settings.ssh_user)
        if state is BoxState.RUNNING:
            host, port = await self.forwards.address(box.id, mf.SSH_PORT)
            box = replace(box, host=host, ssh_port=port)
        return box

    async def get(self, box_id: str) -> Box | None:
        """The box, or None once it is gone (deleted, evicted, failed, past its deadline). A Pod without our labels
        is returned as it is (no owner label), so that callers can refuse it."""
        box, _ = await self._current(box_id)
        if box is not None and box.state is BoxState.GONE:
            if box.labels.get(LABEL_OWNER):
                await self.destroy(box_id)  # an evicted box's Pod object and Secret: gone means gone
            return None
        return box

    async def list(self, labels: Mapping[str, str]) -> list[Box]:
        """Live boxes carrying every given label, from the API alone (identity labels select server-side)."""
        kind = await self.kind()
        selector = mf.label_selector(labels)
        objs = await (self.api.list_sandboxes(selector) if kind == "sandbox" else self.api.list_pods(selector))
        boxes = []
        for obj in objs:
            meta = obj.get("metadata") or {}
            if not mf.is_managed(meta) or not mf.is_box_name(meta.get("name", "")):
                continue
            pod = obj if kind == "pod" else await self.api.read_pod(meta["name"])
            box = await self._box(obj, pod, kind)
            if box.state is BoxState.GONE:
                await self.destroy(box.id)
                continue
            if all(box.labels.get(k) == v for k, v in labels.items()):
                boxes.append(box)
        return boxes

    # --- changing and burning ----------------------------------------------------------------------------

    async def set_labels(self, box_id: str, labels: Mapping[str, str]) -> Box:
        """Replace the schedule annotations (a Sandbox's ``shutdownTime`` follows the expiry); identity labels
        are fixed at create and must not differ."""
        box, _ = await self._current(box_id)
        if box is None or box.state is BoxState.GONE:
            raise NotFound(f"kubernetes box {box_id} does not exist (any more)")
        identity, schedule = mf.split_labels(labels)
        changed = {k: v for k, v in identity.items() if box.labels.get(k) != v}
        if changed:
            raise ProviderError(f"identity labels cannot change after create: {sorted(changed)}")
        old = {k for k in box.labels if k not in mf.IDENTITY_KEYS}
        annotations: dict[str, str | None] = {k: None for k in old - set(schedule)}
        annotations.update(schedule)
        patch: dict[str, Any] = {"metadata": {"annotations": annotations}}
        kind = await self.kind()
        if kind == "sandbox":
            when = mf.shutdown_time(expires_at_from_labels(labels))
            if when is not None:
                patch["spec"] = {"shutdownTime": when}
            await self.api.patch_sandbox(box_id, patch)
        else:
            await self.api.patch_pod(box_id, patch)
        fresh, _ = await self._current(box_id)
        if fresh is None:
            raise NotFound(f"kubernetes box {box_id} does not exist (any more)")
        return fresh

    async def destroy(self, box_id: str) -> None:
        """Delete the Pod/Sandbox (no grace: the box is burned, not shut down) and its Secret; wait until the
        API no longer shows the Pod. Gone already is success."""
        if not mf.is_box_name(box_id):
            return
        kind = await self.kind()
        obj = await self._read(box_id, kind)
        if obj is not None and not mf.is_managed(obj.get("metadata") or {}):
            raise ProviderError(f"refusing to delete kubernetes {kind} {box_id}: it lacks boxforge's managed-by and "
                                "owner labels, so it is not a box")
        await self.forwards.close(box_id)
        if kind == "sandbox":
            await self.api.delete_sandbox(box_id)
        await self.api.delete_pod(box_id)
        await self.api.delete_secret(mf.secret_name(box_id))
        with anyio.move_on_after(DESTROY_WAIT_S):
            while True:
                if await self.api.read_pod(box_id) is None and (
                        kind == "pod" or await self.api.read_sandbox(box_id) is None):
                    return
                await anyio.sleep(GONE_POLL_S)

    def isolation(self, box: Box | None = None) -> Isolation:
        runtime = self.settings.runtime_class
        summary = ("a Pod: its own network, mount, pid, ipc and uts namespaces and cgroup limits (cpu, memory, "
                   "ephemeral storage); no service-account token and no service env vars, so nothing in it can "
                   "call the API server as anyone; a NetworkPolicy admits no ingress to box Pods (boxes cannot "
                   "reach each other where the cluster's network plugin enforces policies); "
                   + (f"runtimeClassName {runtime}" if runtime else "the cluster's default runtime (runc: a shared "
                      "kernel; set runtime_class to gvisor or kata for a sandboxed one)"))
        return Isolation(summary=summary)

    async def aclose(self) -> None:
        await self.forwards.aclose()
        await self.api.aclose()
