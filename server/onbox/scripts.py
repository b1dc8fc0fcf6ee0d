"""Box-side scripts: the ``.sh`` files of ``server/onbox/sh`` (package data), and how their
parameters travel: as quoted shell assignments in front of the script's text (values are data,
never code, and never spliced into the script)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from functools import cache
from importlib import resources

SCRIPTS = ("onbox", "sh")


@cache
def text(name: str) -> str:
    """The text of ``sh/<name>``."""
    return resources.files("server").joinpath(*SCRIPTS, name).read_text(encoding="utf-8")


def names() -> list[str]:
    """Every script shipped (for the lint and packaging tests)."""
    folder = resources.files("server").joinpath(*SCRIPTS)
    return sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sh"))


def assignments(params: Mapping[str, str | int]) -> str:
    """``NAME='value'`` lines, one per parameter; names must be shell identifiers."""
    lines = []
    for name, value in params.items():
        if not name.isidentifier() or not name.isascii():
            raise ValueError(f"not a shell variable name: {name!r}")
        lines.append(f"{name}={shlex.quote(str(value))}\n")
    return "".join(lines)


def program(name: str, params: Mapping[str, str | int] = {}, *, protocol: bool = False) -> str:
    """A script with its parameters set first (and ``protocol.sh``'s constants, if asked): the text
    ``sh -c`` or a job runs."""
    return (text("protocol.sh") if protocol else "") + assignments(params) + text(name)


def library(*names: str) -> str:
    """Shell function libraries, protocol first (they define functions and constants only)."""
    return "".join(text(name) for name in ("protocol.sh", *names))


def command_line(name: str, params: Mapping[str, str | int] = {}, *, sudo: bool = False,
                 protocol: bool = False) -> str:
    """The ``/bin/sh -c`` command line that runs script ``name`` with ``params``."""
    line = "/bin/sh -c " + shlex.quote(program(name, params, protocol=protocol))
    return "sudo -n " + line if sudo else line
