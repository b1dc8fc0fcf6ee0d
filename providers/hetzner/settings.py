"""The Hetzner provider's own settings: read from HCLOUD_TOKEN / HCLOUD_ENDPOINT, BOXFORGE_HETZNER_*,
the config file's ``[providers.hetzner]`` table and the first edition's top-level ``hcloud_*`` /
``hetzner_*`` keys (see ``ProviderSettings.load``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pydantic import Field, SecretStr

from providers.base import ProviderSettings


class HetznerSettings(ProviderSettings):
    """What a Hetzner Cloud box is made with.

    ``server_type`` pins the default size; left unset, the size is picked from the live catalog: the
    cheapest type orderable in the location that is not deprecated, of the image's architecture, with at
    least ``min_cores`` vCPUs and ``min_memory_gb`` of memory (see docs/providers.md).
    """

    env_prefix: ClassVar[str] = "BOXFORGE_HETZNER_"
    env_aliases: ClassVar[dict[str, str]] = {"token": "HCLOUD_TOKEN", "endpoint": "HCLOUD_ENDPOINT"}
    legacy_prefix: ClassVar[str] = "hetzner_"

    token: SecretStr | None = None
    endpoint: str | None = None
    server_type: str | None = Field(None, min_length=1, max_length=64)
    min_cores: int = Field(2, ge=1, le=384)
    min_memory_gb: float = Field(4.0, gt=0, le=4096)
    image: str = Field("ubuntu-24.04", min_length=1)
    location: str = Field("fsn1", min_length=1)
    ssh_user: str = Field("boxforge", min_length=1)
    ssh_port: int = Field(22, ge=1, le=65535)
    ipv6_only: bool = False
    poll_interval_s: float = Field(2.0, gt=0, le=60)

    @classmethod
    def load(cls, env: Mapping[str, str], file_values: Mapping[str, Any], name: str) -> Self:
        legacy = {f"hetzner_{key}": file_values[f"hcloud_{key}"] for key in ("token", "endpoint")
                  if f"hcloud_{key}" in file_values}  # the first edition's hcloud_token / hcloud_endpoint keys
        return super().load(env, {**file_values, **legacy}, name)
