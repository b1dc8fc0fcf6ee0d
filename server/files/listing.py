"""``vm_ls``: the entries under a directory that match a glob over relative paths (``*`` within a segment,
``**`` across), listed by files-ls.sh in one round trip and matched here."""

from __future__ import annotations

import re

from server.errors import ForgeError, InvalidInput
from server.files.box import BoxFiles, check_box_path
from server.onbox.protocol import Exit
from server.schemas import (
    FileEntry,
    FileList,
    iso,
)

MAX_LS_OUTPUT_BYTES = 4 * 1024 * 1024
DEFAULT_PRUNED = (".git", "node_modules")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob over relative paths: ``*`` and ``?`` stay within a path segment, ``**`` spans segments."""
    out: list[str] = []
    segments = pattern.split("/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        j = 0
        while j < len(seg):
            ch = seg[j]
            if ch == "*":
                out.append("[^/]*")
            elif ch == "?":
                out.append("[^/]")
            elif ch == "[" and (end := _class_end(seg, j)) != -1:
                body = seg[j + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                j = end
            else:
                out.append(re.escape(ch))
            j += 1
        if not last:
            out.append("/")
    return re.compile("".join(out))


def _class_end(seg: str, start: int) -> int:
    """Index of the ']' closing the character class opened at ``start``, or -1 (then '[' is literal)."""
    k = start + 1
    if seg[k:k + 1] in ("!", "^"):
        k += 1
    if seg[k:k + 1] == "]":
        k += 1
    return seg.find("]", k)


def check_pattern(pattern: str) -> str:
    check_box_path(pattern, "pattern")
    if pattern.startswith("/"):
        raise InvalidInput("pattern is relative to path: pass the directory as path and a relative pattern")
    if ".." in pattern.split("/"):
        raise InvalidInput("pattern must not contain '..': pass the parent directory as path instead")
    return pattern


_TYPES = {"f": "file", "d": "dir", "l": "symlink"}


async def list_files(fs: BoxFiles, path: str = ".", pattern: str = "*", *, max_entries: int = 500) -> FileList:
    base = fs.resolve(path)
    check_pattern(pattern)
    regex = glob_regex(pattern)
    segments = pattern.split("/")
    code, out, err = await fs.shell("files-ls.sh", {
        "base": base,
        "maxdepth": "" if "**" in segments else len(segments),
        "name": "" if segments[-1] == "**" else segments[-1],
        "pruned": " ".join(p for p in DEFAULT_PRUNED if p not in pattern),
        "max_bytes": MAX_LS_OUTPUT_BYTES,
    })
    if code == Exit.NO_PATH:
        raise InvalidInput(f"{base} does not exist on the box")
    if code == Exit.NOT_A_DIR:
        raise InvalidInput(f"{base} is a file, not a directory; read it with vm_read")
    if code not in (0, None) and not out:
        raise ForgeError(f"listing {base} failed on the box: {err.decode(errors='replace').strip()[-300:]}")
    capped = len(out) >= MAX_LS_OUTPUT_BYTES
    entries, matched = _ls_entries(out, regex, max_entries)
    entries.sort(key=lambda e: e.path)
    truncated = matched > len(entries) or capped
    hint = None
    if truncated:
        hint = "more entries matched than were returned: narrow path or pattern (e.g. 'src/**/*.py')"
    elif not entries:
        hint = "nothing matched; '*' lists a directory, '**/*.py' searches every depth"
    return FileList(server=fs.name, path=base, pattern=pattern, entries=entries, count=len(entries),
                    truncated=truncated, hint=hint)


def _ls_entries(out: bytes, regex: re.Pattern[str], max_entries: int) -> tuple[list[FileEntry], int]:
    """The first ``max_entries`` of files-ls.sh's records that match ``regex``, and how many matched."""
    entries: list[FileEntry] = []
    matched = 0
    records = out.split(b"\0")
    for record in records[:-1] if records else []:
        parts = record.decode(errors="replace").split(" ", 3)
        if len(parts) != 4 or not regex.fullmatch(parts[3]):
            continue
        matched += 1
        if len(entries) < max_entries:
            kind, size, mtime, rel = parts
            entries.append(FileEntry(path=rel, type=_TYPES.get(kind, "other"),  # type: ignore[arg-type]
                                     size=int(size) if size.isdigit() else 0,
                                     modified=iso(float(mtime)) if mtime.replace(".", "", 1).isdigit() else None))
    return entries, matched
