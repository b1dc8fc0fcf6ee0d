"""What every transport speaks: a finished command, and a call of a shell library's function."""

from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class ExecResult:
    """A finished remote command. ``exit_status`` is None when the process died of a signal."""

    exit_status: int | None
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class ShellCall:
    """A call of a function from a shell ``library`` (definitions only, the same text for many calls).

    ``call`` is one line (assignments, then the function); its stdout must be text without NUL bytes
    and binary output goes to fd 3, which follows stdout in the result. A channel defines the library
    once and then sends only the call; over exec the whole is one ``/bin/sh -c`` command line.
    ``long`` marks a call that may block for a while (a long-poll).
    """

    library: str
    call: str
    long: bool = False

    def command_line(self) -> str:
        return "/bin/sh -c " + shlex.quote("exec 3>&1\n" + self.library + "\n" + self.call + "\n")
