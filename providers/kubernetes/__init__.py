"""Boxes as Kubernetes Pods (or agent-sandbox ``Sandbox`` objects) through kubernetes_asyncio.

The SDK is an extra (``pip install 'boxforge[kubernetes]'``) and is imported only when a client is made,
so loading settings or listing providers never needs it.
"""

from providers.kubernetes.provider import KubernetesProvider
from providers.kubernetes.settings import KubeSettings

__all__ = ["KubeSettings", "KubernetesProvider"]
