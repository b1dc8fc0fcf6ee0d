"""A box as the file tools see it (``BoxFiles``: paths resolved on the box, SFTP sessions on the pooled
connection within a time limit, box-side scripts on the long lane), and the SFTP pieces the readers,
writers and transfers share: errors, temp files removed even after a cancel, atomic replacement."""

from __future__ import annotations

import contextlib
import posixpath
import secrets
import stat
from collections.abc import AsyncIterator, Iterator, Mapping
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
from server.ssh import SSHPool, SSHTarget

if TYPE_CHECKING:
    import asyncssh
else:
    asyncssh = lazy_import("asyncssh")  # loaded on first use, not by the CLI's start

SFTP_S_PER_MIB = 1.0  # time an SFTP operation gets per MiB moved, on top of BoxFiles.timeout_s
CLEANUP_TIMEOUT_S = 5.0  # removing a temp file, even after a cancel


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


def temp_name(name: str) -> str:
    """The hidden temp file a write lands in before it is renamed over ``name``."""
    return f".{name}.boxforge-{secrets.token_hex(4)}"


async def remove_remote(sftp: asyncssh.SFTPClient, tmp: str) -> None:
    """Remove a temp file on the box, also when the write was cancelled (shielded: a cancelled
    scope would cancel the removal too and leave the file in the project dir)."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT_S):
        try:
            await sftp.remove(tmp)
        except (asyncssh.Error, OSError):
            pass


async def remove_local(tmp: Path) -> None:
    """Remove a partial download, also when it was cancelled (shielded, as ``remove_remote``)."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT_S):
        await anyio.Path(tmp).unlink(missing_ok=True)


async def replace_file(sftp: asyncssh.SFTPClient, tmp: str, full: str) -> None:
    try:
        await sftp.posix_rename(tmp, full)
    except asyncssh.SFTPOpUnsupported:
        if await sftp.exists(full):
            await sftp.remove(full)
        await sftp.rename(tmp, full)


async def prepare_target(sftp: asyncssh.SFTPClient, full: str, create_dirs: bool) -> tuple[str, int | None]:
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
