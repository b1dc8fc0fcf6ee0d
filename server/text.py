"""Kept only for server/files.py (part A's file) until the merge: the rules live in server.domain.output."""

from server.domain.output import complete_utf8_prefix, decode_output, utf8_head

__all__ = ["complete_utf8_prefix", "decode_output", "utf8_head"]
