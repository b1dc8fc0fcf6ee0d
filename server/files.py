"""File tools on a box: read, write, list, grep, upload, download, and the reviewer's diff.

Reads and writes go over SFTP on the box's pooled SSH connection (binary safe, no shell), each
operation within a time limit (``BoxFiles.deadline``); a cancelled or failed write or transfer
removes its temp file. Listing, grep and diff are one shell round trip each, with every argument
shell-quoted, on the pool's long lane (a grep may run for minutes).

Paths on the box: relative paths resolve in the project dir, ``~``/``~/...`` in the box user's
home, absolute paths are used as given, so a tool reaches whatever the box's SSH user can
(on a local box that is this machine's user: local boxes are for agents you trust). Paths
must not contain NUL, CR or LF. Paths on the orchestrator (upload/download) must lie inside
the transfer roots (the working directory unless it is $HOME or above it, the temp dir and
``BOXFORGE_TRANSFER_ROOTS``) and never inside the forbidden paths the caller gives (boxforge's
state and config, SSH and cloud credentials); a download never writes a dotfile directly in $HOME.
"""

from __future__ import annotations

import base64
import contextlib
import os
import posixpath
import re
import secrets
import stat
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from server.domain.inputs import is_one_line
from server.errors import BoxUnreachable, ForgeError, InvalidInput
from server.jobs import BoxExec
from server.lazy import lazy_import
from server.onbox import scripts
from server.onbox.protocol import Exit
from server.schemas import (
    DiffFile,
    DiffResult,
    DownloadResult,
    Encoding,
    FileContent,
    FileEntry,
    FileList,
    GrepMatch,
    GrepResult,
    WriteResult,
    iso,
)
from server.ssh import SSHPool, SSHTarget
from server.text import decode_output, utf8_head

if TYPE_CHECKING:
    import asyncssh
else:
    asyncssh = lazy_import("asyncssh")  # loaded on first use, not by the CLI's start

MAX_READ_SCAN_BYTES = 10 * 1024 * 1024  # text reads load the file to count lines
MAX_READ_OUTPUT_BYTES = 256 * 1024  # text returned by one vm_read
MAX_READ_BASE64_BYTES = 1024 * 1024
MAX_WRITE_BYTES = 4 * 1024 * 1024
MAX_TRANSFER_BYTES = 256 * 1024 * 1024
MAX_LS_OUTPUT_BYTES = 4 * 1024 * 1024
MAX_GREP_OUTPUT_BYTES = 2 * 1024 * 1024
MAX_GREP_LINE_CHARS = 500
MAX_DIFF_BYTES = 1024 * 1024
DEFAULT_PRUNED = (".git", "node_modules")
SFTP_S_PER_MIB = 1.0  # time an SFTP operation gets per MiB moved, on top of BoxFiles.timeout_s
CLEANUP_TIMEOUT_S = 5.0  # removing a temp file, even after a cancel
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's empty tree: the base of a box without commits
_COMMIT_RE = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


@cache
def _drops() -> tuple[type[BaseException], ...]:
    return (asyncssh.DisconnectError, asyncssh.ChannelOpenError, asyncssh.ConnectionLost, BrokenPipeError,
            ConnectionResetError)


def check_box_path(path: str, what: str = "path") -> str:
    if not path or not is_one_line(path):
        raise InvalidInput(f"{what} must be a non-empty path without NUL, CR or LF characters")
    if len(path) > 4096:
        raise InvalidInput(f"{what} is longer than 4096 characters")
    return path


def transfer_seconds(size: int) -> float:
    """The time an SFTP operation gets for moving ``size`` bytes, on top of the base timeout."""
    return size / (1024 * 1024) * SFTP_S_PER_MIB


