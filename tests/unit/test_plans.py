"""Plan validation: every refusal names the task and says what to do; the overlap test is conservative."""

from __future__ import annotations

import subprocess

import pytest

from server.plans import globs
from server.plans.model import git_branch_problem
from server.plans.validate import PlanInvalid, check_plan, load_plan_text, parse_plan, validated

BASE = """
name: checkout-feature
boxes: {max: 3, ttl: 2h, agent: custom, agent_command: "sh agent.sh"}
tasks:
  - id: api
    branch: feat/api
    prompt: "Add the endpoint"
    owns: [server/api/**]
    check: make test-api
  - id: ui
    branch: feat/ui
    prompt: "Add the page"
    owns: [web/**]
  - id: e2e
    branch: feat/e2e
    depends_on: [api, ui]
    prompt: "Add the e2e test"
    owns: [server/api/routes.py, web/e2e]
    check: make e2e
"""


def problems(text: str) -> list[str]:
    try:
        report = check_plan(load_plan_text(text))
    except PlanInvalid as exc:
        return exc.problems
    return report.errors


def test_the_issue_example_is_valid_and_ordered() -> None:
    report = validated(load_plan_text(BASE))
    assert report.ok and report.order == ["api", "ui", "e2e"]
    assert report.conflicts == []  # e2e overlaps both, but depends on both


def test_overlap_without_dependency_is_a_predicted_conflict_unless_allowed() -> None:
    text = BASE.replace("owns: [web/**]", "owns: [web/**, server/**/*.py]")
    errs = problems(text)
    assert len(errs) == 1 and "predicted conflict" in errs[0] and "'api' and 'ui'" in errs[0]
    assert "server/api/** ~ server/**/*.py" in errs[0] and "depends_on" in errs[0]
    # a dependency fixes it, and so does allow_overlap (reported, not refused)
    assert problems(text.replace("    owns: [web/**, server", "    depends_on: [api]\n    owns: [web/**, server")) == []
    report = check_plan(load_plan_text(text + "allow_overlap: true\n"))
    assert report.ok and [(c.a, c.b, c.allowed) for c in report.conflicts] == [("api", "ui", True)]


def test_transitive_dependency_is_no_conflict() -> None:
    text = """
name: chain
boxes: {agent: custom}
tasks:
  - {id: a, branch: a, prompt: x, owns: [src]}
  - {id: b, branch: b, prompt: x, depends_on: [a]}
  - {id: c, branch: c, prompt: x, depends_on: [b], owns: [src/x.py]}
  - {id: d, branch: d, prompt: x, owns: ["src/*.py"]}
"""
    errs = problems(text)
    assert len(errs) == 2 and all("predicted conflict" in e for e in errs)
    assert "'a' and 'd'" in errs[0] and "'c' and 'd'" in errs[1]


def test_cycle_is_named() -> None:
    text = """
name: loop
boxes: {agent: custom}
tasks:
  - {id: a, branch: a, prompt: x, depends_on: [c]}
  - {id: b, branch: b, prompt: x, depends_on: [a]}
  - {id: c, branch: c, prompt: x, depends_on: [b]}
  - {id: d, branch: d, prompt: x}
"""
    errs = problems(text)
    assert len(errs) == 1 and errs[0].startswith("dependency cycle: ")
    cycle = errs[0].removeprefix("dependency cycle: ").split(" (")[0].split(" -> ")
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["a", "b", "c"]


def test_unknown_ids_duplicates_and_missing_work() -> None:
    text = """
name: bad
boxes: {agent: none}
tasks:
  - {id: a, branch: a, command: "true", depends_on: [nope, a]}
  - {id: a, branch: b, command: "true"}
  - {id: c, branch: b, prompt: "do it"}
  - {id: e, branch: main}
"""
    errs = problems(text)
    joined = "\n".join(errs)
    assert "depends on unknown task 'nope'" in joined
    assert "'a' depends on itself" in joined
    assert "task id 'a' is used twice" in joined
    assert "both use branch 'b'" in joined
    assert "'c' has a prompt but boxes.agent is 'none'" in joined
    assert "'e' has neither a prompt nor a command" in joined
    assert "'e' uses the base branch 'main'" in joined


