"""The review queue: one row per ready box with work (commits ahead of base, or uncommitted changes), with the
git-home compare (ahead, diffstat, files, predicted overlaps with other boxes), the acceptance check (the plan
task's check, else the last job's end) and the review state the store keeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from server.board.text import one_line
from server.domain.states import BoxStatus, ReviewState
from server.schemas import CompareBox, Overlap
from server.service.git import CREATE_KINDS

if TYPE_CHECKING:
    from server.service import Fleet


def review_rows(compared: Sequence[CompareBox], overlaps: Sequence[Overlap], reviews: Mapping[str, dict[str, Any]],
                request_ids: Mapping[str, str], checks: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """The queue, pure: compare results + stored reviews (by request id) + check results (by box name)."""
    rows = []
    for box in compared:
        review = reviews.get(request_ids[box.server]) or {}
        if box.ahead > 0 or box.uncommitted or review:  # work to review, or a review already kept
            rows.append(_row(box, review, overlaps, checks.get(box.server)))
    return rows


def _row(box: CompareBox, review: Mapping[str, Any], overlaps: Sequence[Overlap], check: str | None) -> dict[str, Any]:
    tip = box.commits[0].id if box.commits else None
    state = review.get("state") or ReviewState.UNREVIEWED
    with_others = [{"server": next(s for s in o.servers if s != box.server), "files": [one_line(f) for f in o.files]}
                   for o in overlaps if box.server in o.servers]
    return {
        "server": box.server, "branch": one_line(box.branch), "ahead": box.ahead, "uncommitted": box.uncommitted,
        "commits": [{"id": c.id, "subject": one_line(c.subject)} for c in box.commits],
        "files": [one_line(f) for f in box.files],
        "diffstat": one_line(box.diffstat.splitlines()[-1]) if box.diffstat else "",
        "last_job": one_line(box.last_job), "check": check, "conflicts": with_others, "error": one_line(box.error),
        "state": state, "note": review.get("note"), "tip": tip,
        "changed_since_review": bool(review) and review.get("tip") != tip
        and state in (ReviewState.REVIEWED, ReviewState.APPROVED),
    }


async def review_queue(fleet: Fleet, checks: Mapping[str, str | None]) -> dict[str, Any]:
    recs = [r for r in await fleet.repo.live_boxes()
            if r.state == BoxStatus.READY and fleet.harvester.has_git(r) and r.base_commit]
    if not recs:
        return {"rows": []}
    compared = await fleet.compare([r.name for r in recs])
    reviews = await fleet.repo.reviews([r.request_id for r in recs])
    return {"rows": review_rows(compared.boxes, compared.overlaps, reviews, {r.name: r.request_id for r in recs},
                                checks)}


def check_result(box: Mapping[str, Any]) -> str | None:
    """A box's acceptance result as the board shows it: its plan task's check, else how its newest job ended
    (None while that job runs)."""
    if box.get("plan") and box["plan"].get("check"):
        return str(box["plan"]["check"])
    jobs = [j for j in box.get("jobs", []) if j["kind"] not in CREATE_KINDS]
    if not jobs:
        return None
    newest = max(jobs, key=lambda j: j["started_at"])
    return None if newest["state"] == "running" else ("passed" if newest["state"] == "succeeded" else "failed")
