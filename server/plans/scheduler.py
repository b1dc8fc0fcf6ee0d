"""The loop: tasks started on boxes of a bounded pool as their dependencies succeed; the agent (or a plain
command) runs as a background job, then ``check``; the work comes home with the git-home functions
(``Fleet.fetch`` to refs/boxforge/... and the task's branch, ``land_refs`` for a dependent's start point);
every box is burned when its task ends (harvested first, by ``destroy_server``).

State lives in the store (one JSON document per plan, saved at every change); the drive of each plan runs in
the task group the caller owns (the MCP lifespan's, or the CLI's)."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from server.domain.names import check_name, name_from_branch
from server.errors import BoxUnreachable, ForgeError, InvalidInput, ProvisionFailed, UnknownJob, UnknownServer
from server.git import local
from server.git.land import LandOutcome, land_refs
from server.plans.board import TERMINAL_TASK, PlanBoard, TaskBoard
from server.plans.model import Plan, PlanTask
from server.plans.validate import topo_order, validated

if TYPE_CHECKING:
    from server.service.fleet import Fleet

log = logging.getLogger("boxforge.plans")

POLL_WAIT_S = 10.0  # one job_status long-poll; it returns at once when the job ends
HEARTBEAT_GRACE_S = 20.0  # a box that does not answer for this long has its task reassigned
FINISHED_JOB = frozenset({"succeeded", "failed", "killed"})


class PlanNotFound(ForgeError):
    """No plan has that id."""


class Reassign(Exception):
    """The box died or could not be forged: try the task on another box (up to ``retries``)."""


class TaskFailed(Exception):
    """The task failed for a reason that another box would not change."""


@dataclass
class PlanRun:
    plan: Plan
    board: PlanBoard
    key: str
    changed: anyio.Event = field(default_factory=anyio.Event)
    finished: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope | None = None

    def notify(self) -> None:
        event, self.changed = self.changed, anyio.Event()
        event.set()

    def task(self, task_id: str) -> TaskBoard:
        return next(t for t in self.board.tasks if t.id == task_id)


def plan_key(plan: Plan) -> str:
    return hashlib.sha256(plan.model_dump_json().encode()).hexdigest()[:24]


def _last_line(*chunks: str) -> str | None:
    for chunk in chunks:
        lines = [line.strip() for line in chunk.splitlines() if line.strip()]
        if lines:
            return lines[-1][:200]
    return None


class Plans:
    """Start, watch and cancel plans; one drive per running plan, in ``background``."""

    def __init__(self, fleet: Fleet, background: TaskGroup | None) -> None:
        self.fleet = fleet
        self.repo = fleet.repo
        self.settings = fleet.settings
        self.background = background
        self.runs: dict[str, PlanRun] = {}

    # the surface

    async def start(self, plan: Plan, *, base_dir: Path | None = None) -> PlanBoard:
        """Validate, record and start the plan; the same plan already running or done is returned, not re-run."""
        validated(plan)
        if self.background is None:
            raise InvalidInput("plans run in the background: start them from the MCP server or boxforge plan run")
        repo = await self._user_repo(plan, base_dir)
        plan = plan.model_copy(update={"repo": str(repo)})
        missing = [n for n in plan.boxes.env_from if n not in os.environ]
        if missing:
            raise InvalidInput(f"boxes.env_from names {', '.join(missing)}, not set in the orchestrator's environment: "
                               "export them first")
        if await local.rev(repo, f"refs/heads/{plan.base}") is None:
            raise InvalidInput(f"the plan's base branch {plan.base!r} is not a branch of {repo}: set base: to one")
        key = plan_key(plan)
        for plan_id, state in await self.repo.plans_by_key(key):
            if plan_id in self.runs or state == "succeeded":
                return await self.status(plan_id)
        plan_id = "p-" + secrets.token_hex(5)
        board = PlanBoard(plan_id=plan_id, name=plan.name, state="running", repo=str(repo),
                          boxes_max=plan.boxes.max, started_at=time.time(),
                          tasks=[TaskBoard(id=t.id, branch=t.branch, content_hash=t.content_hash())
                                 for t in plan.tasks]).tally()
        run = PlanRun(plan, board, key)
        self.runs[plan_id] = run
        await self._save(run)
        await self.repo.add_event("plan_start", detail=f"{plan_id} {plan.name}: {len(plan.tasks)} tasks")
        self.background.start_soon(self._drive, run)
        return self._shown(run.board)

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
        doc: dict[str, Any] = {"plan": run.plan.model_dump(mode="json"), "board": run.board.model_dump(mode="json")}
        await self.repo.save_plan(run.board.plan_id, run.key, run.plan.name, run.board.state, doc)

    async def _changed(self, run: PlanRun) -> None:
        run.notify()
        await self._save(run)

    async def _drive(self, run: PlanRun) -> None:
        plan, board = run.plan, run.board
        tasks = {t.id: t for t in plan.tasks}
        order = topo_order(plan)
        slots = anyio.Semaphore(plan.boxes.max)
        active: set[str] = set()
        try:
            with anyio.CancelScope() as scope:
                run.scope = scope
                async with anyio.create_task_group() as tg:
                    while True:
                        changed = run.changed
                        progressed = False
                        for tid in order:
                            tb = run.task(tid)
                            if tb.state != "pending" or tid in active:
                                continue
                            deps = [run.task(d) for d in tasks[tid].depends_on]
                            bad = [d for d in deps if d.state in ("failed", "blocked", "cancelled")]
                            if bad:
                                tb.state = "blocked"
                                tb.reason = "; ".join(f"{d.id} {d.state}" for d in bad)
                                progressed = True
                            elif all(d.state == "succeeded" for d in deps):
                                tb.state = "waiting_box"
                                active.add(tid)
                                tg.start_soon(self._run_task, run, tasks[tid], slots, active)
                                progressed = True
                        if progressed:
                            await self._changed(run)
                        if not active:
                            break
                        await changed.wait()
        finally:
            with anyio.CancelScope(shield=True):
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
                board.boxes_in_use = 0
                try:
                    await self._save(run)
                    await self.repo.add_event("plan_end", detail=f"{board.plan_id}: {board.state}")
                except Exception:
                    log.exception("saving plan %s", board.plan_id)
                run.notify()
                run.finished.set()

    async def _run_task(self, run: PlanRun, task: PlanTask, slots: anyio.Semaphore, active: set[str]) -> None:
        tb = run.task(task.id)
        retries = task.retries if task.retries is not None else run.plan.retries
        try:
            async with slots:
                while True:
                    tb.attempts += 1
                    try:
                        await self._attempt(run, task, tb)
                        break
                    except Reassign as exc:
                        if tb.attempts > retries:
                            tb.state = "failed"
                            tb.reason = f"{exc}; no retries left ({retries})"
                            break
                        tb.reason = f"attempt {tb.attempts}: {exc}; reassigned to a new box"
                        tb.state = "waiting_box"
                        await self._changed(run)
        except TaskFailed as exc:
            tb.state, tb.reason = "failed", str(exc)
        except ForgeError as exc:
            tb.state, tb.reason = "failed", str(exc)[:1000]
        except Exception as exc:
            log.exception("plan %s task %s", run.board.plan_id, task.id)
            tb.state, tb.reason = "failed", f"internal error: {type(exc).__name__}: {exc}"[:1000]
        finally:
            with anyio.CancelScope(shield=True):
                if tb.state not in TERMINAL_TASK:
                    tb.state, tb.reason = "cancelled", tb.reason or "the plan was cancelled"
                tb.finished_at = time.time()
                active.discard(task.id)
                await self._changed(run)

    def _box_name(self, run: PlanRun, task: PlanTask, attempt: int) -> str:
        plan_part = name_from_branch(run.plan.name)[:20].strip("-") or "plan"
        task_part = name_from_branch(task.id)[:28].strip("-") or "task"
        return check_name(f"{plan_part}-{task_part}-{run.board.plan_id[2:8]}{attempt}")

    async def _start_point(self, run: PlanRun, task: PlanTask) -> None:
        """The task's branch in the user's repo: made at base when missing; a dependent's gets its
        prerequisites' fetched work merged in dependency order (the git-home land)."""
        repo = Path(run.board.repo)
        if await local.rev(repo, f"refs/heads/{task.branch}") is None:
            await local.git(repo, "branch", task.branch, f"refs/heads/{run.plan.base}")
        if not task.depends_on:
            return
        order = topo_order(run.plan)
        deps = sorted(task.depends_on, key=order.index)
        refs = [(d, run.task(d).ref or f"refs/heads/{run.task(d).branch}") for d in deps]
        outcome = await land_refs(repo, refs, task.branch, self.settings.home / "git" / "tmp")
        if not outcome.ok:
            raise TaskFailed(f"its prerequisites do not merge: {outcome.summary()}")

    async def _attempt(self, run: PlanRun, task: PlanTask, tb: TaskBoard) -> None:
        plan, fleet = run.plan, self.fleet
        tb.state, tb.check, tb.job_id, tb.last_line = "starting", None, None, None
        tb.started_at = tb.started_at or time.time()
        await self._changed(run)
        await self._start_point(run, task)
        name = self._box_name(run, task, tb.attempts)
        tb.box = name
        run.board.boxes_in_use += 1
        await self._changed(run)
        env = {n: os.environ[n] for n in plan.boxes.env_from if n in os.environ}
        try:
            try:
                await fleet.create_server(
                    name, ttl_s=plan.boxes.ttl, repo=run.board.repo, branch=task.branch, agent=plan.boxes.agent,
                    agent_install=plan.boxes.agent_install, agent_command=plan.boxes.agent_command, env=env or None,
                    size=plan.boxes.size, image=plan.boxes.image, location=plan.boxes.location,
                    provider=plan.boxes.provider)
            except (ProvisionFailed, BoxUnreachable) as exc:
                raise Reassign(f"box {name} could not be forged: {str(exc)[:300]}") from exc
            key = f"plan.{run.board.plan_id}.{task.id}.{tb.content_hash}"[:120]
            if task.command:
                started = await fleet.run(name, task.command, background=True, idempotency_key=key)
                job_id = started.job_id
            else:
                assert task.prompt is not None
                job_id = (await fleet.run_agent(name, task.prompt, idempotency_key=key)).job_id
            tb.job_id, tb.state, tb.agent_started_at = job_id, "running", time.time()
            await self._changed(run)
            st = await self._follow(run, tb, job_id)
            if st != "succeeded":
                raise TaskFailed(f"the {'command' if task.command else 'agent'} ended {st}"
                                 + (f": {tb.last_line}" if tb.last_line else ""))
            if task.check:
                tb.state = "checking"
                await self._changed(run)
                chk = await fleet.run(name, task.check, background=True, idempotency_key=key[:110] + ".check")
                assert chk.job_id is not None
                st = await self._follow(run, tb, chk.job_id)
                tb.check = "passed" if st == "succeeded" else "failed"
                if st != "succeeded":
                    raise TaskFailed(f"check {task.check!r} {st}" + (f": {tb.last_line}" if tb.last_line else ""))
            tb.state = "fetching"
            await self._changed(run)
            fetched = await fleet.fetch(name, local_branch=task.branch)
            tb.ref, tb.tip = fetched.ref, fetched.tip
            tb.state = "succeeded"
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await fleet.destroy_server(name)  # harvests first
                except (UnknownServer, ForgeError) as exc:
                    log.info("burning %s: %s", name, exc)
                run.board.boxes_in_use = max(0, run.board.boxes_in_use - 1)

    async def _follow(self, run: PlanRun, tb: TaskBoard, job_id: str) -> str:
        """Poll the job to its end (its state), updating the board's last line; Reassign when the box is gone
        or has not answered for HEARTBEAT_GRACE_S."""
        offsets = (0, 0)
        silent_since: float | None = None
        while True:
            try:
                st = await self.fleet.job_status(job_id, stdout_offset=offsets[0], stderr_offset=offsets[1],
                                                 wait_s=POLL_WAIT_S, max_bytes=16 * 1024)
            except (UnknownServer, UnknownJob) as exc:
                raise Reassign(f"box {tb.box} is gone ({str(exc)[:200]})") from exc
            except BoxUnreachable:
                st = None
            if st is not None and st.box_reachable:
                silent_since = None
                offsets = (st.stdout_offset, st.stderr_offset)
                line = _last_line(st.stdout, st.stderr)
                if line and line != tb.last_line:
                    tb.last_line = line
                    await self._changed(run)
                if st.state == "lost":
                    raise Reassign(f"box {tb.box} lost the job")
                if st.state in FINISHED_JOB:
                    return st.state
                continue
            silent_since = silent_since or time.monotonic()
            if time.monotonic() - silent_since > HEARTBEAT_GRACE_S:
                raise Reassign(f"box {tb.box} stopped answering")
            await anyio.sleep(1.0)  # a retry pace for an unreachable box, not a wait for state