@dataclass(frozen=True)
class BoxFiles:
    """One ready box, as the file tools see it. ``run`` carries the shell scripts (ls, grep, diff)
    and should be the long lane's exec; ``timeout_s`` is the base time limit of one SFTP operation."""

    name: str
    pool: SSHPool
    target: SSHTarget
    run: BoxExec
    project_dir: str
    home: str
    timeout_s: float = 30.0

    def is_job_secrets(self, full: str) -> bool:
        """``full`` is a job's env file (``~/.boxforge/jobs/<id>/env`` or its kept ``secrets``): never read back."""
        head, name = posixpath.split(posixpath.normpath(full))
        jobs_dir, _ = posixpath.split(head)
        return name in ("secrets", "env") and jobs_dir == posixpath.join(self.home, ".boxforge", "jobs")

    async def refuse_job_secrets(self, sftp: asyncssh.SFTPClient, full: str) -> None:
        """Refuse a job's env file, by its path or through a symlink to it (the path the box resolves)."""
        real = full
        with contextlib.suppress(asyncssh.SFTPError):
            real = await sftp.realpath(full)
        if self.is_job_secrets(full) or self.is_job_secrets(real):
            raise InvalidInput(f"{full} is a job's secret env file, which boxforge never returns; the job's "
                               "output and other files are readable (secret values shown as [redacted:NAME])")

    def resolve(self, path: str, what: str = "path") -> str:
        check_box_path(path, what)
        if path == "~" or path.startswith("~/"):
            path = self.home + path[1:]
        return posixpath.normpath(posixpath.join(self.project_dir, path))

    @contextmanager
    def deadline(self, what: str, size: int = 0) -> Iterator[anyio.CancelScope]:
        """A time limit on one SFTP operation (``what``: "reading /p"): ``timeout_s`` plus
        ``transfer_seconds(size)``. Add to the scope's ``deadline`` once a size becomes known.
        A stalled box or network raises ``BoxUnreachable`` instead of hanging the tool."""
        started = anyio.current_time()
        with anyio.move_on_after(self.timeout_s + transfer_seconds(size)) as scope:
            yield scope
        if scope.cancelled_caught:
            raise BoxUnreachable(
                f"{what} on {self.name!r} got no answer within {scope.deadline - started:.0f}s: the box is "
                "overloaded or the network stalled; check it with list_servers, then retry")

    @asynccontextmanager
    async def sftp(self) -> AsyncIterator[asyncssh.SFTPClient]:
        """An SFTP session on the pooled connection, reconnecting once if that connection dropped.
        Open it inside ``deadline``: nothing here bounds a stalled peer."""
        for attempt in (1, 2):
            conn = await self.pool.connection(self.target)
            try:
                client = await conn.start_sftp_client()
                break
            except _drops() as exc:
                await self.pool.drop(self.target.key)
                if attempt == 2:
                    raise BoxUnreachable(f"could not open SFTP on {self.target.where}: {exc}; retry") from exc
            except asyncssh.Error as exc:
                raise BoxUnreachable(f"the box {self.name!r} refused SFTP ({exc}); use vm_bash instead") from exc
        try:
            async with client:
                yield client
        except _drops() as exc:
            raise BoxUnreachable(f"lost the SSH connection to {self.target.where} during a file transfer; "
                                 "retry") from exc

    async def shell(self, script: str, params: Mapping[str, str | int],
                    timeout: float = 120.0) -> tuple[int | None, bytes, bytes]:
        """Run box-side script ``script`` (a file of ``server/onbox/sh``) with ``params``."""
        result = await self.run(scripts.command_line(script, params, protocol=True), None, timeout)
        return result.exit_status, result.stdout, result.stderr


def sftp_error(exc: asyncssh.SFTPError, path: str) -> ForgeError:
    """An SFTP status as an actionable error about ``path``."""
    if isinstance(exc, asyncssh.SFTPNoSuchFile | asyncssh.SFTPNoSuchPath):
        return InvalidInput(f"{path} does not exist on the box; list the directory with vm_ls")
    if isinstance(exc, asyncssh.SFTPPermissionDenied):
        return InvalidInput(f"permission denied for {path} on the box")
    if isinstance(exc, asyncssh.SFTPNoSpaceOnFilesystem | asyncssh.SFTPQuotaExceeded):
        return ForgeError(f"the box's disk is full writing {path}; free space with vm_bash")
    return ForgeError(f"{path} on the box: {exc.reason or type(exc).__name__}")


def _lines(data: bytes) -> list[bytes]:
    """Lines split on LF only, each keeping its LF (the last may lack one)."""
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _temp_name(name: str) -> str:
    """The hidden temp file a write lands in before it is renamed over ``name``."""
    return f".{name}.boxforge-{secrets.token_hex(4)}"


