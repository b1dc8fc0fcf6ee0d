"""Modules imported on first use: the CLI's verbs that never open an SSH connection (``ls``, ``jobs``,
``show``) start without paying for asyncssh's import (its crypto back ends take most of it).

Not ``importlib.util.LazyLoader``: on Python 3.11 a second thread that reads an attribute while the
first one is still executing the module sees it half-initialized (AttributeError). The first attribute
read here goes through ``importlib.import_module``, whose per-module lock makes other threads wait
for the whole module."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, cast


class _OnFirstUse:
    """Stands for a module: any attribute read imports it (once, thread-safe) and reads it there."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"


def lazy_import(name: str) -> ModuleType:
    """``name``'s module, imported when one of its attributes is first read."""
    return cast(ModuleType, _OnFirstUse(name))
