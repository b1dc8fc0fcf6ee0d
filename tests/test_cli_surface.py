"""The CLI in its own words, as subprocesses: --version, bare boxforge, the secret store (values from stdin
or the terminal, never argv; names only listed; 0600), env from the store reaching a box by name, a TTL over
the maximum refused before any progress, and ``boxforge mcp`` on a terminal saying what it is."""

from __future__ import annotations

import importlib.metadata
import io
import os
import pty
import secrets
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from server.config import Settings
from server.vault import SECRETS_FILE
from tests.support import assert_cli_words, boxforge_cmd, cli_env, cli_in_process, make_settings

VALUE = "sv-" + secrets.token_hex(10)


def boxforge(settings: Settings, *args: str, stdin: str | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return assert_cli_words(subprocess.run([*boxforge_cmd(), *args], env=cli_env(settings), input=stdin,
                                           capture_output=True, text=True, timeout=timeout))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "state")


def test_version_and_bare_boxforge_list_the_commands(settings: Settings) -> None:
    version = boxforge(settings, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"boxforge {importlib.metadata.version('boxforge')}"
    bare = boxforge(settings)
    assert bare.returncode == 0
    for verb in ("up", "run", "ls", "burn", "secret", "mcp"):
        assert verb in bare.stdout


def test_secrets_are_set_from_stdin_listed_by_name_and_removed(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:  # the short checks through main in this process
        return cli_in_process(settings, monkeypatch, capsys, *args)

    empty = cli("secret", "ls")
    assert empty.returncode == 0 and "no secrets stored" in empty.stderr
    stored = boxforge(settings, "secret", "set", "API_KEY", stdin=VALUE + "\n")  # a real stdin, a real process
    assert stored.returncode == 0, stored.stderr
    path = settings.config_path.parent / SECRETS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    listed = cli("secret", "ls")
    assert listed.stdout.split() == ["API_KEY"] and VALUE not in listed.stdout + listed.stderr
    assert VALUE not in stored.stdout + stored.stderr
    monkeypatch.setattr("sys.stdin", io.StringIO("x"))
    bad = cli("secret", "set", "bad-name")
    assert bad.returncode == 1 and "ANTHROPIC_API_KEY" in bad.stderr
    assert cli("secret", "rm", "API_KEY").returncode == 0
    assert cli("secret", "rm", "API_KEY").returncode == 1
    assert cli("secret", "ls").stdout == ""


def test_a_stored_secret_reaches_a_box_by_name_and_never_shows(settings: Settings) -> None:
    boxforge(settings, "secret", "set", "API_KEY", stdin=VALUE)
    up = boxforge(settings, "up", "--name", "sec", "--env", "API_KEY", "--ttl", "20m")
    assert up.returncode == 0, up.stderr
    try:
        ran = boxforge(settings, "run", "sec", 'printf %s "$API_KEY" | wc -c; echo "$API_KEY"',
                       "--env", "API_KEY")
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.splitlines() == [str(len(VALUE)), "[redacted:API_KEY]"]
        missing = boxforge(settings, "run", "sec", "true", "--env", "NOT_SET_ANYWHERE")
        assert missing.returncode == 1 and "boxforge secret set NOT_SET_ANYWHERE" in missing.stderr
    finally:
        boxforge(settings, "burn", "sec")
    assert VALUE.encode() not in settings.db_path.read_bytes()


def test_a_ttl_over_the_maximum_is_refused_before_any_progress(settings: Settings) -> None:
    result = boxforge(settings, "up", "--name", "long", "--ttl", "30d")
    assert result.returncode == 1 and "exceeds the maximum" in result.stderr
    assert "provision" not in result.stderr and "boxforge extend" in result.stderr
    assert "long" not in boxforge(settings, "ls").stdout


def _deliverable_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_mcp_on_a_terminal_says_it_speaks_stdio_and_ends_on_ctrl_c(settings: Settings) -> None:
    primary, secondary = pty.openpty()
    # Without the suite's Docker daemon: the server's first reap lists every configured provider, and a Docker
    # daemon that stalls (another test restarts it) holds Ctrl-C until the Docker API timeout (a known defect).
    env = {k: v for k, v in cli_env(settings).items() if k != "DOCKER_HOST"}
    # A terminal's Ctrl-C: the child starts with SIGINT deliverable, whatever an earlier test in this worker
    # left in the pytest process's signal state (an ignored or blocked SIGINT is inherited across exec).
    inherited = (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []))
    proc = subprocess.Popen([*boxforge_cmd(), "mcp"], env=env, stdin=secondary, preexec_fn=_deliverable_sigint,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(secondary)
    try:
        first = proc.stderr.readline() if proc.stderr else ""
        assert "speaks MCP on stdio" in first
        assert "claude mcp add boxforge -- boxforge mcp" in proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"boxforge mcp did not end within 20 s of SIGINT (pytest's SIGINT handler and blocked "
                        f"signals: {inherited})")
        assert code in (0, 130)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(primary)
