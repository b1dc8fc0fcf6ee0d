"""Synthetic store records for the board's HTTP tests and its render benchmark: boxes and jobs as the store
would hold them, with box-originated text chosen by the caller (no box behind them; the hub's probe is off)."""

from __future__ import annotations

import secrets
import time

from server.store import BoxRecord, JobRecord, Store


def add_box(store: Store, name: str, *, branch: str = "feat/x", error: str | None = None,
            ttl_s: float = 3600) -> BoxRecord:
    now = time.time()
    rec = BoxRecord(name=name, box_id=f"lb-{secrets.token_hex(4)}", provider="local", state="ready", step=None,
                    key_id=name, request_id="r-" + secrets.token_hex(6), host="127.0.0.1", ssh_port=1,
                    ssh_user="box", home="/home/box", project_dir="/home/box/project", repo="/tmp/repo",
                    branch=branch, base_commit="0" * 40, agent="none", size=None, location=None, data={},
                    error=error, created_at=now - 60, ready_at=now - 50, expires_at=now + ttl_s, destroyed_at=None)
    store.insert_box(rec)
    return rec


def add_job(store: Store, box: BoxRecord, command: str, *, state: str = "succeeded", out_tail: str = "",
            age_s: float = 30) -> JobRecord:
    now = time.time()
    job = JobRecord(job_id="j-" + secrets.token_hex(6), box_name=box.name, request_id=box.request_id,
                    command=command, cwd=box.project_dir, kind="command", idempotency_key=None, state=state,
                    exit_code=None if state == "running" else 0, created_at=now - age_s,
                    finished_at=None if state == "running" else now - 1, out_tail=out_tail)
    store.insert_job(job)
    return job
