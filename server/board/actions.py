"""The board's actions: each a validated request model and one Fleet call, with the same checks as the CLI
(box names, TTLs and job ids through the tool schemas' types; the land takes approved boxes only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.domain.durations import check_ttl_within
from server.domain.states import ReviewState
from server.errors import InvalidInput
from server.git.land import LandOutcome
from server.schemas import Branch, JobId, ServerName, TtlSeconds

if TYPE_CHECKING:
    from server.board.hub import BoardHub
    from server.service import Fleet


class Action(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OnBox(Action):
    server: ServerName


class Extend(OnBox):
    ttl: TtlSeconds = Field(description="New time to live from now: 30m, 2h")


class CancelJob(Action):
    job_id: JobId
    signal: Literal["TERM", "INT", "KILL"] = "TERM"


class SetReview(OnBox):
    state: Literal["unreviewed", "reviewed", "approved"]


class RequestChanges(OnBox):
    note: str = Field(min_length=1, max_length=16 * 1024, description="What to change")
    send: bool = Field(False, description="Also run the box's agent on the note")


class Land(Action):
    servers: list[ServerName] = Field(min_length=1, max_length=100, description="Approved boxes, in merge order")
    into: Branch | None = None


def outcome_doc(outcome: LandOutcome) -> dict[str, Any]:
    return {"repo": outcome.repo, "into": outcome.into, "landed": outcome.landed, "commit": outcome.commit,
            "conflict_box": outcome.conflict_box, "conflict_files": outcome.conflict_files,
            "conflict_with": outcome.conflict_with, "not_tried": outcome.not_tried, "ok": outcome.ok,
            "summary": outcome.summary()}


class Actions:
    """The POSTs of the board, by name."""

    MODELS: ClassVar[dict[str, type[Action]]] = {"extend": Extend, "burn": OnBox, "fetch": OnBox, "cancel": CancelJob,
                                                 "review": SetReview, "request_changes": RequestChanges, "land": Land}

    def __init__(self, hub: BoardHub) -> None:
        self.hub = hub

    async def run(self, name: str, body: Action) -> dict[str, Any]:
        result = await getattr(self, f"_{name}")(self.hub.fleet, body)
        self.hub.poke()
        return result

    async def _extend(self, fleet: Fleet, a: Extend) -> dict[str, Any]:
        if too_long := check_ttl_within(a.ttl, fleet.settings.max_ttl_s):
            raise InvalidInput(too_long)
        info = await fleet.extend_server(a.server, a.ttl)
        return {"message": f"{info.name} now expires at {info.expires_at} ({info.time_left} left)"}

    async def _burn(self, fleet: Fleet, a: OnBox) -> dict[str, Any]:
        result = await fleet.destroy_server(a.server, harvest=True)
        return {"message": result.message, "harvested": result.harvested, "harvest": result.harvest}

    async def _fetch(self, fleet: Fleet, a: OnBox) -> dict[str, Any]:
        result = await fleet.fetch(a.server)
        return {"message": f"{a.server}: {result.ref} at {result.tip[:12]} in {result.repo}"}

    async def _cancel(self, fleet: Fleet, a: CancelJob) -> dict[str, Any]:
        result = await fleet.cancel_job(a.job_id, a.signal)
        return {"message": f"{result.job_id}: {result.message} ({result.state})"}

    async def _review(self, fleet: Fleet, a: SetReview) -> dict[str, Any]:
        rec = await fleet.boxes.ready(a.server)
        tip = await self._tip(fleet, a.server)
        old = (await fleet.repo.reviews([rec.request_id])).get(rec.request_id) or {}
        await fleet.repo.save_review(rec.request_id, rec.name, a.state, old.get("note"), tip)
        return {"message": f"{a.server}: {a.state}"}

    async def _request_changes(self, fleet: Fleet, a: RequestChanges) -> dict[str, Any]:
        rec = await fleet.boxes.ready(a.server)
        if a.send and (rec.agent or "none") == "none":
            raise InvalidInput(f"{a.server} has no agent to send the note to (it was made with agent none); "
                               "save the note without sending it")
        await fleet.repo.save_review(rec.request_id, rec.name, ReviewState.CHANGES_REQUESTED, a.note,
                                     await self._tip(fleet, a.server))
        if not a.send:
            return {"message": f"{a.server}: changes requested"}
        run = await fleet.run_agent(a.server, a.note)
        return {"message": f"{a.server}: changes requested; its agent is working on them in job {run.job_id}",
                "job_id": run.job_id}

    async def _land(self, fleet: Fleet, a: Land) -> dict[str, Any]:
        recs = [await fleet.boxes.ready(name) for name in dict.fromkeys(a.servers)]
        reviews = await fleet.repo.reviews([r.request_id for r in recs])
        unapproved = [r.name for r in recs if (reviews.get(r.request_id) or {}).get("state") != ReviewState.APPROVED]
        if unapproved:
            raise InvalidInput(f"not approved: {', '.join(unapproved)}; approve them first (only approved boxes land)")
        outcome = await fleet.land([r.name for r in recs], into=a.into)
        for rec in recs:
            if rec.name in outcome.landed:
                review = reviews[rec.request_id]
                await fleet.repo.save_review(rec.request_id, rec.name, ReviewState.LANDED, review.get("note"),
                                             review.get("tip"))
        return {"message": outcome.summary(), "outcome": outcome_doc(outcome)}

    @staticmethod
    async def _tip(fleet: Fleet, server: str) -> str | None:
        compared = (await fleet.compare([server])).boxes[0]
        return compared.commits[0].id if compared.commits else None
