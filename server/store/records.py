"""The records the store keeps: one per box create, one per job. Frozen; no secret in any field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.domain.states import LIVE_STATES

TAIL_CHARS = 8192  # the last output kept per job stream, for a box that vanishes


@dataclass(frozen=True)
class BoxRecord:
    name: str
    box_id: str | None
    provider: str
    state: str
    step: str | None
    key_id: str
    request_id: str
    host: str | None
    ssh_port: int | None
    ssh_user: str | None
    home: str | None
    project_dir: str | None
    repo: str | None
    branch: str | None
    base_commit: str | None
    agent: str | None
    size: str | None
    location: str | None
    data: dict[str, Any] | None
    error: str | None
    created_at: float
    ready_at: float | None
    expires_at: float
    destroyed_at: float | None

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    box_name: str
    request_id: str
    command: str
    cwd: str | None
    kind: str
    idempotency_key: str | None
    state: str
    exit_code: int | None
    created_at: float
    finished_at: float | None
    out_tail: str | None = None
    err_tail: str | None = None
    secret_names: str | None = None  # names of the job's secret env (never values): redaction must fetch them
    request_hash: str | None = None  # what was asked (command, cwd, env names, prompt): an idempotency key's check


