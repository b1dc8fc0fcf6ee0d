"""Do two owned-path globs name a common path? Conservative (a "maybe" counts as yes), fast, no I/O.

A pattern is split on ``/``; ``**`` matches any number of segments; ``*``, ``?`` and ``[...]`` work within
one segment. A pattern owns what it matches and everything under it (``server/api`` owns
``server/api/x.py``), as in .gitignore."""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache

_WILD = re.compile(r"[*?\[]")


def segments(pattern: str) -> tuple[str, ...]:
    parts = [p for p in pattern.strip().strip("/").split("/") if p not in ("", ".")]
    # collapse runs of ** and own the subtree
    out: list[str] = []
    for p in parts:
        if p == "**" and out and out[-1] == "**":
            continue
        out.append(p)
    if not out or out[-1] != "**":
        out.append("**")
    return tuple(out)


def first_literal(segs: tuple[str, ...]) -> str | None:
    """The first segment when it has no wildcard (the bucket key), else None."""
    return segs[0] if segs and not _WILD.search(segs[0]) else None


def _literal_ends(seg: str) -> tuple[str, str]:
    m = _WILD.search(seg)
    assert m is not None
    prefix = seg[:m.start()]
    last = max(seg.rfind("*"), seg.rfind("?"), seg.rfind("]"))
    return prefix, seg[last + 1:]


def _segment_meet(a: str, b: str) -> bool:
    wa, wb = bool(_WILD.search(a)), bool(_WILD.search(b))
    if not wa and not wb:
        return a == b
    if not wa:
        return fnmatch.fnmatchcase(a, b)
    if not wb:
        return fnmatch.fnmatchcase(b, a)
    (pa, sa), (pb, sb) = _literal_ends(a), _literal_ends(b)
    return (pa.startswith(pb) or pb.startswith(pa)) and (sa.endswith(sb) or sb.endswith(sa))


def overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """True when some path could match both segment patterns."""
    return _meet(a, b)


@lru_cache(maxsize=65536)
def _meet(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    if not a:
        return all(s == "**" for s in b)
    if not b:
        return all(s == "**" for s in a)
    if a[0] == "**":
        # ** matches nothing, or eats one of b's segments (b's ** included)
        return _meet(a[1:], b) or _meet(a, b[1:])
    if b[0] == "**":
        return _meet(a, b[1:]) or _meet(a[1:], b)
    return _segment_meet(a[0], b[0]) and _meet(a[1:], b[1:])
