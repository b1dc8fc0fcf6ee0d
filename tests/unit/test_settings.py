"""Core settings keep what they were loaded from; each provider reads its own settings out of it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from server.config import Settings, load_settings
from server.errors import InvalidInput
from server.service.providers import ProviderSet


def settings_with(tmp_path: Path, config: str = "", **env: str) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.toml"
    path.write_text(config)
    return load_settings({"BOXFORGE_HOME": str(tmp_path / "h"), "BOXFORGE_CONFIG": str(path), **env})


def test_core_settings_have_no_provider_specific_field() -> None:
    names = {f.name for f in dataclasses.fields(Settings)}
    assert not [n for n in names if n.startswith(("hcloud", "hetzner", "local", "docker", "kube"))]


def test_a_provider_reads_its_env_before_its_legacy_config_keys(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, 'local_sshd = "openssh"\nlocal_watchdog_grace_s = 9\n',
                             BOXFORGE_LOCAL_SSHD="embedded")
    local = settings.provider_settings("local")
    assert local.sshd == "embedded" and local.watchdog_grace_s == 9.0


def test_first_edition_hetzner_keys_still_configure_hetzner(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, 'hcloud_token = "t-file"\nhetzner_server_type = "cx32"\n')
    hetzner = settings.provider_settings("hetzner")
    assert hetzner.token.get_secret_value() == "t-file" and hetzner.server_type == "cx32"
    assert settings.provider == "hetzner"  # a configured cloud is the default
    assert "t-file" not in repr(settings) and "t-file" not in repr(hetzner)


def test_the_reaper_sweeps_store_named_and_configured_providers(tmp_path: Path) -> None:
    plain = ProviderSet(settings_with(tmp_path / "a"))
    assert plain.swept([]) == ["local"]
    assert plain.swept(["hetzner"]) == ["hetzner", "local"]
    with_token = ProviderSet(settings_with(tmp_path / "b", HCLOUD_TOKEN="t"))
    assert with_token.swept([]) == ["hetzner", "local"]


def test_providers_are_built_generically_under_the_state_dir(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, BOXFORGE_LOCAL_SSHD="embedded", BOXFORGE_LOCAL_ISOLATION="none")
    local = ProviderSet(settings).get("local")
    assert local.root == (settings.home / "local-boxes").resolve() and local.server == "embedded"
    assert type(local).__name__ == "UnisolatedLocalProvider"
    isolated = ProviderSet(settings_with(tmp_path, BOXFORGE_LOCAL_EGRESS="none")).get("local")
    assert type(isolated).__name__ == "LocalProvider" and isolated.egress == "none"


def test_git_settings_read_flags_and_numbers_from_env(tmp_path: Path) -> None:
    base = {"BOXFORGE_HOME": str(tmp_path), "BOXFORGE_OWNER": "o1", "BOXFORGE_CONFIG": str(tmp_path / "none.toml")}
    settings = load_settings({**base, "BOXFORGE_AUTO_EXTEND": "false", "BOXFORGE_HARVEST_TIMEOUT_S": "30"})
    assert settings.auto_extend is False and settings.harvest_timeout_s == 30.0
    assert load_settings(base).auto_extend is True and load_settings(base).auto_extend_max_ttl_s == 24 * 3600
    with pytest.raises(InvalidInput, match="true or false"):
        load_settings({**base, "BOXFORGE_AUTO_EXTEND": "maybe"})
