"""Pure builders and readers of the Kubernetes objects of a box (no I/O, no SDK).

A box is a Pod named ``bf-<name>-<hash of the request id>`` (so a retried create finds the same
object), or an agent-sandbox ``Sandbox`` of that name whose controller makes the Pod. Identity labels
(managed-by, owner, name, request) are Kubernetes labels, used to select; the schedule labels
(expiry, ready, create deadline) are annotations, changed by the orchestrator only: the Pod gets no
service-account token, so nothing inside it can patch either. The host key pair and the authorized key
live in a Secret per box, mounted read-only into the Pod.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from providers.base import (
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_OWNER,
    LABEL_REQUEST,
    MANAGED_BY_VALUE,
    Box,
    BoxSpec,
    BoxState,
    ProviderError,
)
from providers.kubernetes.settings import KubeSettings

IDENTITY_KEYS = (LABEL_MANAGED_BY, LABEL_OWNER, LABEL_NAME, LABEL_REQUEST)
BOX_NAME_RE = re.compile(r"^bf-[a-z0-9-]{1,40}-[0-9a-f]{10}$")
LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$")
KEYS_DIR = "/etc/boxforge/keys"
CONTAINER = "box"
SSH_PORT = 22

SANDBOX_GROUP = "agents.x-k8s.io"
SANDBOX_VERSION = "v1beta1"
SANDBOX_PLURAL = "sandboxes"
# Past the expiry the reaper burns the box (harvesting first); the server-side shutdown comes after.
SANDBOX_SHUTDOWN_GRACE_S = 15 * 60

# size -> (cpu, memory); None keeps the provider's settings.
SIZES: dict[str, tuple[str, str]] = {"small": ("1", "2Gi"), "medium": ("2", "4Gi"), "large": ("4", "8Gi")}


def object_name(spec_name: str, request_id: str) -> str:
    """The Pod/Sandbox name of a request: stable, DNS-1123, at most 54 characters."""
    digest = hashlib.sha256(request_id.encode()).hexdigest()[:10]
    return f"bf-{spec_name[:40].strip('-') or 'box'}-{digest}"


def secret_name(box_id: str) -> str:
    return f"{box_id}-keys"


def is_box_name(value: str) -> bool:
    return bool(BOX_NAME_RE.fullmatch(value))


def split_labels(labels: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(Kubernetes labels, annotations): identity labels select, schedule labels are annotations."""
    k8s_labels = {k: v for k, v in labels.items() if k in IDENTITY_KEYS}
    for key, value in k8s_labels.items():
        if not LABEL_VALUE_RE.fullmatch(value):
            raise ProviderError(f"label {key}={value!r} is not a valid Kubernetes label value")
    return k8s_labels, {k: v for k, v in labels.items() if k not in IDENTITY_KEYS}


def label_selector(labels: Mapping[str, str]) -> str:
    """The selector of the identity labels among ``labels`` (the rest is filtered after listing)."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k in IDENTITY_KEYS)


def ours(labels: Mapping[str, str], annotations: Mapping[str, str]) -> dict[str, str]:
    """The boxforge labels of an object: its identity labels plus its schedule annotations."""
    merged = {k: v for k, v in labels.items() if k in IDENTITY_KEYS}
    merged.update({k: v for k, v in annotations.items() if k.startswith("boxforge-")})
    return merged


def boot_script() -> str:
    return resources.files("providers.kubernetes").joinpath("box-init.sh").read_text()


def resources_for(size: str | None, settings: KubeSettings) -> dict[str, dict[str, str]]:
    cpu, memory = SIZES.get(size or "", (settings.cpu, settings.memory))
    amounts = {"cpu": cpu, "memory": memory, "ephemeral-storage": settings.ephemeral_storage}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def secret_manifest(box_id: str, spec: BoxSpec, namespace: str) -> dict[str, Any]:
    k8s_labels, _ = split_labels(spec.labels)
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": secret_name(box_id), "namespace": namespace, "labels": k8s_labels},
        "stringData": {
            "ssh_host_ed25519_key": spec.host_key_private,
            "ssh_host_ed25519_key.pub": spec.host_key_public,
            "authorized_keys": spec.authorized_key.strip() + "\n",
        },
    }


def pod_spec(box_id: str, spec: BoxSpec, settings: KubeSettings, *, deadline_s: int | None) -> dict[str, Any]:
    """The Pod spec of a box: sshd on 22 with the Secret's keys; no token, no service links, no restarts."""
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,  # nothing in the box can talk to the API server
        "enableServiceLinks": False,  # no env vars naming the namespace's services
        "restartPolicy": "Never",  # a box that dies is gone; its jobs read lost
        "hostname": box_id,
        "terminationGracePeriodSeconds": 5,
        "containers": [{
            "name": CONTAINER,
            "image": spec.image or settings.image,
            "imagePullPolicy": settings.image_pull_policy,
            "command": ["/bin/sh", "-c", boot_script()],
            "env": [{"name": "BOXFORGE_KEYS_DIR", "value": KEYS_DIR},
                    {"name": "BOXFORGE_SSH_USER", "value": settings.ssh_user}],
            "ports": [{"name": "ssh", "containerPort": SSH_PORT, "protocol": "TCP"}],
            "readinessProbe": {"tcpSocket": {"port": SSH_PORT}, "periodSeconds": 1, "failureThreshold": 3},
            "resources": resources_for(spec.size, settings),
            "volumeMounts": [{"name": "keys", "mountPath": KEYS_DIR, "readOnly": True}],
        }],
        "volumes": [{"name": "keys", "secret": {"secretName": secret_name(box_id), "defaultMode": 0o400}}],
    }
    if deadline_s is not None:
        pod["activeDeadlineSeconds"] = deadline_s
    if settings.runtime_class:
        pod["runtimeClassName"] = settings.runtime_class
    return pod


