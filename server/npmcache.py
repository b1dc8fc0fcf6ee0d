"""The orchestrator's npm cache, served to a box while its bootstrap installs an agent.

Tarballs are kept under the cache dir (``Settings.npm_cache_dir``: ``BOXFORGE_NPM_CACHE``, else
``<home>/cache/npm``, 0700) once their digest matches the registry's ``dist.integrity``; package documents
(the abbreviated ones npm installs from) for ``PACKUMENT_TTL_S``. So the second box that installs the same
agent downloads nothing from the internet, and a box without egress installs it all the same.

A box reaches the cache through a listener on its own loopback that the orchestrator opens over the box's
SSH connection (a remote forward, as ``ssh -R`` does; ``serve``): nothing listens on the orchestrator's
side, the box reaches no other service of it, and the listener closes when the bootstrap ends. It answers
GETs of the packages the agent needs and nothing else (``Allowed``: the agent, its dependencies as their
documents are served, npm, and the ``node-<os>-<arch>`` builds), so it is no way out for a box without egress.
The box only reads: no box can put anything into the cache another box gets.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import h11

from server import npm
from server.lazy import lazy_import

if TYPE_CHECKING:
    import asyncssh
else:
    asyncssh = lazy_import("asyncssh")  # loaded on first use, not by the CLI's start

log = logging.getLogger(__name__)

PACKUMENT_TTL_S = 600.0  # a new release shows within this; the resolution itself always reads the registry
MAX_CACHE_BYTES = 4 << 30  # tarballs past this are pruned, least recently served first
UPSTREAM_TIMEOUT_S = 60.0  # per socket operation with the registry
IDLE_TIMEOUT_S = 60.0  # a box connection that sends nothing for this long is closed
CHUNK_BYTES = 256 * 1024
CORGI = "application/vnd.npm.install-v1+json"
BOX_HOST = "127.0.0.1"
_NODE_BUILD = re.compile(r"^node-(linux|darwin|win)-[a-z0-9]+$")  # fetched by name, outside any manifest
_NAME = re.compile(r"^(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]{0,213}$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,250}\.tgz$")


class NotOnRegistry(Exception):
    """The registry has no such package or file (the box gets a 404)."""


@dataclass
class Allowed:
    """The package names a box may read: the roots (name -> the version resolved for it), and the
    dependencies of the versions served, added as their documents go out."""

    roots: dict[str, str]
    names: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.names |= set(self.roots)

    def admits(self, name: str) -> bool:
        return name in self.names or bool(_NODE_BUILD.match(name))

    def grow(self, name: str, doc: dict[str, Any]) -> None:
        """Admit the dependencies of ``name``'s resolved version (a root) or of its latest (any other)."""
        version = self.roots.get(name) or (doc.get("dist-tags") or {}).get("latest")
        meta = (doc.get("versions") or {}).get(version) or {}
        for key in ("dependencies", "optionalDependencies"):
            for dep, spec in (meta.get(key) or {}).items():
                self.names.add(dep)
                if isinstance(spec, str) and spec.startswith("npm:"):  # an alias: npm:<name>@<range>
                    self.names.add(_alias_target(spec[4:]))


def _alias_target(spec: str) -> str:
    """``@openai/codex@0.1.0-linux-x64`` -> ``@openai/codex``; ``left-pad`` -> ``left-pad``."""
    at = spec.rfind("@")
    return spec[:at] if at > 0 else spec


