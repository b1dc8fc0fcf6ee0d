"""What a command may carry to a box: env names and values, the command text, paths and the working dir.

Every check raises ``InvalidInput`` with what to do instead; none of them touches a box.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping

from server.errors import InvalidInput

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_ENV_VALUE_BYTES = 64 * 1024
MAX_COMMAND_BYTES = 256 * 1024
PATH_FORBIDDEN = ("\x00", "\r", "\n")  # a path with these cannot pass through a shell line or an env file
PATH_PATTERN = r"^[^\x00\r\n]*$"  # the same rule, for the tool schemas


def check_env(env: Mapping[str, str]) -> None:
    """Env names are shell identifiers; values are strings of at most 64 KiB with no NUL byte."""
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_NAME_RE.fullmatch(key):
            raise InvalidInput(f"invalid env name {str(key)[:40]!r}: use letters, digits and '_', "
                               "not starting with a digit")
        if not isinstance(value, str):
            raise InvalidInput(f"env {key} must be a string")
        if "\x00" in value or len(value.encode()) > MAX_ENV_VALUE_BYTES:
            raise InvalidInput(f"env {key} must be at most 64 KiB and contain no NUL byte")


def check_command(command: str) -> None:
    if not command.strip():
        raise InvalidInput("command is empty: pass a shell command such as 'git status'")
    if "\x00" in command:
        raise InvalidInput("command contains a NUL byte, which no shell can run; remove it")
    if len(command.encode()) > MAX_COMMAND_BYTES:
        raise InvalidInput("command is larger than 256 KiB; write a script in parts or upload it")


def is_one_line(text: str) -> bool:
    """No NUL, CR or LF: the text can pass through a shell line, an env file or a line protocol."""
    return not any(ch in text for ch in PATH_FORBIDDEN)


def check_path_text(value: str) -> str:
    """A path on a box: no NUL, CR or LF (ValueError, for pydantic validators)."""
    if not is_one_line(value):
        raise ValueError("paths must not contain NUL, CR or LF characters")
    return value


def resolve_cwd(cwd: str | None, *, project_dir: str | None, home: str | None) -> str:
    """The working dir of a command: relative to the project dir (else home), '~' is the box user's home."""
    base = project_dir or home or "~"
    if cwd is None or cwd == "":
        return base
    try:
        check_path_text(cwd)
    except ValueError:
        raise InvalidInput("cwd must not contain NUL, CR or LF characters") from None
    if cwd.startswith("~"):
        cwd = (home or "~") + cwd[1:]
    return posixpath.normpath(posixpath.join(base, cwd))
