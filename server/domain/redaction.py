"""Redaction: secret env values never leave boxforge in output; each shows as ``[redacted:NAME]``.

Output is read in chunks, so a secret can be cut in two by a chunk boundary: ``safe_end`` and
``safe_start`` say how much of a chunk can be shown without showing half a secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def redacted(name: str) -> str:
    """What a secret value named ``name`` shows as."""
    return f"[redacted:{name}]"


@dataclass(frozen=True)
class Redactor:
    """Secret values to hide in output, longest first (so a value inside another is not left half-shown)."""

    secrets: tuple[tuple[str, str], ...] = ()  # (value, name)

    @classmethod
    def of(cls, env: Mapping[str, str], min_chars: int) -> Redactor:
        """Every value of ``env`` at least ``min_chars`` long (shorter ones would redact ordinary words)."""
        pairs = sorted(((v, k) for k, v in env.items() if len(v) >= min_chars), key=lambda vk: -len(vk[0]))
        return cls(tuple(pairs))

    @classmethod
    def merged(cls, envs: Iterable[Mapping[str, str]], min_chars: int) -> Redactor:
        """Every value of every env in ``envs`` (a value named differently in two envs keeps the first name)."""
        names: dict[str, str] = {}
        for env in envs:
            for name, value in env.items():
                if len(value) >= min_chars:
                    names.setdefault(value, name)
        return cls(tuple(sorted(((v, k) for v, k in names.items()), key=lambda vk: -len(vk[0]))))

    def text(self, text: str) -> str:
        for value, name in self.secrets:
            if value in text:
                text = text.replace(value, redacted(name))
        return text

    __call__ = text

    def hides_any(self, text: str) -> bool:
        return any(value in text for value, _ in self.secrets)

    def safe_end(self, data: bytes) -> int:
        """Length of ``data`` without a tail that could be the start of a secret cut off by the chunk."""
        cut = 0
        for value, _ in self.secrets:
            raw = value.encode()
            for k in range(min(len(raw) - 1, len(data)), cut, -1):
                if data.endswith(raw[:k]):
                    cut = k
                    break
        return len(data) - cut

    def safe_start(self, data: bytes) -> int:
        """Bytes at the start of ``data`` that could be the end of a secret cut off before it."""
        skip = 0
        for value, _ in self.secrets:
            raw = value.encode()
            for k in range(min(len(raw) - 1, len(data)), skip, -1):
                if data.startswith(raw[-k:]):
                    skip = k
                    break
        return skip
