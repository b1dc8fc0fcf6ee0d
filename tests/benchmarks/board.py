"""The board's figures (issue 18), in headless chromium: a job's end on the page after it ends (median of N, a
real local box, the board as ``boxforge board`` runs it); the fleet view of 50 boxes and 500 jobs (synthetic
store records, no box behind them: the hub's probe is off) rendered, first and on each update; the board
server's CPU at idle with the page open, both fleets. ``python -m tests.benchmarks.board [N]``; figures go to
docs/performance.md by hand, with the load average printed here. Never a timed assertion."""

from __future__ import annotations

import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from server.board.app import board_app
from server.board.auth import BoardAuth
from server.board.hub import BoardHub
from server.mcp.http import HostGuard, allowed_host_names
from server.service import Fleet, open_fleet
from tests.board.records import add_box, add_job
from tests.board.support import board_with_pid, chromium, served, with_fleet
from tests.support import make_settings

os.environ.setdefault("BOXFORGE_IMAGE_CACHE", str(Path.home() / ".cache" / "boxforge-test-images"))
IDLE_S = 30.0
WATCH = """() => { window.seenEnd = {}; new MutationObserver(() => {
    for (const li of document.querySelectorAll('li.job[data-job]'))
        if (!li.classList.contains('running') && !(li.dataset.job in window.seenEnd))
            window.seenEnd[li.dataset.job] = Date.now() / 1000;
}).observe(document.body, {subtree: true, childList: true, attributes: true}); }"""


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def poll(page: Any, expression: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if value:
            return value
        page.wait_for_timeout(20)
    raise TimeoutError(expression)


def job_end_to_page(samples: int, root: Path) -> dict[str, Any]:
    settings = make_settings(root / "state")
    with_fleet(settings, lambda f: f.create_server("bench", ttl_s=1800))
    try:
        with board_with_pid(settings, log=root / "board.log") as (url, pid), chromium() as browser:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector('article[data-box="bench"]')
            page.evaluate(WATCH)
            lags = []
            for _ in range(samples):
                job_id = with_fleet(settings, lambda f: f.run("bench", "sleep 1.5", background=True)).job_id
                seen = poll(page, f"() => window.seenEnd['{job_id}']")
                ended = with_fleet(settings, lambda f, j=job_id: f.repo.job_and_box(j))[0].finished_at
                lags.append(seen - ended)
            page.wait_for_timeout(3000)  # settle, then idle with the page open
            before, started = proc_cpu_s(pid), time.monotonic()
            page.wait_for_timeout(IDLE_S * 1000)
            idle = (proc_cpu_s(pid) - before) / (time.monotonic() - started)
    finally:
        with_fleet(settings, lambda f: f.destroy_server("bench", harvest=False))
    return {"lag_median_ms": statistics.median(lags) * 1000, "lag_max_ms": max(lags) * 1000,
            "lag_min_ms": min(lags) * 1000, "idle_cpu_pct": idle * 100, "samples": len(lags)}


async def _synthetic_board(settings: Any, ready: threading.Event, stop: threading.Event, info: dict[str, Any]) -> None:
    async with open_fleet(settings) as fleet:
        fill(fleet)
        hub = BoardHub(first_probe_s=10**9)  # no box behind the records
        app = HostGuard(board_app(hub, BoardAuth(None, one_time=False)), allowed_host_names("127.0.0.1", {}),
                        wildcard=False)
        async with hub.serving(fleet), served(app) as url:
            info["url"], info["fleet"], info["hub"] = url, fleet, hub
            ready.set()
            await anyio.to_thread.run_sync(stop.wait)


def fill(fleet: Fleet, boxes: int = 50, jobs_per_box: int = 10) -> None:
    for b in range(boxes):
        box = add_box(fleet.store, f"box-{b:02d}", branch=f"feat/task-{b:02d}")
        for j in range(jobs_per_box):
            add_job(fleet.store, box, f"make test SHARD={j} && ./check.sh --verbose", age_s=600 - j * 10,
                    out_tail=f"shard {j}: 120 passed, 0 failed\n")


def big_fleet(root: Path, updates: int) -> dict[str, Any]:
    settings = make_settings(root / "state-synthetic")
    ready, stop, info = threading.Event(), threading.Event(), {}
    thread = threading.Thread(target=anyio.run, args=(_synthetic_board, settings, ready, stop, info), daemon=True)
    thread.start()
    assert ready.wait(120), "the synthetic board did not start"
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(info["url"] + "/board/")
            page.wait_for_selector('article[data-box="box-49"]')
            loaded = page.evaluate("() => performance.now()")  # navigation start to 50 cards on the page
            first = page.evaluate("() => window.boardFirstRenderMs")  # building and laying out the first 50 cards
            renders = []
            store = info["fleet"].store
            for i in range(updates):
                version = page.evaluate("() => Number(document.body.dataset.version)")
                box = store.live_box(f"box-{i % 50:02d}")
                store.update_box(box.request_id, branch=f"feat/moved-{i}")
                poll(page, f"() => Number(document.body.dataset.version) > {version}")
                renders.append(page.evaluate("() => window.boardRenderMs"))
            jobs = page.locator("li.job").count()
            before, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            page.wait_for_timeout(IDLE_S * 1000)
            after = resource.getrusage(resource.RUSAGE_SELF)
            idle = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / (time.monotonic() - started)
    finally:
        stop.set()
        thread.join(30)
    return {"loaded_ms": loaded, "first_render_ms": first, "render_median_ms": statistics.median(renders),
            "render_max_ms": max(renders),
            "jobs_on_page": jobs, "idle_cpu_pct": idle * 100, "refreshes": info["hub"].refreshes}


def main(argv: list[str]) -> int:
    samples = int(argv[0]) if argv else 20
    print(f"load average at start: {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="boxforge-board-bench-") as tmp:
        big = big_fleet(Path(tmp), samples)
        print(f"50 boxes / 500 jobs (page shows {big['jobs_on_page']} job rows): first render "
              f"{big['first_render_ms']:.0f} ms (navigation start to 50 cards: {big['loaded_ms']:.0f} ms); re-render "
              f"on an update median {big['render_median_ms']:.1f}"
              f" ms, max {big['render_max_ms']:.1f} ms (of {samples}); board CPU at idle with the page open "
              f"{big['idle_cpu_pct']:.2f}% of a core over {IDLE_S:.0f} s (in-process board; the browser driver idle)",
              flush=True)
        lag = job_end_to_page(samples, Path(tmp))
        print(f"job end -> page, median of {lag['samples']}: {lag['lag_median_ms']:.0f} ms (min "
              f"{lag['lag_min_ms']:.0f}, max {lag['lag_max_ms']:.0f}); board process CPU at idle, one real box, page "
              f"open: {lag['idle_cpu_pct']:.2f}% of a core over {IDLE_S:.0f} s", flush=True)
    print(f"load average at end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
