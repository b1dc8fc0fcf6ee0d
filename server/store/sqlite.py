"""SQLite state (WAL): the boxes, jobs, plans, reviews and events tables and their synchronous access.

A cache and an audit trail, not the truth about boxes: the provider's labels say which
boxes exist and when they expire, the boxes' job dirs say what jobs did. The store maps
names to boxes and jobs to boxes, and remembers what a user asked for.

No secret is ever written here: env values are not stored, repo URLs are stored with
their credentials stripped.

The methods are synchronous and short; only ``server.store.repository`` calls them (from its
one worker thread). Several processes (the MCP server and the CLI) may share one database.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

from server.store.records import TAIL_CHARS, BoxRecord, JobRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS boxes (
    name TEXT NOT NULL,
    box_id TEXT,
    provider TEXT NOT NULL,
    state TEXT NOT NULL,
    step TEXT,
    key_id TEXT NOT NULL,
    request_id TEXT NOT NULL UNIQUE,
    host TEXT,
    ssh_port INTEGER,
    ssh_user TEXT,
    home TEXT,
    project_dir TEXT,
    repo TEXT,
    branch TEXT,
    base_commit TEXT,
    agent TEXT,
    size TEXT,
    location TEXT,
    data TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    ready_at REAL,
    expires_at REAL NOT NULL,
    destroyed_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS boxes_live_name ON boxes(name) WHERE state IN ('provisioning', 'ready');
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    box_name TEXT NOT NULL,
    request_id TEXT NOT NULL,
    command TEXT NOT NULL,
    cwd TEXT,
    kind TEXT NOT NULL DEFAULT 'command',
    idempotency_key TEXT,
    state TEXT NOT NULL,
    exit_code INTEGER,
    created_at REAL NOT NULL,
    finished_at REAL,
    out_tail TEXT,
    err_tail TEXT,
    secret_names TEXT,
    request_hash TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs(request_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_box ON jobs(request_id);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE IF NOT EXISTS plans (
    plan_id TEXT PRIMARY KEY,
    plan_key TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    doc TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS plans_key ON plans(plan_key);
CREATE TABLE IF NOT EXISTS reviews (
    request_id TEXT PRIMARY KEY,
    box_name TEXT NOT NULL,
    state TEXT NOT NULL,
    note TEXT,
    tip TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    box_name TEXT,
    job_id TEXT,
    detail TEXT
);
"""

# Columns added after the first release, with their types: added to older databases on open.
_MIGRATIONS = {"jobs": {"out_tail": "TEXT", "err_tail": "TEXT", "secret_names": "TEXT", "request_hash": "TEXT"}}

_BOX_FIELDS = [f.name for f in fields(BoxRecord)]
_JOB_FIELDS = [f.name for f in fields(JobRecord)]


def _box(row: sqlite3.Row) -> BoxRecord:
    values = dict(row)
    values["data"] = json.loads(values["data"]) if values["data"] else None
    return BoxRecord(**values)


def _job(row: sqlite3.Row) -> JobRecord:
    return JobRecord(**dict(row))


