"""TTLs and times as people and agents read them: '90m' in, '1h30m' and ISO UTC out, time left with a warning."""

from __future__ import annotations

import re
from datetime import UTC, datetime

TTL_RE = re.compile(r"^\s*(\d{1,7})\s*([smhd]?)\s*$")
TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 60}
MIN_TTL_S = 60
WARN_LEFT_S = 600  # under this much time left, results carry a warning
_TTL_HELP = "use a duration like '90m', '2h', '1d' or a number of minutes"


def parse_ttl(value: str | int) -> int:
    """'90m', '2h', '1d', '45s' or a bare number of minutes -> seconds (at least one minute)."""
    if isinstance(value, bool):
        raise ValueError(f"ttl must be a duration: {_TTL_HELP}")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError(f"ttl must be a duration: {_TTL_HELP}")
    match = TTL_RE.fullmatch(text)
    if not match:
        raise ValueError(f"invalid ttl {text[:40]!r}: {_TTL_HELP}")
    seconds = int(match.group(1)) * TTL_UNITS[match.group(2)]
    if seconds < MIN_TTL_S:
        raise ValueError(f"ttl {text.strip()!r} is too short: the minimum is 1m")
    return seconds


def format_duration(seconds: float) -> str:
    """45s, 90m, 5h07m, 3d04h: exact enough to act on, short enough to read."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def seconds_left(expires_at: float, now: float) -> int:
    return int(expires_at - now)


def expires_soon(expires_at: float, now: float) -> bool:
    """Whether a box is close enough to its expiry to warn whoever uses it."""
    return seconds_left(expires_at, now) <= WARN_LEFT_S


def check_ttl_within(ttl_s: int, max_ttl_s: int) -> str | None:
    """Why a TTL is refused (over the maximum), or None."""
    if ttl_s > max_ttl_s:
        return f"ttl {format_duration(ttl_s)} exceeds the maximum of {format_duration(max_ttl_s)}"
    return None