def pod_manifest(box_id: str, spec: BoxSpec, settings: KubeSettings) -> dict[str, Any]:
    k8s_labels, annotations = split_labels(spec.labels)
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": box_id, "namespace": settings.namespace, "labels": k8s_labels,
                     "annotations": annotations},
        "spec": pod_spec(box_id, spec, settings, deadline_s=settings.max_lifetime_s),
    }


def shutdown_time(expires_at: int | None) -> str | None:
    if expires_at is None:
        return None
    when = datetime.fromtimestamp(expires_at + SANDBOX_SHUTDOWN_GRACE_S, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def sandbox_manifest(box_id: str, spec: BoxSpec, settings: KubeSettings) -> dict[str, Any]:
    """A Sandbox whose controller makes the box's Pod and deletes it at ``shutdownTime`` (a TTL backstop)."""
    k8s_labels, annotations = split_labels(spec.labels)
    body: dict[str, Any] = {
        "apiVersion": f"{SANDBOX_GROUP}/{SANDBOX_VERSION}", "kind": "Sandbox",
        "metadata": {"name": box_id, "namespace": settings.namespace, "labels": k8s_labels,
                     "annotations": annotations},
        "spec": {
            "podTemplate": {"metadata": {"labels": k8s_labels},
                            "spec": pod_spec(box_id, spec, settings, deadline_s=None)},
            "shutdownPolicy": "Delete",
        },
    }
    when = shutdown_time(spec.expires_at)
    if when is not None:
        body["spec"]["shutdownTime"] = when
    return body


def _created_at(meta: Mapping[str, Any]) -> float:
    raw = meta.get("creationTimestamp")
    if isinstance(raw, datetime):
        return raw.timestamp()
    if isinstance(raw, str) and raw:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    return 0.0


def pod_state(pod: Mapping[str, Any]) -> BoxState:
    """PENDING until the Pod runs and is Ready; GONE once it ended (evicted, failed, deadline) or is deleting."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    if meta.get("deletionTimestamp") or phase in ("Succeeded", "Failed"):
        return BoxState.GONE
    if phase == "Running" and condition_true(status, "Ready"):
        return BoxState.RUNNING
    if phase == "Running" or phase == "Pending":
        return BoxState.PENDING
    return BoxState.ERROR  # Unknown: the node stopped reporting


def condition_true(status: Mapping[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or [])


def why_pending(pod: Mapping[str, Any] | None) -> str:
    """The scheduler's or kubelet's own words for a Pod that is not running yet ("" when none)."""
    if not pod:
        return ""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "False" and cond.get("message"):
            return f"{cond.get('reason') or cond.get('type')}: {cond['message']}"
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
    if status.get("reason"):
        return f"{status['reason']}: {status.get('message', '')}".rstrip(": ")
    return ""


def box_from(obj: Mapping[str, Any], *, kind: str, state: BoxState, ssh_user: str) -> Box:
    meta = obj.get("metadata") or {}
    labels = ours(meta.get("labels") or {}, meta.get("annotations") or {})
    return Box(
        id=meta["name"],
        name=labels.get(LABEL_NAME, meta["name"]),
        state=state,
        host=None,  # reached through a port-forward over the API: the address is the forward's (provider)
        ssh_port=SSH_PORT,
        ssh_user=ssh_user,
        labels=labels,
        created_at=_created_at(meta),
        data={"kind": kind, "namespace": meta.get("namespace"), "uid": meta.get("uid")},
    )


def is_managed(meta: Mapping[str, Any]) -> bool:
    labels = meta.get("labels") or {}
    return labels.get(LABEL_MANAGED_BY) == MANAGED_BY_VALUE and bool(labels.get(LABEL_OWNER))
