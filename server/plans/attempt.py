"""One task of a plan on boxes: its start point, a box forged for it (within the budget), ``require:``
checked, the agent (or command) as a background job followed to its end, ``check``, the work fetched home,
the box burned (harvested first). A box that dies is replaced, up to ``retries`` times.

An attempt re-attached after an orchestrator restart starts at the job: the job keys (plan id, task id,
content hash) make ``run_agent`` / ``run`` return the job already running instead of starting it again."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from providers.capabilities import HasPricing, Price
from server.domain.durations import parse_ttl
from server.domain.names import check_name, name_from_branch
from server.errors import BoxUnreachable, ForgeError, ProvisionFailed, UnknownJob, UnknownServer
from server.git import local
from server.git.land import land_refs
from server.plans import budget, require
from server.plans.board import TERMINAL_TASK, PlanBoard, TaskBoard
from server.plans.model import Plan, PlanTask
from server.plans.validate import topo_order

if TYPE_CHECKING:
    from server.service.fleet import Fleet

log = logging.getLogger("boxforge.plans")

POLL_WAIT_S = 10.0  # one job_status long-poll; it returns at once when the job ends
HEARTBEAT_GRACE_S = 20.0  # a box that does not answer for this long has its task reassigned
FINISHED_JOB = frozenset({"succeeded", "failed", "killed"})
AT_WORK = frozenset({"running", "checking", "fetching"})  # the states an attempt is re-attached in


class Reassign(Exception):
    """The box died or could not be forged: try the task on another box (up to ``retries``)."""


class TaskFailed(Exception):
    """The task failed for a reason that another box would not change."""


class BudgetStop(Exception):
    """The next box could take the plan over its budget: the plan stops forging."""


@dataclass
class PlanRun:
    plan: Plan
    board: PlanBoard
    key: str
    spend: list[budget.Spend] = field(default_factory=list)
    stopped: str | None = None  # why the plan stopped forging (budget)
    owner: dict[str, object] = field(default_factory=dict)
    changed: anyio.Event = field(default_factory=anyio.Event)
    finished: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope | None = None
    forging: anyio.Lock = field(default_factory=anyio.Lock)

    def notify(self) -> None:
        event, self.changed = self.changed, anyio.Event()
        event.set()

    def task(self, task_id: str) -> TaskBoard:
        return next(t for t in self.board.tasks if t.id == task_id)


def last_line(*chunks: str) -> str | None:
    for chunk in chunks:
        lines = [line.strip() for line in chunk.splitlines() if line.strip()]
        if lines:
            return lines[-1][:200]
    return None


def job_key(run: PlanRun, tb: TaskBoard) -> str:
    return f"plan.{run.board.plan_id}.{tb.id}.{tb.content_hash}"[:120]


async def _is_ancestor(repo: Path, older: str, newer: str) -> bool:
    code, _, _ = await local.git(repo, "merge-base", "--is-ancestor", older, newer, check=False)
    return code == 0


async def fast_forward(repo: Path, branch: str, refs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Move ``branch`` forward to each ref in turn while the ref descends from it; the refs left to merge."""
    for i, (_, ref) in enumerate(refs):
        code, out, _ = await local.git(repo, "rev-parse", f"refs/heads/{branch}", f"{ref}^{{commit}}", check=False)
        if code != 0:
            return refs[i:]
        tip, target = out.split()
        if tip != target:
            if not await _is_ancestor(repo, tip, target):
                return refs[i:]
            await local.git(repo, "update-ref", f"refs/heads/{branch}", target, tip)
    return []


