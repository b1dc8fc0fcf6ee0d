"""server/npm.py's range matcher against npm's semantics (the cases node-semver documents), and the
compiled form the box checks: the same answers from the shell as from Python."""

from __future__ import annotations

import subprocess

import pytest

from server import npm
from server.onbox import scripts

CASES = [
    (">=22.0.0", "22.0.0", True), (">=22.0.0", "21.9.9", False), (">=22", "22.3.1", True),
    (">=18.0.0", "20.20.2", True), ("^18.17.0 || >=20.5.0", "19.0.0", False),
    ("^18.17.0 || >=20.5.0", "18.20.1", True), ("^18.17.0 || >=20.5.0", "20.5.0", True),
    ("^0.2.3", "0.2.9", True), ("^0.2.3", "0.3.0", False), ("^0.0.3", "0.0.4", False),
    ("~1.2.3", "1.2.9", True), ("~1.2.3", "1.3.0", False), ("~1", "1.9.0", True), ("~1", "2.0.0", False),
    ("1.2.x", "1.2.7", True), ("1.2.x", "1.3.0", False), ("*", "0.0.1", True), ("", "5.0.0", True),
    ("1.2.3 - 2.3", "2.3.9", True), ("1.2.3 - 2.3", "2.4.0", False), ("1.2.3 - 2.3.4", "2.3.4", True),
    (">1.2", "1.2.9", False), (">1.2", "1.3.0", True), ("<=1.2", "1.2.9", True), ("<=1.2", "1.3.0", False),
    (">= 16 < 23", "22.9.0", True), (">= 16 < 23", "23.0.0", False), ("=1.2.3", "1.2.3", True),
    (">=22.0.0", "22.1.0-rc.1", False), ("v1.2.3", "1.2.3", True),
]


@pytest.mark.parametrize(("rng", "version", "ok"), CASES)
def test_ranges_match_like_npm(rng: str, version: str, ok: bool) -> None:
    assert npm.satisfies(version, rng) is ok


@pytest.mark.parametrize(("rng", "version", "ok"), [c for c in CASES if "-rc" not in c[1]])
def test_the_box_reads_the_compiled_range_the_same_way(rng: str, version: str, ok: bool) -> None:
    script = scripts.text("agent-ensure.sh") + 'if bf_semver_ok "$1" "$2"; then echo yes; else echo no; fi\n'
    out = subprocess.run(["sh", "-c", script, "sh", version, npm.compile_range(rng)], capture_output=True,
                         text=True, timeout=30, env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
    assert out.stdout.strip() == ("yes" if ok else "no"), out.stderr


def test_max_satisfying_picks_the_newest_release_in_range() -> None:
    versions = ["20.1.0", "22.3.0", "22.10.1", "23.0.0-rc.1", "24.1.0", "not-a-version"]
    assert npm.max_satisfying(versions, ">=22.0.0 <24") == "22.10.1"
    assert npm.max_satisfying(versions, ">=25") is None


def test_unreadable_ranges_are_refused() -> None:
    with pytest.raises(ValueError):
        npm.parse_range(">=banana")
