"""The rooms of the layout hold: the service names no provider, reaches SQLite only through the
repository, and the surfaces reach the service only through Fleet."""

from __future__ import annotations

import ast
from pathlib import Path

from providers import REGISTRY

SERVER = Path(__file__).resolve().parents[2] / "server"


def _modules(package: str) -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text())) for path in sorted((SERVER / package).glob("*.py"))]


def test_the_service_names_no_provider() -> None:
    for path, tree in _modules("service"):
        names = [node.value for node in ast.walk(tree)
                 if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in REGISTRY]
        assert names == [], f"{path.name} names providers {names}: give them a capability instead"


def test_only_the_repository_hops_to_the_store_thread() -> None:
    for package in ("service", "mcp", "cli"):
        for path, tree in _modules(package):
            imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
            assert "server.store.sqlite" not in imported, f"{path.name} uses the synchronous store directly"
            if path.name != "fleet.py":  # the facade exposes the store for tests, and uses it nowhere
                attrs = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
                assert "store" not in attrs, f"{path.name} reaches the store around the repository"


def test_surfaces_call_only_the_fleet() -> None:
    for package in ("mcp", "cli"):
        for path, tree in _modules(package):
            imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
            inner = sorted(m for m in imported if m.startswith("server.service.")
                           and m not in ("server.service.reaper", "server.service.wakeup"))
            assert inner == [], f"{path.name} reaches into {inner}; go through server.service.Fleet"
            assert not any(m.startswith("providers.") and m != "providers.base" for m in imported), path.name
