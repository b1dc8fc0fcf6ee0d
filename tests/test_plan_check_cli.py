"""``boxforge plan check`` as a user runs it: a subprocess, no boxes forged, a table or one JSON document."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support import boxforge_cmd, cli_env, make_settings

PLAN = """\
name: checkout-feature
boxes: {max: 3, agent: custom, agent_command: "sh agent.sh"}
tasks:
  - {id: api, branch: feat/api, prompt: "api", owns: [server/api/**], check: make test-api}
  - {id: ui, branch: feat/ui, prompt: "ui", owns: [web/**, server/api/schema.json]}
  - {id: e2e, branch: feat/e2e, prompt: "e2e", depends_on: [api, ui], check: make e2e}
"""


def plan_check(tmp_path: Path, text: str, *flags: str) -> subprocess.CompletedProcess[str]:
    settings = make_settings(tmp_path / "state")
    path = tmp_path / "plan.yml"
    path.write_text(text)
    return subprocess.run([*boxforge_cmd(), "plan", "check", str(path), *flags], env=cli_env(settings),
                          capture_output=True, text=True, timeout=60)


def test_predicted_conflict_is_refused_then_fixed_by_a_dependency(tmp_path: Path) -> None:
    refused = plan_check(tmp_path, PLAN, "--json")
    assert refused.returncode == 1, refused.stderr
    doc = json.loads(refused.stdout)
    assert not doc["ok"] and [(c["a"], c["b"]) for c in doc["conflicts"]] == [("api", "ui")]
    assert doc["conflicts"][0]["paths"] == ["server/api/** ~ server/api/schema.json"]
    assert [t["id"] for t in doc["tasks"]] == ["api", "ui", "e2e"] and doc["tasks"][2]["depends_on"] == ["api", "ui"]
    assert len(doc["errors"]) == 1 and "predicted conflict" in doc["errors"][0]
    assert not (tmp_path / "state" / "boxes").exists() or not any((tmp_path / "state" / "boxes").iterdir())

    fixed = PLAN.replace('prompt: "ui", owns', 'prompt: "ui", depends_on: [api], owns')
    table = plan_check(tmp_path, fixed)
    assert table.returncode == 0, table.stderr
    for words in ("api", "feat/ui", "server/api/**", "make e2e", "predicted conflicts: none"):
        assert words in table.stdout
    assert "order api -> ui -> e2e" in table.stderr


def test_table_shows_conflicts_and_errors_on_stderr(tmp_path: Path) -> None:
    result = plan_check(tmp_path, PLAN)
    assert result.returncode == 1
    assert "predicted conflicts" in result.stdout and "refused" in result.stdout
    assert "error: predicted conflict: tasks 'api' and 'ui'" in result.stderr


def test_bad_plans_get_clear_errors(tmp_path: Path) -> None:
    bad_yaml = plan_check(tmp_path, "name: x\ntasks: [\n", "--json")
    assert bad_yaml.returncode == 1 and "not valid YAML at line 3" in json.loads(bad_yaml.stdout)["errors"][0]
    cycle = plan_check(tmp_path, PLAN.replace('prompt: "api",', 'prompt: "api", depends_on: [e2e],'))
    assert cycle.returncode == 1 and "dependency cycle: " in cycle.stderr
    assert "Traceback" not in cycle.stderr + bad_yaml.stderr
    missing = subprocess.run([*boxforge_cmd(), "plan", "check", str(tmp_path / "nope.yml")],
                             env=cli_env(make_settings(tmp_path / "state")), capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no plan file at" in missing.stderr
