"""The board: what plan_status / ``boxforge plan status`` show, per task and per plan."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

TaskState = Literal["pending", "waiting_box", "starting", "running", "checking", "fetching", "succeeded", "failed",
                    "blocked", "cancelled"]
PlanState = Literal["running", "succeeded", "failed", "cancelled"]
TERMINAL_TASK = frozenset({"succeeded", "failed", "blocked", "cancelled"})


class TaskBoard(BaseModel):
    id: str
    state: TaskState = "pending"
    branch: str
    box: str | None = Field(None, description="The box working on it now (or last)")
    job_id: str | None = Field(None, description="The agent's (or command's) job")
    check: Literal["passed", "failed"] | None = Field(None, description="The acceptance command's result")
    attempts: int = Field(0, description="Boxes tried so far (a dead box's task is reassigned up to retries)")
    reason: str | None = Field(None, description="Why it failed, is blocked, or was reassigned")
    last_line: str | None = Field(None, description="The job's last output line")
    ref: str | None = Field(None, description="refs/boxforge/... the work came home to")
    tip: str | None = None
    content_hash: str = ""
    started_at: float | None = None
    agent_started_at: float | None = None
    forge_s: float | None = Field(None, description="How long its box took to forge")
    finished_at: float | None = None
    elapsed_s: float | None = None


class PlanBoard(BaseModel):
    plan_id: str
    name: str
    state: PlanState
    repo: str
    done: int = 0
    running: int = 0
    pending: int = 0
    blocked: int = 0
    failed: int = 0
    boxes_in_use: int = 0
    boxes_max: int = 1
    cost_so_far: float | None = Field(None, description="Currency spent on the plan's boxes so far (cloud boxes)")
    reason: str | None = Field(None, description="Why the plan stopped early (budget, cancel)")
    started_at: float
    finished_at: float | None = None
    tasks: list[TaskBoard] = Field(default_factory=list)
    hint: str | None = None

    def tally(self) -> PlanBoard:
        states = [t.state for t in self.tasks]
        self.done = states.count("succeeded")
        self.running = sum(s in ("starting", "running", "checking", "fetching") for s in states)
        self.pending = sum(s in ("pending", "waiting_box") for s in states)
        self.blocked = states.count("blocked")
        self.failed = states.count("failed")
        return self
