"""The plan: a YAML file, or the same structure as the ``plan_start`` tool's argument.

Field-level rules live here (shapes, branch names git accepts, a pool of at least one box); rules across
tasks (unknown ids, cycles, predicted conflicts) live in ``server.plans.validate``."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from server.domain.inputs import ENV_NAME_RE
from server.plans.require import check_requirement
from server.schemas import TtlSeconds

TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_REF_BAD = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


_WHOLE_RULES: tuple[tuple[object, str], ...] = (
    (lambda v: not v, "it is empty"),
    (lambda v: len(v) > 200, "it is longer than 200 characters"),
    (lambda v: v.startswith("-"), "it starts with '-'"),
    (lambda v: v in ("HEAD", "@"), "it is reserved (HEAD, @)"),
    (lambda v: bool(_REF_BAD.search(v)), "it holds a space, a control character or one of ~ ^ : ? * [ \\"),
    (lambda v: ".." in v, "it holds '..'"),
    (lambda v: "@{" in v, "it holds '@{'"),
    (lambda v: v.startswith("/") or v.endswith("/") or "//" in v, "it starts or ends with '/' or holds '//'"),
    (lambda v: v.endswith("."), "it ends with '.'"),
)


def git_branch_problem(value: str) -> str | None:
    """Why ``git check-ref-format --branch`` refuses ``value``, or None (the same rules, without a process)."""
    for rule, problem in _WHOLE_RULES:
        if rule(value):  # type: ignore[operator]
            return problem
    for part in value.split("/"):
        if part.startswith("."):
            return f"the component {part!r} starts with '.'"
        if part.endswith(".lock"):
            return f"the component {part!r} ends with '.lock'"
    return None


def _check_git_branch(value: str) -> str:
    problem = git_branch_problem(value)
    if problem:
        raise ValueError(f"git refuses the branch name {value[:80]!r}: {problem} (e.g. 'feat/login')")
    return value


def _check_task_id(value: str) -> str:
    if not TASK_ID_RE.fullmatch(value):
        raise ValueError(f"invalid task id {value[:80]!r}: use 1-63 letters, digits, '.', '_' or '-', starting "
                         "with a letter or digit (e.g. 'api')")
    return value


GitBranch = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_check_git_branch)]
TASK_ID_SCHEMA = {"pattern": TASK_ID_RE.pattern, "type": "string"}  # said once in plan_start's schema
TaskId = Annotated[str, Field(json_schema_extra={"pattern": TASK_ID_RE.pattern}), AfterValidator(_check_task_id)]
OwnedGlob = Annotated[str, Field(min_length=1, max_length=512)]


class PlanBoxes(BaseModel):
    """create_server's parameters plus max"""

    model_config = ConfigDict(extra="forbid")

    max: int = Field(1, description="Boxes at once", json_schema_extra={"minimum": 1, "maximum": 100})
    ttl: TtlSeconds | None = Field(None, description="Each box's ('2h')")
    agent: str = Field("none", max_length=32, description="none, claude, codex or custom")
    agent_install: str | None = Field(None, max_length=4096)
    agent_command: str | None = Field(None, max_length=4096)
    env_from: list[str] = Field(default_factory=list, max_length=64,
                                description="Orchestrator env names copied to each box")
    size: str | None = Field(None, max_length=64)
    provider: str | None = Field(None, max_length=32)
    location: str | None = Field(None, max_length=64)
    image: str | None = Field(None, max_length=128)

    @field_validator("max")
    @classmethod
    def _pool(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"boxes.max is {value}: a plan needs a pool of at least 1 box")
        if value > 100:
            raise ValueError(f"boxes.max is {value}: at most 100 boxes per plan")
        return value

    @field_validator("env_from")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not ENV_NAME_RE.fullmatch(name):
                raise ValueError(f"invalid env name {name[:64]!r} in boxes.env_from: use letters, digits and '_'")
        return value


class PlanTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: TaskId
    branch: GitBranch
    prompt: str | None = Field(None, max_length=64 * 1024, description="For the agent")
    command: str | None = Field(None, max_length=4096, description="Run instead of the agent")
    owns: list[OwnedGlob] = Field(default_factory=list, max_length=256, description="Globs of the paths it changes")
    depends_on: list[TaskId] = Field(default_factory=list, max_length=256)
    check: str | None = Field(None, max_length=4096, description="Run after; exit 0 = done")
    retries: int | None = Field(None, ge=0, le=10)
    allow_overlap: bool = False

    @field_validator("prompt", "command", "check")
    @classmethod
    def _not_blank(cls, value: str | None, info) -> str | None:  # type: ignore[no-untyped-def]
        if value is not None and not value.strip():
            raise ValueError(f"{info.field_name} is empty: give the text or leave the key out")
        return value

    def content_hash(self) -> str:
        """Same id and same content -> same hash: a re-sent task is not run twice."""
        body = "\0".join([self.id, self.branch, self.prompt or "", self.command or "", self.check or "",
                          ",".join(sorted(self.depends_on))])
        return hashlib.sha256(body.encode()).hexdigest()[:16]


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: TaskId
    repo: str = Field(".", min_length=1, max_length=2048, description="Local checkout")
    base: GitBranch = Field("main", description="Start of tasks without depends_on")
    boxes: PlanBoxes = Field(default_factory=PlanBoxes)
    require: dict[str, str] = Field(default_factory=dict, max_length=32,
                                    description="Checked on each box, e.g. {node: '>=20'}")
    retries: int = Field(1, ge=0, le=10, description="Boxes tried after one dies")
    budget: float | None = Field(None, gt=0, description="Most the boxes may cost")
    allow_overlap: bool = Field(False, description="Report predicted conflicts, not refuse")
    tasks: list[PlanTask] = Field(min_length=1, max_length=2000)

    @field_validator("require")
    @classmethod
    def _require(cls, value: dict[str, str]) -> dict[str, str]:
        problems = [p for tool, wanted in value.items() if (p := check_requirement(tool, wanted))]
        if problems:
            raise ValueError("; ".join(problems))
        return value
