"""Plans: tasks fanned out over a pool of boxes, with dependencies (docs/plans.md).

``model`` is the plan's shape (pydantic), ``validate`` the checks made before anything is forged
(ids, cycles, predicted conflicts from overlapping ``owns``), ``globs`` the owned-path overlap test."""

from server.plans.model import Plan, PlanBoxes, PlanTask
from server.plans.validate import CheckReport, PlanInvalid, check_plan, load_plan_file, load_plan_text

__all__ = ["CheckReport", "Plan", "PlanBoxes", "PlanInvalid", "PlanTask", "check_plan", "load_plan_file",
           "load_plan_text"]
