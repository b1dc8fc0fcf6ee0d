"""What the CLI prints: JSON documents, tables, and hints and errors in CLI words (``boxforge logs
j-... --follow``), never in MCP words. Progress and hints go to stderr; results to stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table

from server.domain.durations import format_duration
from server.domain.hints import Hint, HintKind
from server.errors import ForgeError, InvalidInput
from server.schemas import JobStatusResult, ServerInfo, render_hints

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

_WORDS: dict[HintKind, Callable[[Hint], str]] = {
    HintKind.FORGING: lambda h: f"forging in the background: watch boxforge ls until {h.server!r} is ready",
    HintKind.POLL_JOB: lambda h: (f"started in the background{' (same key: existing job)' if h.reused else ''}; "
                                  f"follow it with boxforge logs {h.job_id} --follow"),
    HintKind.STILL_RUNNING: lambda h: (f"still running after {h.wait_s or 0:.0f}s; it continues in the background: "
                                       f"follow it with boxforge logs {h.job_id} --follow"),
    HintKind.MORE_OUTPUT: lambda h: f"more output: boxforge logs {h.job_id}",
    HintKind.WAIT_JOB: lambda h: f"still running: boxforge logs {h.job_id} --follow waits for it",
    HintKind.AGENT_STARTED: lambda h: (f"the agent works in the background: follow it with boxforge logs {h.job_id} "
                                       f"--follow, then review its work with boxforge diff {h.server}"),
    HintKind.EXPIRES_SOON: lambda h: (f"box expires in {format_duration(h.left_s or 0)}: boxforge extend NAME TTL "
                                      "keeps it; at the burn its branch (commits and uncommitted changes) is "
                                      f"harvested into refs/boxforge/{h.server or '<box>'}/<branch>, or "
                                      "boxforge fetch it now"),
    HintKind.NO_BOXES: lambda h: "create one with boxforge up",
    HintKind.LIST_JOBS: lambda h: "boxforge jobs shows all",
    HintKind.KILL_JOB: lambda h: "it ignores SIGTERM; boxforge burn NAME stops everything on its box",
    HintKind.EXTEND_LATER: lambda h: "use a shorter --ttl and boxforge extend NAME TTL later if needed",
    HintKind.BURN_FIRST: lambda h: f"boxforge burn {h.server} first to reuse the name",
    HintKind.NEEDS_AGENT: lambda h: ("forge one with boxforge up --agent claude (or codex, or custom with "
                                     "--agent-command), or run it with boxforge run"),
    HintKind.EXTEND_AGAIN: lambda h: f"run boxforge extend {h.server} again once it answers",
    HintKind.DIFF_CUT: lambda h: f"raise --max-bytes, or read single files with boxforge ssh {h.server} -- cat FILE",
    HintKind.JOBS_ENDED: lambda h: "read an ended job's output with boxforge logs JOB_ID",
    HintKind.KEEP_WORK: lambda h: f"bring the work home with boxforge fetch {h.server}",
    HintKind.FETCHED: lambda h: (f"boxforge compare NAME... shows overlaps; boxforge land {h.server} merges it; "
                                 f"boxforge push {h.server} pushes it"),
    HintKind.COMPARED: lambda h: f"boxforge land {h.server.replace(',', ' ') if h.server else 'NAME...'} merges "
                                 "them in that order",
    HintKind.BURN_UNHARVESTED: lambda h: f"boxforge burn {h.server} --no-harvest burns it without",
    HintKind.KEY_TAKEN: lambda h: f"the first job's output: boxforge logs {h.job_id}; use a new key",
    HintKind.BOX_BUSY: lambda h: (f"every SSH session to {h.server} was held by other commands until just before "
                                  f"the timeout ({h.wait_s or 0:.0f}s); it runs on: follow it with boxforge logs "
                                  f"{h.job_id} --follow, and run fewer commands at once on this box"),
}


def words(hint: Hint) -> str:
    return _WORDS[hint.kind](hint)


def error_text(exc: Exception) -> str:
    hint = exc.hint if isinstance(exc, ForgeError) else None
    return f"{exc} ({words(hint)})" if hint is not None else str(exc)


def worded(result: Any) -> Any:
    """``result`` with its hints in CLI words."""
    render_hints(result, words)
    return result


def valid(adapter: TypeAdapter[Any], value: Any) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise InvalidInput("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None


def dump(data: BaseModel | list[BaseModel] | dict[str, Any]) -> None:
    """One JSON document on stdout."""
    worded(data)
    if isinstance(data, BaseModel):
        payload: Any = data.model_dump(mode="json")
    elif isinstance(data, list):
        payload = [d.model_dump(mode="json") for d in data]
    else:
        payload = data
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def _money(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _left(s: ServerInfo) -> str:
    left = s.time_left or "-"
    return f"[yellow]{left}[/]" if s.warning and s.state == "ready" else left


def _agent(s: ServerInfo) -> str:
    """``claude 2.1.332 (node 22.12.0, npm)``: the agent, its release and the Node it runs on."""
    if s.agent in (None, "none"):
        return "-"
    if not s.agent_version:
        return s.agent or "-"
    return f"{s.agent} {s.agent_version} (node {s.node_version}, {s.node_source})"


def servers_table(servers: Sequence[ServerInfo], title: str | None = None) -> Table:
    table = Table(title=title)
    priced = any(s.price_per_hour is not None for s in servers)  # cloud boxes: show what they cost
    sized = any(s.size for s in servers)
    agents = any(s.agent not in (None, "none") for s in servers)
    for col in ("name", "state", "address", *(("size",) if sized else ()), *(("agent",) if agents else ()), "branch",
                "time left", "project dir", *(("€/h", "cost") if priced else ())):
        table.add_column(col)
    for s in servers:
        state = s.state if not s.error else f"{s.state}: {s.error[:60]}"
        row = [s.name, state, s.address or "-", *((s.size or "-",) if sized else ()),
               *((_agent(s),) if agents else ()), s.branch or "-", _left(s), s.project_dir or "-"]
        if priced:
            row += [_money(s.price_per_hour), _money(s.cost_so_far)]
        table.add_row(*row)
    return table


def job_line(job_id: str, status: JobStatusResult) -> str:
    code = "" if status.exit_code is None else f" (exit {status.exit_code})"
    return f"[dim]{job_id}: {status.state}{code}[/]"
