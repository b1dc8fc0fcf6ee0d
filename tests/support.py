"""Helpers for the fleet, MCP and CLI tests: settings on a temp state dir, a git repo to
clone, a scan for a box's processes, polling with a deadline (never a bare sleep), and reading a
driver process's output with a deadline."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from providers.local import BOXES_DIR_NAME
from server.config import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent


def make_settings(home: Path, *, local_sshd: str = "auto", local_watchdog_grace_s: float | None = None,
                  local_isolation: str | None = None, extra_env: dict[str, str] | None = None,
                  config: str | None = None, **overrides: Any) -> Settings:
    """Settings on ``home`` with a fresh owner; the local provider's own settings go in as its env vars.

    ``local_isolation="none"``: unisolated local boxes, for the tests that look into a box's files or
    processes from the host (an isolated box's are out of the host-side test's sight by design)."""
    env = {"BOXFORGE_HOME": str(home), "BOXFORGE_OWNER": "otest" + secrets.token_hex(3),
           "BOXFORGE_CONFIG": str(home / "no-config.toml"), "BOXFORGE_LOCAL_SSHD": local_sshd}
    if config is not None:  # a config file's text (TOML), e.g. [pool.*] tables
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(config)
        env["BOXFORGE_CONFIG"] = str(home / "config.toml")
    if local_watchdog_grace_s is not None:
        env["BOXFORGE_LOCAL_WATCHDOG_GRACE_S"] = str(local_watchdog_grace_s)
    if local_isolation is not None:
        env["BOXFORGE_LOCAL_ISOLATION"] = local_isolation
    env.update(extra_env or {})  # the orchestrator's own environment (forward_env reads it)
    return load_settings(env, **overrides)


def local_boxes_dir(settings: Settings) -> Path:
    """Where the local provider keeps its boxes for these settings."""
    return settings.home / BOXES_DIR_NAME


def cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOXFORGE_", "HCLOUD_"))}
    env["BOXFORGE_IMAGE_CACHE"] = os.environ["BOXFORGE_IMAGE_CACHE"]  # the run's one base image (conftest)
    env.update(BOXFORGE_HOME=str(settings.home), BOXFORGE_OWNER=settings.owner,
               BOXFORGE_LOCAL_SSHD=settings.env.get("BOXFORGE_LOCAL_SSHD", "auto"),
               BOXFORGE_LOCAL_ISOLATION=settings.env.get("BOXFORGE_LOCAL_ISOLATION", "auto"),
               BOXFORGE_CONFIG=settings.env.get("BOXFORGE_CONFIG", str(settings.home / "no-config.toml")),
               PYTHONPATH=str(REPO_ROOT))
    return env


MCP_TOOL_WORDS = ("vm_", "create_server", "fork_server", "list_servers", "extend_server", "destroy_server",
                  "run_agent")


def assert_cli_words(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """The CLI speaks its own words: no MCP tool name in anything it prints."""
    for stream in (result.stdout, result.stderr):
        named = [word for word in MCP_TOOL_WORDS if word in stream]
        assert not named, f"{result.args[1:]} printed MCP words {named}: {stream[-500:]}"
    return result


def cli_in_process(settings: Settings, monkeypatch: Any, capsys: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """``boxforge ARGS`` through the CLI's own ``main`` in this process, with the environment a subprocess would
    get (``cli_env``): for the many short checks (bad input, empty lists) that would each pay the interpreter's
    start-up as a subprocess. The CLI's wiring is proven by the subprocess tests beside them."""
    from server.cli.main import main

    env = cli_env(settings)
    for name in [n for n in os.environ if n.startswith(("BOXFORGE_", "HCLOUD_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return assert_cli_words(subprocess.CompletedProcess(["boxforge", *args], code, captured.out, captured.err))


def boxforge_cmd() -> list[str]:
    exe = shutil.which("boxforge")
    return [exe] if exe else [sys.executable, "-m", "server.cli"]


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    )
    return result.stdout.strip()


def make_repo(path: Path) -> Path:
    """A repo with main (README.md) and an existing branch 'feat/existing' (FEATURE.md)."""
    path.mkdir(parents=True)
    git(path, "init", "-q")
    (path / "README.md").write_text("hello from the test repo\n")
    git(path, "add", ".")
    git(path, "commit", "-qm", "initial")
    git(path, "checkout", "-qb", "feat/existing")
    (path / "FEATURE.md").write_text("feature work\n")
    git(path, "add", ".")
    git(path, "commit", "-qm", "feature")
    git(path, "checkout", "-q", "main")
    return path


def box_pids(box_id: str) -> list[int]:
    """Live (not zombie) processes whose environment carries BOXFORGE_BOX=<box_id>."""
    needle = f"BOXFORGE_BOX={box_id}".encode()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            if needle in Path(f"/proc/{name}/environ").read_bytes().split(b"\0"):
                state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    pids.append(int(name))
        except OSError:
            continue
    return pids


def readline_with_deadline(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """The next line of ``proc``'s stdout (a text pipe); fails after ``timeout`` instead of hanging
    on a stuck process. The reader thread ends when the caller kills the process."""
    stream = proc.stdout
    assert stream is not None, "start the process with stdout=subprocess.PIPE"
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        raise AssertionError(f"process {proc.pid} ({proc.args!r}) printed no line within {timeout}s")
    return lines[0]


async def eventually(check: Callable[[], Awaitable[Any] | Any], *, timeout: float = 20.0,
                     interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if hasattr(value, "__await__"):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(interval)


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured result."""
    result = await client.call_tool(tool, args)
    assert not result.is_error, f"{tool} failed: {result.content[0].text if result.content else result}"
    assert result.structured_content is not None
    return result.structured_content


async def call_error(client: Client, tool: str, **args: Any) -> str:
    """Call a tool that must fail; its error text."""
    result = await client.call_tool(tool, args)
    assert result.is_error, f"{tool} should have failed: {result.structured_content}"
    return result.content[0].text
