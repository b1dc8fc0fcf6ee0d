"""The plan tools: fan a plan of tasks out over a pool of boxes (plan_start), watch its board (plan_status),
stop it (plan_cancel). The plan is the same structure as a plan YAML file (docs/plans.md)."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from pydantic import Field

from server.mcp.common import fleet_of
from server.plans.board import PlanBoard
from server.plans.model import TASK_ID_SCHEMA, Plan

PlanId = Annotated[str, Field(pattern=r"^p-[0-9a-f]{10}$", description="The plan's id (p-...)")]


async def plan_start(ctx: Context, plan: Plan) -> PlanBoard:
    """Run tasks on a pool of boxes, each once its depends_on succeeded, from its branch with their work merged:
    the agent runs its prompt (or its command), then check; passing work comes home to its branch. Refused
    before forging: unknown ids, cycles, independent tasks owning overlapping paths (docs/plans.md). Then
    plan_status(plan_id, wait_s=30)."""
    return await fleet_of(ctx).plan_start(plan)


plan_start.shared_defs = {"Id": TASK_ID_SCHEMA}  # type: ignore[attr-defined]  # the plan's name, task ids, depends_on


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
