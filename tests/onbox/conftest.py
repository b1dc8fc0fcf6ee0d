"""Box-side scripts run by local shells (sh, dash, busybox sh) as subprocesses: no SSH, no box.

``local_ex`` is a ``BoxExec`` whose "box" is a fresh home directory on this machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from server import jobs
from server.ssh import ExecResult

# absolute paths: the scripts may run with a PATH that does not lead to the shell
SHELLS = [(str(shutil.which(s[0])), *s[1:]) for s in (("/bin/sh",), ("dash",), ("busybox", "sh")) if shutil.which(s[0])]


def shell_id(shell: tuple[str, ...]) -> str:
    return " ".join((os.path.basename(shell[0]), *shell[1:])) if shell[0] != "/bin/sh" else "/bin/sh"


@pytest.fixture(params=SHELLS, ids=shell_id)
def shell(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return request.param


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir()
    yield home


def script_text(script: str) -> str:
    """What ``sh -c`` runs for ``script``: a BoxScript's library and call, else the line itself."""
    call = getattr(script, "shell_call", None)
    if call is None:
        return script
    return call.script()


@pytest.fixture
def local_ex(shell: tuple[str, ...], home: Path) -> jobs.BoxExec:
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    async def run(script: str, stdin: bytes | None = None, timeout: float | None = None) -> ExecResult:
        def go() -> ExecResult:
            done = subprocess.run([*shell, "-c", script_text(script)], input=stdin or b"", env=env,
                                  capture_output=True, timeout=timeout, cwd=home)
            return ExecResult(done.returncode, done.stdout, done.stderr)

        return await anyio.to_thread.run_sync(go)

    return run
