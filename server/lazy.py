"""Modules imported on first use: the CLI's verbs that never open an SSH connection (``ls``, ``jobs``,
``show``) start without paying for asyncssh's import (its crypto back ends take most of it).

The stand-in imports the module through the import system on each attribute read it cannot answer, so
threads that race to the first use (two creates in worker threads of a fresh process) wait on the import
system's module lock and all see the whole module. ``importlib.util.LazyLoader`` does not do that before
Python 3.12: a second thread could read a half-executed module (``module 'asyncssh' has no attribute
'generate_private_key'``)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any


class _OnFirstUse(ModuleType):
    """Stands for a module until it is needed; every attribute read goes to the real module."""

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attr)


def lazy_import(name: str) -> ModuleType:
    """``name``'s module, loaded when one of its attributes is first read (at once if already loaded)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    return _OnFirstUse(name)
