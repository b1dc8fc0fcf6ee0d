"""Provider registry: name -> "module:Class", imported lazily.

A missing optional SDK disables one provider with a clear message, never the program.
"""

from __future__ import annotations

import importlib
from typing import Any

from providers.base import Provider, ProviderError

REGISTRY: dict[str, str] = {
    "local": "providers.local:LocalProvider",
    "hetzner": "providers.hetzner:HetznerProvider",
    "docker": "providers.docker:DockerProvider",
    "kubernetes": "providers.kubernetes:KubernetesProvider",
}


def provider_class(name: str) -> type[Any]:
    """The class registered under ``name``; ProviderError names the choices otherwise."""
    target = REGISTRY.get(name)
    if target is None:
        raise ProviderError(f"unknown provider {name!r}; available: {', '.join(sorted(REGISTRY))}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ProviderError(f"provider {name!r} is unavailable here: {exc}") from exc
    return getattr(module, attr)


__all__ = ["REGISTRY", "Provider", "ProviderError", "provider_class"]
