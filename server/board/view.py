"""The fleet document the page renders, as a pure function of store records and what the hub has seen.

No secret is in it: a box record holds none, a job's command is shown as the tools show it, output lines
come from the service's redacted output. Every box-originated string passes ``text.one_line``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.board.text import last_line, one_line
from server.domain.states import JobState
from server.plans.board import TERMINAL_TASK
from server.schemas import ServerInfo
from server.store import BoxRecord, JobRecord

FINISHED_SHOWN = 3  # ended jobs shown per box, newest first, after its running ones
COMMAND_CHARS = 160


@dataclass(frozen=True)
class PlanTaskRef:
    """The plan task a box serves."""

    plan_id: str
    plan: str
    task: str
    state: str
    check: str | None


def job_view(job: JobRecord, now: float, last: str | None) -> dict[str, Any]:
    running = job.state == JobState.RUNNING
    end = now if running or job.finished_at is None else job.finished_at
    return {"job_id": job.job_id, "kind": job.kind, "command": one_line(job.command, COMMAND_CHARS),
            "state": job.state, "exit_code": job.exit_code, "started_at": job.created_at,
            "finished_at": job.finished_at, "elapsed_s": round(max(0.0, end - job.created_at), 1),
            "last_line": last}


def shown_jobs(jobs: Sequence[JobRecord]) -> list[JobRecord]:
    """Running jobs (oldest first), then the newest few that ended."""
    running = [j for j in jobs if j.state == JobState.RUNNING]
    ended = sorted((j for j in jobs if j.state != JobState.RUNNING), key=lambda j: j.created_at, reverse=True)
    return running + ended[:FINISHED_SHOWN]


def box_view(rec: BoxRecord, info: ServerInfo, jobs: Sequence[JobRecord], now: float, *,
             reachable: bool | None, last_lines: Mapping[str, str | None],
             task: PlanTaskRef | None) -> dict[str, Any]:
    shown = [job_view(j, now, last_lines.get(j.job_id) or last_line(j.out_tail or j.err_tail))
             for j in shown_jobs(jobs)]
    return {
        "name": rec.name, "state": rec.state, "step": info.step, "provider": rec.provider,
        "branch": one_line(rec.branch), "repo": one_line(info.repo), "agent": rec.agent, "size": info.size,
        "created_at": rec.created_at, "expires_at": rec.expires_at, "time_left_s": info.time_left_s,
        "price_per_hour": info.price_per_hour, "cost_so_far": info.cost_so_far, "reachable": reachable,
        "warning": one_line(info.warning), "error": one_line(rec.error),
        "running_jobs": sum(j.state == JobState.RUNNING for j in jobs), "jobs_total": len(jobs),
        "jobs": shown,
        "plan": None if task is None else {"plan_id": task.plan_id, "plan": one_line(task.plan), "task": task.task,
                                           "state": task.state, "check": task.check},
    }


def fleet_view(boxes: Sequence[tuple[BoxRecord, ServerInfo]], jobs: Mapping[str, Sequence[JobRecord]], now: float,
               *, reachable: Mapping[str, bool | None], last_lines: Mapping[str, str | None],
               tasks: Mapping[str, PlanTaskRef]) -> dict[str, Any]:
    """The whole fleet: one entry per live box (oldest first) and the totals the header shows."""
    shown = [box_view(rec, info, jobs.get(rec.request_id, ()), now, reachable=reachable.get(rec.name),
                      last_lines=last_lines, task=tasks.get(rec.name)) for rec, info in boxes]
    costs = [b["cost_so_far"] for b in shown if b["cost_so_far"] is not None]
    return {"boxes": shown, "count": len(shown), "running_jobs": sum(b["running_jobs"] for b in shown),
            "cost_so_far": round(sum(costs), 4) if costs else None}


def plans_view(rows: Sequence[tuple[str, str, dict[str, Any]]], now: float) -> list[dict[str, Any]]:
    """Each plan's task graph: per task its state, box, check result and the tasks it depends on."""
    shown = []
    for plan_id, state, doc in rows:
        board = doc.get("board") or {}
        depends = {t.get("id"): t.get("depends_on") or [] for t in (doc.get("plan") or {}).get("tasks", [])}
        tasks = []
        for t in board.get("tasks", []):
            started, finished = t.get("started_at"), t.get("finished_at")
            tasks.append({"id": t.get("id"), "state": t.get("state"), "branch": one_line(t.get("branch")),
                          "box": t.get("box"), "job_id": t.get("job_id"), "check": t.get("check"),
                          "reason": one_line(t.get("reason")), "last_line": one_line(t.get("last_line")),
                          "depends_on": depends.get(t.get("id"), []), "started_at": started,
                          "elapsed_s": round((finished or now) - started, 1) if started else None})
        shown.append({"plan_id": plan_id, "name": one_line(board.get("name") or plan_id), "state": state,
                      "reason": one_line(board.get("reason")), "started_at": board.get("started_at"),
                      "boxes_max": board.get("boxes_max"), "tasks": tasks})
    return shown


def tasks_by_box(plans: Sequence[Mapping[str, Any]]) -> dict[str, PlanTaskRef]:
    """Box name -> the plan task it serves now (running plans first: a box is reused between tasks)."""
    found: dict[str, PlanTaskRef] = {}
    for plan in sorted(plans, key=lambda p: p["state"] == "running"):
        for t in sorted(plan["tasks"], key=lambda t: t["state"] not in TERMINAL_TASK):  # a live task wins
            if t["box"]:
                found[t["box"]] = PlanTaskRef(plan["plan_id"], plan["name"], t["id"], t["state"], t["check"])
    return found
