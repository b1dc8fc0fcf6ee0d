"""The store as the service sees it: async methods, each one trip to the store's single worker thread.

This is the only place that hops to a thread for SQLite; a lookup that needs two queries (a job and
its box, a record's data merged with new values) makes them in the same trip.
"""

from __future__ import annotations

import errno
import sqlite3
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from server.errors import StoreFull
from server.store.records import BoxRecord, JobRecord
from server.store.sqlite import Store

T = TypeVar("T")


class Repository:
    """Async access to one ``Store``; SQLite calls run one at a time on a worker thread."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: Path) -> Repository:
        return cls(await anyio.to_thread.run_sync(Store, path))

    @property
    def moved_aside(self) -> tuple[Path, str] | None:
        """Where an unreadable store file was moved at open, and why (None: it was fine)."""
        return self.store.moved_aside

    @property
    def fresh(self) -> bool:
        """The store was just made (first start, or lost, emptied or moved aside): rebuild what it should know."""
        return self.store.fresh

    def rebuilt(self) -> None:
        self.store.fresh = False

    def close(self) -> None:
        self.store.close()

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._limiter)
        except sqlite3.OperationalError as exc:
            if "full" in str(exc) or "disk I/O" in str(exc):
                raise StoreFull(self._full_message()) from exc
            raise
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise StoreFull(self._full_message()) from exc
            raise

    def _full_message(self) -> str:
        where = self.store.path.parent
        return (f"no space left on the filesystem of boxforge's state dir {where} (the store {self.store.path} could "
                f"not be written): free space there (old state.db.corrupt-* files, boxforge.log, other files on that "
                "filesystem) and retry; nothing already recorded was lost, and jobs on the boxes go on")

    # boxes

    async def insert_box(self, record: BoxRecord) -> None:
        """sqlite3.IntegrityError when a live box already has the name."""
        await self._run(self.store.insert_box, record)

    async def update_box(self, request_id: str, **changes: Any) -> None:
        await self._run(self.store.update_box, request_id, **changes)

    async def claim_box(self, request_id: str, current_name: str, /, **changes: Any) -> bool:
        """Compare-and-set on a ready box still named ``current_name`` (see Store.claim_box)."""
        return await self._run(lambda: self.store.claim_box(request_id, current_name, **changes))

    async def end_box(self, request_id: str, state: str, error: str | None = None) -> None:
        """A box record leaves the live states (destroyed or failed), now."""
        changes: dict[str, Any] = {"state": state, "step": None, "destroyed_at": time.time()}
        if error is not None:
            changes["error"] = error
        await self._run(self.store.update_box, request_id, **changes)

    async def merge_data(self, request_id: str, **values: Any) -> None:
        """Add ``values`` to a box record's provider/bootstrap data (read and write in one trip)."""
        def merge() -> None:
            rec = self.store.box_by_request(request_id)
            self.store.update_box(request_id, data={**((rec.data if rec else None) or {}), **values})

        await self._run(merge)

    async def live_box(self, name: str) -> BoxRecord | None:
        return await self._run(self.store.live_box, name)

    async def box_by_request(self, request_id: str) -> BoxRecord | None:
        return await self._run(self.store.box_by_request, request_id)

    async def live_boxes(self) -> list[BoxRecord]:
        return await self._run(self.store.live_boxes)

    async def live_names(self) -> list[str]:
        return await self._run(self.store.live_names)

    async def last_ended_box(self, name: str) -> tuple[BoxRecord, dict[str, Any] | None] | None:
        return await self._run(self.store.last_ended_box, name)

    async def failed_since(self, since: float) -> list[BoxRecord]:
        return await self._run(self.store.failed_since, since)

    # plans

    async def save_plan(self, plan_id: str, plan_key: str, name: str, state: str, doc: dict[str, Any]) -> None:
        await self._run(self.store.save_plan, plan_id, plan_key, name, state, doc)

    async def plan(self, plan_id: str) -> tuple[str, dict[str, Any]] | None:
        return await self._run(self.store.plan, plan_id)

    async def plans_by_key(self, plan_key: str) -> list[tuple[str, str]]:
        return await self._run(self.store.plans_by_key, plan_key)

    async def plans_of_repo(self, repo: str) -> list[dict[str, Any]]:
        return await self._run(self.store.plans_of_repo, repo)

    async def claim_plan(self, plan_id: str, token: str | None, owner: dict[str, Any]) -> bool:
        return await self._run(self.store.claim_plan, plan_id, token, owner)

    async def plans_in_state(self, state: str) -> list[str]:
        return await self._run(self.store.plans_in_state, state)

    async def board_records(self, plans_since: float) -> tuple[list[BoxRecord], dict[str, list[JobRecord]],
                                                               list[tuple[str, str, dict[str, Any]]]]:
        """What the board shows, in one trip: the live boxes, their jobs, and the plans running or recent."""
        def read() -> tuple[list[BoxRecord], dict[str, list[JobRecord]], list[tuple[str, str, dict[str, Any]]]]:
            boxes = self.store.live_boxes()
            return (boxes, self.store.jobs_of_boxes([b.request_id for b in boxes]),
                    self.store.plans_since(plans_since))

        return await self._run(read)

    # reviews

    async def save_review(self, request_id: str, box_name: str, state: str, note: str | None,
                          tip: str | None) -> None:
        await self._run(self.store.save_review, request_id, box_name, state, note, tip)

    async def reviews(self, request_ids: list[str]) -> dict[str, dict[str, Any]]:
        return await self._run(self.store.reviews, request_ids)

    # jobs

    async def insert_job(self, record: JobRecord) -> JobRecord:
        """The job inserted, or the earlier one with the same idempotency key on that box."""
        return await self._run(self.store.insert_job, record)

    async def delete_job(self, job_id: str) -> None:
        await self._run(self.store.delete_job, job_id)

    async def update_job(self, job_id: str, **changes: Any) -> None:
        await self._run(self.store.update_job, job_id, **changes)

    async def append_output(self, job_id: str, out: str, err: str) -> None:
        await self._run(self.store.append_output, job_id, out, err)

    async def job_and_box(self, job_id: str) -> tuple[JobRecord | None, BoxRecord | None]:
        """A job and the box record it ran on, in one trip."""
        def lookup() -> tuple[JobRecord | None, BoxRecord | None]:
            job = self.store.job(job_id)
            return job, self.store.box_by_request(job.request_id) if job is not None else None

        return await self._run(lookup)

    async def jobs_of_box(self, request_id: str) -> list[JobRecord]:
        return await self._run(self.store.jobs_of_box, request_id)

    async def recent_job_ids(self, limit: int = 5) -> list[str]:
        return await self._run(self.store.recent_job_ids, limit)

    # events

    async def add_event(self, kind: str, *, box_name: str | None = None, job_id: str | None = None,
                        detail: str | None = None) -> None:
        await self._run(self.store.add_event, kind, box_name=box_name, job_id=job_id, detail=detail)
