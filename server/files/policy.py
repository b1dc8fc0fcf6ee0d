"""Which paths on the orchestrator a transfer may touch: inside the transfer roots (the working directory
unless it is $HOME or above it, the temp dir, ``BOXFORGE_TRANSFER_ROOTS``) and never inside the forbidden
paths the caller gives (boxforge's state and config, SSH and cloud credentials)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from server.domain.inputs import is_one_line
from server.errors import InvalidInput


def transfer_roots(extra: str, cwd: Path | None = None, home: Path | None = None) -> list[Path]:
    """The working dir, the temp dir and the ``extra`` dirs (``os.pathsep``-separated), resolved.
    A working dir that is $HOME or above it is left out: it would open every dotfile in $HOME."""
    cwd = (cwd or Path.cwd()).resolve()
    home = (home or Path.home()).resolve()
    roots = [] if home.is_relative_to(cwd) else [cwd]
    roots += [Path(tempfile.gettempdir()), *(Path(p).expanduser() for p in extra.split(os.pathsep) if p.strip())]
    return [r.resolve() for r in roots]


def check_local_path(path: str, *, roots: Sequence[Path], forbidden: Sequence[Path]) -> Path:
    """An absolute, symlink-resolved local path inside ``roots`` and outside ``forbidden``."""
    if not path or not is_one_line(path):
        raise InvalidInput("local_path must be a non-empty path without NUL, CR or LF characters")
    full = Path(path).expanduser()
    if not full.is_absolute():
        full = Path.cwd() / full
    full = full.resolve()
    for bad in forbidden:
        bad = bad.expanduser().resolve()
        if full.is_relative_to(bad):
            raise InvalidInput(f"local path {full} {'is' if full == bad else 'is inside'} {bad}, which holds keys "
                               "and credentials (boxforge's state or config dir, SSH's, a cloud CLI's); refusing "
                               "to transfer it")
    if not any(full.is_relative_to(root) for root in roots):
        shown = ", ".join(str(r) for r in roots)
        why = ""
        cwd = Path.cwd().resolve()
        if full.is_relative_to(cwd) and Path.home().resolve().is_relative_to(cwd):
            why = f" (the working directory {cwd} is your home dir or above it, so it is not a transfer root)"
        raise InvalidInput(f"local path {full} is outside the directories boxforge transfers files in ({shown}){why}; "
                           "add its directory to BOXFORGE_TRANSFER_ROOTS (separated by ':') to allow it")
    return full