async def _remove_remote(sftp: asyncssh.SFTPClient, tmp: str) -> None:
    """Remove a temp file on the box, also when the write was cancelled (shielded: a cancelled
    scope would cancel the removal too and leave the file in the project dir)."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT_S):
        try:
            await sftp.remove(tmp)
        except (asyncssh.Error, OSError):
            pass


async def _remove_local(tmp: Path) -> None:
    """Remove a partial download, also when it was cancelled (shielded, as ``_remove_remote``)."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT_S):
        await anyio.Path(tmp).unlink(missing_ok=True)


# read / write


async def read_file(fs: BoxFiles, path: str, *, offset: int = 0, limit: int = 2000,
                    encoding: Encoding = "text") -> FileContent:
    full = fs.resolve(path)
    with fs.deadline(f"reading {full}") as scope:
        async with fs.sftp() as sftp:
            try:
                await fs.refuse_job_secrets(sftp, full)
                attrs = await sftp.stat(full)
                if attrs.permissions is not None and stat.S_ISDIR(attrs.permissions):
                    raise InvalidInput(f"{full} is a directory; list it with vm_ls(path={path!r})")
                size = attrs.size or 0
                cap = MAX_READ_BASE64_BYTES if encoding == "base64" else MAX_READ_SCAN_BYTES
                if size > cap:
                    raise InvalidInput(
                        f"{full} is {size} bytes, over the {cap // (1024 * 1024)} MiB limit of vm_read "
                        f"({encoding}); fetch it with vm_download or read a part with vm_bash (head, sed -n)")
                scope.deadline += transfer_seconds(size)
                async with sftp.open(full, "rb") as f:
                    data = await f.read(cap + 1)
            except asyncssh.SFTPError as exc:
                raise sftp_error(exc, full) from exc
    if len(data) > cap:
        raise InvalidInput(f"{full} grew past the vm_read limit while being read; use vm_download")
    if encoding == "base64":
        return FileContent(server=fs.name, path=full, size=len(data), encoding="base64",
                           content=base64.b64encode(data).decode(), binary=decode_output(data)[1])
    lines = _lines(data)
    chosen: list[bytes] = []
    used = 0
    truncated = False
    for line in lines[offset:offset + limit]:
        if used + len(line) > MAX_READ_OUTPUT_BYTES:
            if not chosen:  # one huge line: return its head rather than nothing
                chosen.append(utf8_head(line, MAX_READ_OUTPUT_BYTES))
                truncated = True
            break
        chosen.append(line)
        used += len(line)
    text, binary = decode_output(b"".join(chosen))
    next_offset = offset + len(chosen) if offset + len(chosen) < len(lines) else None
    hint = None
    if next_offset is not None:
        hint = f"more lines follow: call vm_read again with offset={next_offset}"
    if binary:
        hint = "the file is not UTF-8 text; read its exact bytes with encoding='base64' or vm_download"
    return FileContent(server=fs.name, path=full, size=len(data), encoding="text", content=text, offset=offset,
                       lines=len(chosen), total_lines=len(lines), next_offset=next_offset, truncated=truncated,
                       binary=binary, hint=hint)


def decode_content(content: str, encoding: Encoding) -> bytes:
    if encoding == "base64":
        try:
            data = base64.b64decode(content, validate=True)
        except ValueError:
            raise InvalidInput("content is not valid base64 (encoding='base64'); send the bytes base64-encoded, "
                               "or plain text with encoding='text'") from None
    else:
        data = content.encode()
    if len(data) > MAX_WRITE_BYTES:
        raise InvalidInput(f"content is {len(data)} bytes, over the 4 MiB limit of vm_write; "
                           "use vm_upload for large files")
    return data


async def _replace(sftp: asyncssh.SFTPClient, tmp: str, full: str) -> None:
    try:
        await sftp.posix_rename(tmp, full)
    except asyncssh.SFTPOpUnsupported:
        if await sftp.exists(full):
            await sftp.remove(full)
        await sftp.rename(tmp, full)


