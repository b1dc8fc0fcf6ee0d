"""The board's test harness: a real ``boxforge board`` process on loopback (port 0, URL read from its stdout),
the CLI as a user runs it, and headless Debian chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from server.config import Settings
from server.service import Fleet, open_fleet
from tests.support import boxforge_cmd, cli_env, readline_with_deadline

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
URL_RE = re.compile(r"(http://[^\s]+)")
T = TypeVar("T")


def boxforge(settings: Settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*boxforge_cmd(), *args], env=cli_env(settings), capture_output=True, text=True,
                          timeout=timeout)


def as_json(settings: Settings, *args: str) -> Any:
    result = boxforge(settings, *args, "--json")
    assert result.returncode == 0, (args, result.stderr[-2000:])
    return json.loads(result.stdout)


@contextmanager
def board_process(settings: Settings, *extra: str, log: Path) -> Iterator[str]:
    """A running ``boxforge board`` on 127.0.0.1:<free port>; yields the URL it printed (with its login token)."""
    with board_with_pid(settings, *extra, log=log) as (url, _):
        yield url


@contextmanager
def board_with_pid(settings: Settings, *extra: str, log: Path) -> Iterator[tuple[str, int]]:
    """``board_process``, also yielding the board's pid."""
    with log.open("w") as stderr:
        proc = subprocess.Popen([*boxforge_cmd(), "board", "--port", "0", *extra], env=cli_env(settings),
                                stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            line = readline_with_deadline(proc, 90)
            found = URL_RE.search(line)
            assert found, f"the board printed no URL: {line!r}; stderr: {log.read_text()[-2000:]}"
            yield found.group(1), proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def origin_of(url: str) -> str:
    return url.split("/board/", 1)[0]


@contextmanager
def chromium() -> Iterator[Any]:
    """Headless system chromium under Playwright."""
    if not CHROMIUM.exists():
        pytest.fail("the board's browser tests need Debian's chromium (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@asynccontextmanager
async def served(app: Any, host: str = "127.0.0.1", *, lifespan: str = "off") -> AsyncIterator[str]:
    """``app`` on a real uvicorn server on ``host``:<free port> in this process; yields its base URL."""
    import anyio
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, lifespan=lifespan, log_level="warning"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        try:
            yield f"http://{host}:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True


def with_fleet(settings: Settings, call: Callable[[Fleet], Awaitable[T]]) -> T:
    """``call`` on a Fleet of this process over the same state dir (what the CLI does, without its start-up), in a
    thread of its own: Playwright's sync API keeps an event loop running in this one."""
    import anyio

    async def run() -> T:
        async with open_fleet(settings) as fleet:
            return await call(fleet)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, run).result(timeout=300)
