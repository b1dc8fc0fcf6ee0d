"""The board's pure parts: text made safe for the page, the fleet document, the plan graph, the review rows,
and the auth's sessions and CSRF tokens."""

from __future__ import annotations

import time

from server.board.auth import BoardAuth
from server.board.review import check_result, review_rows
from server.board.text import for_page, last_line, one_line
from server.board.view import fleet_view, plans_view, shown_jobs, tasks_by_box
from server.schemas import CommitLine, CompareBox, Overlap, ServerInfo
from server.store import BoxRecord, JobRecord


def test_terminal_escapes_and_control_characters_are_removed() -> None:
    text = "\x1b[1;31mred\x1b[0m \x1b]0;title\x07bell\x07 \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ nul\x00 \x9b2Jx"
    assert for_page(text) == "red bell link nul x"
    assert for_page("a\r\nb\rc\td") == "a\nb\nc\td"
    assert for_page(None) == ""


def test_huge_lines_are_cut_with_the_count_said() -> None:
    shown = for_page("short\n" + "x" * 10_000, max_line=100)
    first, second = shown.split("\n")
    assert first == "short" and second == "x" * 100 + "… [9900 more characters]"


def test_one_line_and_last_line() -> None:
    assert one_line("a\nb  \x1b[2mc", 10) == "a b  c"
    assert one_line("y" * 50, 10) == "y" * 10 + "… [40 more characters]"
    assert last_line("one\ntwo\n\n  \n") == "two"
    assert last_line("\n\n") is None and one_line(None) is None


def record(name: str, request_id: str) -> BoxRecord:
    now = time.time()
    return BoxRecord(name=name, box_id="b", provider="local", state="ready", step=None, key_id=name,
                     request_id=request_id, host="127.0.0.1", ssh_port=2, ssh_user="u", home="/h", project_dir="/h/p",
                     repo="/r", branch="<b>feat</b>", base_commit="0" * 40, agent="none", size=None, location=None,
                     data={}, error=None, created_at=now - 100, ready_at=now - 90, expires_at=now + 600,
                     destroyed_at=None)


def job(job_id: str, state: str, created_at: float, out_tail: str = "") -> JobRecord:
    return JobRecord(job_id=job_id, box_name="b1", request_id="r1", command="make test", cwd=None, kind="command",
                     idempotency_key=None, state=state, exit_code=None if state == "running" else 0,
                     created_at=created_at, finished_at=None if state == "running" else created_at + 1,
                     out_tail=out_tail)


def test_running_jobs_come_first_then_the_newest_ended_few() -> None:
    jobs = [job(f"j-{i:012d}", "succeeded", i) for i in range(6)] + [job("j-run000000000", "running", 3)]
    assert [j.job_id for j in shown_jobs(jobs)] == ["j-run000000000", "j-000000000005", "j-000000000004",
                                                     "j-000000000003"]


def test_the_fleet_document_has_each_box_its_jobs_and_the_totals() -> None:
    now = time.time()
    rec = record("b1", "r1")
    info = ServerInfo(name="b1", provider="local", state="ready", time_left_s=600, cost_so_far=0.5, price_per_hour=1)
    jobs = {"r1": [job("j-000000000001", "running", now - 5, out_tail="a\n\x1b[31mlast\x1b[0m\n"),
                   job("j-000000000002", "succeeded", now - 50)]}
    doc = fleet_view([(rec, info)], jobs, now, reachable={"b1": True}, last_lines={"j-000000000002": "cached"},
                     tasks={})
    box = doc["boxes"][0]
    assert (doc["count"], doc["running_jobs"], doc["cost_so_far"]) == (1, 1, 0.5)
    assert box["branch"] == "<b>feat</b>" and box["reachable"] is True and box["plan"] is None
    assert [(j["job_id"], j["last_line"]) for j in box["jobs"]] == [("j-000000000001", "last"),
                                                                    ("j-000000000002", "cached")]
    assert box["jobs"][0]["elapsed_s"] >= 5


PLAN_DOC = {"plan": {"tasks": [{"id": "a"}, {"id": "b", "depends_on": ["a"]}]},
            "board": {"name": "p", "started_at": 1.0, "tasks": [
                {"id": "a", "state": "succeeded", "branch": "a", "box": "box-1", "check": "passed",
                 "started_at": 1.0, "finished_at": 3.0},
                {"id": "b", "state": "running", "branch": "b", "box": "box-1", "started_at": 3.0}]}}