async def _prepare_target(sftp: asyncssh.SFTPClient, full: str, create_dirs: bool) -> tuple[str, int | None]:
    """(the path to write, following a symlink, and the mode of the file it replaces, if any)."""
    parent = posixpath.dirname(full)
    try:
        attrs = await sftp.stat(full)
    except asyncssh.SFTPNoSuchFile:
        attrs = None
    if attrs is not None:
        if attrs.permissions is not None and stat.S_ISDIR(attrs.permissions):
            raise InvalidInput(f"{full} is a directory on the box; give a file path")
        return await sftp.realpath(full), stat.S_IMODE(attrs.permissions or 0o644)
    if create_dirs:
        await sftp.makedirs(parent, exist_ok=True)
    elif not await sftp.isdir(parent):
        raise InvalidInput(f"directory {parent} does not exist on the box; pass create_dirs=true to create it")
    return full, None


async def write_file(fs: BoxFiles, path: str, data: bytes, *, create_dirs: bool = True,
                     mode: int | None = None) -> WriteResult:
    """Write ``data`` atomically (a temp file in the same dir, then rename); an existing file keeps its mode."""
    full = fs.resolve(path)
    with fs.deadline(f"writing {full}", len(data)):
        async with fs.sftp() as sftp:
            try:
                real, old_mode = await _prepare_target(sftp, full, create_dirs)
                tmp = posixpath.join(posixpath.dirname(real), _temp_name(posixpath.basename(real)))
                try:
                    async with sftp.open(tmp, "wb", asyncssh.SFTPAttrs(permissions=0o600)) as f:
                        await f.write(data)
                    await sftp.chmod(tmp, mode if mode is not None else old_mode if old_mode is not None else 0o644)
                    await _replace(sftp, tmp, real)
                except BaseException:
                    await _remove_remote(sftp, tmp)
                    raise
            except asyncssh.SFTPError as exc:
                raise sftp_error(exc, full) from exc
    return WriteResult(server=fs.name, path=full, bytes_written=len(data), created=old_mode is None,
                       hint=f"read it back with vm_read(path={full!r}) or use it with vm_bash")


# list and grep


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


# upload / download


def transfer_roots(extra: str, cwd: Path | None = None, home: Path | None = None) -> list[Path]:
    """The working dir, the temp dir and the ``extra`` dirs (``os.pathsep``-separated), resolved.
    A working dir that is $HOME or above it is left out: it would open every dotfile in $HOME."""
    cwd = (cwd or Path.cwd()).resolve()
    home = (home or Path.home()).resolve()
    roots = [] if home.is_relative_to(cwd) else [cwd]
    roots += [Path(tempfile.gettempdir()), *(Path(p).expanduser() for p in extra.split(os.pathsep) if p.strip())]
    return [r.resolve() for r in roots]


def check_local_path(path: str, *, roots: Sequence[Path], forbidden: Sequence[Path]) -> Path:
    """An absolute, symlink-resolved local path inside ``roots`` and outside ``forbidden``."""
    if not path or not is_one_line(path):
        raise InvalidInput("local_path must be a non-empty path without NUL, CR or LF characters")
    full = Path(path).expanduser()
    if not full.is_absolute():
        full = Path.cwd() / full
    full = full.resolve()
    for bad in forbidden:
        bad = bad.expanduser().resolve()
        if full.is_relative_to(bad):
            raise InvalidInput(f"local path {full} {'is' if full == bad else 'is inside'} {bad}, which holds keys "
                               "and credentials (boxforge's state or config dir, SSH's, a cloud CLI's); refusing "
                               "to transfer it")
    if not any(full.is_relative_to(root) for root in roots):
        shown = ", ".join(str(r) for r in roots)
        why = ""
        cwd = Path.cwd().resolve()
        if full.is_relative_to(cwd) and Path.home().resolve().is_relative_to(cwd):
            why = f" (the working directory {cwd} is your home dir or above it, so it is not a transfer root)"
        raise InvalidInput(f"local path {full} is outside the directories boxforge transfers files in ({shown}){why}; "
                           "add its directory to BOXFORGE_TRANSFER_ROOTS (separated by ':') to allow it")
    return full


def _upload_source(local: Path) -> tuple[int, int]:
    """(size, mode) of the local file to upload."""
    if not local.is_file():
        raise InvalidInput(f"local path {local} is not a file (directories: tar them first, upload the archive, "
                           "and unpack it with vm_bash)")
    info = local.stat()
    if info.st_size > MAX_TRANSFER_BYTES:
        raise InvalidInput(f"{local} is {info.st_size} bytes, over the 256 MiB limit of vm_upload")
    return info.st_size, stat.S_IMODE(info.st_mode)


