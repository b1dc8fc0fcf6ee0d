"""The benchmark command runs end to end on tiny sizes, so it cannot rot. No timing is asserted;
the figures of record come from a full run (docs/performance.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_server
from tests.support import REPO_ROOT

TARGETS = 17  # 1-7 of the first performance issue, 8-17 of issue 17


@pytest.mark.openssh
def test_the_benchmark_command_prints_and_writes_the_table_of_every_target(tmp_path: Path) -> None:
    require_server("openssh")
    out = tmp_path / "performance.md"
    docs = REPO_ROOT / "docs" / "performance.md"
    docs_before = docs.read_bytes() if docs.exists() else None
    result = subprocess.run([sys.executable, "-m", "tests.benchmarks", "--quick", "--out", str(out)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "| # | figure | target | measured | met |" in result.stdout
    written = out.read_text()
    assert "QUICK RUN" in written and "## Raw comparisons" in written
    rows = [line for line in written.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert [int(row.split("|")[1]) for row in rows] == list(range(1, TARGETS + 1))
    assert (docs.read_bytes() if docs.exists() else None) == docs_before, "a quick run must not touch the docs"
