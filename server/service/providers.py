"""The providers this orchestrator uses, built generically from their own settings, once each."""

from __future__ import annotations

from collections.abc import Iterable

from providers import configured_names, provider_class
from providers.base import Provider, ProviderError
from server.config import Settings
from server.errors import InvalidInput


class ProviderSet:
    """Provider instances by name, made on first use: ``cls.from_settings(cls.Settings.load(...), ctx)``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instances: dict[str, Provider] = {}
        self._configured: list[str] | None = None

    def get(self, name: str) -> Provider:
        if name not in self.instances:
            try:
                cls = provider_class(name)
                self.instances[name] = cls.from_settings(self.settings.provider_settings(name),
                                                         self.settings.provider_context())
            except ProviderError as exc:
                raise InvalidInput(str(exc)) from exc
        return self.instances[name]

    def swept(self, named_by_store: Iterable[str]) -> list[str]:
        """What the reaper sweeps: the providers the store names plus every provider configured here."""
        if self._configured is None:
            self._configured = configured_names(self.settings.env, self.settings.file_values)
        return sorted(set(named_by_store) | set(self._configured))

    async def aclose(self) -> None:
        for prov in self.instances.values():
            await prov.aclose()
