"""The Docker box's init (providers/docker/boxinit.sh) under sh, dash and busybox sh, without Docker:
it stops at the deadline in its schedule file, follows a deadline moved later, ignores a malformed one,
stops when sshd dies, and unlocks a locked root account for sshd."""

from __future__ import annotations

import os
import subprocess
import time
from importlib import resources
from pathlib import Path

import pytest

INIT = resources.files("providers.docker").joinpath("boxinit.sh")
EXIT_TIMEOUT_S = 10.0


def start(shell: tuple[str, ...], tmp_path: Path, stop_at: str, *, sshd: str | None = None,
          shadow: str = "root:*:1:0:99999:7:::\n") -> subprocess.Popen[str]:
    (tmp_path / "stop-at").write_text(stop_at + "\n")
    (tmp_path / "shadow").write_text(shadow)
    env = {"PATH": os.environ["PATH"], "BOXFORGE_STOP_AT_FILE": str(tmp_path / "stop-at"),
           "BOXFORGE_WATCHDOG_POLL_S": "0.05", "BOXFORGE_SHADOW_FILE": str(tmp_path / "shadow"),
           "BOXFORGE_SSHD_CONFIG": str(tmp_path / "sshd_config")}
    if sshd is None:
        env["BOXFORGE_NO_SSHD"] = "1"
    else:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "sshd").write_text(f"#!/bin/sh\n{sshd}\n")
        (bin_dir / "sshd").chmod(0o755)
        env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return subprocess.Popen([*shell, str(INIT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=EXIT_TIMEOUT_S)
    return proc.returncode, out


def test_a_past_deadline_stops_the_box(shell: tuple[str, ...], tmp_path: Path) -> None:
    code, out = finish(start(shell, tmp_path, str(int(time.time()) - 1)))
    assert code == 0 and "expired" in out


def test_a_deadline_moved_into_the_past_stops_a_running_box(shell: tuple[str, ...], tmp_path: Path) -> None:
    proc = start(shell, tmp_path, str(int(time.time()) + 3600))
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)  # the far deadline keeps it running
        (tmp_path / "stop-at").write_text(f"{int(time.time()) - 1}\n")
        code, out = finish(proc)
        assert code == 0 and "expired" in out
    finally:
        proc.kill()


def test_a_malformed_deadline_is_not_an_expiry(shell: tuple[str, ...], tmp_path: Path) -> None:
    proc = start(shell, tmp_path, "soon; rm -rf /")
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
    finally:
        proc.kill()
        proc.communicate()


def test_the_box_stops_when_sshd_dies_and_a_locked_root_is_unlocked(shell: tuple[str, ...], tmp_path: Path) -> None:
    code, out = finish(start(shell, tmp_path, str(int(time.time()) + 3600), sshd="exit 0",
                             shadow="root:!:1:0:99999:7:::\nbin:*:1:0:99999:7:::\n"))
    assert code == 1 and "sshd exited" in out
    assert (tmp_path / "shadow").read_text() == "root:*:1:0:99999:7:::\nbin:*:1:0:99999:7:::\n"
