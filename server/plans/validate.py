"""Checks made before anything is forged. Every problem is collected (not only the first), worded with
the task it concerns and what to do; a predicted conflict is two tasks owning overlapping paths with no
dependency between them (either way, transitively): an error unless ``allow_overlap``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from server.errors import InvalidInput
from server.plans import globs
from server.plans.model import Plan, PlanTask

MAX_PLAN_BYTES = 4 * 1024 * 1024


class Conflict(BaseModel):
    a: str
    b: str
    paths: list[str] = Field(description="The overlapping owned patterns, 'a-pattern ~ b-pattern'")
    allowed: bool = Field(description="allow_overlap was given: reported, not refused")


class TaskRow(BaseModel):
    id: str
    branch: str
    owns: list[str]
    depends_on: list[str]
    runs: str = Field(description="'agent' (prompt) or 'command'")
    check: str | None


class CheckReport(BaseModel):
    ok: bool
    name: str | None = None
    tasks: list[TaskRow] = Field(default_factory=list)
    order: list[str] = Field(default_factory=list, description="A dependency order of the tasks")
    conflicts: list[Conflict] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)


class PlanInvalid(InvalidInput):
    """The plan was refused; ``problems`` lists every reason."""

    def __init__(self, problems: list[str], report: CheckReport | None = None) -> None:
        shown = problems[:20]
        more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__("invalid plan: " + "; ".join(shown) + more)
        self.problems = problems
        self.report = report


def _loc(loc: tuple[Any, ...], data: Any) -> str:
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            task_id = node[item].get("id") if isinstance(node, list) and item < len(node) and isinstance(
                node[item], dict) else None
            parts.append(f"[{item}]" + (f" ({task_id})" if isinstance(task_id, str) else ""))
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "plan"


def parse_plan(data: Any) -> Plan:
    """A Plan from decoded YAML/JSON, or PlanInvalid with every field problem."""
    if not isinstance(data, dict):
        raise PlanInvalid([f"a plan is a mapping (name, boxes, tasks, ...), not {type(data).__name__}"])
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; docs/plans.md lists the keys)"
            problems.append(f"{_loc(e['loc'], data)}: {msg}")
        raise PlanInvalid(problems) from None


def load_plan_text(text: str, source: str = "plan") -> Plan:
    if len(text.encode()) > MAX_PLAN_BYTES:
        raise PlanInvalid([f"{source} is larger than {MAX_PLAN_BYTES // (1024 * 1024)} MiB"])
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PlanInvalid([f"{source} is not valid YAML{where}: {problem}"]) from None
    return parse_plan(data)


def load_plan_file(path: str | Path) -> Plan:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanInvalid([f"no plan file at {str(p)!r}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanInvalid([f"cannot read the plan file {str(p)!r}: {exc}"]) from None
    return load_plan_text(text, source=str(p))


def _find_cycle(ids: list[str], deps: dict[str, list[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None. Iterative DFS (a 2000-task chain must not hit the recursion limit)."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(ids, white)
    for root in ids:
        if color[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        color[root] = grey
        while stack:
            node, i = stack[-1]
            children = deps.get(node, [])
            if i < len(children):
                stack[-1] = (node, i + 1)
                child = children[i]
                if child not in color:
                    continue
                if color[child] == grey:
                    return [*path[path.index(child):], child]
                if color[child] == white:
                    color[child] = grey
                    stack.append((child, 0))
                    path.append(child)
            else:
                color[node] = black
                stack.pop()
                path.pop()
    return None


def topo_order(plan: Plan) -> list[str]:
    """Tasks in dependency order, stable in the plan's order (assumes no cycle)."""
    done: set[str] = set()
    order: list[str] = []
    by_id = {t.id: t for t in plan.tasks}
    pending = [t.id for t in plan.tasks]
    while pending:
        rest = []
        for tid in pending:
            if all(d in done or d not in by_id for d in by_id[tid].depends_on):
                done.add(tid)
                order.append(tid)
            else:
                rest.append(tid)
        if len(rest) == len(pending):  # a cycle: validation reports it
            order.extend(rest)
            break
        pending = rest
    return order


def _ancestors(order: list[str], deps: dict[str, list[str]]) -> dict[str, int]:
    """Per task, a bitset of every task it depends on (transitively)."""
    bit = {tid: 1 << i for i, tid in enumerate(order)}
    anc: dict[str, int] = {}
    for tid in order:
        mask = 0
        for d in deps.get(tid, []):
            if d in bit:
                mask |= bit[d] | anc.get(d, 0)
        anc[tid] = mask
    return anc


Entry = tuple[int, str, str, tuple[str, ...]]  # (task index, task id, owned pattern, its segments)


def _buckets(plan: Plan) -> tuple[dict[str | None, list[Entry]], dict[str, int]]:
    """Owned patterns bucketed by their first literal segment (None: wildcard-first, meets everything)."""
    buckets: dict[str | None, list[Entry]] = {}
    index = {t.id: i for i, t in enumerate(plan.tasks)}
    for t in plan.tasks:
        for pattern in t.owns:
            segs = globs.segments(pattern)
            buckets.setdefault(globs.first_literal(segs), []).append((index[t.id], t.id, pattern, segs))
    return buckets, index


def _literal_pairs(entries: list[Entry]) -> Iterator[tuple[Entry, Entry]]:
    """Pairs of plain paths where one is the other or its ancestor: a path index, not every pair (500 sibling
    files are 500 look-ups, not 125,000 comparisons)."""
    by_path: dict[tuple[str, ...], list[Entry]] = {}
    for e in entries:
        by_path.setdefault(e[3][:-1], []).append(e)
    for path, same in by_path.items():
        for i, e1 in enumerate(same):
            for e2 in same[i + 1:]:
                yield e1, e2
        for k in range(1, len(path)):
            for above in by_path.get(path[:k], ()):
                for e in same:
                    yield above, e


