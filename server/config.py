"""Settings: environment variables win over the config file, which wins over defaults.

The state dir holds the SQLite store, the per-box keys, the local boxes and the owner id;
it is created 0700 because it holds private keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import secrets
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from providers import default_provider, load_provider_settings
from providers.base import ProviderContext, ProviderSettings
from server.errors import InvalidInput
from server.forwardenv import DEFAULT_FORWARD_ENV, parse_names

ENV_PREFIX = "BOXFORGE_"


def _default_home(env: Mapping[str, str]) -> Path:
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "boxforge"


def config_path(env: Mapping[str, str]) -> Path:
    """The config file ``env`` names (BOXFORGE_CONFIG, else the XDG config dir's boxforge/config.toml)."""
    if env.get("BOXFORGE_CONFIG"):
        return Path(env["BOXFORGE_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "boxforge" / "config.toml"


@dataclass(frozen=True)
class Settings:
    home: Path
    chosen_provider: str | None  # BOXFORGE_PROVIDER or the config file's provider; None: the default here
    owner: str
    default_ttl: str = "2h"
    max_ttl_s: int = 7 * 24 * 3600
    ready_timeout_s: float = 300.0
    foreground_timeout_s: float = 50.0
    output_cap_bytes: int = 64 * 1024
    reaper_max_sleep_s: float = 30.0
    max_parallel_creates: int = 5
    orphan_grace_s: float = 900.0
    keepalive_interval_s: float = 15.0
    redact_min_chars: int = 4
    probe_timeout_s: float = 5.0
    transfer_roots: str = ""  # extra orchestrator dirs vm_upload/vm_download may use, separated by ':'
    sftp_timeout_s: float = 30.0  # one SFTP file operation; transfers get 1 s more per MiB
    harvest_timeout_s: float = 120.0  # bringing a box's work home before a burn never takes longer
    harvest_max_file_bytes: int = 10 * 1024 * 1024  # untracked/modified files over this stay out of the harvest
    expiry_warn_s: int = 600  # results warn this long before a box's expiry
    auto_extend: bool = True  # a box with a running job at its expiry gets more time
    auto_extend_step_s: int = 1800
    auto_extend_max_ttl_s: int = 24 * 3600  # the hard ceiling of automatic extension, from the box's creation
    npm_cache: str = ""  # where agent installs are cached (empty: <home>/cache/npm; "off": no cache)
    # what every box gets from this environment (docs/configuration.md): proxies, CA bundles (files copied in)
    forward_env: tuple[str, ...] = DEFAULT_FORWARD_ENV
    # What the settings were loaded from: each provider reads its own settings out of these.
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    file_values: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def db_path(self) -> Path:
        return self.home / "state.db"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def npm_cache_dir(self) -> Path | None:
        """The npm cache served to nearby boxes' bootstraps; None when turned off."""
        if self.npm_cache.strip().lower() == "off":
            return None
        return Path(self.npm_cache).expanduser() if self.npm_cache else self.home / "cache" / "npm"

    @property
    def log_path(self) -> Path:
        return self.home / "boxforge.log"

    @functools.cached_property
    def provider(self) -> str:
        """The provider of a create that names none. The default is found only when asked, because finding it
        imports every provider's module (SDKs included)."""
        return self.chosen_provider or default_provider(self.env, self.file_values)

    @property
    def config_path(self) -> Path:
        """The config file these settings read (whether it exists or not)."""
        return config_path(self.env)

    def provider_context(self) -> ProviderContext:
        return ProviderContext(home=self.home, owner=self.owner)

    def provider_settings(self, name: str) -> ProviderSettings:
        """Provider ``name``'s own settings, from the same env and config file as these."""
        return load_provider_settings(name, self.env, self.file_values)


_FIELDS: dict[str, Any] = {
    "default_ttl": str,
    "max_ttl_s": int,
    "ready_timeout_s": float,
    "foreground_timeout_s": float,
    "output_cap_bytes": int,
    "reaper_max_sleep_s": float,
    "max_parallel_creates": int,
    "orphan_grace_s": float,
    "keepalive_interval_s": float,
    "redact_min_chars": int,
    "probe_timeout_s": float,
    "transfer_roots": str,
    "sftp_timeout_s": float,
    "harvest_timeout_s": float,
    "harvest_max_file_bytes": int,
    "expiry_warn_s": int,
    "auto_extend": "flag",
    "auto_extend_step_s": int,
    "auto_extend_max_ttl_s": int,
    "npm_cache": str,
    "forward_env": parse_names,
}

# Env names that differ from BOXFORGE_<FIELD>.
_ENV_ALIASES = {"ready_timeout_s": "BOXFORGE_READY_TIMEOUT"}


def _flag(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _owner_id(home: Path) -> str:
    """The owner id kept in the state dir; created once, race-free when processes start together."""
    owner_file = home / "owner"
    if not owner_file.exists():
        fd, tmp = tempfile.mkstemp(dir=home, prefix=".owner-")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write("o" + secrets.token_hex(5) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use its id
                os.link(tmp, owner_file)
        finally:
            os.unlink(tmp)
    return owner_file.read_text().strip()


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"config file {path} is not valid TOML: {exc}") from exc


def _core_values(env: Mapping[str, str], file_values: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, kind in _FIELDS.items():
        raw = env.get(_ENV_ALIASES.get(name, ENV_PREFIX + name.upper()), file_values.get(name))
        if raw is None:
            continue
        try:
            values[name] = _flag(raw) if kind == "flag" else kind(raw)
        except (TypeError, ValueError) as exc:
            expected = ("true or false" if kind == "flag" else "env variable names (a list, or separated by commas; "
                        "'default' for the default set)" if kind is parse_names else kind.__name__.strip("_"))
            raise InvalidInput(f"setting {name} has an invalid value {raw!r}: expected {expected}") from exc
    return values


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from env vars > config file > defaults; ``overrides`` win over all.

    The provider, when not chosen, is the registry's default for this env and config file (a cloud
    whose credentials are set, else local boxes)."""
    env = dict(os.environ if env is None else env)
    file_values = _read_config(config_path(env))
    home = Path(overrides.pop("home", None) or env.get("BOXFORGE_HOME") or file_values.get("home")
                or _default_home(env)).expanduser()
    ensure_private_dir(home)
    owner = env.get("BOXFORGE_OWNER") or file_values.get("owner") or _owner_id(home)
    settings = Settings(home=home, chosen_provider=env.get("BOXFORGE_PROVIDER") or file_values.get("provider"),
                        owner=owner, env=env, file_values=file_values,
                        **_core_values(env, file_values))
    return dataclasses.replace(settings, **overrides) if overrides else settings