async def upload(fs: BoxFiles, local: Path, remote_path: str, *, create_dirs: bool = True,
                 overwrite: bool = True) -> WriteResult:
    size, local_mode = await anyio.to_thread.run_sync(_upload_source, local)
    full = fs.resolve(remote_path, "remote_path")
    with fs.deadline(f"uploading {local} to {full}", size):
        async with fs.sftp() as sftp:
            try:
                real, old_mode = await _prepare_target(sftp, full, create_dirs)
                if old_mode is not None and not overwrite:
                    raise InvalidInput(f"{full} already exists on the box; pass overwrite=true to replace it")
                tmp = posixpath.join(posixpath.dirname(real), _temp_name(posixpath.basename(real)))
                try:
                    await sftp.put(str(local), tmp)
                    await sftp.chmod(tmp, old_mode if old_mode is not None else local_mode)
                    await _replace(sftp, tmp, real)
                except BaseException:
                    await _remove_remote(sftp, tmp)
                    raise
            except asyncssh.SFTPError as exc:
                raise sftp_error(exc, full) from exc
    return WriteResult(server=fs.name, path=full, bytes_written=size, created=old_mode is None)


def _download_target(local: Path, name: str, overwrite: bool) -> Path:
    """The local file to write (inside ``local`` when it is a directory), its parent created."""
    if local.is_dir():
        local = local / name
    home = Path.home().resolve()
    if local.parent == home and local.name.startswith("."):
        raise InvalidInput(f"refusing to download to {local}: dotfiles directly in your home dir configure shells "
                           "and tools or hold credentials; download into a subdirectory instead")
    if local.exists() and not overwrite:
        raise InvalidInput(f"local file {local} already exists; pass overwrite=true to replace it")
    local.parent.mkdir(parents=True, exist_ok=True)
    return local


def _finish_download(tmp: Path, local: Path, remote: str) -> int:
    size = tmp.stat().st_size
    if size > MAX_TRANSFER_BYTES:
        tmp.unlink(missing_ok=True)
        raise InvalidInput(f"{remote} grew past the 256 MiB limit of vm_download while being read")
    os.replace(tmp, local)
    return size


async def download(fs: BoxFiles, remote_path: str, local: Path, *, overwrite: bool = False,
                   refuse: Callable[[Path], str | None] | None = None) -> DownloadResult:
    """Fetch a box file to ``local`` (via a temp file renamed into place). ``refuse``, run in a thread on the
    fetched temp file, returns why it must not land (it is then deleted, and nothing at ``local`` changes)."""
    full = fs.resolve(remote_path, "remote_path")
    local = await anyio.to_thread.run_sync(_download_target, local, posixpath.basename(full), overwrite)
    tmp = local.with_name(_temp_name(local.name))
    try:
        with fs.deadline(f"downloading {full}") as scope:
            async with fs.sftp() as sftp:
                try:
                    await fs.refuse_job_secrets(sftp, full)
                    attrs = await sftp.stat(full)
                    if attrs.permissions is not None and not stat.S_ISREG(attrs.permissions):
                        raise InvalidInput(f"{full} is not a regular file (directories: tar them with vm_bash first)")
                    if (attrs.size or 0) > MAX_TRANSFER_BYTES:
                        raise InvalidInput(f"{full} is {attrs.size} bytes, over the 256 MiB limit of vm_download")
                    scope.deadline += transfer_seconds(attrs.size or 0)
                    await sftp.get(full, str(tmp))
                except asyncssh.SFTPError as exc:
                    raise sftp_error(exc, full) from exc
        if refuse is not None:
            why = await anyio.to_thread.run_sync(refuse, tmp)
            if why is not None:
                raise InvalidInput(f"{full} was not downloaded: {why}")
        size = await anyio.to_thread.run_sync(_finish_download, tmp, local, full)
    except BaseException:
        await _remove_local(tmp)
        raise
    return DownloadResult(server=fs.name, remote_path=full, local_path=str(local), bytes=size)


# review


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
