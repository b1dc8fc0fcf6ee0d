"""The reconnect-once policy, written once: a call whose connection turned out to have dropped is
tried exactly once more, on a new connection; never after a timeout, never twice."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class Reconnect(Exception):
    """Raised by an attempt whose connection dropped before the call could have run (or whose call
    is safe to repeat): the policy tries once more. ``error`` is raised if that is not allowed."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


async def reconnect_once(attempt: Callable[[bool], Awaitable[T]], what: str) -> T:
    """``await attempt(False)``; on ``Reconnect``, ``await attempt(True)`` once. A second
    ``Reconnect`` raises its ``error``; an attempt told it is the retry should raise that itself."""
    try:
        return await attempt(False)
    except Reconnect as first:
        log.info("%s: the connection dropped (%s); reconnecting once", what, first)
    try:
        return await attempt(True)
    except Reconnect as second:
        raise second.error from second.__cause__