def test_a_plans_graph_keeps_each_tasks_dependencies_and_the_box_serves_its_live_task() -> None:
    plans = plans_view([("p-1", "running", PLAN_DOC)], now=10.0)
    tasks = {t["id"]: t for t in plans[0]["tasks"]}
    assert tasks["b"]["depends_on"] == ["a"] and tasks["a"]["depends_on"] == []
    assert tasks["a"]["elapsed_s"] == 2.0 and tasks["b"]["elapsed_s"] == 7.0
    assert tasks_by_box(plans)["box-1"].task == "b"  # the box moved on from a to b


def compare_box(server: str, ahead: int, files: list[str], uncommitted: bool = False) -> CompareBox:
    commits = [CommitLine(id=f"c{server}{i}", subject=f"<i>{i}</i>") for i in range(ahead)]
    return CompareBox(server=server, ahead=ahead, commits=commits, files=files, uncommitted=uncommitted,
                      diffstat=" 1 file changed, 2 insertions(+)")


def test_review_rows_hold_only_boxes_with_work_or_a_review_and_name_the_overlaps() -> None:
    boxes = [compare_box("a", 2, ["x.py"]), compare_box("b", 0, []), compare_box("c", 0, ["x.py"], True),
             compare_box("d", 0, [])]
    overlaps = [Overlap(servers=["a", "c"], files=["x.py"])]
    reviews = {"ra": {"state": "approved", "tip": "ca0", "note": None},
               "rd": {"state": "landed", "tip": None, "note": None}}
    rows = review_rows(boxes, overlaps, reviews, {n: f"r{n}" for n in "abcd"}, {"a": "passed"})
    by = {r["server"]: r for r in rows}
    assert sorted(by) == ["a", "c", "d"]
    assert by["a"]["state"] == "approved" and by["a"]["check"] == "passed" and not by["a"]["changed_since_review"]
    assert by["a"]["conflicts"] == [{"server": "c", "files": ["x.py"]}]
    assert by["c"]["state"] == "unreviewed" and by["d"]["state"] == "landed"
    moved = review_rows([compare_box("a", 3, ["x.py"])], [], {"ra": {"state": "approved", "tip": "old"}},
                        {"a": "ra"}, {})
    assert moved[0]["changed_since_review"]  # new commits after the approval are flagged


def test_check_result_is_the_plan_check_else_the_last_ended_command() -> None:
    assert check_result({"plan": {"check": "failed"}, "jobs": []}) == "failed"
    jobs = [{"state": "succeeded", "kind": "command", "started_at": 1}, {"state": "failed", "kind": "command",
                                                                         "started_at": 2}]
    assert check_result({"plan": None, "jobs": jobs}) == "failed"
    running = [*jobs, {"state": "running", "kind": "agent", "started_at": 3}]
    assert check_result({"plan": None, "jobs": running}) is None  # the newest job has not ended
    assert check_result({"plan": None, "jobs": [{"state": "succeeded", "kind": "bootstrap", "started_at": 1}]}) is None


def test_a_one_time_token_makes_one_session_and_csrf_is_per_session() -> None:
    auth = BoardAuth("tok", one_time=True)
    assert auth.login("wrong") is None
    first = auth.login("tok")
    assert first is not None and auth.login("tok") is None
    assert auth.session(first.id) is first and auth.session("nope") is None and auth.session(None) is None
    assert auth.csrf_ok(first, first.csrf) and not auth.csrf_ok(first, "x") and not auth.csrf_ok(first, None)
    assert not auth.csrf_ok(None, first.csrf)


def test_the_bearer_login_is_not_spent_and_no_auth_still_has_csrf() -> None:
    auth = BoardAuth("bearer", one_time=False, bearer="bearer")
    assert auth.login("bearer") and auth.login("bearer")
    assert auth.bearer_ok("Bearer bearer") and not auth.bearer_ok("Bearer other") and not auth.bearer_ok(None)
    open_board = BoardAuth(None, one_time=False)
    sess = open_board.login(None)
    assert open_board.no_auth and sess is not None and not open_board.csrf_ok(sess, "")
