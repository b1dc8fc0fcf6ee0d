"""``vm_diff``: the box's working tree (untracked files included, .gitignore respected) against its base
commit, by files-diff.sh in one round trip: commits, per-file status and counts, stat and a patch cut clean."""

from __future__ import annotations

import re

from server.domain.output import decode_output, utf8_head
from server.errors import ForgeError, InvalidInput
from server.files.box import BoxFiles
from server.onbox.protocol import Exit
from server.schemas import (
    DiffFile,
    DiffResult,
)

MAX_DIFF_BYTES = 1024 * 1024
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's empty tree: the base of a box without commits
_COMMIT_RE = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


async def diff(fs: BoxFiles, base: str | None, *, max_bytes: int = 64 * 1024) -> DiffResult:
    """The working tree (untracked files included, .gitignore respected) against ``base``."""
    if base is not None and not _COMMIT_RE.fullmatch(base):
        raise ForgeError(f"the recorded base commit {base[:20]!r} of {fs.name!r} is not a commit id")
    code, out, err = await fs.shell("files-diff.sh", {"project": fs.project_dir, "base": base or EMPTY_TREE,
                                                      "maxb": int(max_bytes)})
    _raise_diff_failure(fs, base, code, err)
    head, sep, patch = out.partition(b"\n@@boxforge patch ")
    if not sep:
        raise ForgeError(f"git diff on {fs.name!r} answered in an unexpected format; retry")
    size_text, _, patch = patch.partition(b"\n")
    sections, head_commit, branch = _diff_sections(head.decode(errors="replace"))
    files = _diff_files(sections)
    total = int(size_text) if size_text.strip().isdigit() else len(patch)
    text, _ = decode_output(utf8_head(patch, max_bytes))
    truncated = total > len(patch)
    if not files:
        hint = "no changes against the base commit yet"
    elif truncated:
        hint = (f"the diff is {total} bytes and was cut at {max_bytes}: raise max_bytes (up to 1 MiB) or read "
                "single files with vm_read")
    else:
        hint = "download artifacts with vm_download, or push the branch with vm_bash('git push')"
    return DiffResult(server=fs.name, base_commit=base or EMPTY_TREE, head_commit=head_commit, branch=branch,
                      commits=sections.get("commits", []), files=files, stat="\n".join(sections.get("stat", [])),
                      diff=text, diff_bytes=total, truncated=truncated, hint=hint)


def _raise_diff_failure(fs: BoxFiles, base: str | None, code: int | None, err: bytes) -> None:
    if code == Exit.NO_PATH:
        raise ForgeError(f"the project dir {fs.project_dir} is missing on {fs.name!r}")
    if code == Exit.NOT_GIT:
        raise InvalidInput(f"{fs.project_dir} on {fs.name!r} is not a git checkout: vm_diff needs a box created "
                           "with a repo")
    if code == Exit.NO_BASE:
        raise ForgeError(f"the base commit {base} is not in the box's repository any more (history rewritten?); "
                         "compare by hand with vm_bash('git diff ...')")
    if code != 0:
        problem = err.decode(errors="replace").strip()[-300:]
        raise ForgeError(f"git diff failed on {fs.name!r} (exit {code}): {problem}")


def _diff_sections(head: str) -> tuple[dict[str, list[str]], str | None, str | None]:
    """The ``@@boxforge <section>`` sections of files-diff.sh's answer, and the head commit and branch."""
    sections: dict[str, list[str]] = {}
    current = ""
    head_commit = branch = None
    for line in head.split("\n"):
        if line.startswith("@@boxforge "):
            words = [*line.split(" "), "", ""]
            current = words[1]
            if current == "head":
                head_commit, branch = words[2] or None, words[3] or None
            sections.setdefault(current, [])
        elif line:
            sections.setdefault(current, []).append(line)
    return sections, head_commit, branch


def _diff_files(sections: dict[str, list[str]]) -> list[DiffFile]:
    untracked = set(sections.get("untracked", []))
    statuses = {name: status for status, name in
                (line.split("\t", 1) for line in sections.get("status", []) if "\t" in line)}
    files = []
    for line in sections.get("numstat", []):
        parts = line.split("\t", 2)
        if len(parts) != 3:
            continue
        added, deleted, name = parts
        files.append(DiffFile(path=name, status=statuses.get(name, "M"),
                              added=int(added) if added.isdigit() else None,
                              deleted=int(deleted) if deleted.isdigit() else None,
                              untracked=name in untracked))
    return files