class Store:
    """``fresh``: this database was just made (a first start, or a store that was lost, emptied or moved
    aside): what it should know must be rebuilt from the providers. ``moved_aside``: where a corrupt file
    went, and why."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.moved_aside: tuple[Path, str] | None = None
        try:
            self._open()
        except sqlite3.DatabaseError as exc:  # not a database, or damaged: a cache, so move it aside
            self._db.close()
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                part = path.with_name(path.name + suffix)
                if part.exists():
                    part.rename(aside.with_name(aside.name + suffix))
            self.moved_aside = (aside, str(exc))
            self._open()

    def _open(self) -> None:
        path = self.path
        self._db = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        path.chmod(0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._lock:
            self._db.executescript(SCHEMA)
            for table, columns in _MIGRATIONS.items():
                present = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
                for column, kind in columns.items():
                    if column not in present:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            made = self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('created', ?)",
                                    (str(time.time()),))
            self.fresh = made.rowcount == 1

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # boxes

    def insert_box(self, record: BoxRecord) -> None:
        """Insert a new box; sqlite3.IntegrityError when a live box already has the name."""
        values = [getattr(record, f) for f in _BOX_FIELDS]
        values[_BOX_FIELDS.index("data")] = json.dumps(record.data) if record.data is not None else None
        with self._tx() as db:
            db.execute(
                f"INSERT INTO boxes ({', '.join(_BOX_FIELDS)}) VALUES ({', '.join('?' * len(_BOX_FIELDS))})",
                values,
            )

    def update_box(self, request_id: str, **changes: Any) -> None:
        if "data" in changes and changes["data"] is not None:
            changes["data"] = json.dumps(changes["data"])
        assignments = ", ".join(f"{key} = ?" for key in changes)
        with self._tx() as db:
            db.execute(f"UPDATE boxes SET {assignments} WHERE request_id = ?", (*changes.values(), request_id))

    def claim_box(self, request_id: str, current_name: str, /, **changes: Any) -> bool:
        """Compare-and-set: apply ``changes`` only while the box is ready and still named ``current_name``; whether this
        call made the change (two claims of one box: exactly one wins). sqlite3.IntegrityError when a new name
        is taken by a live box."""
        if "data" in changes and changes["data"] is not None:
            changes["data"] = json.dumps(changes["data"])
        assignments = ", ".join(f"{key} = ?" for key in changes)
        with self._tx() as db:
            cur = db.execute(f"UPDATE boxes SET {assignments} WHERE request_id = ? AND name = ? AND state = 'ready'",
                             (*changes.values(), request_id, current_name))
            return cur.rowcount == 1

    def live_box(self, name: str) -> BoxRecord | None:
        rows = self._query("SELECT * FROM boxes WHERE name = ? AND state IN ('provisioning', 'ready')", (name,))
        return _box(rows[0]) if rows else None

    def box_by_request(self, request_id: str) -> BoxRecord | None:
        rows = self._query("SELECT * FROM boxes WHERE request_id = ?", (request_id,))
        return _box(rows[0]) if rows else None

    def live_boxes(self) -> list[BoxRecord]:
        rows = self._query("SELECT * FROM boxes WHERE state IN ('provisioning', 'ready') ORDER BY created_at")
        return [_box(r) for r in rows]

    def live_names(self) -> list[str]:
        return [b.name for b in self.live_boxes()]

    def last_ended_box(self, name: str) -> tuple[BoxRecord, dict[str, Any] | None] | None:
        """The most recent record of a box of that name that has ended (burned or failed), with the last harvest
        event (kind, ts, detail) of its life; None when no box ever had the name."""
        rows = self._query("SELECT * FROM boxes WHERE name = ? AND state NOT IN ('provisioning', 'ready') "
                           "ORDER BY COALESCE(destroyed_at, created_at) DESC LIMIT 1", (name,))
        if not rows:
            return None
        rec = _box(rows[0])
        events = self._query("SELECT kind, ts, detail FROM events WHERE box_name = ? AND ts >= ? AND kind IN "
                             "('harvest', 'harvest-failed') ORDER BY id DESC LIMIT 1", (name, rec.created_at))
        return rec, dict(events[0]) if events else None

    def failed_since(self, since: float) -> list[BoxRecord]:
        """Boxes whose create failed (and that were burned) at or after ``since``."""
        rows = self._query("SELECT * FROM boxes WHERE state = 'failed' AND destroyed_at >= ? ORDER BY created_at",
                           (since,))
        return [_box(r) for r in rows]

    # jobs

    def insert_job(self, record: JobRecord) -> JobRecord:
        """Insert a job; with an idempotency key already used on that box, return the earlier job."""
        with self._tx() as db:
            if record.idempotency_key is not None:
                row = db.execute(
                    "SELECT * FROM jobs WHERE request_id = ? AND idempotency_key = ?",
                    (record.request_id, record.idempotency_key),
                ).fetchone()
                if row is not None:
                    return _job(row)
            db.execute(
                f"INSERT INTO jobs ({', '.join(_JOB_FIELDS)}) VALUES ({', '.join('?' * len(_JOB_FIELDS))})",
                [getattr(record, f) for f in _JOB_FIELDS],
            )
        return record

    def delete_job(self, job_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    def update_job(self, job_id: str, **changes: Any) -> None:
        assignments = ", ".join(f"{key} = ?" for key in changes)
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET {assignments} WHERE job_id = ?", (*changes.values(), job_id))

    def append_output(self, job_id: str, out: str, err: str) -> None:
        """Keep the last TAIL_CHARS of each stream as read (already redacted), for a box that vanishes."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET out_tail = substr(coalesce(out_tail, '') || ?, -?), "
                "err_tail = substr(coalesce(err_tail, '') || ?, -?) WHERE job_id = ?",
                (out, TAIL_CHARS, err, TAIL_CHARS, job_id),
            )

    def job(self, job_id: str) -> JobRecord | None:
        rows = self._query("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def jobs_of_box(self, request_id: str) -> list[JobRecord]:
        rows = self._query("SELECT * FROM jobs WHERE request_id = ? ORDER BY created_at", (request_id,))
        return [_job(r) for r in rows]

    def jobs_of_boxes(self, request_ids: list[str]) -> dict[str, list[JobRecord]]:
        """request_id -> its jobs, oldest first, for many boxes in one query."""
        found: dict[str, list[JobRecord]] = {r: [] for r in request_ids}
        if request_ids:
            rows = self._query(f"SELECT * FROM jobs WHERE request_id IN ({', '.join('?' * len(request_ids))}) "
                               "ORDER BY created_at", tuple(request_ids))
            for row in rows:
                found[row["request_id"]].append(_job(row))
        return found

    def recent_job_ids(self, limit: int = 5) -> list[str]:
        rows = self._query("SELECT job_id FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,))
        return [r["job_id"] for r in rows]

    # plans: the plan, its tasks' states and attempts, as one JSON document (no secret: env names only)

    def save_plan(self, plan_id: str, plan_key: str, name: str, state: str, doc: dict[str, Any]) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO plans (plan_id, plan_key, name, state, doc, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(plan_id) DO UPDATE SET state = excluded.state, "
                "doc = excluded.doc, updated_at = excluded.updated_at",
                (plan_id, plan_key, name, state, json.dumps(doc), now, now),
            )

    def plan(self, plan_id: str) -> tuple[str, dict[str, Any]] | None:
        rows = self._query("SELECT state, doc FROM plans WHERE plan_id = ?", (plan_id,))
        return (rows[0]["state"], json.loads(rows[0]["doc"])) if rows else None

    def plans_by_key(self, plan_key: str) -> list[tuple[str, str]]:
        """(plan_id, state) of the plans with this content, newest first."""
        rows = self._query("SELECT plan_id, state FROM plans WHERE plan_key = ? ORDER BY created_at DESC",
                           (plan_key,))
        return [(r["plan_id"], r["state"]) for r in rows]

    def plans_since(self, since: float) -> list[tuple[str, str, dict[str, Any]]]:
        """(plan_id, state, doc) of the plans running or updated at or after ``since``, oldest first."""
        rows = self._query("SELECT plan_id, state, doc FROM plans WHERE state = 'running' OR updated_at >= ? "
                           "ORDER BY created_at", (since,))
        return [(r["plan_id"], r["state"], json.loads(r["doc"])) for r in rows]

    def plans_of_repo(self, repo: str) -> list[dict[str, Any]]:
        """The documents of the plans run on ``repo``, oldest first."""
        rows = self._query("SELECT doc FROM plans WHERE json_extract(doc, '$.board.repo') = ? ORDER BY created_at",
                           (repo,))
        return [json.loads(r["doc"]) for r in rows]

    def claim_plan(self, plan_id: str, token: str | None, owner: dict[str, Any]) -> bool:
        """Make ``owner`` the process driving a running plan, if its owner's token is still ``token``
        (compare and set: of two processes resuming a plan, one wins)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE plans SET doc = json_set(doc, '$.owner', json(?)), updated_at = ? WHERE plan_id = ? AND "
                "state = 'running' AND json_extract(doc, '$.owner.token') IS ?",
                (json.dumps(owner), time.time(), plan_id, token))
            return cur.rowcount == 1

    def plans_in_state(self, state: str) -> list[str]:
        rows = self._query("SELECT plan_id FROM plans WHERE state = ? ORDER BY created_at", (state,))
        return [r["plan_id"] for r in rows]

    # reviews: the board's review state of a box's work (one row per box create; a person's note, no secret)

    def save_review(self, request_id: str, box_name: str, state: str, note: str | None, tip: str | None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO reviews (request_id, box_name, state, note, tip, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(request_id) DO UPDATE SET state = excluded.state, note = excluded.note, "
                "tip = excluded.tip, updated_at = excluded.updated_at",
                (request_id, box_name, state, note, tip, time.time()),
            )

    def reviews(self, request_ids: list[str]) -> dict[str, dict[str, Any]]:
        """request_id -> {state, note, tip, updated_at} for the given boxes that have a review row."""
        if not request_ids:
            return {}
        rows = self._query(f"SELECT * FROM reviews WHERE request_id IN ({', '.join('?' * len(request_ids))})",
                           tuple(request_ids))
        return {r["request_id"]: dict(r) for r in rows}

    # events

    def add_event(self, kind: str, *, box_name: str | None = None, job_id: str | None = None,
                  detail: str | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO events (ts, kind, box_name, job_id, detail) VALUES (?, ?, ?, ?, ?)",
                (time.time(), kind, box_name, job_id, detail),
            )

    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._query("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]
