"""``vm_upload`` and ``vm_download``: files between the orchestrator and a box over SFTP, each through a temp
file renamed into place (removed on failure or cancel); a download never writes a dotfile directly in $HOME."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from server.errors import InvalidInput
from server.files.box import (
    BoxFiles,
    prepare_target,
    remove_local,
    remove_remote,
    replace_file,
    sftp_error,
    temp_name,
    transfer_seconds,
)
from server.lazy import lazy_import
from server.schemas import (
    DownloadResult,
    WriteResult,
)

if TYPE_CHECKING:
    import asyncssh
else:
    asyncssh = lazy_import("asyncssh")  # loaded on first use, not by the CLI's start

MAX_TRANSFER_BYTES = 256 * 1024 * 1024


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
                real, old_mode = await prepare_target(sftp, full, create_dirs)
                if old_mode is not None and not overwrite:
                    raise InvalidInput(f"{full} already exists on the box; pass overwrite=true to replace it")
                tmp = posixpath.join(posixpath.dirname(real), temp_name(posixpath.basename(real)))
                try:
                    await sftp.put(str(local), tmp)
                    await sftp.chmod(tmp, old_mode if old_mode is not None else local_mode)
                    await replace_file(sftp, tmp, real)
                except BaseException:
                    await remove_remote(sftp, tmp)
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
    tmp = local.with_name(temp_name(local.name))
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
        await remove_local(tmp)
        raise
    return DownloadResult(server=fs.name, remote_path=full, local_path=str(local), bytes=size)
