"""``require:``: tool versions checked on every box before the task's work starts.

A requirement is ``tool: range`` with an npm semver range (``node: ">=20"``, ``python3: "^3.11"``), matched
with ``server.npm``'s range matcher. On the box one command asks every tool for its version
(``TOOL --version``, ``go version`` for go); the first ``N.N[.N]`` in what it prints is the version."""

from __future__ import annotations

import re
import shlex

from server import npm

TOOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
_FOUND = re.compile(r"(?<![\d.])v?(\d+)\.(\d+)(?:\.(\d+))?")
_MARK = "::boxforge-require::"
_VERSION_ARGS = {"go": "version"}


def check_requirement(tool: str, range_text: str) -> str | None:
    """Why ``tool: range_text`` cannot be a requirement, or None."""
    if not TOOL_RE.fullmatch(tool):
        return f"require: {tool[:64]!r} is not a tool name (letters, digits, '.', '_', '+', '-'; e.g. node)"
    try:
        npm.parse_range(range_text)
    except ValueError:
        return f"require.{tool}: {range_text[:80]!r} is not a version range (e.g. '>=20', '^3.11', '18 || 20')"
    return None


def probe_command(require: dict[str, str]) -> str:
    """One shell command printing, per tool, a marker line then its version output (or 'missing')."""
    parts = []
    for tool in require:
        q = shlex.quote(tool)
        args = _VERSION_ARGS.get(tool, "--version")
        parts.append(f"echo {shlex.quote(_MARK + tool)}; if command -v {q} >/dev/null 2>&1; then "
                     f"{q} {args} 2>&1 | head -n 5; else echo missing; fi")
    return "; ".join(parts)


def found_version(text: str) -> str | None:
    """The first version in a tool's ``--version`` output, as ``major.minor.patch``."""
    m = _FOUND.search(text)
    if m is None:
        return None
    return f"{m[1]}.{m[2]}.{m[3] or 0}"


def parse_probe(output: str) -> dict[str, str]:
    """Tool -> what it printed, from ``probe_command``'s output."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(_MARK):
            current = found.setdefault(line[len(_MARK):].strip(), [])
        elif current is not None:
            current.append(line)
    return {tool: "\n".join(lines).strip() for tool, lines in found.items()}


def unmet(require: dict[str, str], output: str) -> list[str]:
    """Every requirement the box does not meet, worded for the board (empty: all met)."""
    printed = parse_probe(output)
    problems = []
    for tool, wanted in require.items():
        said = printed.get(tool, "missing")
        version = None if said == "missing" else found_version(said)
        if said == "missing":
            problems.append(f"{tool} is not installed (wanted {wanted})")
        elif version is None:
            problems.append(f"{tool} printed no version ({said.splitlines()[0][:80]!r}; wanted {wanted})")
        elif not npm.satisfies(version, wanted):
            problems.append(f"{tool} is {version}, wanted {wanted}")
    return problems
