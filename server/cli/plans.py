"""``boxforge plan ...``: check (no fleet), and the board's tables."""

from __future__ import annotations

import argparse
import sys

from rich.table import Table

from server.cli.render import dump, err, out
from server.plans.validate import CheckReport, PlanInvalid, check_plan, load_plan_file, load_plan_text


def _load(path: str):  # type: ignore[no-untyped-def]
    if path == "-":
        return load_plan_text(sys.stdin.read(), source="stdin")
    return load_plan_file(path)


def check_table(report: CheckReport) -> Table:
    table = Table(title=f"plan {report.name}" if report.name else None)
    for col in ("task", "branch", "owns", "depends on", "runs", "check"):
        table.add_column(col)
    for t in report.tasks:
        table.add_row(t.id, t.branch, ", ".join(t.owns) or "-", ", ".join(t.depends_on) or "-", t.runs,
                      t.check or "-")
    return table


def cmd_plan_check(args: argparse.Namespace) -> int:
    try:
        report = check_plan(_load(args.file))
    except PlanInvalid as exc:
        report = CheckReport(ok=False, errors=exc.problems)
    if args.json:
        dump(report)
        return 0 if report.ok else 1
    if report.tasks:
        out.print(check_table(report))
    if report.conflicts:
        table = Table(title="predicted conflicts")
        for col in ("task", "task", "overlapping owned paths", "verdict"):
            table.add_column(col)
        for c in report.conflicts:
            table.add_row(c.a, c.b, "; ".join(c.paths),
                          "allowed (allow_overlap)" if c.allowed else "[red]refused[/]: add depends_on")
        out.print(table)
    elif report.tasks:
        out.print("predicted conflicts: none")
    for problem in report.errors:
        err.print(f"[red]error:[/] {problem}")
    if report.ok:
        err.print(f"plan {report.name!r} is valid: {len(report.tasks)} tasks, order {' -> '.join(report.order[:12])}"
                  f"{' ...' if len(report.order) > 12 else ''}")
    return 0 if report.ok else 1
