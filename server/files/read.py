"""``vm_read`` and ``vm_write``: a file's lines from an offset (or its bytes as base64) within the output
cap, and an atomic write that keeps an existing file's mode."""

from __future__ import annotations

import base64
import posixpath
import stat
from typing import TYPE_CHECKING

from server.domain.output import decode_output, utf8_head
from server.errors import InvalidInput
from server.files.box import (
    BoxFiles,
    prepare_target,
    remove_remote,
    replace_file,
    sftp_error,
    temp_name,
    transfer_seconds,
)
from server.lazy import lazy_import
from server.schemas import (
    Encoding,
    FileContent,
    WriteResult,
)

if TYPE_CHECKING:
    import asyncssh
else:
    asyncssh = lazy_import("asyncssh")  # loaded on first use, not by the CLI's start

MAX_READ_SCAN_BYTES = 10 * 1024 * 1024  # text reads load the file to count lines
MAX_READ_OUTPUT_BYTES = 256 * 1024  # text returned by one vm_read
MAX_READ_BASE64_BYTES = 1024 * 1024
MAX_WRITE_BYTES = 4 * 1024 * 1024


def _lines(data: bytes) -> list[bytes]:
    """Lines split on LF only, each keeping its LF (the last may lack one)."""
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _window(lines: list[bytes]) -> tuple[list[bytes], bool]:
    """The leading ``lines`` that fit the output cap, and whether one huge first line had to be cut (its
    head is returned rather than nothing)."""
    chosen: list[bytes] = []
    used = 0
    for line in lines:
        if used + len(line) > MAX_READ_OUTPUT_BYTES:
            if not chosen:
                return [utf8_head(line, MAX_READ_OUTPUT_BYTES)], True
            break
        chosen.append(line)
        used += len(line)
    return chosen, False


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
    chosen, truncated = _window(lines[offset:offset + limit])
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


async def write_file(fs: BoxFiles, path: str, data: bytes, *, create_dirs: bool = True,
                     mode: int | None = None) -> WriteResult:
    """Write ``data`` atomically (a temp file in the same dir, then rename); an existing file keeps its mode."""
    full = fs.resolve(path)
    with fs.deadline(f"writing {full}", len(data)):
        async with fs.sftp() as sftp:
            try:
                real, old_mode = await prepare_target(sftp, full, create_dirs)
                tmp = posixpath.join(posixpath.dirname(real), temp_name(posixpath.basename(real)))
                try:
                    async with sftp.open(tmp, "wb", asyncssh.SFTPAttrs(permissions=0o600)) as f:
                        await f.write(data)
                    await sftp.chmod(tmp, mode if mode is not None else old_mode if old_mode is not None else 0o644)
                    await replace_file(sftp, tmp, real)
                except BaseException:
                    await remove_remote(sftp, tmp)
                    raise
            except asyncssh.SFTPError as exc:
                raise sftp_error(exc, full) from exc
    return WriteResult(server=fs.name, path=full, bytes_written=len(data), created=old_mode is None,
                       hint=f"read it back with vm_read(path={full!r}) or use it with vm_bash")
