"""The plan tools: fan a plan of tasks out over a pool of boxes (plan_start), watch its board (plan_status),
stop it (plan_cancel). The plan is the same structure as a plan YAML file (docs/plans.md)."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from pydantic import Field

from server.mcp.common import fleet_of
from server.plans.board import PlanBoard
from server.plans.model import Plan

PlanId = Annotated[str, Field(pattern=r"^p-[0-9a-f]{10}$", description="The plan's id (p-...)")]


async def plan_start(ctx: Context, plan: Plan) -> PlanBoard:
    """Start a plan: tasks run on a pool of at most boxes.max boxes, each when its depends_on succeeded, on a box
    seeded with its branch (a dependent's branch holds its prerequisites' work merged in dependency order); the
    agent runs the task's prompt (or its command runs), then its check; a passing task's work is fetched home to
    its branch in the user's repo. Validated first (unknown ids, cycles, predicted conflicts: two independent
    tasks owning overlapping paths). The same plan sent again returns the running (or finished) one. Returns the
    board with plan_id at once; follow it with plan_status(plan_id, wait_s=30)."""
    return await fleet_of(ctx).plan_start(plan)


async def plan_status(
    ctx: Context,
    plan_id: PlanId,
    wait_s: Annotated[float, Field(ge=0, le=300, description="Wait up to this long for the next change")] = 0,
) -> PlanBoard:
    """A plan's board: per task its state, box, attempts, elapsed time, last output line, check result, branch
    and ref; per plan done / running / pending / blocked / failed and boxes in use."""
    return await fleet_of(ctx).plan_status(plan_id, wait_s=wait_s)


async def plan_cancel(ctx: Context, plan_id: PlanId) -> PlanBoard:
    """Stop a plan: running tasks are cancelled and every box of the plan is burned (its work harvested first)."""
    return await fleet_of(ctx).plan_cancel(plan_id)
