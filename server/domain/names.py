"""Names of things a user or an agent passes in: box names (RFC 1123 labels), branches, job ids."""

from __future__ import annotations

import re
import secrets

NAME_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
JOB_ID_RE = re.compile(r"^j-[0-9a-f]{12}$")
BRANCH_RE = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)(?!.*\.lock$)[A-Za-z0-9._/+-]{1,200}(?<![./])$")


def _shown(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit - 3] + "..."


def check_name(value: str) -> str:
    """A box name: 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit."""
    if not NAME_RE.fullmatch(value):
        raise ValueError(
            f"invalid server name {_shown(value, 80)!r}: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. 'feat-login')"
        )
    return value


def check_job_id(value: str) -> str:
    if not JOB_ID_RE.fullmatch(value):
        raise ValueError(f"invalid job id {_shown(value, 40)!r}: job ids look like 'j-0123456789ab'")
    return value


def is_job_id(value: str) -> bool:
    return bool(JOB_ID_RE.fullmatch(value))


def new_job_id() -> str:
    return "j-" + secrets.token_hex(6)


def check_branch(value: str) -> str:
    if not BRANCH_RE.fullmatch(value):
        raise ValueError(f"invalid branch name {value[:80]!r}: use letters, digits and . _ / + - (e.g. 'feat/login')")
    return value


def name_from_branch(branch: str) -> str:
    """'feat/Login_page' -> 'feat-login-page' (an RFC 1123 label); 'box' when nothing is left."""
    name = re.sub(r"[^a-z0-9-]+", "-", branch.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)[:63].strip("-")
    return check_name(name or "box")
