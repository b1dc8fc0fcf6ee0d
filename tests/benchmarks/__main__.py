"""``python -m tests.benchmarks``: measure every target of the performance issue on local OpenSSH
boxes, print the table and write it, with the raw comparisons and the design notes, into
docs/performance.md (or ``--out``). ``--quick`` runs tiny sizes, only to prove the code works."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from tests.benchmarks import fanout, figures
from tests.benchmarks.report import Report, write
from tests.support import REPO_ROOT

Measure = Callable[[Path, figures.Sizes, Report], Awaitable[None]]
MEASURES: list[tuple[str, Measure]] = [
    ("status poll and foreground vm_bash", figures.measure_status_and_bash),
    ("create_server", figures.measure_create),
    ("boxes x background jobs", figures.measure_load),
    ("long-poll", figures.measure_long_poll),
    ("memory", figures.measure_memory),
    ("Hetzner against the fake", figures.measure_hetzner),
    ("Docker beside local", figures.measure_docker),
    ("Kubernetes beside local", figures.measure_kubernetes),
    ("issue 17", fanout.measure_fanout),
]


async def run(sizes: figures.Sizes, report: Report, only: list[str] | None = None) -> None:
    for title, measure in MEASURES:
        if only and title not in only:
            continue
        started = time.monotonic()
        print(f"measuring {title} ...", file=sys.stderr, flush=True)
        home = Path(tempfile.mkdtemp(prefix="boxforge-bench-"))
        try:
            await measure(home, sizes, report)
        finally:
            shutil.rmtree(home, ignore_errors=True)
        print(f"  done in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run, not figures of record)")
    parser.add_argument("--only", choices=[title for title, _ in MEASURES], action="append",
                        help="measure only these (repeatable); the report then holds only their figures")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "performance.md",
                        help="where to write the report (default: docs/performance.md)")
    args = parser.parse_args(argv)
    # isolated local boxes boot from one cached base image: the suite's, unless one is named (as in conftest.py)
    os.environ.setdefault("BOXFORGE_IMAGE_CACHE", str(Path.home() / ".cache" / "boxforge-test-images"))
    figures.ensure_openssh()
    sizes = figures.Sizes.quick() if args.quick else figures.Sizes()
    report = Report(quick=args.quick)
    anyio.run(run, sizes, report, args.only)
    print(report.table())
    print()
    print(report.samples_table())
    # a run of some measures only updates its own section of the docs, beside the other runs' figures
    write(report, args.out, section=" + ".join(args.only) if args.only and not args.quick else None)
    print(f"\nwritten to {args.out}")
    return 0 if all(f.met for f in report.figures) or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
