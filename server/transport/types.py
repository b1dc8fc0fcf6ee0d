"""What every transport speaks: a finished command, and a call of a shell library's function."""

from __future__ import annotations

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
    """

    library: str
    call: str
    long: bool = False
    foreground: bool = False
    deadline: float | None = None

    def at(self, now: float | None = None) -> ShellCall:
        """This call as sent at ``now`` (default: now): ``LEFT_CS``
        filled in, no deadline left to apply. Every transport sends ``at()`` (``command_line`` does it)."""
        if self.deadline is None:
            return self
        now = time.monotonic() if now is None else now
        left_cs = max(0, round((self.deadline - DEADLINE_MARGIN_S - now) * 100))
        return ShellCall(self.library, self.call.replace(LEFT_CS, str(left_cs)), self.long, self.foreground)

    def command_line(self) -> str:
        call = self.at().call
        return "/bin/sh -c " + shlex.quote("exec 3>&1\n" + self.library + "\n" + call + "\n")
