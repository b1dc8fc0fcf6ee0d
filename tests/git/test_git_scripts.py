"""The box-side git scripts under dash and busybox sh, without SSH: seed from a bundle, harvest committed
and uncommitted work (a file name with spaces, a file over the cap), compare; all read back with the
orchestrator's own parsers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from server.git.harvest import parse
from server.onbox import scripts
from tests.support import git, make_repo

SHELLS = [pytest.param(["dash"], id="dash"), pytest.param(["busybox", "sh"], id="busybox")]


def run(shell: list[str], name: str, params: dict[str, str], home: Path, stdin: bytes = b"") -> bytes:
    if shutil.which(shell[0]) is None:
        pytest.skip(f"{shell[0]} is not installed")
    env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin"}
    done = subprocess.run([*shell, "-c", scripts.program(name, params)], input=stdin, env=env,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


@pytest.mark.parametrize("shell", SHELLS)
def test_seed_then_harvest_then_compare(shell: list[str], tmp_path: Path) -> None:
    source = make_repo(tmp_path / "source")
    bundle = tmp_path / "seed.bundle"
    git(source, "bundle", "create", "-q", str(bundle), "refs/heads/main")
    home = tmp_path / "home"
    home.mkdir()
    project = home / "project"
    base = git(source, "rev-parse", "main")
    run(shell, "git-seed.sh", {"project": str(project), "branch": "feat/x", "start": base, "origin": "https://e/r"},
        home, bundle.read_bytes())
    assert git(project, "branch", "--show-current") == "feat/x"
    assert (home / ".boxforge" / "base").read_text().strip() == base
    assert not (home / ".boxforge" / "seed.bundle").exists()

    (project / "README.md").write_text("changed\n")
    (project / "with space.txt").write_text("spaced\n")
    (project / "big.bin").write_bytes(b"x" * 5000)
    raw = run(shell, "git-harvest.sh", {"project": str(project), "known": base, "include_uncommitted": "1",
                                        "max_file_bytes": "4096", "box": "b1"}, home)
    got = parse(raw)
    assert got.head == base and got.branch == "feat/x" and got.wip and got.tip == got.wip and got.bundle
    assert got.skipped == ("big.bin (4 KiB)",)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True).stdout
    assert status.splitlines() == [" M README.md", "?? big.bin", '?? "with space.txt"']  # the tree untouched
    assert "refs/boxforge" not in git(project, "for-each-ref")  # the temporary ref is gone

    fetched_into = tmp_path / "home-repo"
    git(tmp_path, "clone", "-q", str(source), str(fetched_into))  # has the base, the bundle's prerequisite
    (tmp_path / "in.bundle").write_bytes(got.bundle)
    git(fetched_into, "fetch", "-q", str(tmp_path / "in.bundle"), f"{got.ref}:refs/boxforge/b1/feat/x")
    assert git(fetched_into, "show", "refs/boxforge/b1/feat/x:with space.txt") == "spaced"
    again = parse(run(shell, "git-harvest.sh", {"project": str(project), "known": got.tip,
                                                "include_uncommitted": "1", "max_file_bytes": "4096", "box": "b1"},
                      home))
    assert again.tip == got.tip and again.bundle is None  # the same changes give the same commit

    compared = run(shell, "git-compare.sh", {"project": str(project), "base": base}, home).decode()
    assert "ahead=0" in compared and "file=README.md" in compared and "file=with space.txt" in compared
    assert "dirty=1" in compared
