"""File tools on ready boxes (read, write, list, grep, upload, download, review diff) with secret env
values redacted from what they show, and the local path policy of transfers (credential dirs refused)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from server import files
from server.config import Settings, config_path
from server.domain.hints import Hint, HintKind
from server.domain.redaction import Redactor
from server.errors import ForgeError, InvalidInput
from server.schemas import DiffResult, DownloadResult, Encoding, FileContent, FileList, GrepResult, WriteResult
from server.service.access import BoxAccess
from server.service.boxes import Boxes
from server.service.diskspace import box_disk_full
from server.service.secrets import Secrets
from server.store import BoxRecord

SCAN_CHUNK_BYTES = 1024 * 1024


def secret_in_file(path: Path, redact: Redactor) -> str | None:
    """The name of a secret value ``path`` holds (read in chunks that overlap by the longest value), or None."""
    values = [(value.encode(), name) for value, name in redact.secrets]
    if not values:
        return None
    overlap = max(len(raw) for raw, _ in values) - 1
    tail = b""
    with path.open("rb") as f:
        while chunk := f.read(SCAN_CHUNK_BYTES):
            window = tail + chunk
            for raw, name in values:
                if raw in window:
                    return name
            tail = window[-overlap:] if overlap else b""
    return None


def credential_paths(settings: Settings, roots: list[Path]) -> list[Path]:
    """Local paths vm_upload/vm_download never touch: boxforge's state dir and config (the file these
    settings read, and the one this process's environment names, with their dirs), SSH keys, and the
    credentials of the cloud CLIs."""
    home = Path.home()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    configs = {settings.config_path.expanduser().resolve(), config_path(os.environ).expanduser().resolve()}
    paths = [settings.home, *configs, home / ".ssh", home / ".config" / "hcloud", config_home / "hcloud",
             home / ".aws", home / ".netrc"]
    # a config's dir too, unless that would shut the home dir or a transfer root (a config kept in a project)
    for config in configs:
        if not any(place.resolve().is_relative_to(config.parent) for place in [home, *roots]):
            paths.append(config.parent)
    return paths


class Files:
    def __init__(self, settings: Settings, access: BoxAccess, secrets: Secrets, boxes: Boxes) -> None:
        self.settings = settings
        self.access = access
        self.secrets = secrets
        self.boxes = boxes

    async def _files(self, server: str) -> tuple[BoxRecord, files.BoxFiles]:
        rec = await self.boxes.ready(server)
        home = rec.home or "~"
        return rec, files.BoxFiles(rec.name, self.access.pool, self.access.target(rec),
                                   self.access.exec(rec, long=True), rec.project_dir or home, home,
                                   timeout_s=self.settings.sftp_timeout_s)

    async def _redactor(self, rec: BoxRecord) -> Redactor:
        return await self.secrets.redactor(rec, self.access.exec(rec))

    def _local_path(self, path: str) -> Path:
        roots = files.transfer_roots(self.settings.transfer_roots)
        return files.check_local_path(path, roots=roots, forbidden=credential_paths(self.settings, roots))

    async def read_file(self, server: str, path: str, *, offset: int = 0, limit: int = 2000,
                        encoding: Encoding = "text") -> FileContent:
        rec, fs = await self._files(server)
        result = await files.read_file(fs, path, offset=offset, limit=limit, encoding=encoding)
        redact = await self._redactor(rec)
        if encoding == "base64":
            if redact.hides_any(base64.b64decode(result.content).decode(errors="replace")):
                raise InvalidInput(f"{result.path} holds a secret env value of this box, which boxforge never "
                                   "returns; read it as text (secrets redacted) or vm_download it")
        else:
            result.content = redact(result.content)
        return result

    async def write_file(self, server: str, path: str, content: str, *, encoding: Encoding = "text",
                         create_dirs: bool = True, mode: int | None = None) -> WriteResult:
        data = files.decode_content(content, encoding)
        rec, fs = await self._files(server)
        try:
            return await files.write_file(fs, path, data, create_dirs=create_dirs, mode=mode)
        except ForgeError as exc:
            raise await self._disk_full(rec, path, exc) from exc

    async def _disk_full(self, rec: BoxRecord, path: str, exc: ForgeError) -> ForgeError:
        """``exc``, or what it meant when the box's disk is full where ``path`` goes."""
        if isinstance(exc, InvalidInput):
            return exc
        full = await box_disk_full(self.access, rec, path)
        return ForgeError(full) if full else exc

    async def list_files(self, server: str, path: str = ".", pattern: str = "*", *,
                         max_entries: int = 500) -> FileList:
        _, fs = await self._files(server)
        return await files.list_files(fs, path, pattern, max_entries=max_entries)

    async def grep(self, server: str, pattern: str, path: str = ".", *, glob: str | None = None,
                   ignore_case: bool = False, max_results: int = 100) -> GrepResult:
        rec, fs = await self._files(server)
        result = await files.grep(fs, pattern, path, glob=glob, ignore_case=ignore_case, max_results=max_results)
        redact = await self._redactor(rec)
        for match in result.matches:
            match.text = redact(match.text)
        return result

    async def upload(self, server: str, local_path: str, remote_path: str, *, create_dirs: bool = True,
                     overwrite: bool = True) -> WriteResult:
        local = self._local_path(local_path)
        rec, fs = await self._files(server)
        try:
            return await files.upload(fs, local, remote_path, create_dirs=create_dirs, overwrite=overwrite)
        except ForgeError as exc:
            raise await self._disk_full(rec, remote_path, exc) from exc

    async def download(self, server: str, remote_path: str, local_path: str, *,
                       overwrite: bool = False) -> DownloadResult:
        local = self._local_path(local_path)
        rec, fs = await self._files(server)
        redact = await self._redactor(rec)

        def refuse(fetched: Path) -> str | None:
            name = secret_in_file(fetched, redact)
            return None if name is None else (
                f"it holds the secret env value {name} of this box, which boxforge never hands out; read it with "
                "vm_read (secrets shown as [redacted:NAME]) or remove the value on the box first")

        return await files.download(fs, remote_path, local, overwrite=overwrite, refuse=refuse)

    async def diff(self, server: str, *, max_bytes: int = 64 * 1024) -> DiffResult:
        """The box's work: working tree and commits against the base commit recorded at create."""
        rec, fs = await self._files(server)
        limit = min(max_bytes, files.MAX_DIFF_BYTES)
        result = await files.diff(fs, rec.base_commit, max_bytes=limit)
        result.diff = (await self._redactor(rec))(result.diff)
        if result.files and result.truncated:
            result.suggest("hint", Hint(HintKind.DIFF_CUT, server=rec.name),
                           prefix=f"the diff is {result.diff_bytes} bytes and was cut at {limit}: ")
        elif result.files:
            result.suggest("hint", Hint(HintKind.KEEP_WORK, server=rec.name))
        return result