@pytest.mark.parametrize("field, value, words", [
    ("boxes", "{max: 0, agent: custom}", "pool of at least 1 box"),
    ("boxes", "{max: -2, agent: custom}", "pool of at least 1 box"),
    ("boxes", "{max: 1, agent: custom, colour: red}", "boxes.colour: unknown key"),
    ("budget", "0", "budget: Input should be greater than 0"),
])
def test_field_problems_name_the_field(field: str, value: str, words: str) -> None:
    text = f"name: p\n{field}: {value}\n" + ("boxes: {agent: custom}\n" if field != "boxes" else "") + \
        "tasks:\n  - {id: a, branch: a, prompt: x}\n"
    assert any(words in e for e in problems(text)), problems(text)


def test_bad_task_fields_say_which_task() -> None:
    errs = problems("name: p\nboxes: {agent: custom}\ntasks:\n  - {id: a, branch: a, prompt: x}\n"
                    "  - {id: bee, branch: 'feat..x', prompt: x, check: '  '}\n")
    assert any(e.startswith("tasks[1] (bee).branch: git refuses the branch name 'feat..x'") for e in errs), errs
    assert any(e.startswith("tasks[1] (bee).check: check is empty") for e in errs), errs


@pytest.mark.parametrize("text, words", [
    ("name: x\ntasks: [\n", "not valid YAML at line 3"),
    ("- a\n- b\n", "a plan is a mapping"),
    ("", "a plan is a mapping"),
    ("name: x\ntasks: []\n", "tasks: List should have at least 1 item"),
])
def test_bad_yaml_and_shapes(text: str, words: str) -> None:
    errs = problems(text)
    assert any(words in e for e in errs), errs


BRANCHES = ["feat/api", "a", "feat a", "-x", "x..y", "x/", "/x", "x//y", "x.lock", "x/.y", "x.", "x@{y",
            "a~b", "a^b", "a:b", "a?b", "a*b", "a[b", "a\\b", "v1.2/x_y+z", "x/y.lock/z", "ünï", "a\tb", "a@b"]


@pytest.mark.parametrize("name", BRANCHES)
def test_branch_rules_agree_with_git(name: str) -> None:
    git_ok = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True).returncode == 0
    assert (git_branch_problem(name) is None) == git_ok


@pytest.mark.parametrize("a, b, meet", [
    ("server/api/**", "server/**/*.py", True),
    ("server/api", "server/api/x.py", True),
    ("server/api", "server/apix", False),
    ("web/**", "server/**", False),
    ("**/*.md", "docs/a.md", True),
    ("src/*.py", "src/x/y.py", False),
    ("src/*.py", "src/x.py/y", True),  # a pattern owns the subtree of what it matches
    ("src/a*.py", "src/b*.py", False),
    ("src/[ab].py", "src/c.py", False),
    ("src/*.py", "src/*.js", False),
    ("a/b/c", "a/b", True),
])
def test_glob_overlap(a: str, b: str, meet: bool) -> None:
    sa, sb = globs.segments(a), globs.segments(b)
    assert globs.overlap(sa, sb) is meet and globs.overlap(sb, sa) is meet


def test_500_tasks_validate_with_conflicts_found() -> None:
    tasks = []
    for i in range(500):
        deps = f", depends_on: [t{i - 1}]" if i % 50 else ""
        tasks.append(f"  - {{id: t{i}, branch: feat/t{i}, prompt: x, owns: [pkg{i // 50}/**, shared/f{i}.txt]{deps}}}")
    tasks.append("  - {id: loner, branch: loner, prompt: x, owns: [pkg3/deep/file.py]}")
    plan = load_plan_text("name: huge\nboxes: {max: 5, agent: custom}\ntasks:\n" + "\n".join(tasks) + "\n")
    report = check_plan(plan)
    # the chains of 50 are ordered; only 'loner' collides, with each task of chain 3
    assert {(c.a, c.b) for c in report.conflicts} == {(f"t{i}", "loner") for i in range(150, 200)}
    assert len(report.order) == 501
    assert report.order.index("t10") > report.order.index("t9")


def test_parse_plan_takes_the_tool_argument_shape() -> None:
    plan = parse_plan({"name": "p", "boxes": {"agent": "custom", "max": 2},
                       "tasks": [{"id": "a", "branch": "a", "prompt": "x"}]})
    assert plan.boxes.max == 2 and plan.retries == 1 and plan.tasks[0].content_hash() != \
        plan.tasks[0].model_copy(update={"prompt": "y"}).content_hash()
