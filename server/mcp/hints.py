"""Hints in MCP words: the next step as the tool call an agent makes."""

from __future__ import annotations

from collections.abc import Callable

from server.domain.durations import format_duration
from server.domain.hints import Hint, HintKind
from server.errors import ForgeError


def _offsets(h: Hint) -> str:
    return f"stdout_offset={h.stdout_offset}, stderr_offset={h.stderr_offset}"


_WORDS: dict[HintKind, Callable[[Hint], str]] = {
    HintKind.FORGING: lambda h: (
        f"forging in the background: poll list_servers until {h.server!r} is ready (its step field shows "
        "progress; a failure shows under failed); bootstrap_job_id appears once the box answers SSH, "
        "and vm_job_status on it follows the bootstrap log"),
    HintKind.POLL_JOB: lambda h: (
        f"started in the background{' (same idempotency_key: existing job)' if h.reused else ''}; "
        f"poll with vm_job_status(job_id='{h.job_id}', wait_s=30)"),
    HintKind.STILL_RUNNING: lambda h: (
        f"still running after {h.wait_s or 0:.0f}s; it continues in the background: poll "
        f"vm_job_status(job_id='{h.job_id}', {_offsets(h)}, wait_s=30) or vm_job_cancel it"),
    HintKind.MORE_OUTPUT: lambda h: f"more output: call again with {_offsets(h)}",
    HintKind.WAIT_JOB: lambda h: f"still running; call again with {_offsets(h)}, wait_s=30 to wait for it",
    HintKind.AGENT_STARTED: lambda h: (
        f"the agent works in the background: poll vm_job_status(job_id='{h.job_id}', wait_s=60) "
        f"until it ends, then review its work with vm_diff(server='{h.server}')"),
    HintKind.EXPIRES_SOON: lambda h: (
        f"box expires in {format_duration(h.left_s or 0)}: call extend_server to keep it; at the burn its branch "
        f"(commits and uncommitted changes) is harvested into refs/boxforge/{h.server or '<box>'}/<branch>, "
        "or vm_fetch it now"),
    HintKind.NO_BOXES: lambda h: "create one with create_server",
    HintKind.LIST_JOBS: lambda h: "vm_job_list shows all",
    HintKind.KILL_JOB: lambda h: f"retry with signal='KILL' (job_id='{h.job_id}')",
    HintKind.EXTEND_LATER: lambda h: "use a shorter ttl and extend_server later if needed",
    HintKind.BURN_FIRST: lambda h: f"destroy_server(name='{h.server}') first to reuse the name",
    HintKind.NEEDS_AGENT: lambda h: ("create a box with agent='claude', 'codex' or 'custom' (with agent_command), "
                                     "or run it with vm_bash"),
    HintKind.EXTEND_AGAIN: lambda h: "call extend_server again once it answers",
    HintKind.DIFF_CUT: lambda h: "raise max_bytes (up to 1 MiB) or read single files with vm_read",
    HintKind.JOBS_ENDED: lambda h: (
        "read an ended job's output with vm_job_status(job_id=..., stdout_offset=<yours>)"
        + (f"; wait for the rest with vm_job_wait(job_ids={list(h.job_ids)}, wait_s=60)" if h.job_ids else "")),
    HintKind.KEEP_WORK: lambda h: f"bring the work home with vm_fetch(server='{h.server}'); download other artifacts "
                                  "with vm_download",
    HintKind.FETCHED: lambda h: (f"compare boxes with vm_compare(servers=[...]); push it with "
                                 f"vm_push(server='{h.server}'); merging is the user's (boxforge land)"),
    HintKind.COMPARED: lambda h: "vm_fetch each box, then merge them in an order that avoids the overlaps",
    HintKind.BURN_UNHARVESTED: lambda h: f"destroy_server(name='{h.server}', harvest=false) burns it without",
    HintKind.KEY_TAKEN: lambda h: f"the first job is vm_job_status(job_id='{h.job_id}'); send a new idempotency_key",
    HintKind.BOX_BUSY: lambda h: (
        f"every SSH session to {h.server!r} was held by other commands until just before timeout_s "
        f"({h.wait_s or 0:.0f}s), so its end could not be waited for; it runs on: poll "
        f"vm_job_status(job_id='{h.job_id}', wait_s=30), and run fewer commands at once on this box"),
}


def words(hint: Hint) -> str:
    return _WORDS[hint.kind](hint)


def error_text(exc: Exception) -> str:
    """An error's message, with its next step (if any) as a tool call."""
    hint = exc.hint if isinstance(exc, ForgeError) else None
    return f"{exc} ({words(hint)})" if hint is not None else str(exc)
