"""Box-originated text made fit for the page: terminal escapes and control characters removed, huge lines
cut. The page still inserts every such string as text (never as HTML); this keeps the page readable."""

from __future__ import annotations

import re

# CSI (colours, cursor moves), OSC (titles, hyperlinks; ended by BEL or ST), and other two-byte ESC sequences
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # keeps \t and \n
MAX_LINE_CHARS = 2000
MAX_FIELD_CHARS = 300
_UNCUT = 1 << 62


def for_page(text: str | None, max_line: int = MAX_LINE_CHARS) -> str:
    """``text`` without escape sequences or control characters (\\r ends a line), each line cut at ``max_line``."""
    if not text:
        return ""
    clean = _CONTROL.sub("", _ANSI.sub("", text.replace("\r\n", "\n").replace("\r", "\n")))
    if len(clean) <= max_line or all(len(line) <= max_line for line in clean.split("\n")):
        return clean
    return "\n".join(cut(line, max_line) for line in clean.split("\n"))


def cut(line: str, limit: int) -> str:
    return line if len(line) <= limit else f"{line[:limit]}… [{len(line) - limit} more characters]"


def one_line(text: str | None, limit: int = MAX_FIELD_CHARS) -> str | None:
    """A short field (a last output line, a subject): clean, one line, cut at ``limit``."""
    if text is None:
        return None
    return cut(" ".join(for_page(text, _UNCUT).split("\n")).strip(), limit)


def last_line(text: str | None) -> str | None:
    """The last non-empty line of ``text``, clean and cut."""
    for line in reversed(for_page(text, _UNCUT).split("\n")):
        if line.strip():
            return one_line(line)
    return None
