"""``vm_grep``: a regex over the files under a path (Perl flavour where the box's grep has it, else POSIX
extended), by files-grep.sh in one round trip; binary files, .git and node_modules are skipped."""

from __future__ import annotations

from server.domain.inputs import is_one_line
from server.errors import InvalidInput
from server.files.box import BoxFiles
from server.files.listing import DEFAULT_PRUNED, check_pattern
from server.onbox.protocol import Exit
from server.schemas import (
    GrepMatch,
    GrepResult,
)

MAX_GREP_OUTPUT_BYTES = 2 * 1024 * 1024
MAX_GREP_LINE_CHARS = 500


async def grep(fs: BoxFiles, pattern: str, path: str = ".", *, glob: str | None = None, ignore_case: bool = False,
               max_results: int = 100) -> GrepResult:
    if not pattern or not is_one_line(pattern):
        raise InvalidInput("pattern must be a non-empty regex on one line (no NUL, CR or LF)")
    target = fs.resolve(path)
    if glob is not None:
        check_pattern(glob)
    code, out, err = await fs.shell("files-grep.sh", {
        "target": target,
        "pattern": pattern,
        "ignore_case": int(ignore_case),
        "include": glob or "",
        "pruned": " ".join(DEFAULT_PRUNED),
        "max_bytes": MAX_GREP_OUTPUT_BYTES,
    })
    if code == Exit.NO_PATH:
        raise InvalidInput(f"{target} does not exist on the box")
    header, _, body = out.partition(b"\n")
    flavor = "pcre" if header.strip() == b"flavor -P" else "posix-extended"
    problem = err.decode(errors="replace").strip()
    if problem and not body:
        raise InvalidInput(f"grep refused the pattern ({'Perl' if flavor == 'pcre' else 'POSIX extended'} regex): "
                           f"{problem[-300:]}")
    matches, seen = _grep_matches(body, max_results)
    truncated = seen > len(matches) or len(body) + len(header) + 1 >= MAX_GREP_OUTPUT_BYTES
    hint = None
    if truncated:
        hint = "more matches exist: narrow path, add glob (e.g. '*.py'), or raise max_results"
    elif not matches:
        hint = "no match; binary files, .git and node_modules are skipped"
    return GrepResult(server=fs.name, path=target, pattern=pattern, regex_flavor=flavor,  # type: ignore[arg-type]
                      matches=matches, count=len(matches), truncated=truncated, hint=hint)


def _grep_matches(body: bytes, max_results: int) -> tuple[list[GrepMatch], int]:
    """The first ``max_results`` of grep -Z's ``name\\0line:text`` records, and how many there were."""
    matches: list[GrepMatch] = []
    seen = 0
    for record in body.split(b"\n"):
        name, sep, rest = record.partition(b"\0")
        number, colon, text = rest.partition(b":")
        if not sep or not colon or not number.isdigit():
            continue
        seen += 1
        if len(matches) < max_results:
            shown = name.decode(errors="replace").removeprefix("./")
            matches.append(GrepMatch(path=shown, line=int(number),
                                     text=text.decode(errors="replace")[:MAX_GREP_LINE_CHARS]))
    return matches, seen
