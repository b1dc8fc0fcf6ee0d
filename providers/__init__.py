"""Provider registry: name -> "module:Class", imported lazily.

A missing optional SDK disables one provider with a clear message, never the program.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from providers.base import Provider, ProviderError, ProviderSettings

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


def load_provider_settings(name: str, env: Mapping[str, str], file_values: Mapping[str, Any]) -> ProviderSettings:
    """Provider ``name``'s own settings read from ``env`` and the config file's values."""
    return provider_class(name).Settings.load(env, file_values, name)


def configured_names(env: Mapping[str, str], file_values: Mapping[str, Any]) -> list[str]:
    """The registered providers usable here (their SDK imports and ``configured`` says yes), in registry order."""
    names = []
    for name in REGISTRY:
        try:
            cls = provider_class(name)
            if cls.configured(cls.Settings.load(env, file_values, name)):
                names.append(name)
        except ProviderError:
            continue  # unavailable or misconfigured here: not one to choose or sweep by default
    return names


def default_provider(env: Mapping[str, str], file_values: Mapping[str, Any]) -> str:
    """The first configured provider that asks to be the default once configured (a cloud whose token is
    set), else the first registered one."""
    for name in configured_names(env, file_values):
        if provider_class(name).default_when_configured:
            return name
    return next(iter(REGISTRY))


__all__ = ["REGISTRY", "Provider", "ProviderError", "configured_names", "default_provider",
           "load_provider_settings", "provider_class"]