class Attempts:
    """Runs a plan's tasks on boxes; ``changed`` saves the plan and wakes its watchers."""

    def __init__(self, fleet: Fleet, changed: Callable[[PlanRun], Awaitable[None]]) -> None:
        self.fleet = fleet
        self.settings = fleet.settings
        self.changed = changed

    async def run_task(self, run: PlanRun, task: PlanTask, slots: anyio.Semaphore, active: set[str]) -> None:
        """The task to its end: reassigned while retries last; a failure, block or cancel said on the board."""
        tb = run.task(task.id)
        try:
            async with slots:
                await self._tries(run, task, tb)
        except TaskFailed as exc:
            tb.state, tb.reason = "failed", str(exc)
        except BudgetStop as exc:
            tb.state, tb.reason = "blocked", str(exc)
        except ForgeError as exc:
            tb.state, tb.reason = "failed", str(exc)[:1000]
        except Exception as exc:
            log.exception("plan %s task %s", run.board.plan_id, task.id)
            tb.state, tb.reason = "failed", f"internal error: {type(exc).__name__}: {exc}"[:1000]
        finally:
            with anyio.CancelScope(shield=True):
                if tb.state not in TERMINAL_TASK:
                    tb.state, tb.reason = "cancelled", tb.reason or "the plan was cancelled"
                tb.finished_at = tb.finished_at if tb.state == "succeeded" and tb.finished_at else time.time()
                active.discard(task.id)
                await self.changed(run)

    async def _tries(self, run: PlanRun, task: PlanTask, tb: TaskBoard) -> None:
        retries = task.retries if task.retries is not None else run.plan.retries
        resumed = tb.state in AT_WORK and tb.box is not None
        if not resumed:
            tb.attempts += 1
        while True:
            try:
                await (self._resume(run, task, tb) if resumed else self._attempt(run, task, tb))
                return
            except Reassign as exc:
                if tb.attempts > retries:
                    raise TaskFailed(f"{exc}; no retries left ({retries})") from exc
                tb.reason = f"attempt {tb.attempts}: {exc}; reassigned to a new box"
                tb.state, resumed = "waiting_box", False
                tb.attempts += 1
                await self.changed(run)

    def _box_name(self, run: PlanRun, task: PlanTask, attempt: int) -> str:
        plan_part = name_from_branch(run.plan.name)[:20].strip("-") or "plan"
        task_part = name_from_branch(task.id)[:28].strip("-") or "task"
        return check_name(f"{plan_part}-{task_part}-{run.board.plan_id[2:8]}{attempt}")

    async def _start_point(self, run: PlanRun, task: PlanTask) -> None:
        """The task's branch in the user's repo: made at base when missing; a dependent's gets its
        prerequisites' fetched work in dependency order: a new branch is made at (then fast-forwarded to)
        prerequisites that descend from base, the rest merged with the git-home land."""
        repo = Path(run.board.repo)
        order = topo_order(run.plan)
        deps = sorted(task.depends_on, key=order.index)
        refs = [(d, run.task(d).ref or f"refs/heads/{run.task(d).branch}") for d in deps]
        made = await local.rev(repo, f"refs/heads/{task.branch}") is None
        if made:  # a new branch is checked out nowhere: it may simply be moved
            start = f"refs/heads/{run.plan.base}"
            if refs and await _is_ancestor(repo, start, refs[0][1]):
                start, refs = refs[0][1], refs[1:]
            await local.git(repo, "branch", task.branch, start)
            refs = await fast_forward(repo, task.branch, refs)
        if not refs:
            return
        outcome = await land_refs(repo, refs, task.branch, self.settings.home / "git" / "tmp")
        if not outcome.ok:
            raise TaskFailed(f"its prerequisites do not merge: {outcome.summary()}")

    async def _attempt(self, run: PlanRun, task: PlanTask, tb: TaskBoard) -> None:
        tb.state, tb.check, tb.job_id, tb.last_line = "starting", None, None, None
        tb.started_at = tb.started_at or time.time()
        run.notify()  # saved with the box's name, next
        await self._start_point(run, task)
        name = self._box_name(run, task, tb.attempts)
        await self._reserve(run, name)  # BudgetStop before anything is forged
        tb.box = name
        run.board.boxes_in_use += 1
        try:
            await self._forge(run, task, name)
            await self._check_require(run, name)
            await self._work(run, task, tb, name)
        except UnknownServer as exc:  # burned under the task (by hand, the reaper)
            raise Reassign(f"box {name} is gone ({str(exc)[:200]})") from exc
        finally:
            await self._burn(run, name)

    async def _resume(self, run: PlanRun, task: PlanTask, tb: TaskBoard) -> None:
        """Re-attach to a box whose orchestrator died: the same jobs, followed on; a box gone is reassigned."""
        assert tb.box is not None
        name = tb.box
        try:
            try:
                await self.fleet.server_info(name)
            except UnknownServer as exc:
                raise Reassign(f"box {name} is gone after the orchestrator restarted") from exc
            await self._work(run, task, tb, name)
        except UnknownServer as exc:
            raise Reassign(f"box {name} is gone ({str(exc)[:200]})") from exc
        finally:
            await self._burn(run, name)

    async def _forge(self, run: PlanRun, task: PlanTask, name: str) -> None:
        plan = run.plan
        await self.changed(run)
        env = {n: os.environ[n] for n in plan.boxes.env_from if n in os.environ}
        started = time.monotonic()
        try:
            await self.fleet.create_server(
                name, ttl_s=plan.boxes.ttl, repo=run.board.repo, branch=task.branch, agent=plan.boxes.agent,
                agent_install=plan.boxes.agent_install, agent_command=plan.boxes.agent_command, env=env or None,
                size=plan.boxes.size, image=plan.boxes.image, location=plan.boxes.location,
                provider=plan.boxes.provider)
        except (ProvisionFailed, BoxUnreachable) as exc:
            raise Reassign(f"box {name} could not be forged: {str(exc)[:300]}") from exc
        run.task(task.id).forge_s = round(time.monotonic() - started, 3)

    async def _quote(self, run: PlanRun) -> Price | None:
        boxes = run.plan.boxes
        prov = self.fleet.provider(boxes.provider or self.settings.provider)
        if not isinstance(prov, HasPricing):
            return None
        with anyio.fail_after(60):
            return await prov.quote(boxes.size, boxes.location, boxes.image)

    async def _reserve(self, run: PlanRun, name: str) -> None:
        """The new box's ceiling reserved against the budget (BudgetStop when it does not fit)."""
        if run.stopped:
            raise BudgetStop(run.stopped)
        price = await self._quote(run)
        if price is None:
            return
        ttl_s = run.plan.boxes.ttl or parse_ttl(self.settings.default_ttl)
        async with run.forging:
            spend = budget.Spend(name, price.hourly, price.monthly, int(ttl_s), time.time())
            why = budget.refusal(run.spend, spend, run.plan.budget) if run.plan.budget is not None else None
            if why:
                run.stopped = why
                raise BudgetStop(why)
            run.spend.append(spend)

    async def _check_require(self, run: PlanRun, name: str) -> None:
        wanted = run.plan.require
        if not wanted:
            return
        probe = await self.fleet.run(name, require.probe_command(wanted), timeout_s=60)
        problems = require.unmet(wanted, probe.stdout)
        if problems:
            raise TaskFailed(f"box {name} does not meet require: {'; '.join(problems)} (pick an image or "
                             "boxes.agent_install that brings them, or change require)")

    async def _work(self, run: PlanRun, task: PlanTask, tb: TaskBoard, name: str) -> None:
        fleet, key = self.fleet, job_key(run, tb)
        if task.command:
            tb.job_id = (await fleet.run(name, task.command, background=True, idempotency_key=key)).job_id
        else:
            assert task.prompt is not None
            tb.job_id = (await fleet.run_agent(name, task.prompt, idempotency_key=key)).job_id
        if tb.state not in AT_WORK:
            tb.state, tb.agent_started_at = "running", time.time()
        await self.changed(run)
        assert tb.job_id is not None
        st = await self._follow(run, tb, tb.job_id)
        if st != "succeeded":
            raise TaskFailed(f"the {'command' if task.command else 'agent'} ended {st}"
                             + (f": {tb.last_line}" if tb.last_line else ""))
        if task.check:
            await self._acceptance(run, task, tb, name, key)
        tb.state = "fetching"
        await self.changed(run)
        fetched = await fleet.fetch(name, local_branch=task.branch)
        tb.ref, tb.tip = fetched.ref, fetched.tip
        tb.state, tb.finished_at = "succeeded", time.time()
        await self.changed(run)  # its dependents may start while its box burns

    async def _acceptance(self, run: PlanRun, task: PlanTask, tb: TaskBoard, name: str, key: str) -> None:
        assert task.check is not None
        tb.state = "checking"
        await self.changed(run)
        chk = await self.fleet.run(name, task.check, background=True, idempotency_key=key[:110] + ".check")
        assert chk.job_id is not None
        st = await self._follow(run, tb, chk.job_id)
        tb.check = "passed" if st == "succeeded" else "failed"
        if st != "succeeded":
            raise TaskFailed(f"check {task.check!r} {st}" + (f": {tb.last_line}" if tb.last_line else ""))

    async def _burn(self, run: PlanRun, name: str) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self.fleet.destroy_server(name)  # harvests first
            except (UnknownServer, ForgeError) as exc:
                log.info("burning %s: %s", name, exc)
            for spend in run.spend:
                if spend.name == name and spend.burned_at is None:
                    spend.burned_at = time.time()
            run.board.boxes_in_use = max(0, run.board.boxes_in_use - 1)

    async def _still_there(self, tb: TaskBoard) -> None:
        """Reassign at once when the box that does not answer was burned (by hand, by the reaper)."""
        assert tb.box is not None
        try:
            await self.fleet.server_info(tb.box)
        except UnknownServer as exc:
            raise Reassign(f"box {tb.box} is gone ({str(exc)[:200]})") from exc

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
            if st is None or not st.box_reachable:
                await self._still_there(tb)
                silent_since = silent_since or time.monotonic()
                if time.monotonic() - silent_since > HEARTBEAT_GRACE_S:
                    raise Reassign(f"box {tb.box} stopped answering")
                await anyio.sleep(1.0)  # a retry pace for an unreachable box, not a wait for state
                continue
            silent_since = None
            offsets = (st.stdout_offset, st.stderr_offset)
            line = last_line(st.stdout, st.stderr)
            if line and line != tb.last_line:
                tb.last_line = line
                await self.changed(run)
            if st.state == "lost":
                raise Reassign(f"box {tb.box} lost the job")
            if st.state in FINISHED_JOB:
                return st.state

