"""Runs an ``OnboxCall`` (a box-side script file plus its parameters) over a box's exec.

Parameters become quoted shell assignments in front of the script's text (``server.onbox.scripts``):
values are data, never code."""

from __future__ import annotations

from providers.capabilities import OnboxCall
from server.jobs import BoxExec
from server.onbox import scripts
from server.ssh import ExecResult


def command_line(call: OnboxCall) -> str:
    """The ``/bin/sh -c`` line that runs ``call``: its assignments, then its script."""
    return scripts.command_line(call.script, call.params, sudo=call.sudo)


async def run(ex: BoxExec, call: OnboxCall, timeout: float) -> ExecResult:
    return await ex(command_line(call), None, timeout)
