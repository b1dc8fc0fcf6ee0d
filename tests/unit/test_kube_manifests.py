"""The kubernetes provider's pure manifest rules: names, labels vs annotations, Pod states, the Sandbox shape."""

from __future__ import annotations

import pytest

from providers.base import BoxSpec, BoxState, ProviderError, box_labels
from providers.kubernetes import manifests as mf
from providers.kubernetes.settings import KubeSettings


def spec(**over: object) -> BoxSpec:
    labels = {**box_labels(owner="oabc", name="feat-a", request_id="r123", expires_at=1_900_000_000),
              "boxforge-ready": "1"}
    return BoxSpec(name="feat-a", request_id="r123", labels=labels, host_key_private="PRIVATE-HOST-KEY",
                   host_key_public="ssh-ed25519 AAAA host", authorized_key="ssh-ed25519 BBBB client", **over)


def test_object_names_are_stable_per_request_and_dns_safe() -> None:
    name = mf.object_name("x" * 63, "r1")
    assert name == mf.object_name("x" * 63, "r1") != mf.object_name("x" * 63, "r2")
    assert len(name) <= 54 and mf.is_box_name(name) and len(mf.secret_name(name)) <= 63


def test_identity_labels_select_and_schedule_labels_are_annotations() -> None:
    labels, annotations = mf.split_labels(spec().labels)
    assert set(labels) == set(mf.IDENTITY_KEYS)
    assert set(annotations) == {"boxforge-expires-at", "boxforge-ready"}
    assert "boxforge-expires-at" not in mf.label_selector(spec().labels)
    with pytest.raises(ProviderError, match="not a valid Kubernetes label value"):
        mf.split_labels({"boxforge-owner": "has space"})


def test_the_pod_has_no_token_no_key_material_and_the_settings_runtime() -> None:
    settings = KubeSettings(runtime_class="gvisor")
    pod = mf.pod_manifest("bf-feat-a-0123456789", spec(size="medium"), settings)
    assert pod["spec"]["automountServiceAccountToken"] is False and pod["spec"]["runtimeClassName"] == "gvisor"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["memory"] == "4Gi"
    assert "PRIVATE-HOST-KEY" not in str(pod)
    assert "PRIVATE-HOST-KEY" in str(mf.secret_manifest("bf-feat-a-0123456789", spec(), "boxforge"))


def test_the_sandbox_carries_a_delete_shutdown_after_the_expiry() -> None:
    body = mf.sandbox_manifest("bf-feat-a-0123456789", spec(), KubeSettings())
    assert body["apiVersion"] == "agents.x-k8s.io/v1beta1" and body["spec"]["shutdownPolicy"] == "Delete"
    assert body["spec"]["shutdownTime"] == mf.shutdown_time(1_900_000_000)
    assert body["spec"]["podTemplate"]["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize(("status", "meta", "state"), [
    ({"phase": "Pending"}, {}, BoxState.PENDING),
    ({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}, {}, BoxState.PENDING),
    ({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}, {}, BoxState.RUNNING),
    ({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}, {"deletionTimestamp": "x"},
     BoxState.GONE),
    ({"phase": "Failed", "reason": "Evicted"}, {}, BoxState.GONE),
    ({"phase": "Unknown"}, {}, BoxState.ERROR),
])
def test_pod_states(status: dict[str, object], meta: dict[str, object], state: BoxState) -> None:
    assert mf.pod_state({"metadata": meta, "status": status}) is state


def test_why_pending_quotes_the_scheduler() -> None:
    pod = {"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                      "message": "0/3 nodes are available"}]}}
    assert mf.why_pending(pod) == "Unschedulable: 0/3 nodes are available"
