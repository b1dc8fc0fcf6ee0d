"""Settings: precedence, and one owner id however many processes start at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from server.config import _owner_id, load_settings
from server.errors import InvalidInput


def _owner_into(home: str, queue: multiprocessing.Queue) -> None:
    queue.put(_owner_id(Path(home)))


def test_processes_starting_together_agree_on_one_owner_id(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for trial in range(20):
        home = tmp_path / f"home{trial}"
        home.mkdir()
        queue = ctx.Queue()
        procs = [ctx.Process(target=_owner_into, args=(str(home), queue)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=30)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        ids = {queue.get(timeout=5) for _ in procs}
        assert len(ids) == 1 and ids == {(home / "owner").read_text().strip()}
        assert [p.name for p in home.iterdir()] == ["owner"], "no temp file is left behind"


def test_env_wins_over_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('default_ttl = "3h"\nowner = "ofile"\nready_timeout_s = 12\n')
    env = {"BOXFORGE_HOME": str(tmp_path / "h"), "BOXFORGE_CONFIG": str(config), "BOXFORGE_DEFAULT_TTL": "45m"}
    settings = load_settings(env)
    assert settings.default_ttl == "45m"
    assert settings.owner == "ofile"
    assert settings.ready_timeout_s == 12.0
    assert settings.provider == "local"
    assert load_settings({**env, "HCLOUD_TOKEN": "t"}).provider == "hetzner"
    assert load_settings({**env, "BOXFORGE_READY_TIMEOUT": "7"}).ready_timeout_s == 7.0


def test_bad_settings_are_named(tmp_path: Path) -> None:
    env = {"BOXFORGE_HOME": str(tmp_path / "h"), "BOXFORGE_CONFIG": str(tmp_path / "none.toml"),
           "BOXFORGE_READY_TIMEOUT": "soon"}
    with pytest.raises(InvalidInput, match="ready_timeout_s"):
        load_settings(env)
    broken = tmp_path / "broken.toml"
    broken.write_text("this is = = not toml")
    with pytest.raises(InvalidInput, match="not valid TOML"):
        load_settings({**env, "BOXFORGE_READY_TIMEOUT": "5", "BOXFORGE_CONFIG": str(broken)})
