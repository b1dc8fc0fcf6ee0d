"""docs/claude-code.md followed with the real Claude Code: ``claude mcp add boxforge -e ... -- boxforge mcp``
registers the server, and ``claude mcp list`` starts it over stdio and finds it connected.

Claude Code comes from the npm registry (``npm install @anthropic-ai/claude-code``), installed once into a
dot-dir of the run's image cache (CI keeps it across runs); the test is skipped, saying why, where npm or
the registry is missing. ``claude mcp add``/``list`` work offline: no model API is called."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import boxforge_cmd, cli_env, make_settings

PACKAGE = "@anthropic-ai/claude-code"
INSTALL_TIMEOUT_S = 300


def claude_binary() -> Path:
    """Claude Code's CLI from the cache, installed there first if need be; skips when it cannot be had."""
    prefix = Path(os.environ["BOXFORGE_IMAGE_CACHE"]) / ".claude-code-npm"
    binary = prefix / "node_modules" / ".bin" / "claude"
    if binary.exists() and subprocess.run([str(binary), "--version"], capture_output=True,
                                          timeout=60).returncode == 0:
        return binary
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: Claude Code cannot be installed here")
    prefix.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-fund", "--no-audit",
                               "--loglevel=error", PACKAGE], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm install {PACKAGE} took over {INSTALL_TIMEOUT_S}s (registry unreachable?)")
    if done.returncode != 0 or not binary.exists():
        pytest.skip(f"npm install {PACKAGE} failed here: {done.stderr.strip()[-300:]}")
    return binary


def test_claude_mcp_add_registers_boxforge_and_mcp_list_shows_it_connected(tmp_path: Path) -> None:
    claude = claude_binary()
    settings = make_settings(tmp_path / "state")
    home, project = tmp_path / "home", tmp_path / "project"
    project.mkdir(parents=True)
    home.mkdir()
    # Claude Code keeps its config in $HOME/.claude.json: a fresh machine's, in the temp dir
    env = {**cli_env(settings), "HOME": str(home), "DISABLE_AUTOUPDATER": "1"}
    env.pop("XDG_CONFIG_HOME", None)
    added = subprocess.run([str(claude), "mcp", "add", "boxforge", "-e", f"BOXFORGE_HOME={settings.home}",
                            "-e", "BOXFORGE_PROVIDER=local", "--", *boxforge_cmd(), "mcp"],
                           cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    assert "Added stdio MCP server boxforge" in added.stdout
    listed = subprocess.run([str(claude), "mcp", "list"], cwd=project, env=env, capture_output=True, text=True,
                            timeout=180)
    assert listed.returncode == 0, listed.stderr
    line = next((ln for ln in listed.stdout.splitlines() if ln.startswith("boxforge:")), "")
    assert "Connected" in line and "Failed" not in line, listed.stdout
