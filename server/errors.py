"""The ForgeError tree: every failure a user or an agent can see, each with a message that
says what happened and what to do next. Tools turn these into MCP tool errors; the CLI
prints them. Provider errors are translated into these in the service."""

from __future__ import annotations

from server.domain.hints import Hint


class ForgeError(Exception):
    """Base class. ``str(err)`` is the actionable message; ``hint``, when set, is a next step that each
    surface words itself (a tool call over MCP, a command in the CLI) and adds to the message."""

    def __init__(self, *args: object, hint: Hint | None = None) -> None:
        super().__init__(*args)
        self.hint = hint


class InvalidInput(ForgeError):
    """An argument is malformed (name, ttl, path, command)."""


class IdempotencyConflict(InvalidInput):
    """An idempotency key already named a different request on that box."""


class StoreFull(ForgeError):
    """The state store could not be written: its filesystem is full."""


class UnknownServer(ForgeError):
    """No live box of ours has that name."""


class ServerExists(ForgeError):
    """A live box already has that name."""


class UnknownJob(ForgeError):
    """No job with that id is known."""


class ProvisionFailed(ForgeError):
    """Creating or bootstrapping a box failed; the box was burned."""


class BoxUnreachable(ForgeError):
    """The box did not answer over SSH."""


class HostKeyMismatch(ForgeError):
    """The box presented a host key other than the pinned one: refused."""


class ProviderFailure(ForgeError):
    """The provider refused or failed an operation."""


class NotOwned(ForgeError):
    """The machine belongs to another owner: boxforge will not touch it."""


class BoxTimeout(BoxUnreachable):
    """A command on the box did not answer in time (the connection itself may be fine)."""


class BoxBusy(BoxTimeout):
    """No SSH session to the box came free in time: other commands hold them all (the box itself answers)."""


class JobError(ForgeError):
    """The on-box job protocol failed (the box's shell tools misbehaved or its disk is full)."""
