"""``boxforge up`` (forge boxes in parallel, one per branch, with a live progress table) and ``boxforge
demo`` (forge local boxes, run a job on each, burn them)."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic import TypeAdapter
from rich.console import RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from providers.base import ProviderError
from server.cli.render import Cell, dump, err, error_text, out, print_table, table, valid, worded
from server.domain.durations import check_ttl_within
from server.domain.hints import Hint, HintKind
from server.domain.names import name_from_branch
from server.domain.states import CREATE_STEPS
from server.errors import ForgeError, InvalidInput
from server.schemas import ServerInfo, ServerName, TtlSeconds
from server.service import Fleet

names_adapter = TypeAdapter(ServerName)
ttls_adapter = TypeAdapter(TtlSeconds)
DEMO_TTL_S = 15 * 60
DEMO_JOB = "for i in 1 2 3; do echo step $i on $(hostname) as $(whoami); sleep 0.2; done; echo done"


@dataclass
class _Row:
    """One box of `boxforge up`: the step it is in and since when, and how it ended."""

    name: str
    branch: str | None
    started: float = field(default_factory=time.monotonic)
    step: str = "queued"
    state: str = "waiting"  # waiting | working | ready | failed
    finished: float | None = None
    result: ServerInfo | str | None = None  # the box, or why it failed

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started


class _UpProgress:
    """The live table of `boxforge up`: one row per box, redrawn by rich.Live as steps arrive."""

    def __init__(self, rows: list[_Row]) -> None:
        self.rows = rows

    def __rich__(self) -> RenderableType:
        return table(("box", "branch", "step", "", "elapsed"), (self._row(row) for row in self.rows),
                     title="forging boxes", title_justify="left")

    @staticmethod
    def _row(row: _Row) -> tuple[Cell, ...]:
        index = CREATE_STEPS.index(row.step) + 1 if row.step in CREATE_STEPS else 0
        bar = "■" * index + "□" * (len(CREATE_STEPS) - index)
        style = {"ready": "green", "failed": "red", "waiting": "dim"}.get(row.state, "cyan")
        return row.name, row.branch or "-", Text(row.step, style=style), Text(bar, style=style), f"{row.elapsed:5.1f}s"


def env_names(names: Sequence[str]) -> list[str]:
    """--env NAME passes NAME's value from the secret store (boxforge secret set) or this environment; values
    never go on a command line."""
    for name in names:
        if "=" in name:
            raise InvalidInput(f"--env takes a variable name, not NAME=VALUE (values on a command line leak into "
                               f"ps and shell history): boxforge secret set {name.split('=')[0]} (or export it) "
                               f"and pass --env {name.split('=')[0]}")
    return list(names)


def _specs(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(box name, branch) of each box to forge."""
    if args.name:
        if len(args.branches) > 1:
            raise InvalidInput("--name works with at most one branch; drop it to derive names from branches")
        specs = [(valid(names_adapter, args.name), args.branches[0] if args.branches else None)]
    elif not args.branches:
        raise InvalidInput("give one or more branches (boxforge up feat/a feat/b --repo .) or --name NAME")
    else:
        try:
            specs = [(name_from_branch(b), b) for b in args.branches]
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    if len({n for n, _ in specs}) != len(specs):
        raise InvalidInput("two branches map to the same box name; use distinct branches")
    return specs


async def _forge_row(fleet: Fleet, args: argparse.Namespace, row: _Row, limiter: anyio.CapacityLimiter,
                     options: dict[str, Any], started: float, live: bool) -> None:
    async def progress(step: str, index: int, total: int) -> None:
        row.step, row.state = step, "working"
        if not args.json and not live:
            err.print(Text.assemble((f"{time.monotonic() - started:6.1f}s", "dim"), f" {row.name}: {step}"))

    async with limiter:
        row.started, row.state = time.monotonic(), "working"
        try:
            row.result = worded(await fleet.create_server(row.name, branch=row.branch, progress=progress,
                                                          **options))
            row.state, row.step = "ready", "ready"
        except (ForgeError, ProviderError) as exc:
            row.result, row.state = error_text(exc), "failed"
        row.finished = time.monotonic()


def _up_table(rows: list[_Row], started: float) -> Table:
    made = [r for r in rows if isinstance(r.result, ServerInfo)]
    return table(("name", "state", "took", "address", "size", "branch", "agent", "time left", "project dir"),
                 (_up_row(row) for row in rows),
                 title=f"{len(made)} of {len(rows)} box(es) up in {time.monotonic() - started:.1f}s")


def _up_row(row: _Row) -> tuple[Cell, ...]:
    s, took = row.result, f"{row.elapsed:.1f}s"
    if not isinstance(s, ServerInfo):
        return row.name, Text("failed", style="red"), took, "-", "-", row.branch or "-", "-", "-", "-"
    return (row.name, Text("ready", style="green"), took, s.address or "-", s.size or "-", s.branch or "-",
            s.agent or "-", s.time_left or "-", s.project_dir or "-")


