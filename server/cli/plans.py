"""``boxforge plan ...``: check (no fleet), and the board's tables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio
from rich.live import Live
from rich.table import Table
from rich.text import Text

from server.cli.render import Cell, dump, err, error_line, land_outcome, out, print_table, table
from server.config import Settings
from server.plans.board import PlanBoard, TaskBoard
from server.plans.validate import CheckReport, PlanInvalid, check_plan, load_plan_file, load_plan_text
from server.service import Fleet, open_fleet


def _load(path: str):  # type: ignore[no-untyped-def]
    if path == "-":
        return load_plan_text(sys.stdin.read(), source="stdin")
    return load_plan_file(path)


def check_table(report: CheckReport) -> Table:
    return table(("task", "branch", "owns", "depends on", "runs", "check"),
                 ((t.id, t.branch, ", ".join(t.owns) or "-", ", ".join(t.depends_on) or "-", t.runs, t.check or "-")
                  for t in report.tasks), title=f"plan {report.name}" if report.name else None)


def conflicts_table(report: CheckReport) -> Table:
    verdicts = {True: "allowed (allow_overlap)", False: Text.assemble(("refused", "red"), ": add depends_on")}
    return table(("task", "task", "overlapping owned paths", "verdict"),
                 ((c.a, c.b, "; ".join(c.paths), verdicts[c.allowed]) for c in report.conflicts),
                 title="predicted conflicts")


def cmd_plan_check(args: argparse.Namespace) -> int:
    try:
        report = check_plan(_load(args.file))
    except PlanInvalid as exc:
        report = CheckReport(ok=False, errors=exc.problems)
    if args.json:
        dump(report)
        return 0 if report.ok else 1
    if report.tasks:
        print_table(check_table(report))
    if report.conflicts:
        print_table(conflicts_table(report))
    elif report.tasks:
        out.print("predicted conflicts: none")
    for problem in report.errors:
        err.print(error_line(problem))
    if report.ok:
        err.print(f"plan {report.name!r} is valid: {len(report.tasks)} tasks, order {' -> '.join(report.order[:12])}"
                  f"{' ...' if len(report.order) > 12 else ''}")
    return 0 if report.ok else 1


_COLOURS = {"succeeded": "green", "failed": "red", "blocked": "yellow", "cancelled": "yellow"}


def board_table(board: PlanBoard) -> Table:
    cost = f", cost {board.cost_so_far:.4f}" if board.cost_so_far is not None else ""
    title = (f"plan {board.name} ({board.plan_id}): {board.state} - {board.done} done, {board.running} running, "
             f"{board.pending} pending, {board.blocked} blocked, {board.failed} failed; boxes "
             f"{board.boxes_in_use}/{board.boxes_max}{cost}")
    return table(("task", "state", "box", "elapsed", "check", "branch", "last output / reason"),
                 (_board_row(t) for t in board.tasks), title=title)


def _board_row(t: TaskBoard) -> tuple[Cell, ...]:
    state = Text(t.state, style=_COLOURS.get(t.state, ""))
    if t.attempts > 1:
        state.append(f" (try {t.attempts})")
    note = t.reason if t.state in ("failed", "blocked", "cancelled") or not t.last_line else t.last_line
    return (t.id, state, t.box or "-", f"{t.elapsed_s:.0f}s" if t.elapsed_s is not None else "-", t.check or "-",
            t.branch, (note or "-")[:100])


async def cmd_plan_run(settings: Settings, args: argparse.Namespace) -> int:
    plan = _load(args.file)
    base_dir = Path(await (anyio.Path.cwd() if args.file == "-" else anyio.Path(args.file).resolve()))
    base_dir = base_dir if args.file == "-" else base_dir.parent
    async with anyio.create_task_group() as tg:
        async with open_fleet(settings, background=tg) as fleet:
            board = await fleet.plan_start(plan, base_dir=base_dir)
            plan_id = board.plan_id
            err.print(f"plan {board.name} started as {plan_id}: boxforge plan status {plan_id} shows the board")
            live = out.is_terminal and not args.json
            if live:
                with Live(board_table(board), console=out, refresh_per_second=4) as view:
                    while board.state == "running":
                        board = await fleet.plan_status(plan_id, wait_s=1.0)
                        view.update(board_table(board))
            else:
                seen: dict[str, str] = {}
                while board.state == "running":
                    board = await fleet.plan_status(plan_id, wait_s=30.0)
                    for t in board.tasks:
                        if seen.get(t.id) != t.state:
                            seen[t.id] = t.state
                            err.print(f"{t.id}: {t.state}{' on ' + t.box if t.box else ''}"
                                      f"{' - ' + t.reason if t.reason and t.state != 'running' else ''}",
                                      style="dim")
            if args.json:
                dump(board)
            elif not live:
                print_table(board_table(board))
    return 0 if board.state == "succeeded" else 1


async def cmd_plan_status(fleet: Fleet, args: argparse.Namespace) -> int:
    board = await fleet.plan_status(args.plan_id, wait_s=args.wait or 0.0)
    if args.json:
        dump(board)
    else:
        print_table(board_table(board))
    return 0


async def cmd_plan_land(fleet: Fleet, args: argparse.Namespace) -> int:
    outcome = await fleet.plan_land(args.plan_id, into=args.into)
    return land_outcome(outcome, args.json)


async def cmd_plan_cancel(fleet: Fleet, args: argparse.Namespace) -> int:
    board = await fleet.plan_cancel(args.plan_id)
    if args.json:
        dump(board)
    else:
        print_table(board_table(board))
    return 0
