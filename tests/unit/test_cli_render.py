"""What the CLI's tables and messages look like: at 80 columns a box's name, state, address with port and
time left stay whole (the rest drops); piped, nothing is cut; Rich markup in any text shows as typed; a box
that is gone is described by what became of it."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from server.cli import render
from server.cli.commands import _JOB_COLUMNS, pool_table
from server.cli.render import column_table, error_line, land_outcome, print_table, servers_table, table
from server.git.land import LandOutcome
from server.schemas import JobSummary, PoolProfileStatus, PoolStatus, ServerInfo
from server.service.boxes import ended_text
from server.store import BoxRecord

LONG_DIR = "/home/agent/projects/a-rather-long-project-directory-name/with/more/levels"


def boxes() -> list[ServerInfo]:
    return [ServerInfo(name=f"feat-box-number-{i}", provider="hetzner", state="ready",
                       address=f"root@203.0.113.{i}:2222", project_dir=LONG_DIR, branch=f"feat/branch-number-{i}",
                       time_left="1h59m", size="cx33", price_per_hour=0.0123, cost_so_far=0.0246)
            for i in range(3)]


def console(*, terminal: bool, width: int = 80) -> Console:
    return Console(file=io.StringIO(), force_terminal=terminal, width=width, markup=False, highlight=False,
                   color_system=None)


def rendered(c: Console) -> str:
    assert isinstance(c.file, io.StringIO)
    return c.file.getvalue()


def test_a_table_at_80_columns_keeps_name_state_address_and_time_left_whole() -> None:
    term = console(terminal=True)
    print_table(servers_table(boxes(), console=term), term)
    text = rendered(term)
    assert max(len(line) for line in text.splitlines()) <= 80
    for s in boxes():
        assert s.name in text and s.address in text and "1h59m" in text
    header = text.splitlines()[1]
    assert "state" in header and "time left" in header
    assert "project dir" not in header and LONG_DIR not in text  # dropped first, not cut into pieces


def test_a_wide_terminal_shows_every_column() -> None:
    term = console(terminal=True, width=250)
    print_table(servers_table(boxes(), console=term), term)
    text = rendered(term)
    assert LONG_DIR in text and "feat/branch-number-2" in text and "0.0246" in text


def test_piped_output_is_never_cut() -> None:
    piped = console(terminal=False)
    print_table(servers_table(boxes(), console=piped), piped)
    text = rendered(piped)
    assert LONG_DIR in text and "feat/branch-number-1" in text and "cx33" in text


def test_markup_in_cells_and_errors_shows_as_typed_on_the_clis_own_consoles() -> None:
    box = ServerInfo(name="b", provider="local", state="failed", error="[bootstrap] exited 1 [red]boom[/red]")
    for real in (render.out, render.err):
        real.file = io.StringIO()
        try:
            print_table(servers_table([box], console=real), real)
            real.print(error_line("command '[red]x[/]' failed"))
            real.print("[bold]as typed[/bold]", style="dim")
            text = rendered(real)
        finally:
            real.file = None  # back to sys.stdout / sys.stderr
        assert "[bootstrap] exited 1 [red]boom[/red]" in text and "command '[red]x[/]' failed" in text
        assert "[bold]as typed[/bold]" in text


def record(**changes: object) -> BoxRecord:
    values: dict[str, object] = dict(
        name="web", box_id="b1", provider="local", state="destroyed", step=None, key_id="k", request_id="r1",
        host=None, ssh_port=None, ssh_user=None, home=None, project_dir=None, repo="/src/repo", branch="main",
        base_commit="abc", agent=None, size=None, location=None, data=None, error=None, created_at=1000.0,
        ready_at=1001.0, expires_at=4600.0, destroyed_at=4610.0)
    values.update(changes)
    return BoxRecord(**values)  # type: ignore[arg-type]


def test_a_box_that_expired_is_described_by_when_and_where_its_work_went() -> None:
    harvest = {"kind": "harvest", "ts": 4605.0, "detail": "ttl: came home as refs/boxforge/web/main (abc) in /src"}
    said = ended_text(record(error="expired"), harvest, now=4600.0 + 3600)
    assert said.startswith("server 'web' expired at 1970-01-01T01:16:40Z (60m ago) and was burned")
    assert said.endswith("its work came home as refs/boxforge/web/main (abc) in /src")
    failed = {"kind": "harvest-failed", "ts": 4605.0, "detail": "ttl: work NOT harvested (no answer)"}
    assert "its work was NOT harvested" in ended_text(record(), failed, now=5000.0)
    assert "not harvested before the burn" in ended_text(record(), None, now=5000.0)


def test_a_box_burned_before_its_expiry_or_failed_says_so() -> None:
    burned = ended_text(record(destroyed_at=2000.0, repo=None, base_commit=None), None, now=2060.0)
    assert burned == "server 'web' was burned at 1970-01-01T00:33:20Z (1m ago); it had no repo to bring home"
    failed = ended_text(record(state="failed", error="setup exited 2"), None, now=5000.0)
    assert "failed to create" in failed and "setup exited 2" in failed


def jobs() -> list[JobSummary]:
    return [JobSummary(job_id=f"j-{i:024x}", server="feat-box", state="succeeded", exit_code=0, duration_s=1.5,
                       command="pytest -q tests/ --maxfail=1 " + "x" * 60) for i in range(2)]


def test_the_jobs_table_fits_the_terminal_with_job_ids_and_states_whole() -> None:
    narrow = console(terminal=True, width=70)
    print_table(column_table(jobs(), _JOB_COLUMNS, ("duration",), whole=("job", "state"), console=narrow), narrow)
    text = rendered(narrow)
    assert max(len(line) for line in text.splitlines()) <= 70
    for j in jobs():
        assert j.job_id in text
    assert text.count("succeeded") == len(jobs())


def test_a_plain_table_has_its_columns_and_rows_in_order() -> None:
    piped = console(terminal=False)
    print_table(table(("box", "state"), [("a", "ready"), ("b", "failed")], title="two"), piped)
    cells = [[c.strip() for c in line.strip("│┃ ").split(line[0])] for line in rendered(piped).splitlines()
             if line[:1] in ("│", "┃")]
    assert cells == [["box", "state"], ["a", "ready"], ["b", "failed"]]


@pytest.mark.parametrize("conflict", [False, True])
def test_land_and_plan_land_print_the_same_outcome_and_exit_1_on_a_conflict(
        conflict: bool, capsys: pytest.CaptureFixture[str]) -> None:
    outcome = LandOutcome(repo="/r", into="main", landed=["a"], commit="c" * 40,
                          conflict_box="b" if conflict else None, conflict_files=["f.py"] if conflict else [],
                          not_tried=["c"] if conflict else [])
    assert land_outcome(outcome, as_json=False) == (1 if conflict else 0)
    said = capsys.readouterr().out
    assert outcome.summary() in said
    assert ("the merge of b was aborted; /r is clean; not tried: c" in said) is conflict


def test_the_pool_table_names_waiting_boxes_or_why_a_pool_is_off() -> None:
    status = PoolStatus(profiles=[
        PoolProfileStatus(profile="warm", provider="local", count=2, ready=1, starting=1, boxes=["warm-1"]),
        PoolProfileStatus(profile="cloud", provider="hetzner", count=1, ready=0, starting=0, boxes=[],
                          off="no cost ceiling")])
    piped = console(terminal=False)
    print_table(pool_table(status), piped)
    text = rendered(piped)
    assert "warm-1" in text and "no cost ceiling" in text and text.index("warm") < text.index("cloud")