def _candidate_pairs(buckets: dict[str | None, list[Entry]]) -> Iterator[tuple[Entry, Entry]]:
    """Every pair of patterns that may overlap: plain paths through a path index, a pattern with a wildcard
    against every other pattern of its bucket, and each wildcard-first one against all."""
    wild_first = buckets.pop(None, [])
    for entries in buckets.values():
        plain = [e for e in entries if globs.literal(e[3])]
        yield from _literal_pairs(plain)
        globbed = [e for e in entries if not globs.literal(e[3])]
        for i, g in enumerate(globbed):
            for e in plain:
                yield g, e
            for g2 in globbed[i + 1:]:
                yield g, g2
    all_entries = [e for entries in buckets.values() for e in entries]
    for i, w in enumerate(wild_first):
        for e in all_entries:
            yield w, e
        for w2 in wild_first[i + 1:]:
            yield w, w2


def predicted_conflicts(plan: Plan, order: list[str]) -> list[Conflict]:
    deps = {t.id: t.depends_on for t in plan.tasks}
    anc = _ancestors(order, deps)
    bit = {tid: 1 << i for i, tid in enumerate(order)}
    allow = {t.id: t.allow_overlap or plan.allow_overlap for t in plan.tasks}
    buckets, index = _buckets(plan)
    found: dict[tuple[str, str], list[str]] = {}

    def related(x: str, y: str) -> bool:
        return bool(anc.get(x, 0) & bit.get(y, 0)) or bool(anc.get(y, 0) & bit.get(x, 0))

    for e1, e2 in _candidate_pairs(buckets):
        if e1[1] == e2[1]:
            continue
        (_, a, pa, sa), (_, b, pb, sb) = (e1, e2) if e1[0] < e2[0] else (e2, e1)
        if not globs.overlap(sa, sb) or related(a, b):
            continue
        paths = found.setdefault((a, b), [])
        text = f"{pa} ~ {pb}"
        if text not in paths:
            paths.append(text)
    return [Conflict(a=a, b=b, paths=paths, allowed=allow[a] or allow[b])
            for (a, b), paths in sorted(found.items(), key=lambda kv: (index[kv[0][0]], index[kv[0][1]]))]


def _id_problems(plan: Plan) -> list[str]:
    errors: list[str] = []
    seen: set[str] = set()
    for t in plan.tasks:
        if t.id in seen:
            errors.append(f"task id {t.id!r} is used twice: give each task its own id")
        seen.add(t.id)
    branches: dict[str, str] = {}
    for t in plan.tasks:
        if branches.setdefault(t.branch, t.id) != t.id:
            errors.append(f"tasks {branches[t.branch]!r} and {t.id!r} both use branch {t.branch!r}: give each "
                          "task its own branch")
        if t.branch == plan.base:
            errors.append(f"task {t.id!r} uses the base branch {plan.base!r} as its branch: give it its own")
    return errors


def _work_problems(plan: Plan, t: PlanTask) -> list[str]:
    if t.prompt is None and t.command is None:
        return [f"task {t.id!r} has neither a prompt nor a command: say what the task does"]
    if t.prompt is not None and t.command is None and plan.boxes.agent == "none":
        return [f"task {t.id!r} has a prompt but boxes.agent is 'none': set boxes.agent (claude, codex, custom) "
                "or give the task a command"]
    return []


def _dependency_problems(t: PlanTask, ids: list[str], id_set: set[str]) -> list[str]:
    errors = []
    for d in t.depends_on:
        if d == t.id:
            errors.append(f"task {t.id!r} depends on itself")
        elif d not in id_set:
            errors.append(f"task {t.id!r} depends on unknown task {d!r} (known: "
                          f"{', '.join(ids[:10])}{', ...' if len(ids) > 10 else ''})")
    return errors


def _conflict_problem(c: Conflict) -> str:
    return (f"predicted conflict: tasks {c.a!r} and {c.b!r} both own {', '.join(c.paths)} and neither depends "
            f"on the other: add depends_on (e.g. {c.b!r} depends on {c.a!r}), split the paths, or set allow_overlap")


def check_plan(plan: Plan) -> CheckReport:
    """Every cross-task rule; the report's ``errors`` is empty when the plan may run."""
    ids = [t.id for t in plan.tasks]
    id_set = set(ids)
    errors = _id_problems(plan)
    for t in plan.tasks:
        errors += _work_problems(plan, t) + _dependency_problems(t, ids, id_set)
    deps = {t.id: [d for d in t.depends_on if d in id_set and d != t.id] for t in plan.tasks}
    cycle = _find_cycle(list(dict.fromkeys(ids)), deps)
    if cycle:
        errors.append(f"dependency cycle: {' -> '.join(cycle)} (remove one of these depends_on)")
    order = topo_order(plan)
    conflicts = predicted_conflicts(plan, order) if not cycle else []
    errors += [_conflict_problem(c) for c in conflicts if not c.allowed]
    rows = [TaskRow(id=t.id, branch=t.branch, owns=t.owns, depends_on=t.depends_on,
                    runs="command" if t.command else "agent", check=t.check) for t in plan.tasks]
    return CheckReport(ok=not errors, name=plan.name, tasks=rows, order=order, conflicts=conflicts, errors=errors)


def validated(plan: Plan) -> CheckReport:
    """The report, or PlanInvalid carrying it."""
    report = check_plan(plan)
    if report.errors:
        raise PlanInvalid(report.errors, report)
    return report
