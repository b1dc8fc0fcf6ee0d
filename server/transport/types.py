"""What every transport speaks: a finished command, and a call of a shell library's function."""

from __future__ import annotations

import dataclasses
import shlex
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ExecResult:
    """A finished remote command. ``exit_status`` is None when the process died of a signal."""

    exit_status: int | None
    stdout: bytes
    stderr: bytes


LEFT_CS = "@LEFT_CS@"  # in a call with a deadline: the centiseconds left when it is sent
DEADLINE_MARGIN_S = 0.4  # kept back from a deadline for the answer to travel and be shaped


@dataclass(frozen=True)
class ShellCall:
    """A call of a function from a shell ``library`` (definitions only, the same text for many calls).

    ``call`` is one line (assignments, then the function); its stdout must be text without NUL bytes
    and binary output goes to fd 3, which follows stdout in the result. A channel defines the library
    once and then sends only the call; over exec the whole is one ``/bin/sh -c`` command line.
    ``long`` marks a call that may block for a while (a long-poll). ``foreground`` marks the wait of a
    caller that holds a deadline of its own (a foreground command's ``timeout_s``): it may use the sessions
    that background long-polls leave free. ``deadline`` (``time.monotonic()``) makes the call's ``LEFT_CS``
    placeholder the centiseconds left before it, less ``DEADLINE_MARGIN_S`` for the answer's way back,
    filled in when the call is sent (after any wait for a free session), so the box waits no longer.

    ``private`` holds assignments (``NAME='value'`` lines, each ending in a newline) that must never
    appear on a command line (a command's text, env values): a channel sends them in-band before the
    call, where the loop reads them with its builtin ``read``; any other transport feeds them as the
    call's stdin (``stdin``), which the command line evaluates first. A call with ``private`` has no
    other stdin.
    """

    library: str
    call: str
    long: bool = False
    foreground: bool = False
    deadline: float | None = None
    private: str = ""

    def __post_init__(self) -> None:
        if self.private and not self.private.endswith("\n"):
            raise ValueError("a ShellCall's private assignments must end with a newline")

    def at(self, now: float | None = None) -> ShellCall:
        """This call as sent at ``now`` (default: now): ``LEFT_CS`` filled in, no deadline left to apply.
        Every transport sends ``at()`` (``script`` and ``command_line`` do it)."""
        if self.deadline is None:
            return self
        now = time.monotonic() if now is None else now
        left_cs = max(0, round((self.deadline - DEADLINE_MARGIN_S - now) * 100))
        return dataclasses.replace(self, call=self.call.replace(LEFT_CS, str(left_cs)), deadline=None)

    @property
    def stdin(self) -> bytes:
        """What a transport without channels feeds the command line (the private assignments)."""
        return self.private.encode()

    def script(self) -> str:
        """What ``sh -c`` runs: fd 3 on stdout, the library, the private assignments from stdin, the call."""
        read_private = 'eval "$(cat)"\n' if self.private else ""
        return "exec 3>&1\n" + self.library + "\n" + read_private + self.at().call + "\n"

    def command_line(self) -> str:
        return "/bin/sh -c " + shlex.quote(self.script())