async def cmd_up(fleet: Fleet, args: argparse.Namespace) -> int:
    rows = [_Row(name, branch) for name, branch in _specs(args)]
    options = {"ttl_s": valid(ttls_adapter, args.ttl) if args.ttl else None, "repo": args.repo, "agent": args.agent,
               "agent_install": args.agent_install, "agent_version": args.agent_version,
               "agent_command": args.agent_command,
               "env_from": env_names(args.env), "provider": args.provider, "size": args.size,
               "location": args.location, "image": args.image, "repo_via": args.repo_via,
               "egress": args.egress}
    if options["ttl_s"] is not None and (too_long := check_ttl_within(options["ttl_s"], fleet.settings.max_ttl_s)):
        raise InvalidInput(too_long, hint=Hint(HintKind.EXTEND_LATER))  # before any progress is drawn
    limiter = anyio.CapacityLimiter(fleet.settings.max_parallel_creates)
    started = time.monotonic()
    live = err.is_terminal and not args.json
    with Live(_UpProgress(rows), console=err, refresh_per_second=8, transient=True) if live \
            else contextlib.nullcontext():
        async with anyio.create_task_group() as tg:
            for row in rows:
                tg.start_soon(_forge_row, fleet, args, row, limiter, options, started, live)
    failed = {r.name: r.result for r in rows if not isinstance(r.result, ServerInfo)}
    _up_report(rows, failed, started, args.json)
    return 1 if failed else 0


def _up_report(rows: list[_Row], failed: dict[str, Any], started: float, as_json: bool) -> None:
    if as_json:
        dump({"servers": [r.result.model_dump(mode="json") for r in rows if isinstance(r.result, ServerInfo)],
              "failed": failed})
        return
    print_table(_up_table(rows, started))
    for row in rows:
        for warning in row.result.warnings or [] if isinstance(row.result, ServerInfo) else []:
            err.print(Text.assemble((row.name, "yellow"), f": {warning}"))
    for name, message in failed.items():
        err.print(Text.assemble((name, "red"), f": {message}"))


async def _demo_box(fleet: Fleet, name: str) -> dict[str, Any]:
    t0 = time.monotonic()
    info = await fleet.create_server(name, ttl_s=DEMO_TTL_S, provider="local")
    ready = time.monotonic() - t0
    job = await fleet.run(name, DEMO_JOB, background=True)
    status = await fleet.job_status(job.job_id, wait_s=60)
    return {"address": info.address, "ready_s": ready, "job": job.job_id, "state": status.state,
            "exit": status.exit_code, "last_line": (status.stdout.strip().splitlines()[-1:] or [""])[0]}


def _demo_report(names: list[str], rows: dict[str, dict[str, Any]], seconds: float, as_json: bool) -> None:
    if as_json:
        dump({"boxes": [{"name": n, **rows[n]} for n in names], "seconds": round(seconds, 3)})
        return
    print_table(table(("box", "address", "ready in", "job", "state", "exit", "last line"),
                      ((n, rows[n]["address"], f"{rows[n]['ready_s']:.2f}s", rows[n]["job"], rows[n]["state"],
                        str(rows[n]["exit"]), rows[n]["last_line"]) for n in names),
                      title=f"boxforge demo: {len(names)} boxes, {seconds:.1f}s"))


async def cmd_demo(fleet: Fleet, args: argparse.Namespace) -> int:
    """Forge N local boxes in parallel, run a job on each, poll to completion, print a table, burn them."""
    names = [f"demo-{i + 1}" for i in range(args.boxes)]
    started = time.monotonic()
    rows: dict[str, dict[str, Any]] = {}

    async def one(name: str) -> None:
        rows[name] = await _demo_box(fleet, name)

    if not await fleet.image_ready():
        # the first demo on a fresh machine: say so, and show the build going
        err.print("building the base image of local boxes first (once per machine, about a minute)...")
        await fleet.build_image(lambda line: err.print(f"  {line}"))
    try:
        if not args.json:
            out.print(f"forging {len(names)} local boxes in parallel...")
        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(one, name)
        _demo_report(names, rows, time.monotonic() - started, args.json)
    finally:
        with anyio.CancelScope(shield=True):
            for name in names:
                await fleet.destroy_server(name)
        if not args.json:
            out.print(f"burned {len(names)} boxes")
    return 0 if len(rows) == len(names) and all(r["state"] == "succeeded" for r in rows.values()) else 1


async def cmd_image(fleet: Fleet, args: argparse.Namespace) -> int:
    """``boxforge image build``: build (or find) the base image now, with progress; ``image ls``: what is cached."""
    if args.image_verb == "build":
        built = await fleet.build_image(lambda line: err.print(f"  {line}"),
                                        provider=args.provider, force=args.force)
        images = [built]
    else:
        images = await fleet.list_images(args.provider)
    if args.json:
        out.print_json(data={"images": images})
        return 0
    if not images:
        out.print("no image cached yet: boxforge image build (or the first create builds it)")
    for img in images:
        took = f", built in {img['build_s']:.0f}s" if img.get("build_s") else ""
        out.print(f"{img['name']}  {img['rootfs']}  ({img['source']}{took})")
    return 0
