"""The Kubernetes provider's settings, and where its kubeconfig is found (as kubectl finds it)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from providers.base import ProviderSettings

BoxKind = Literal["auto", "pod", "sandbox"]
IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"
DEFAULT_IMAGE = "debian:12-slim"


class KubeSettings(ProviderSettings):
    """``BOXFORGE_KUBE_*`` env vars or the config file's ``[providers.kubernetes]`` table.

    ``kubeconfig``: a path or a ``:``-separated list (``KUBECONFIG`` when unset, then ``~/.kube/config``,
    then the in-cluster service account); ``context``: the kubeconfig context (its current one when unset);
    ``kind``: ``pod``, ``sandbox`` (agents.x-k8s.io Sandbox) or ``auto`` (a Sandbox when the CRD is installed);
    ``runtime_class``: the Pods' ``runtimeClassName`` (gVisor ``gvisor``/``runsc``, Kata ``kata``);
    ``max_lifetime_s``: a plain Pod's ``activeDeadlineSeconds``, the server-side cap when no orchestrator is left.
    """

    env_prefix: ClassVar[str] = "BOXFORGE_KUBE_"
    env_aliases: ClassVar[dict[str, str]] = {"kubeconfig": "BOXFORGE_KUBECONFIG"}

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = Field(default="boxforge", pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    image: str = Field(default=DEFAULT_IMAGE, min_length=1, max_length=512)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    kind: BoxKind = "auto"
    runtime_class: str | None = Field(default=None, pattern=r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
    cpu: str = Field(default="1", pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    memory: str = Field(default="2Gi", pattern=r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$")
    ephemeral_storage: str = Field(default="10Gi", pattern=r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$")
    ssh_user: str = Field(default="root", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    max_lifetime_s: int = Field(default=7 * 24 * 3600, ge=60)
    request_timeout_s: float = Field(default=30.0, gt=0)


def kubeconfig_paths(settings: KubeSettings, env: Mapping[str, str] | None = None) -> list[Path]:
    """The kubeconfig files kubectl would read: the setting, else ``$KUBECONFIG``, else ``~/.kube/config``."""
    env = os.environ if env is None else env
    raw = settings.kubeconfig or env.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p]


def found_config(settings: KubeSettings, env: Mapping[str, str] | None = None) -> bool:
    """Whether a kubeconfig file exists, or this process runs inside a cluster."""
    env = os.environ if env is None else env
    return any(p.is_file() for p in kubeconfig_paths(settings, env)) or bool(env.get(IN_CLUSTER_ENV))
