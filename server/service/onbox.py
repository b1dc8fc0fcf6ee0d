"""Runs an ``OnboxCall`` (a box-side script file plus its parameters) over a box's exec.

Parameters become quoted shell assignments in front of the script's text: values are data, never
code. The scripts are package data under ``server/onbox/sh``.
"""

from __future__ import annotations

import shlex
from functools import cache
from importlib import resources

from providers.capabilities import OnboxCall
from server.jobs import BoxExec
from server.ssh import ExecResult

SCRIPTS_DIR = ("onbox", "sh")


@cache
def script_text(name: str) -> str:
    return resources.files("server").joinpath(*SCRIPTS_DIR, name).read_text()


def command_line(call: OnboxCall) -> str:
    """The ``/bin/sh -c`` line that runs ``call``: its assignments, then its script."""
    assignments = "".join(f"{key}={shlex.quote(value)}\n" for key, value in call.params.items())
    line = "/bin/sh -c " + shlex.quote(assignments + script_text(call.script))
    return "sudo -n " + line if call.sudo else line


async def run(ex: BoxExec, call: OnboxCall, timeout: float) -> ExecResult:
    return await ex(command_line(call), None, timeout)
