"""``python -m tests.board_screenshots [OUT_DIR]``: regenerate docs/board/*.png, the board's main views, from a
real run: two local boxes forged from a test repo with work on them (commits, a running job, a finished one), a
review approved, the board started as a user starts it, headless chromium. The plan in the plans view is a
store record written here (a real plan run would cost minutes of boxes for one picture). Never by hand."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import anyio

from server.service import Fleet
from tests.board.support import board_process, chromium, with_fleet
from tests.support import REPO_ROOT, git, make_repo, make_settings

os.environ.setdefault("BOXFORGE_IMAGE_CACHE", str(Path.home() / ".cache" / "boxforge-test-images"))
COMMIT = "git -c user.name=agent -c user.email=a@example.invalid commit -q"
WORK = {
    "feat-login": ("feat/login", "mkdir -p src && printf 'def login(user):\\n    return check(user)\\n' > src/auth.py"
                   f" && git add -A && {COMMIT}m 'auth: login checks the user' && printf '\\n# session cookie\\n' "
                   f">> README.md && {COMMIT}am 'README: the session cookie'"),
    "feat-schema": ("feat/schema", "printf 'CREATE TABLE users (id INTEGER PRIMARY KEY);\\n' > schema.sql && "
                    f"printf '\\n# schema v2\\n' >> README.md && git add -A && {COMMIT}m 'schema: users table'"),
}
RUNNING = "for i in $(seq 1 400); do echo \"test $i: ok\"; sleep 0.5; done"


def plan_doc(boxes: list[str]) -> dict[str, object]:
    now = time.time()
    tasks = [("api", [], "succeeded", boxes[0], "passed"), ("ui", ["api"], "running", boxes[0], None),
             ("docs", [], "succeeded", boxes[1], "passed"), ("release", ["ui", "docs"], "pending", None, None)]
    return {"plan": {"name": "login-flow", "tasks": [{"id": t, "branch": f"plan/{t}", "depends_on": d}
                                                    for t, d, *_ in tasks]},
            "board": {"plan_id": "p-0a1b2c3d4e", "name": "login-flow", "state": "running", "repo": "/repo",
                      "started_at": now - 300, "boxes_max": 2,
                      "tasks": [{"id": t, "state": s, "branch": f"plan/{t}", "box": b, "check": c,
                                 "started_at": now - 280 if s != "pending" else None,
                                 "finished_at": now - 120 if s == "succeeded" else None} for t, _, s, b, c in tasks]}}


async def prepare(fleet: Fleet, repo: Path) -> None:
    async with anyio.create_task_group() as tg:
        for name, (branch, _) in WORK.items():
            tg.start_soon(lambda n=name, b=branch: fleet.create_server(n, repo=str(repo), branch=b, ttl_s=3 * 3600))
    for name, (_, work) in WORK.items():
        await fleet.run(name, work)
    await fleet.run("feat-schema", "echo migrating; echo 'applied 3 migrations'")
    await fleet.run("feat-login", RUNNING, background=True)
    rec = await fleet.boxes.ready("feat-schema")
    tip = (await fleet.compare(["feat-schema"])).boxes[0].commits[0].id
    await fleet.repo.save_review(rec.request_id, rec.name, "approved", None, tip)
    await fleet.repo.save_plan("p-0a1b2c3d4e", "screenshot", "login-flow", "running", plan_doc(list(WORK)))


async def burn_all(fleet: Fleet) -> None:
    for rec in await fleet.repo.live_boxes():
        await fleet.destroy_server(rec.name, harvest=False)


def shoot(url: str, out: Path) -> list[Path]:
    from playwright.sync_api import expect

    made = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        page.goto(url)
        page.wait_for_selector('article[data-box="feat-login"] .last-line')
        page.wait_for_selector("#live.on")

        def snap(name: str) -> None:
            path = out / f"{name}.png"
            page.screenshot(path=str(path))
            made.append(path)

        snap("fleet")
        page.locator('article[data-box="feat-login"] li.job.running a').first.click()
        expect(page.locator("#job-out")).to_contain_text("test 3: ok", timeout=30_000)
        snap("job")
        page.goto(url.split("/board/")[0] + "/board/#review")
        page.wait_for_selector('#queue li[data-server="feat-login"]', timeout=60_000)
        snap("review")
        page.keyboard.press("Enter")
        page.wait_for_selector("#diff .d2h-file-name", timeout=60_000)
        snap("diff")
        page.goto(url.split("/board/")[0] + "/board/#plans")
        page.wait_for_selector('[data-plan="p-0a1b2c3d4e"]')
        snap("plans")
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(url.split("/board/")[0] + "/board/#fleet")
        page.wait_for_selector('article[data-box="feat-login"]')
        snap("phone")
    return made


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else REPO_ROOT / "docs" / "board"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="boxforge-shots-") as tmp:
        root = Path(tmp)
        settings = make_settings(root / "state")
        repo = make_repo(root / "repo")
        git(repo, "config", "user.name", "you")
        try:
            with_fleet(settings, lambda fleet: prepare(fleet, repo))
            with board_process(settings, log=root / "board.log") as url:
                made = shoot(url, out)
        finally:
            with_fleet(settings, burn_all)
    for path in made:
        print(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
