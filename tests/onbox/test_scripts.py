"""The box-side scripts as files: linted, shipped in the wheel, and agreeing with protocol.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from server.onbox import protocol, scripts

ROOT = Path(__file__).resolve().parents[2]
SH_FILES = sorted([*ROOT.glob("server/**/*.sh"), *ROOT.glob("providers/**/*.sh")])


def test_every_shipped_script_is_a_file_of_the_scripts_folder() -> None:
    assert {"protocol.sh", "jobs.sh", "job-wrapper.sh", "channel.sh"} <= set(scripts.names())
    assert all(scripts.text(name).startswith("# shellcheck shell=sh") for name in scripts.names())


def test_protocol_sh_states_the_values_of_protocol_py() -> None:
    stated = {}
    for line in scripts.text("protocol.sh").splitlines():
        match = re.fullmatch(r"(BF_[A-Z_]+)=(.*)", line)
        if match:
            stated[match[1]] = match[2].strip('"')
    assert stated == protocol.SHELL_NAMES


def test_the_shell_reads_protocol_sh_as_protocol_py_says(tmp_path: Path) -> None:
    names = " ".join(f'"${name}"' for name in protocol.SHELL_NAMES)
    out = subprocess.run(["/bin/sh", "-c", scripts.library() + f"printf '%s\\n' {names}"],
                         env={"HOME": str(tmp_path)}, capture_output=True, text=True, check=True).stdout
    expected = [value.replace("$HOME", str(tmp_path)) for value in protocol.SHELL_NAMES.values()]
    assert out.splitlines() == expected


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_every_script_is_shellcheck_clean_as_posix_sh() -> None:
    done = subprocess.run(["shellcheck", "-s", "sh", "-f", "gcc", *map(str, SH_FILES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_shellcheck_exception_says_why() -> None:
    for path in SH_FILES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "shellcheck disable=" in line:
                assert re.search(r"disable=[A-Z0-9,]+ # \S", line), f"{path.name}:{number}: say why: {line.strip()}"


def test_a_non_editable_wheel_carries_every_script(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files", "pyproject.toml", "README.md", "server", "providers"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    for name in {*tracked, *(str(p.relative_to(ROOT)) for p in SH_FILES)}:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert {str(p.relative_to(ROOT)) for p in SH_FILES} <= shipped