def _quoted(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _digest_of(dist: dict[str, Any]) -> tuple[str, str]:
    """(hashlib name, expected digest bytes as hex) of a dist entry: its sha512 integrity, else its sha1."""
    for part in str(dist.get("integrity") or "").split():
        algo, _, b64 = part.partition("-")
        if algo == "sha512":
            return "sha512", base64.b64decode(b64).hex()
    if dist.get("shasum"):
        return "sha1", str(dist["shasum"]).lower()
    raise NotOnRegistry("the registry gives no digest for this file")


def _dist_of(doc: dict[str, Any], file: str) -> dict[str, Any] | None:
    for meta in (doc.get("versions") or {}).values():
        dist = meta.get("dist") or {}
        if str(dist.get("tarball", "")).rsplit("/", 1)[-1] == file:
            return dist
    return None


class NpmCache:
    """Package documents and verified tarballs on disk (see the module doc). Safe to share between tasks;
    between processes, files appear whole (written aside, then renamed)."""

    def __init__(self, root: Path, upstream: str = npm.REGISTRY) -> None:
        self.root = root
        self.upstream = upstream.rstrip("/")
        self._locks: dict[str, anyio.Lock] = {}

    def _lock(self, key: str) -> anyio.Lock:
        return self._locks.setdefault(key, anyio.Lock())

    def _doc_path(self, name: str) -> Path:
        return self.root / "packuments" / f"{_quoted(name)}.json"

    def tarball_path(self, name: str, file: str) -> Path:
        return self.root / "tarballs" / _quoted(name) / file

    async def packument(self, name: str, *, refresh: bool = False) -> dict[str, Any]:
        """``name``'s abbreviated document, from disk while fresh, else from the registry."""
        async with self._lock(f"doc:{name}"):
            return await anyio.to_thread.run_sync(self._packument_sync, name, refresh)

    def _packument_sync(self, name: str, refresh: bool) -> dict[str, Any]:
        path = self._doc_path(name)
        with contextlib.suppress(OSError, ValueError):
            if not refresh and time.time() - path.stat().st_mtime < PACKUMENT_TTL_S:
                return json.loads(path.read_bytes())
        url = f"{self.upstream}/{urllib.parse.quote(name, safe='@')}"
        req = urllib.request.Request(url, headers={"Accept": f"{CORGI}; q=1.0, application/json; q=0.8"})
        try:
            with urllib.request.urlopen(req, timeout=UPSTREAM_TIMEOUT_S) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise NotOnRegistry(f"{name} is not on the registry") from exc
            raise
        doc = json.loads(raw)
        self._write(path, raw)
        return doc

    async def tarball(self, name: str, file: str) -> Path:
        """The verified tarball ``file`` of ``name``, downloaded once."""
        path = self.tarball_path(name, file)
        async with self._lock(f"tgz:{name}/{file}"):
            if path.is_file():
                with contextlib.suppress(OSError):
                    os.utime(path)  # served: the prune keeps it longest
                return path
            dist = _dist_of(await self.packument(name), file)
            if dist is None:  # a release newer than the document kept
                dist = _dist_of(await self.packument(name, refresh=True), file)
            if dist is None:
                raise NotOnRegistry(f"{name} has no file {file}")
            await anyio.to_thread.run_sync(self._download, str(dist["tarball"]), _digest_of(dist), path)
            await anyio.to_thread.run_sync(self._prune)
        return path

    def _download(self, url: str, digest: tuple[str, str], path: Path) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("https", urllib.parse.urlsplit(self.upstream).scheme):
            raise NotOnRegistry(f"refusing tarball URL {url}")
        path.parent.mkdir(parents=True, exist_ok=True)
        algo, expected = digest
        hasher = hashlib.new(algo)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=UPSTREAM_TIMEOUT_S) as resp:
                while chunk := resp.read(CHUNK_BYTES):
                    hasher.update(chunk)
                    out.write(chunk)
            if hasher.hexdigest() != expected:
                raise NotOnRegistry(f"{url} does not match the registry's {algo} digest")
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)

    def _prune(self) -> None:
        files = sorted((p.stat().st_mtime, p.stat().st_size, p) for p in (self.root / "tarballs").glob("*/*.tgz"))
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= MAX_CACHE_BYTES:
                break
            path.unlink(missing_ok=True)
            total -= size

    async def answer(self, target: str, base: str, allowed: Allowed) -> tuple[int, str, bytes | Path]:
        """(status, content type, body) for a GET of ``target``: a package document with its tarball URLs
        pointing at ``base`` (the box's side of the listener), or a tarball."""
        path = urllib.parse.unquote(urllib.parse.urlsplit(target).path).lstrip("/")
        name, sep, file = path.partition("/-/")
        if not _NAME.match(name) or (sep and not _FILE.match(file)):
            return 404, "text/plain", b"not a package path\n"
        if not allowed.admits(name):
            return 403, "text/plain", f"boxforge's npm cache serves this box's agent only, not {name}\n".encode()
        try:
            if sep:
                return 200, "application/octet-stream", await self.tarball(name, file)
            doc = await self.packument(name)
        except NotOnRegistry as exc:
            return 404, "text/plain", f"{exc}\n".encode()
        allowed.grow(name, doc)
        for meta in (doc.get("versions") or {}).values():
            dist = meta.get("dist") or {}
            if dist.get("tarball"):
                dist["tarball"] = f"{base}/{name}/-/{str(dist['tarball']).rsplit('/', 1)[-1]}"
        return 200, "application/json", json.dumps(doc, separators=(",", ":")).encode()

    async def handle(self, reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes], base: str,
                     allowed: Allowed) -> None:
        """One HTTP/1.1 connection from the box (keep-alive, GET and HEAD only)."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        try:
            while True:
                request = await _next_request(conn, reader)
                if request is None:
                    return
                if request.method not in (b"GET", b"HEAD"):
                    status, kind, body = 405, "text/plain", b"read-only\n"
                else:
                    try:
                        status, kind, body = await self.answer(request.target.decode(errors="replace"), base, allowed)
                    except (OSError, ValueError) as exc:  # the registry failed us: the box's npm retries
                        log.warning("npm cache: %s: %s", request.target.decode(errors="replace"), exc)
                        status, kind, body = 502, "text/plain", b"the registry did not answer\n"
                await _send(conn, writer, status, kind, body, head=request.method == b"HEAD")
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, TimeoutError, OSError, asyncssh.Error):
            return
        finally:
            writer.close()


async def _next_request(conn: h11.Connection, reader: asyncssh.SSHReader[bytes]) -> h11.Request | None:
    """The next request, its (empty) body read too; None when the box closed the connection."""
    request = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            with anyio.fail_after(IDLE_TIMEOUT_S):
                conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _send(conn: h11.Connection, writer: asyncssh.SSHWriter[bytes], status: int, kind: str,
                body: bytes | Path, *, head: bool) -> None:
    if isinstance(body, Path):
        with await anyio.to_thread.run_sync(body.open, "rb") as fh:
            await _send_head(conn, writer, status, kind, os.fstat(fh.fileno()).st_size)
            while not head and (chunk := await anyio.to_thread.run_sync(fh.read, CHUNK_BYTES)):
                writer.write(conn.send(h11.Data(data=chunk)))
                await writer.drain()
    else:
        await _send_head(conn, writer, status, kind, len(body))
        if body and not head:
            writer.write(conn.send(h11.Data(data=body)))
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


async def _send_head(conn: h11.Connection, writer: asyncssh.SSHWriter[bytes], status: int, kind: str,
                     size: int) -> None:
    writer.write(conn.send(h11.Response(status_code=status, headers=[
        ("content-type", kind), ("content-length", str(size))])))


@contextlib.asynccontextmanager
async def serve(cache: NpmCache, conn: asyncssh.SSHClientConnection, roots: dict[str, str]) -> AsyncIterator[str]:
    """Serve ``cache`` on the box's loopback over ``conn`` for the body of the ``with``; yields the registry
    URL the box uses. Raises ``asyncssh.Error`` / ``OSError`` when the box's SSH server refuses the listener."""
    allowed = Allowed(dict(roots))
    port: list[int] = []

    def factory(_orig_host: str, _orig_port: int) -> Callable[
            [asyncssh.SSHReader[bytes], asyncssh.SSHWriter[bytes]], Awaitable[None]]:
        base = f"http://{BOX_HOST}:{port[0]}"
        return lambda reader, writer: cache.handle(reader, writer, base, allowed)

    listener = await conn.start_server(factory, BOX_HOST, 0, encoding=None)
    port.append(listener.get_port())
    try:
        yield f"http://{BOX_HOST}:{port[0]}"
    finally:
        listener.close()
        await listener.wait_closed()
