"""The loop: tasks started on boxes of a bounded pool as their dependencies succeed (each task on boxes is
``server.plans.attempt``); the work comes home with the git-home functions; every box is burned when its
task ends (harvested first).

State lives in the store (one JSON document per plan, saved at every change, with the process that drives
it); the drive of each plan runs in the task group the caller owns (the MCP lifespan's, or the CLI's). A plan
whose process died (SIGKILL, power) is taken over, once, by the next one that opens it: the MCP server at
start, or ``boxforge plan run`` of the same plan; its running jobs are re-attached, not restarted."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from server.errors import ForgeError, InvalidInput
from server.git import local
from server.git.land import LandOutcome, land_refs
from server.plans import budget
from server.plans.attempt import AT_WORK, Attempts, PlanRun
from server.plans.board import TERMINAL_TASK, PlanBoard, TaskBoard
from server.plans.model import Plan
from server.plans.validate import topo_order, validated

if TYPE_CHECKING:
    from server.service.fleet import Fleet

log = logging.getLogger("boxforge.plans")


class PlanNotFound(ForgeError):
    """No plan has that id."""


def plan_key(plan: Plan) -> str:
    return hashlib.sha256(plan.model_dump_json().encode()).hexdigest()[:24]


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def this_process() -> dict[str, Any]:
    return {"pid": os.getpid(), "since": _process_start(os.getpid()), "host": socket.gethostname(),
            "token": secrets.token_hex(8)}


def owner_alive(owner: dict[str, Any] | None) -> bool:
    """Whether the process that drives a plan still runs (a process on another host is taken as alive)."""
    if not owner or "pid" not in owner:
        return False
    if owner.get("host") != socket.gethostname():
        return True
    return _process_start(int(owner["pid"])) == owner.get("since")


def _earlier_work(docs: list[dict[str, Any]], plan: Plan) -> dict[str, TaskBoard]:
    """Per task id, a succeeded task of an earlier plan on the same repo and base with the same content (and
    prerequisites that are themselves earlier work): it is not run twice."""
    done: dict[tuple[str, str], TaskBoard] = {}
    for doc in docs:
        board = doc.get("board") or {}
        if (doc.get("plan") or {}).get("base") != plan.base:
            continue
        for t in board.get("tasks") or []:
            if t.get("state") == "succeeded" and t.get("ref"):
                done.setdefault((t["id"], t.get("content_hash", "")), TaskBoard.model_validate(
                    t | {"reason": f"done in plan {board.get('plan_id')} (same id and content): not run again"}))
    reused: dict[str, TaskBoard] = {}
    by_id = {t.id: t for t in plan.tasks}
    for tid in topo_order(plan):
        t = by_id[tid]
        earlier = done.get((t.id, t.content_hash()))
        if earlier is not None and earlier.branch == t.branch and all(d in reused for d in t.depends_on):
            reused[tid] = earlier
    return reused


def _restart(board: PlanBoard) -> list[str]:
    """A taken-over board made ready to drive: tasks at work stay (re-attached), the other unfinished ones
    start afresh. The boxes of attempts that start over (forged, or adopted at start): to be burned."""
    stale = []
    for tb in board.tasks:
        if tb.state not in TERMINAL_TASK and not (tb.state in AT_WORK and tb.box):
            tb.state = "pending"
            if tb.box:
                stale.append(tb.box)
    board.boxes_in_use = sum(tb.state in AT_WORK for tb in board.tasks)
    return stale


def _blocked_by(run: PlanRun, tb: TaskBoard, deps: list[TaskBoard]) -> str | None:
    """Why the task is blocked; "" when it may start now; None while it waits for its prerequisites."""
    bad = [d for d in deps if d.state in ("failed", "blocked", "cancelled")]
    if bad:
        return "; ".join(f"{d.id} {d.state}" for d in bad)
    if run.stopped and tb.state == "pending":
        return run.stopped
    return "" if all(d.state == "succeeded" for d in deps) else None


class Plans:
    """Start, watch, cancel and resume plans; one drive per running plan, in ``background``."""

    def __init__(self, fleet: Fleet, background: TaskGroup | None) -> None:
        self.fleet = fleet
        self.repo = fleet.repo
        self.settings = fleet.settings
        self.background = background
        self.runs: dict[str, PlanRun] = {}
        self.attempts = Attempts(fleet, self._changed)

    # the surface

    async def start(self, plan: Plan, *, base_dir: Path | None = None) -> PlanBoard:
        """Validate, record and start the plan. The same plan already running or done is returned, not re-run
        (one whose process died is resumed here); tasks done by an earlier plan with the same content are not
        run again."""
        validated(plan)
        if self.background is None:
            raise InvalidInput("plans run in the background: start them from the MCP server or boxforge plan run")
        plan = await self._ready_to_run(plan, base_dir)
        key = plan_key(plan)
        for plan_id, state in await self.repo.plans_by_key(key):
            if plan_id in self.runs or state == "succeeded":
                return await self.status(plan_id)
            if state == "running":
                return await self._take_over(plan_id)
        plan_id = "p-" + secrets.token_hex(5)
        reused = _earlier_work(await self.repo.plans_of_repo(plan.repo), plan)
        board = PlanBoard(plan_id=plan_id, name=plan.name, state="running", repo=plan.repo,
                          boxes_max=plan.boxes.max, started_at=time.time(),
                          tasks=[reused.get(t.id) or TaskBoard(id=t.id, branch=t.branch, content_hash=t.content_hash())
                                 for t in plan.tasks]).tally()
        run = PlanRun(plan, board, key, owner=this_process())
        self.runs[plan_id] = run
        await self._save(run)
        await self.repo.add_event("plan_start", detail=f"{plan_id} {plan.name}: {len(plan.tasks)} tasks"
                                  + (f", {len(reused)} done before" if reused else ""))
        self.background.start_soon(self._drive, run)
        return self._shown(run.board)

    async def _ready_to_run(self, plan: Plan, base_dir: Path | None) -> Plan:
        """The plan with its repo resolved, once the orchestrator can run it (env names set, base exists)."""
        repo = await self._user_repo(plan, base_dir)
        missing = [n for n in plan.boxes.env_from if n not in os.environ]
        if missing:
            raise InvalidInput(f"boxes.env_from names {', '.join(missing)}, not set in the orchestrator's environment: "
                               "export them first")
        if await local.rev(repo, f"refs/heads/{plan.base}") is None:
            raise InvalidInput(f"the plan's base branch {plan.base!r} is not a branch of {repo}: set base: to one")
        return plan.model_copy(update={"repo": str(repo)})

    async def resume_orphans(self) -> list[str]:
        """At start: take over every running plan whose process died; the ids resumed."""
        resumed = []
        for plan_id in await self.repo.plans_in_state("running"):
            if plan_id not in self.runs:
                board = await self._take_over(plan_id)
                if plan_id in self.runs:
                    resumed.append(board.plan_id)
        return resumed

    async def _take_over(self, plan_id: str) -> PlanBoard:
        """Resume a running plan whose process died (claimed in the store, so only one process does); a plan
        another live process drives is only shown."""
        row = await self.repo.plan(plan_id)
        assert row is not None
        doc = row[1]
        owner = doc.get("owner")
        if self.background is None or owner_alive(owner):
            shown = self._shown(PlanBoard.model_validate(doc["board"]))
            if owner:
                shown.hint = f"plan {plan_id} is run by process {owner.get('pid')}: boxforge plan status {plan_id}"
            return shown
        mine = this_process()
        if not await self.repo.claim_plan(plan_id, (owner or {}).get("token"), mine):
            return await self.status(plan_id)  # another process took it over first
        run = PlanRun(Plan.model_validate(doc["plan"]), PlanBoard.model_validate(doc["board"]), doc.get("key") or
                      plan_key(Plan.model_validate(doc["plan"])), spend=budget.load(doc.get("spend")),
                      stopped=doc.get("stopped"), owner=mine)
        stale = _restart(run.board)
        self.runs[plan_id] = run
        await self._save(run)
        dead = (owner or {}).get("pid")
        await self.repo.add_event("plan_resume", detail=f"{plan_id}: taken over from process {dead}")
        assert self.background is not None
        if stale:
            self.background.start_soon(self._burn, stale)
        self.background.start_soon(self._drive, run)
        return self._shown(run.board)

    async def _burn(self, names: list[str]) -> None:
        for name in names:
            try:
                await self.fleet.destroy_server(name)
            except ForgeError as exc:  # never made, or gone already
                log.info("burning %s after a takeover: %s", name, exc)

    async def status(self, plan_id: str, wait_s: float = 0.0) -> PlanBoard:
        """The board; with ``wait_s``, after the next change (or when the plan ends), at most that long."""
        run = self.runs.get(plan_id)
        if run is not None:
            if wait_s > 0 and run.board.state == "running":
                changed = run.changed
                with anyio.move_on_after(wait_s):
                    await changed.wait()
            return self._shown(run.board)
        row = await self.repo.plan(plan_id)
        if row is None:
            raise PlanNotFound(f"no plan {plan_id!r} (plan ids look like p-0123456789)")
        return self._shown(PlanBoard.model_validate(row[1]["board"]))

    async def cancel(self, plan_id: str) -> PlanBoard:
        run = self.runs.get(plan_id)
        if run is None:
            board = await self.status(plan_id)
            if board.state == "running":
                raise InvalidInput(f"plan {plan_id} is run by another boxforge process: cancel it there")
            return board
        if run.scope is not None and run.board.state == "running":
            run.board.reason = "cancelled"
            run.scope.cancel()
            with anyio.fail_after(120):
                await run.finished.wait()
        return self._shown(run.board)

    async def land(self, plan_id: str, *, into: str | None = None) -> LandOutcome:
        """Merge the plan's succeeded tasks' fetched work into ``into`` (default: the repo's current branch) in
        dependency order, with the git-home land: stops at the first conflict with the repo clean."""
        board = await self.status(plan_id)
        row = await self.repo.plan(plan_id)
        assert row is not None
        order = topo_order(Plan.model_validate(row[1]["plan"]))
        by_id = {t.id: t for t in board.tasks}
        refs = [(tid, by_id[tid].ref) for tid in order if by_id[tid].state == "succeeded" and by_id[tid].ref]
        if not refs:
            raise InvalidInput(f"plan {plan_id} has no succeeded task to land")
        return await land_refs(Path(board.repo), [(t, r) for t, r in refs if r], into,
                               self.settings.home / "git" / "tmp")

    async def wait(self, plan_id: str) -> PlanBoard:
        run = self.runs[plan_id]
        await run.finished.wait()
        return self._shown(run.board)

    def _shown(self, board: PlanBoard) -> PlanBoard:
        shown = board.model_copy(deep=True).tally()
        now = time.time()
        for t in shown.tasks:
            if t.started_at:
                t.elapsed_s = round((t.finished_at or now) - t.started_at, 1)
        if shown.state == "running":
            shown.hint = f"plan_status(plan_id={shown.plan_id!r}, wait_s=30) waits for the next change"
        elif shown.done:
            shown.hint = f"boxforge plan land {shown.plan_id} merges the tasks' branches in dependency order"
        return shown

    # the loop

    async def _user_repo(self, plan: Plan, base_dir: Path | None) -> Path:
        if "://" in plan.repo or plan.repo.startswith("git@"):
            raise InvalidInput("a plan's repo must be a local checkout for now (its branches come home there); "
                               "clone the URL and give its path")
        given = await anyio.Path(plan.repo).expanduser()
        if not given.is_absolute():
            given = anyio.Path(base_dir or await anyio.Path.cwd()) / given
        path = Path(await given.resolve())
        if not await local.is_repo(path):
            raise InvalidInput(f"the plan's repo {str(path)!r} is not a git repository")
        return path

    async def _save(self, run: PlanRun) -> None:
        run.board.tally()
        run.board.cost_so_far = budget.spent(run.spend)
        doc: dict[str, Any] = {"plan": run.plan.model_dump(mode="json"), "board": run.board.model_dump(mode="json"),
                               "key": run.key, "owner": run.owner, "spend": budget.dump(run.spend),
                               "stopped": run.stopped}
        await self.repo.save_plan(run.board.plan_id, run.key, run.plan.name, run.board.state, doc)

    async def _changed(self, run: PlanRun) -> None:
        run.notify()
        await self._save(run)

    async def _drive(self, run: PlanRun) -> None:
        order = topo_order(run.plan)
        slots = anyio.Semaphore(run.plan.boxes.max)
        active: set[str] = set()
        try:
            with anyio.CancelScope() as scope:
                run.scope = scope
                async with anyio.create_task_group() as tg:
                    while True:
                        changed = run.changed
                        if self._dispatch(run, order, tg, slots, active):
                            run.notify()  # saved by the tasks' next steps, or at the end
                        if not active:
                            break
                        await changed.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(run)

    def _dispatch(self, run: PlanRun, order: list[str], tg: TaskGroup, slots: anyio.Semaphore,
                  active: set[str]) -> bool:
        """Start every task whose prerequisites succeeded, block those with a failed one; whether any moved."""
        tasks = {t.id: t for t in run.plan.tasks}
        progressed = False
        for tid in order:
            tb = run.task(tid)
            if tid in active or tb.state in TERMINAL_TASK:
                continue
            blocked = _blocked_by(run, tb, [run.task(d) for d in tasks[tid].depends_on])
            if blocked is None:
                continue
            progressed = True
            if blocked:
                tb.state, tb.reason = "blocked", blocked
                continue
            if tb.state == "pending":
                tb.state = "waiting_box"
            active.add(tid)
            tg.start_soon(self.attempts.run_task, run, tasks[tid], slots, active)
        return progressed

    async def _finish(self, run: PlanRun) -> None:
        board = run.board
        for tb in board.tasks:
            if tb.state not in TERMINAL_TASK:
                tb.state = "cancelled"
                tb.reason = tb.reason or "the plan was cancelled"
        board.finished_at = time.time()
        board.tally()
        if board.reason == "cancelled":
            board.state = "cancelled"
        else:
            board.state = "succeeded" if board.done == len(board.tasks) else "failed"
            board.reason = board.reason or run.stopped
        board.boxes_in_use = 0
        try:
            await self._save(run)
            await self.repo.add_event("plan_end", detail=f"{board.plan_id}: {board.state}")
        except Exception:
            log.exception("saving plan %s", board.plan_id)
        run.notify()
        run.finished.set()
