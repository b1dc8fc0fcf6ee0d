"""Secrets the model never sees: ``env_from`` names resolved here, from boxforge's secret store (a 0600
JSON file in the config dir, written by ``boxforge secret set``) or else the orchestrator's environment.
The values go to the box like ``env`` (a 0600 file, redacted everywhere); only names are ever listed."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from server.domain.inputs import ENV_NAME_RE
from server.errors import InvalidInput

SECRETS_FILE = "secrets.json"


class SecretStore:
    """NAME -> value in one 0600 file (its dir 0700); written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"the secret store {self.path} cannot be read ({type(exc).__name__}); "
                               "fix or remove it, then set the secrets again") from None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _write(self, data: Mapping[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(dict(sorted(data.items())), fh)
        os.replace(tmp, self.path)

    def names(self) -> list[str]:
        return sorted(self._read())

    def get(self, name: str) -> str | None:
        return self._read().get(name)

    def set(self, name: str, value: str) -> None:
        check_secret_name(name)
        if not value or "\x00" in value:
            raise InvalidInput(f"secret {name} must be a non-empty value without NUL bytes")
        self._write({**self._read(), name: value})

    def remove(self, name: str) -> bool:
        data = self._read()
        if name not in data:
            return False
        del data[name]
        self._write(data)
        return True


def check_secret_name(name: str) -> None:
    if not ENV_NAME_RE.fullmatch(name):
        raise InvalidInput(f"invalid secret name {name[:40]!r}: use an env variable name such as ANTHROPIC_API_KEY")


def secret_store(config_file: Path) -> SecretStore:
    return SecretStore(config_file.parent / SECRETS_FILE)


def resolve_env(env: Mapping[str, str] | None, env_from: Sequence[str] | None, store: SecretStore,
                environ: Mapping[str, str]) -> dict[str, str]:
    """``env`` plus the value of every ``env_from`` name (the secret store first, then ``environ``)."""
    merged = dict(env or {})
    if not env_from:
        return merged
    missing = []
    for name in dict.fromkeys(env_from):
        check_secret_name(name)
        if name in merged:
            raise InvalidInput(f"{name} is in both env and env_from: pass it once (env_from keeps it from the "
                               "transcript)")
        value = store.get(name)
        if value is None:
            value = environ.get(name)
        if value is None:
            missing.append(name)
        else:
            merged[name] = value
    if missing:
        raise InvalidInput(
            f"env_from names {', '.join(missing)}, found neither in boxforge's secret store nor in the "
            f"orchestrator's environment: have the user run `boxforge secret set {missing[0]}` (the value is "
            "read from the terminal, never from a model), or export it where boxforge runs")
    return merged
