"""Bytes from a box as text: UTF-8 decoding that says when the bytes were not clean text, and cuts
that never end inside a character. Shared by the job output (fleet) and the file tools (files)."""

from __future__ import annotations


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
