"""The hub: keeps the board's fleet document current and wakes the pages that follow it.

Three small loops, all in a task group of the serving lifespan:
- store: SQLite's ``data_version`` on a connection of its own (it changes on every commit of any process:
  a CLI ``run`` or ``burn``, the MCP server, this one) or a poke → rebuild the document; publish it when it
  differs from the last one.
- jobs: a long-poll on the running jobs (``Fleet.wait_jobs``: it returns the moment one ends and records its
  end in the store), then the new output of the jobs that grew, read by offset through the service's redacted
  job status, for each job's last line.
- probe: every ``probe_s``, whether each ready box answers, and a reconcile with the providers.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from server.board.text import last_line
from server.board.view import fleet_view, plans_view, tasks_by_box
from server.domain.states import BoxStatus, JobState
from server.errors import ForgeError

if TYPE_CHECKING:
    from server.service import Fleet

log = logging.getLogger("boxforge.board")
PLANS_SHOWN_S = 3600.0  # ended plans stay on the board this long
TAIL_BYTES = 4096  # output read for a job's last line the first time it is seen


class BoardHub:
    """The fleet document (``doc``, ``version``) and the loops that keep it current while ``serving``."""

    def __init__(self, *, poll_s: float = 0.2, job_wait_s: float = 2.0, probe_s: float = 15.0,
                 first_probe_s: float = 0.5) -> None:
        self.poll_s = poll_s
        self.job_wait_s = job_wait_s
        self.probe_s = probe_s
        self.first_probe_s = first_probe_s
        self.doc: dict[str, Any] = {"boxes": [], "count": 0, "running_jobs": 0, "cost_so_far": None, "plans": []}
        self.version = 0
        self._fleet: Fleet | None = None
        self._published = anyio.Event()
        self._poke = anyio.Event()
        self._running: frozenset[str] = frozenset()
        self._running_changed = anyio.Event()
        self._jobs_scope: anyio.CancelScope | None = None
        self._reachable: dict[str, bool | None] = {}
        self._last_lines: dict[str, str | None] = {}
        self._offsets: dict[str, tuple[int, int]] = {}
        self.refreshes = 0

    @property
    def fleet(self) -> Fleet:
        if self._fleet is None:
            raise RuntimeError("the board is not serving yet")
        return self._fleet

    @asynccontextmanager
    async def serving(self, fleet: Fleet) -> AsyncIterator[BoardHub]:
        """Run the loops over ``fleet`` until the context ends."""
        self._fleet = fleet
        await self.refresh()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_store, fleet)
            tg.start_soon(self._watch_jobs, fleet)
            tg.start_soon(self._probe, fleet)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    def poke(self) -> None:
        """Something changed that the store may not show yet (an action of this process): look now."""
        self._poke.set()

    async def changed_after(self, version: int, timeout_s: float) -> int:
        """The document's version once it is past ``version`` (or the current one after ``timeout_s``)."""
        with anyio.move_on_after(timeout_s):
            while self.version <= version:
                await self._published.wait()
        return self.version

    # the document

    async def refresh(self) -> bool:
        """Rebuild the document from the store; True when it changed (and was published)."""
        fleet = self.fleet
        now = time.time()
        boxes, jobs, plan_rows = await fleet.repo.board_records(now - PLANS_SHOWN_S)
        plans = plans_view(plan_rows, now)
        doc = fleet_view([(rec, fleet.info(rec, now)) for rec in boxes], jobs, now, reachable=self._reachable,
                         last_lines=self._last_lines, tasks=tasks_by_box(plans))
        doc["plans"] = plans
        self.refreshes += 1
        running = frozenset(j.job_id for rec in boxes for j in jobs.get(rec.request_id, ())
                            if j.state == JobState.RUNNING and rec.state == BoxStatus.READY)
        shown = {j.job_id for rec in boxes for j in jobs.get(rec.request_id, ())}
        for job_id in [j for j in self._last_lines if j not in shown]:  # jobs of boxes gone
            del self._last_lines[job_id]
        if running != self._running:
            self._running = running
            self._forget_ended(running)
            if self._jobs_scope is not None:
                self._jobs_scope.cancel()  # the job loop starts over with the new set
            self._running_changed.set()
        if _comparable(doc) == _comparable(self.doc):
            return False
        self.doc = doc
        self.version += 1
        self._published.set()
        self._published = anyio.Event()
        return True

    def _forget_ended(self, running: frozenset[str]) -> None:
        for job_id in [j for j in self._offsets if j not in running]:
            self._offsets.pop(job_id, None)

    # the loops

    async def _watch_store(self, fleet: Fleet) -> None:
        conn = await anyio.to_thread.run_sync(_version_connection, str(fleet.settings.db_path))
        try:
            seen = -1
            while True:
                with anyio.move_on_after(self.poll_s):
                    await self._poke.wait()
                poked = self._poke.is_set()
                self._poke = anyio.Event()
                version = await anyio.to_thread.run_sync(_data_version, conn)
                if poked or version != seen:
                    seen = version
                    try:
                        await self.refresh()
                    except Exception:  # the board (and the MCP server it lives in) must outlast a bad read
                        log.exception("the board could not read the store")
        finally:
            conn.close()

    async def _watch_jobs(self, fleet: Fleet) -> None:
        while True:
            if not self._running:
                await self._running_changed.wait()
                self._running_changed = anyio.Event()
                continue
            ids = sorted(self._running)
            started = time.monotonic()
            with anyio.CancelScope() as scope:
                self._jobs_scope = scope
                try:
                    result = await fleet.wait_jobs(ids, wait_s=self.job_wait_s)
                    if result.ended:
                        self.poke()
                    await self._read_tails(fleet, [(b.job_id, b.stdout_size or 0, b.stderr_size or 0)
                                                   for b in result.jobs if b.state == JobState.RUNNING])
                except ForgeError as exc:
                    log.info("board job watch: %s", exc)
                except Exception:  # never let the watch take the server down; look again in a second
                    log.exception("board job watch")
            self._jobs_scope = None
            # a box that does not answer makes the wait return at once: do not spin on it
            if not scope.cancel_called:
                await anyio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))

    async def _read_tails(self, fleet: Fleet, sizes: list[tuple[str, int, int]]) -> None:
        changed = False
        for job_id, out_size, err_size in sizes:
            out_at, err_at = self._offsets.get(job_id, (max(0, out_size - TAIL_BYTES), max(0, err_size - TAIL_BYTES)))
            if (out_at, err_at) == (out_size, err_size) and job_id in self._last_lines:
                continue
            st = await fleet.job_status(job_id, stdout_offset=out_at, stderr_offset=err_at, max_bytes=2 * TAIL_BYTES)
            self._offsets[job_id] = (st.stdout_offset, st.stderr_offset)
            line = last_line(st.stdout) or last_line(st.stderr) or self._last_lines.get(job_id)
            if line != self._last_lines.get(job_id):
                self._last_lines[job_id] = line
                changed = True
        if changed:
            self.poke()

    async def _probe(self, fleet: Fleet) -> None:
        await anyio.sleep(self.first_probe_s)
        while True:
            try:
                await self._probe_once(fleet)
            except Exception:  # as above: a failed probe is logged and tried again later
                log.exception("board probe")
            await anyio.sleep(self.probe_s)

    async def _probe_once(self, fleet: Fleet) -> None:
        with suppress(ForgeError):
            await fleet.reconcile()
        recs = [r for r in await fleet.repo.live_boxes() if r.state == BoxStatus.READY]
        found: dict[str, bool | None] = {}
        async with anyio.create_task_group() as tg:
            for rec in recs:
                tg.start_soon(_answers, fleet, rec, found)
        if found != self._reachable:
            self._reachable = found
            self.poke()


async def _answers(fleet: Fleet, rec: Any, found: dict[str, bool | None]) -> None:
    found[rec.name] = None  # no answer within the deadline: unknown
    with anyio.move_on_after(10):
        found[rec.name] = await fleet.access.answers(rec)


def _comparable(doc: dict[str, Any]) -> str:
    """The document without what changes by itself every second (elapsed times: the page counts them)."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("elapsed_s", "time_left_s", "cost_so_far")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return json.dumps(strip(doc), sort_keys=True)


def _version_connection(path: str) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])
