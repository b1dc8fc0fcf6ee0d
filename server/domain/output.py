"""Bytes from a box as text: UTF-8 decoding that says when the bytes were not clean text, cuts that
never end inside a character or a secret, and the head + tail window of an output over its cap."""

from __future__ import annotations

from dataclasses import dataclass

from server.domain.redaction import Redactor

DROPPED_MARKER = "\n[... {n} bytes dropped ...]\n"


def decode_output(data: bytes) -> tuple[str, bool]:
    """UTF-8 text with invalid bytes replaced, and whether the bytes were not clean text."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), True
    return text, "\x00" in text


def complete_utf8_prefix(data: bytes) -> int:
    """Length of ``data`` without a trailing incomplete UTF-8 sequence (so chunks split on characters)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte or ASCII
            needed = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            return len(data) - back if needed > back else len(data)
    return len(data)


def utf8_head(data: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes of ``data``, never ending inside a UTF-8 character."""
    head = data[:limit]
    return head[:complete_utf8_prefix(head)]


def clean_end(data: bytes, redactor: Redactor) -> bytes:
    """``data`` cut so that it ends neither inside a character nor where a secret could begin."""
    whole = data[:complete_utf8_prefix(data)]
    return whole[:redactor.safe_end(whole)]


def clean_start(data: bytes, redactor: Redactor) -> bytes:
    """``data`` without a start that could be the end of a secret cut off before it."""
    return data[redactor.safe_start(data):]


@dataclass(frozen=True)
class Window:
    """What is shown of one output stream: its redacted text and how many bytes were left out."""

    text: str
    dropped: int = 0


def head_tail(head: bytes, tail: bytes, size: int, redactor: Redactor) -> Window:
    """The window of an output of ``size`` bytes over its cap: ``head`` and ``tail`` cut clean, the gap
    marked with how many bytes it drops."""
    head, tail = clean_end(head, redactor), clean_start(tail, redactor)
    dropped = size - len(head) - len(tail)
    text = decode_output(head)[0] + DROPPED_MARKER.format(n=dropped) + decode_output(tail)[0]
    return Window(redactor.text(text), dropped)


def whole(data: bytes, redactor: Redactor) -> Window:
    return Window(redactor.text(decode_output(data)[0]))
