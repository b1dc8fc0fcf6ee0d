"""The states and signals every layer speaks, defined once."""

from __future__ import annotations

import enum


class BoxStatus(enum.StrEnum):
    """A box record's state in the store (the ``boxes.state`` column)."""

    PROVISIONING = "provisioning"  #: a create is running (or died mid-way: the reconciler ends it)
    READY = "ready"  #: bootstrapped; commands, jobs and files work
    DESTROYED = "destroyed"  #: burned by a person, the reaper, or found gone at the provider
    FAILED = "failed"  #: the create failed and what it made was burned

    @property
    def live(self) -> bool:
        return self in LIVE_STATES


LIVE_STATES = (BoxStatus.PROVISIONING, BoxStatus.READY)


class JobState(enum.StrEnum):
    """A job's state as the box's job dir tells it."""

    RUNNING = "running"  #: its wrapper is alive
    SUCCEEDED = "succeeded"  #: exited 0
    FAILED = "failed"  #: exited non-zero
    KILLED = "killed"  #: ended by a signal (a cancel, or the kill at a foreground timeout)
    LOST = "lost"  #: its record is gone from the box, or its wrapper died without an exit code

    @property
    def finished(self) -> bool:
        return self is not JobState.RUNNING


class Signal(enum.StrEnum):
    """Signals a cancel may send to a job's process group."""

    TERM = "TERM"  #: ask it to stop (the default)
    INT = "INT"  #: as Ctrl-C would
    KILL = "KILL"  #: stop it now; for a job that ignores TERM


class CreateStep(enum.StrEnum):
    """The steps of a create, in order, as reported by progress and ``ServerInfo.step``."""

    PROVISION = "provision"  #: the provider makes the machine
    SSH = "ssh"  #: the machine answers on its pinned channel
    CLONE = "clone"  #: the repo is checked out
    AGENT = "agent"  #: the agent is installed
    SETUP = "setup"  #: the repo's .boxforge.yml setup runs
    READY = "ready"  #: done


CREATE_STEPS: tuple[str, ...] = tuple(step.value for step in CreateStep)


class ReviewState(enum.StrEnum):
    """Where a box's work stands in the board's review queue (the ``reviews.state`` column)."""

    UNREVIEWED = "unreviewed"  #: work to look at (the default of a box with commits or changes)
    REVIEWED = "reviewed"  #: a person has looked at the diff
    APPROVED = "approved"  #: ready to land
    CHANGES_REQUESTED = "changes_requested"  #: sent back, with a note the box's agent can be given
    LANDED = "landed"  #: merged into the target branch by a land from the board


#: the states a person may set from the board; ``landed`` is set only by a land that merged the box
REVIEW_SETTABLE = (ReviewState.UNREVIEWED, ReviewState.REVIEWED, ReviewState.APPROVED, ReviewState.CHANGES_REQUESTED)
