"""What the CLI prints: JSON documents, tables, and hints and errors in CLI words (``boxforge logs
j-... --follow``), never in MCP words. Progress and hints go to stderr; results to stdout.

Both consoles have Rich markup off: whatever a box, a command or a user wrote (``[bootstrap]``, ``[red]``)
shows as typed; styles are given as ``style=`` or ``Text`` spans, never as markup in a string. A table on a
terminal keeps its key columns whole and drops the others that do not fit; piped, nothing is cut."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from server.domain.durations import format_duration
from server.domain.hints import Hint, HintKind
from server.errors import ForgeError, InvalidInput
from server.schemas import JobStatusResult, ServerInfo, render_hints

if TYPE_CHECKING:
    from server.git.land import LandOutcome

out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
PIPED_WIDTH = 100_000  # a table written to a pipe or file is as wide as its cells: never cut

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


def _left(s: ServerInfo) -> Text:
    return Text(s.time_left or "-", style="yellow" if s.warning and s.state == "ready" else "")


def _agent(s: ServerInfo) -> str:
    """``claude 2.1.332 (node 22.12.0, npm)``: the agent, its release and the Node it runs on."""
    if s.agent in (None, "none"):
        return "-"
    if not s.agent_version:
        return s.agent or "-"
    return f"{s.agent} {s.agent_version} (node {s.node_version}, {s.node_source})"


def fitted(build: Callable[[Sequence[str]], Table], optional: Sequence[str], console: Console | None = None) -> Table:
    """The table ``build`` makes, without as many of the ``optional`` columns (dropped in the order given) as it
    takes to fit the terminal; piped output keeps them all, uncut. ``build`` gets the columns to leave out."""
    console = console or out
    if not console.is_terminal:
        return build(())
    dropped: list[str] = []
    made = build(dropped)
    for column in optional:
        if console.measure(made).maximum <= console.width:
            break
        dropped.append(column)
        made = build(dropped)
    return made


def print_table(table: Table, console: Console | None = None) -> None:
    """A table on the console; written to a pipe or a file, at its full width (nothing wrapped or cut)."""
    console = console or out
    if console.is_terminal:
        console.print(table)
        return
    piped = Console(file=console.file, width=PIPED_WIDTH, markup=False, highlight=False, color_system=None)
    piped.print(table, crop=False)


SERVER_KEY_COLUMNS = ("name", "state", "address", "time left")  # kept whole at any width
SERVER_OPTIONAL_COLUMNS = ("project dir", "cost", "€/h", "branch", "agent", "size")  # dropped first to last


Cell = str | Text
T = TypeVar("T")


def table(columns: Sequence[str], rows: Iterable[Sequence[Cell]], *, title: str | None = None,
          **options: Any) -> Table:
    """A table of ``rows`` under ``columns`` (``options``: Rich's Table options, e.g. ``title_justify``)."""
    made = Table(title=title, **options)
    for col in columns:
        made.add_column(col)
    for row in rows:
        made.add_row(*row)
    return made


def column_table(items: Sequence[T], columns: Mapping[str, Callable[[T], Cell]], optional: Sequence[str] = (), *,
                 whole: Collection[str] = (), whole_headers: bool = False, title: str | None = None,
                 console: Console | None = None) -> Table:
    """One row per item, one column per ``columns`` entry (its header -> the item's cell), ``fitted`` to the
    terminal by dropping ``optional`` columns; the ``whole`` columns never wrap, the others fold (with
    ``whole_headers``, never narrower than their header)."""

    def build(dropped: Sequence[str]) -> Table:
        kept = [c for c in columns if c not in dropped]
        made = Table(title=title)
        for col in kept:
            narrowest = len(col) if whole_headers and col not in whole else None
            made.add_column(col, no_wrap=col in whole, overflow="fold", min_width=narrowest)
        for item in items:
            made.add_row(*(columns[c](item) for c in kept))
        return made

    return fitted(build, optional, console)


_SERVER_COLUMNS: dict[str, Callable[[ServerInfo], Cell]] = {
    "name": lambda s: s.name,
    "state": lambda s: s.state if not s.error else f"{s.state}: {s.error}",
    "address": lambda s: s.address or "-",
    "size": lambda s: s.size or "-",
    "agent": _agent,
    "branch": lambda s: s.branch or "-",
    "time left": _left,
    "project dir": lambda s: s.project_dir or "-",
    "€/h": lambda s: _money(s.price_per_hour),
    "cost": lambda s: _money(s.cost_so_far),
}


def servers_table(servers: Sequence[ServerInfo], title: str | None = None, console: Console | None = None) -> Table:
    """Boxes, one per row. At 80 columns: name, state, address (user@host:port) and time left stay whole.
    Size, agent and prices are columns only when some box has them (prices: cloud boxes)."""
    priced = any(s.price_per_hour is not None for s in servers)
    shown = {"size": any(s.size for s in servers), "agent": any(s.agent not in (None, "none") for s in servers),
             "€/h": priced, "cost": priced}
    columns = {col: cell for col, cell in _SERVER_COLUMNS.items() if shown.get(col, True)}
    whole = [c for c in SERVER_KEY_COLUMNS if c != "state"]  # a long state (an error) folds instead
    return column_table(servers, columns, SERVER_OPTIONAL_COLUMNS, whole=whole, whole_headers=True, title=title,
                        console=console)


def land_outcome(outcome: LandOutcome, as_json: bool) -> int:
    """Print what a land did (``boxforge land``, ``boxforge plan land``); the exit status: 1 on a conflict."""
    if as_json:
        dump(dataclasses.asdict(outcome) | {"ok": outcome.ok})
    else:
        out.print(outcome.summary())
        if not outcome.ok:
            out.print(f"the merge of {outcome.conflict_box} was aborted; {outcome.repo} is clean; not tried: "
                      f"{', '.join(outcome.not_tried) or '-'}")
    return 0 if outcome.ok else 1


def expiry_warnings(servers: Sequence[ServerInfo]) -> list[str]:
    """One line per ready box that is about to expire (or has another warning), for stderr under a table."""
    return [f"{s.name}: {s.warning}" for s in servers if s.warning]


def job_line(job_id: str, status: JobStatusResult) -> Text:
    code = "" if status.exit_code is None else f" (exit {status.exit_code})"
    return Text(f"{job_id}: {status.state}{code}", style="dim")


def error_line(text: str, label: str = "error:") -> Text:
    """``error: TEXT`` with the label in red and the text as typed."""
    return Text.assemble((label, "red"), " ", text)


def styled(text: str, style: str) -> Text:
    return Text(text, style=style)
