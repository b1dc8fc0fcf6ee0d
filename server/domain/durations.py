"""TTLs and times as people and agents read them: '90m' in, '1h30m' and ISO UTC out, time left with a warning."""

from __future__ import annotations

import re
from datetime import UTC, datetime

# A TTL is a count with an optional unit (none: minutes), at least one minute. TTL_RE parses it;
# TTL_PATTERN, published in the tool schemas, admits exactly the strings parse_ttl accepts.
TTL_RE = re.compile(r"^ *0*([1-9][0-9]{0,6}) *([smhd]?) *$")
TTL_PATTERN = r"^ *0*(?:[1-9][0-9]{0,6} *[mhd]?|(?:[6-9][0-9]|[1-9][0-9]{2,6}) *s) *$"
TTL_MAX_NUMBER = 9_999_999
TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 60}
MIN_TTL_S = 60
TTL_JSON_SCHEMA = {"type": ["string", "integer"], "pattern": TTL_PATTERN, "minimum": 1, "maximum": TTL_MAX_NUMBER}
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
        if re.fullmatch(r" *0+ *[smhd]? *", text):
            raise ValueError(f"ttl {text.strip()!r} is too short: the minimum is 1m")
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
