"""The board end to end in headless chromium, against real local boxes made and driven by the CLI: the fleet
appears; a job started from the CLI shows up and its output streams; hostile output and names are shown as text;
approve → land merges the branch into the test repo; an action without the CSRF token is refused; a box burned
from the CLI disappears. One module-scoped fleet of two boxes and one browser page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from playwright.sync_api import expect

from server.config import Settings
from server.service import Fleet
from tests.board.support import as_json, board_process, boxforge, chromium, with_fleet
from tests.support import git, make_repo, make_settings

pytestmark = pytest.mark.timeout(240)
LIVE_MS = 15_000  # deadline for the page to show a change (the board's own figure is in docs/performance.md)
SECRET = "board-secret-value-6f1d2c"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Path]]:
    root = tmp_path_factory.mktemp("board")
    settings = make_settings(root / "state")
    repo = make_repo(root / "repo")

    async def forge(fleet: Fleet) -> None:
        async with anyio.create_task_group() as tg:
            for branch in ("feat/one", "feat/two"):
                tg.start_soon(lambda b=branch: fleet.create_server(b.replace("/", "-"), repo=str(repo), branch=b,
                                                                   ttl_s=1800))

    with_fleet(settings, forge)
    try:
        yield settings, repo
    finally:
        async def burn_all(fleet: Fleet) -> None:
            for rec in await fleet.repo.live_boxes():
                await fleet.destroy_server(rec.name, harvest=False)

        with_fleet(settings, burn_all)


@pytest.fixture(scope="module")
def board(fleet: tuple[Settings, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings, _ = fleet
    with board_process(settings, log=tmp_path_factory.mktemp("board-log") / "board.log") as url:
        yield url


@pytest.fixture(scope="module")
def page(board: str) -> Iterator[Any]:
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(board)  # the one-time token becomes the session cookie; the URL loses it
        assert page.url.endswith("/board/")
        yield page
        context.close()


def test_the_fleet_appears_live(page: Any) -> None:
    page.wait_for_selector('article[data-box="feat-one"]', timeout=LIVE_MS)
    page.wait_for_selector('article[data-box="feat-two"]', timeout=LIVE_MS)
    card = page.locator('article[data-box="feat-one"]')
    assert "feat/one" in card.inner_text() and "ready" in card.inner_text()
    assert "left" in card.locator(".countdown").inner_text()
    page.wait_for_selector("#live.on", timeout=LIVE_MS)


def test_a_job_started_from_the_cli_shows_up_and_its_output_streams(page: Any, fleet: tuple[Settings, Path]) -> None:
    settings, _ = fleet
    started = as_json(settings, "run", "feat-one", "--background",
                      "echo first-line; while [ ! -e go ]; do sleep 0.1; done; echo last-line")
    job_id = started["job_id"]
    page.wait_for_selector(f'li.job.running[data-job="{job_id}"]', timeout=LIVE_MS)
    page.locator(f'li[data-job="{job_id}"] a').click()
    expect(page.locator("#job-out")).to_contain_text("first-line", timeout=LIVE_MS)
    assert page.locator("#job-state").inner_text().startswith("running")
    with_fleet(settings, lambda f: f.run("feat-one", "touch go"))  # the job may end now: its output streams on
    expect(page.locator("#job-out")).to_contain_text("last-line", timeout=LIVE_MS)
    expect(page.locator("#job-state")).to_have_text(re.compile("^succeeded"), timeout=LIVE_MS)
    page.goto(page.url.split("#")[0] + "#fleet")
    page.wait_for_selector(f'li.job.succeeded[data-job="{job_id}"]', timeout=LIVE_MS)


HOSTILE = ("printf '<script>window.pwned=1</script>\\n\\033[31mred\\033[0m text\\n'; "
           "head -c 100000 /dev/zero | tr '\\0' x; echo")


def test_a_secret_the_job_prints_is_redacted_as_the_tools_redact_it(page: Any, fleet: tuple[Settings, Path]) -> None:
    settings, _ = fleet
    job_id = with_fleet(settings, lambda f: f.run("feat-one", "echo token=$BOARD_SECRET", env={"BOARD_SECRET": SECRET},
                                                  background=True)).job_id
    page.goto(page.url.split("#")[0] + f"#job/{job_id}")
    expect(page.locator("#job-state")).to_have_text(re.compile("^succeeded"), timeout=LIVE_MS)
    assert page.locator("#job-out").text_content() == "token=[redacted:BOARD_SECRET]\n"
    page.goto(page.url.split("#")[0] + "#fleet")
    expect(page.locator(f'li[data-job="{job_id}"] .last-line')).to_have_text("token=[redacted:BOARD_SECRET]",
                                                                               timeout=LIVE_MS)
    assert SECRET not in page.content()
    assert SECRET not in page.evaluate("fetch('api/fleet').then(r => r.text())")


def test_hostile_output_and_names_are_shown_as_text(page: Any, fleet: tuple[Settings, Path]) -> None:
    settings, _ = fleet
    job_id = with_fleet(settings, lambda f: f.run("feat-one", HOSTILE)).job_id
    page.goto(page.url.split("#")[0] + f"#job/{job_id}")
    expect(page.locator("#job-state")).to_have_text(re.compile("^succeeded"), timeout=LIVE_MS)
    shown = page.locator("#job-out").text_content()
    assert "<script>window.pwned=1</script>" in shown  # shown as the text it is
    assert "\x1b" not in shown and "red text" in shown
    assert "more characters]" in shown and len(shown) < 20_000  # the 100,000-character line is cut
    assert page.evaluate("window.pwned") is None
    assert page.locator("#job-out script").count() == 0


def test_approve_then_land_merges_the_branch_into_the_repo(page: Any, fleet: tuple[Settings, Path]) -> None:
    settings, repo = fleet
    with_fleet(settings, lambda f: f.run(
        "feat-one", "echo landed > a.txt && echo x > '<img src=x onerror=window.pwned=2>.txt' && git add -A && "
        "git -c user.name=t -c user.email=t@example.invalid commit -qm 'add a <img src=x onerror=window.pwned=3>'"))
    page.goto(page.url.split("#")[0] + "#review")
    row = page.locator('#queue li[data-server="feat-one"]')
    row.wait_for(timeout=60_000)
    assert "add a <img src=x onerror=window.pwned=3>" in row.inner_text()
    assert page.locator('#queue li[data-server="feat-two"]').count() == 0  # no work: not in the queue
    page.keyboard.press("a")  # approve the selected row
    page.wait_for_selector('#queue li[data-server="feat-one"] .badge.approved', timeout=60_000)
    page.keyboard.press("Enter")  # the selected row's diff
    page.wait_for_selector("#diff .d2h-file-name", timeout=60_000)
    assert "<img src=x onerror=window.pwned=2>.txt" in page.locator("#diff").inner_text()
    page.goto(page.url.split("#")[0] + "#review")
    page.wait_for_selector('#queue li[data-server="feat-one"] .badge.approved', timeout=60_000)
    page.locator("#land-approved").click()
    page.locator("#confirm-ok").click()
    page.wait_for_selector("#land-result.ok", timeout=60_000)
    assert "feat-one" in page.locator("#land-result").inner_text()
    assert git(repo, "show", "main:a.txt") == "landed"
    page.wait_for_selector('#queue li[data-server="feat-one"] .badge.landed', timeout=60_000)
    assert page.evaluate("window.pwned") is None


def test_a_land_in_the_chosen_order_stops_at_the_first_conflict_and_shows_it(
        page: Any, fleet: tuple[Settings, Path]) -> None:
    settings, repo = fleet
    commit = "git -c user.name=t -c user.email=t@example.invalid commit -qam"

    async def clash(f: Fleet) -> None:
        await f.run("feat-one", f"echo one > README.md && {commit} 'README: one'")
        await f.run("feat-two", f"echo two > README.md && {commit} 'README: two'")

    with_fleet(settings, clash)
    page.goto(page.url.split("#")[0] + "#review")
    page.locator("#review-refresh").click()
    for server in ("feat-one", "feat-two"):
        row = page.locator(f'#queue li[data-server="{server}"]')
        row.locator("header").click()  # select it
        page.keyboard.press("a")
        expect(row.locator(".badge.approved")).to_be_visible(timeout=60_000)
    # j/k move the selection through the queue (k stops at the top, j at the bottom); Enter opens the selected diff
    rows = page.locator("#queue > li")
    selected = re.compile(r"\bselected\b")
    for keys, at in ((["k", "k"], 0), (["j"], 1), (["j"], 1), (["k"], 0), (["j"], 1)):
        for key in keys:
            page.keyboard.press(key)
        expect(rows.nth(at)).to_have_class(selected)
        expect(rows.nth(1 - at)).not_to_have_class(selected)
    second = rows.nth(1).get_attribute("data-server")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(f"#diff/{second}$"), timeout=60_000)
    page.goto(page.url.split("#")[0] + "#review")
    for server in ("feat-one", "feat-two"):
        expect(page.locator(f'#queue li[data-server="{server}"] .badge.approved')).to_be_visible(timeout=60_000)
    if page.locator("#queue > li").first.get_attribute("data-server") != "feat-one":
        page.locator("#queue > li").first.get_by_role("button", name="↓").click()  # feat-one lands first
    assert [li.get_attribute("data-server") for li in page.locator("#queue > li").all()] == ["feat-one", "feat-two"]
    page.locator("#land-approved").click()
    expect(page.locator("#confirm-text")).to_contain_text("feat-one → feat-two")
    page.locator("#confirm-ok").click()
    expect(page.locator("#land-result.conflict")).to_contain_text("stopped at feat-two: README.md", timeout=60_000)
    assert git(repo, "show", "main:README.md") == "one"
    assert git(repo, "status", "--porcelain") == ""  # the user's checkout is left clean
    expect(page.locator('#queue li[data-server="feat-two"] .badge.approved')).to_be_visible()


def test_extend_cancel_and_request_changes_from_the_page_each_after_a_confirmation(
        page: Any, fleet: tuple[Settings, Path]) -> None:
    settings, _ = fleet
    page.goto(page.url.split("#")[0] + "#fleet")
    card = page.locator('article[data-box="feat-one"]')
    before = with_fleet(settings, lambda f: f.repo.live_box("feat-one")).expires_at
    card.get_by_role("button", name="Extend…").click()
    page.locator("#confirm-input").fill("2h")
    page.locator("#confirm-ok").click()
    expect(page.locator("#toast")).to_contain_text("now expires", timeout=LIVE_MS)
    assert with_fleet(settings, lambda f: f.repo.live_box("feat-one")).expires_at > before + 3600

    job_id = with_fleet(settings, lambda f: f.run("feat-one", "sleep 300", background=True)).job_id
    page.goto(page.url.split("#")[0] + f"#job/{job_id}")
    expect(page.locator("#job-state")).to_have_text(re.compile("^running"), timeout=LIVE_MS)
    page.locator("#job-cancel").click()
    page.get_by_role("button", name="Cancel", exact=True).click()  # the confirmation's own cancel: nothing sent
    assert with_fleet(settings, lambda f: f.repo.job_and_box(job_id))[0].state == "running"
    page.locator("#job-cancel").click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#job-state")).to_have_text(re.compile("^killed"), timeout=LIVE_MS)

    page.goto(page.url.split("#")[0] + "#review")
    row = page.locator('#queue li[data-server="feat-one"]')
    row.get_by_role("button", name="Request changes…").click()
    page.locator("#confirm-input").fill("split <b>auth</b> out")
    page.locator("#confirm-ok").click()
    expect(row.locator(".badge.changes_requested")).to_be_visible(timeout=60_000)
    expect(row.locator(".note")).to_contain_text("split <b>auth</b> out")


def test_the_fleet_fits_a_phone_width_screen(page: Any) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        page.goto(page.url.split("#")[0] + "#fleet")
        page.wait_for_selector('article[data-box="feat-one"]', timeout=LIVE_MS)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})


def test_an_action_without_the_csrf_token_is_refused(page: Any, fleet: tuple[Settings, Path]) -> None:
    settings, _ = fleet
    status = page.evaluate("""async () => (await fetch('api/actions/burn', {method: 'POST',
        headers: {'content-type': 'application/json'}, body: JSON.stringify({server: 'feat-two'})})).status""")
    assert status == 403
    assert with_fleet(settings, lambda f: f.repo.live_box("feat-two")) is not None


def test_a_box_burned_from_the_cli_disappears(page: Any, fleet: tuple[Settings, Path]) -> None:
    settings, _ = fleet
    page.goto(page.url.split("#")[0] + "#fleet")
    page.wait_for_selector('article[data-box="feat-two"]', timeout=LIVE_MS)
    result = boxforge(settings, "burn", "feat-two", "--no-harvest")
    assert result.returncode == 0, result.stderr
    page.wait_for_selector('article[data-box="feat-two"]', state="detached", timeout=LIVE_MS)
    assert page.locator('article[data-box="feat-one"]').count() == 1
