"""A stateful fake of the Hetzner Cloud API: the subset hcloud uses for boxforge.

It follows the public API documentation (docs.hetzner.cloud): servers (create, get, list
with ``name``/``label_selector``/``status`` filters and pagination, label/name update,
delete), actions (running -> success | error), ssh_keys (create, list, get, delete, with
name and fingerprint uniqueness), server_types with per-location prices, availability and
deprecation, images (per architecture), locations, error bodies ``{"error": {"code",
"message", "details"}}``, RateLimit headers and 429 ``rate_limit_exceeded``. Its catalog is
``tests/fakes/hetzner_catalog.py``.

API changelog entries (docs.hetzner.cloud/changelog) it follows:

- 2023-06-02 "deprecation info for server types": a server type carries a ``deprecation``
  object (``announced``, ``unavailable_after``) instead of relying on the ``deprecated`` flag;
- 2024-06-06 "old server types with shared Intel vCPUs are deprecated" (cx11 ... cx51): gone
  from the catalog here, long past their date;
- 2025-09-24 "per-location server types": deprecation per location in
  ``server_type.locations[].deprecation`` (the type-wide ``deprecation`` is still sent here, as
  it is being phased out);
- 2025-10-16 "server types deprecated": cx22 ... cx52 and cpx11 ... cpx51 deprecated (no
  longer orderable after the end of 2025), succeeded by the cost-optimized cx23 / cx33 / cx43 /
  cx53 and the regular-performance cpx22 ... cpx62; listed with their deprecation and
  ``available: false`` in every location;
- 2025-12-16 "phasing out datacenters": servers are placed and described by ``location``;
  servers here carry ``location`` and no ``datacenter``;
- 2026-04-01 "datacenter deprecations": availability and recommendation per location moved to
  ``server_type.locations[].available`` / ``.recommended`` (hcloud-python 2.18.0 followed);
- 2026-06-02 "datacenters deprecated": the ``/datacenters`` endpoints are removed after
  2026-10-01; here ``GET /v1/datacenters`` answers 410 Gone;
- 2026-07-01 "removing datacenters": the ``datacenter`` property is gone from servers (and
  primary IPs); placement is by ``location`` only.

Each server boots a REAL local box (providers.local.supervisor, unisolated) on its own loopback address
127.A.B.N with one shared SSH port: the host key pair and the authorized key are read from
the cloud-config user data, as cloud-init would, so the Hetzner path runs end to end
(API -> cloud-init-equivalent -> SSH -> jobs -> delete). Deleting a server burns its box.
An IPv6-only server gets the network ``::/64`` and is served on ``::1`` (one at a time).
The backstop is emulated too: the box burns itself at the cloud-config's expiry plus the
grace period, and the server then reports ``off`` (still listed, as Hetzner still bills it).

Fault switches live on ``fake.faults`` and can be flipped at any time; the catalog
(``fake.server_types``) can be changed too: ``fake.deprecate(name, days)`` announces a
deprecation, ``sold_out`` sets per-location stock-outs.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import itertools
import json
import random
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from providers.base import BACKSTOP_EXPIRES_FILE, LABEL_EXPIRES_AT, LABEL_REQUEST, BoxSpec
from providers.local import boxdir, burn, launch
from tests.fakes.hetzner_catalog import IMAGES, LOCATIONS, FakeType, server_types

RATE_LIMIT = 3600
MAX_PER_PAGE = 50
DEFAULT_PER_PAGE = 25
USER_DATA_MAX = 32 * 1024
LABEL_KEY_RE = re.compile(r"^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$")
NAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,61}[a-zA-Z0-9])?$")

def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def fingerprint(public_key: str) -> str:
    """The MD5 fingerprint the API shows for an OpenSSH public key (aa:bb:...)."""
    digest = hashlib.md5(base64.b64decode(public_key.split()[1])).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _by_id_or_name(items: list[dict[str, Any]], ref: Any) -> dict[str, Any] | None:
    for item in items:
        if item["id"] == ref or item["name"] == ref or str(item["id"]) == str(ref):
            return item
    return None


def _split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current.strip())
    return parts


def label_selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """The documented label selector language: k=v, k==v, k!=v, k, !k, k in (..), k notin (..)."""
    for term in _split_selector(selector):
        if match := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
            key, op, values = match.group(1), match.group(2), {v.strip() for v in match.group(3).split(",")}
            inside = labels.get(key) in values
            if inside != (op == "in"):
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = re.split(r"==?", term, maxsplit=1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


class DropConnection(Exception):
    """Close the connection without answering (the response is lost)."""


@dataclass
class Faults:
    """Switches for failure modes; flip them at any time."""

    create_error: tuple[int, str, str] | None = None  # (status, code, message) answered to POST /servers
    action_error: bool = False  # the create action ends in error and the server stays off
    rate_limit_burst: int = 0  # the next N requests get 429 rate_limit_exceeded
    unreachable: bool = False  # servers become running but nothing answers SSH
    boot_delay_s: float = 0.0  # time from create to running (read at create time)
    lose_create_responses: int = 0  # the next N creates succeed, then the connection drops unanswered
    server_limit: int = 25  # more live servers than this: resource_limit_exceeded


@dataclass
class FakeServer:
    id: int
    name: str
    server_type: str
    location: str
    image: str
    labels: dict[str, str]
    user_data: str | None
    ipv4: str | None
    ipv6: str
    created: str
    status: str = "initializing"
    box_dir: Path | None = None
    deleted: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def host(self) -> str:
        return self.ipv4 or "::1"


class FakeHetzner:
    """The fake API. Use as a context manager; ``url`` is the endpoint for hcloud/HCLOUD_ENDPOINT."""

    def __init__(self, boxes_root: Path, *, token: str, ssh_port: int | None = None, box_server: str = "auto",
                 backstop_grace_s: int = 900) -> None:
        self.boxes_root = Path(boxes_root)
        self.token = token
        self.box_server = box_server
        self.backstop_grace_s = backstop_grace_s
        self.faults = Faults()
        self.server_types: list[FakeType] = server_types()
        self.subnet = (random.randint(64, 254), random.randint(0, 255))  # 127.A.B.N, apart from other runs
        self.ssh_port = ssh_port or boxdir.free_port(f"127.{self.subnet[0]}.{self.subnet[1]}.2")
        self.servers: dict[int, FakeServer] = {}
        self.actions: dict[int, dict[str, Any]] = {}
        self.ssh_keys: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.user_data_seen: list[str] = []
        self.root_passwords_issued = 0
        self.rate_limited = 0
        self.lost_responses = 0
        self.booting = 0  # servers between create and running (or failure)
        self.peak_booting = 0
        self._ids = itertools.count(1000)
        self._hosts = itertools.count(2)
        self._lock = threading.RLock()
        self._threads: list[threading.Thread] = []
        self._httpd: http.server.ThreadingHTTPServer | None = None

    # lifecycle

    def __enter__(self) -> FakeHetzner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_PUT(self) -> None:
                fake._handle(self, "PUT")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._spawn(self._httpd.serve_forever, 0.05)

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        with self._lock:
            servers = list(self.servers.values())
        for server in servers:
            server.cancel.set()
            with server.lock:
                server.deleted = True
                if server.box_dir is not None:
                    burn.burn_box(server.box_dir)
        for thread in self._threads:
            thread.join(timeout=10)

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    # views for tests

    def live_servers(self, **labels: str) -> list[FakeServer]:
        with self._lock:
            return [s for s in self.servers.values()
                    if not s.deleted and all(s.labels.get(k) == v for k, v in labels.items())]

    def server_named(self, name: str) -> FakeServer | None:
        with self._lock:
            return next((s for s in self.servers.values() if s.name == name and not s.deleted), None)

    def add_server(self, name: str, labels: dict[str, str], *, status: str = "running",
                   server_type: str = "cx23") -> FakeServer:
        """A server made outside boxforge (no box behind it), e.g. a foreign one in the project."""
        with self._lock:
            server = self._new_server(name, server_type, "fsn1", "ubuntu-24.04", labels, None, ipv4=True)
            server.status = status
            return server

    def server_type(self, ref: Any) -> FakeType | None:
        """A type of the catalog by name or id."""
        return next((t for t in self.server_types if ref in (t.name, t.id) or str(ref) == str(t.id)), None)

    def deprecate(self, name: str, days: float, location: str | None = None) -> dict[str, str]:
        """Announce now that ``name`` can be ordered for ``days`` more (negative: it is retired already),
        everywhere or in one ``location`` only."""
        now = datetime.now(UTC)
        deprecation = {"announced": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
                       "unavailable_after": (now + timedelta(days=days)).isoformat(timespec="seconds")
                       .replace("+00:00", "Z")}
        found = self.server_type(name)
        assert found is not None, name
        with self._lock:
            if location is None:
                found.deprecation = deprecation
            else:
                found.deprecated_in[location] = deprecation
        return deprecation

    # HTTP plumbing

    def _handle(self, req: http.server.BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(req.path)
        path = parts.path.removeprefix("/v1")
        query = parse_qs(parts.query)
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        status, payload, extra = 200, None, {}
        try:
            with self._lock:
                if self.faults.rate_limit_burst > 0:
                    self.faults.rate_limit_burst -= 1
                    self.rate_limited += 1
                    extra = {"RateLimit-Remaining": "0", "RateLimit-Reset": str(int(time.time()) + 1)}
                    raise ApiError(429, "rate_limit_exceeded", "limit of 3600 requests per hour reached")
            if req.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, "unauthorized", "unable to authenticate")
            try:
                body = json.loads(raw) if raw else {}
            except ValueError as exc:
                raise ApiError(400, "json_error", "invalid JSON input in your request") from exc
            status, payload = self._route(method, path, query, body)
        except ApiError as exc:
            status = exc.status
            payload = {"error": {"code": exc.code, "message": exc.message, "details": exc.details}}
        except DropConnection:
            with self._lock:
                self.requests.append((method, path, 0))
                self.lost_responses += 1
            req.close_connection = True
            return
        with self._lock:
            self.requests.append((method, path, status))
        data = json.dumps(payload).encode() if payload is not None else b""
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.send_header("X-Correlation-Id", secrets.token_hex(8))
        req.send_header("RateLimit-Limit", str(RATE_LIMIT))
        req.send_header("RateLimit-Remaining", extra.get("RateLimit-Remaining", str(RATE_LIMIT - 1)))
        req.send_header("RateLimit-Reset", extra.get("RateLimit-Reset", str(int(time.time()))))
        req.end_headers()
        req.wfile.write(data)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        segments = [s for s in path.split("/") if s]
        if not segments:
            raise ApiError(404, "not_found", "not found")
        kind, rest = segments[0], segments[1:]
        handler = getattr(self, f"_{kind}_{method.lower()}{'_one' if rest else ''}", None)
        if handler is None:
            raise ApiError(404 if method == "GET" else 405, "not_found" if method == "GET" else "method_not_allowed",
                           f"{method} {path} is not part of this fake")
        if rest:
            if not rest[0].isdigit() or len(rest) > 1:
                raise ApiError(404, "not_found", f"{path} not found")
            return handler(int(rest[0]), query, body)
        return handler(query, body)

    @staticmethod
    def _page(name: str, items: list[Any], query: dict[str, list[str]]) -> tuple[int, Any]:
        try:
            page = max(1, int(query.get("page", ["1"])[0]))
            per_page = min(MAX_PER_PAGE, max(1, int(query.get("per_page", [str(DEFAULT_PER_PAGE)])[0])))
        except ValueError as exc:
            raise ApiError(422, "invalid_input", "invalid input in field 'page' or 'per_page'") from exc
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        return 200, {name: chunk, "meta": {"pagination": {
            "page": page, "per_page": per_page, "previous_page": page - 1 if page > 1 else None,
            "next_page": page + 1 if page < last else None, "last_page": last, "total_entries": len(items)}}}

    @staticmethod
    def _check_labels(labels: Any) -> dict[str, str]:
        if not isinstance(labels, dict):
            raise ApiError(422, "invalid_input", "invalid input in field 'labels': must be an object")
        for key, value in labels.items():
            if not isinstance(value, str) or not LABEL_KEY_RE.match(key) or not LABEL_VALUE_RE.match(value):
                raise ApiError(422, "invalid_input", f"invalid input in field 'labels': invalid label {key}={value}",
                               {"fields": [{"name": "labels", "messages": [f"invalid label {key}"]}]})
        return dict(labels)

    # catalog

    def _server_types_get(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self._lock:
            types = [t.json() for t in self.server_types if "name" not in query or t.name == query["name"][0]]
        return self._page("server_types", types, query)

    def _server_types_get_one(self, type_id: int, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self._lock:
            found = self.server_type(type_id)
            if found is not None:
                return 200, {"server_type": found.json()}
        raise ApiError(404, "not_found", f"server_type with ID {type_id} not found")

    def _locations_get(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        items = [loc for loc in LOCATIONS if "name" not in query or loc["name"] == query["name"][0]]
        return self._page("locations", items, query)

    def _images_get(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        items = [self._image_json(img["name"], img["architecture"]) for img in IMAGES
                 if ("name" not in query or img["name"] == query["name"][0])
                 and ("architecture" not in query or img["architecture"] in query["architecture"])]
        return self._page("images", items, query)

    def _datacenters_get(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        raise ApiError(410, "gone", "datacenters have been removed: use locations and server_types[].locations "
                                    "(see changelog 2026-07-01)")

    def _datacenters_get_one(self, dc_id: int, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        return self._datacenters_get(query, body)

    @staticmethod
    def _image_json(name: str, architecture: str) -> dict[str, Any]:
        image = next(img for img in IMAGES if img["name"] == name and img["architecture"] == architecture)
        return {**image, "type": "system", "status": "available", "image_size": None, "disk_size": 5,
                "created": "2024-04-25T13:00:00Z", "created_from": None, "bound_to": None, "rapid_deploy": True,
                "protection": {"delete": False}, "deprecated": None, "deleted": None, "labels": {}}

    # actions

    def _action(self, command: str, server_id: int, status: str = "running") -> dict[str, Any]:
        action = {"id": next(self._ids), "command": command, "status": status,
                  "progress": 100 if status == "success" else 0, "started": now_iso(),
                  "finished": now_iso() if status != "running" else None,
                  "resources": [{"id": server_id, "type": "server"}], "error": None}
        self.actions[action["id"]] = action
        return action

    def _finish(self, action: dict[str, Any], error: dict[str, str] | None = None) -> None:
        with self._lock:
            action.update(status="error" if error else "success", progress=100, finished=now_iso(), error=error)

    def _actions_get_one(self, action_id: int, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self._lock:
            action = self.actions.get(action_id)
            if action is None:
                raise ApiError(404, "not_found", f"action with ID {action_id} not found")
            return 200, {"action": dict(action)}

    # ssh keys

    def _ssh_keys_get(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self._lock:
            keys = list(self.ssh_keys.values())
        if "name" in query:
            keys = [k for k in keys if k["name"] == query["name"][0]]
        if "fingerprint" in query:
            keys = [k for k in keys if k["fingerprint"] == query["fingerprint"][0]]
        if "label_selector" in query:
            keys = [k for k in keys if label_selector_matches(query["label_selector"][0], k["labels"])]
        return self._page("ssh_keys", keys, query)

    def _ssh_keys_get_one(self, key_id: int, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self._lock:
            key = self.ssh_keys.get(key_id)
        if key is None:
            raise ApiError(404, "not_found", f"ssh_key with ID {key_id} not found")
        return 200, {"ssh_key": key}

    def _ssh_keys_post(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        name, public_key = body.get("name"), body.get("public_key")
        if not isinstance(name, str) or not name or not isinstance(public_key, str):
            raise ApiError(422, "invalid_input", "invalid input in fields 'name' or 'public_key'")
        try:
            fp = fingerprint(public_key)
        except (IndexError, ValueError) as exc:
            raise ApiError(422, "invalid_input", "invalid input in field 'public_key': not a valid key") from exc
        labels = self._check_labels(body.get("labels") or {})
        with self._lock:
            for key in self.ssh_keys.values():
                if key["name"] == name:
                    raise ApiError(409, "uniqueness_error", "SSH key with the same name already exists",
                                   {"fields": [{"name": "name"}]})
                if key["fingerprint"] == fp:
                    raise ApiError(409, "uniqueness_error", "SSH key with the same fingerprint already exists",
                                   {"fields": [{"name": "public_key"}]})
            key = {"id": next(self._ids), "name": name, "fingerprint": fp, "public_key": public_key.strip(),
                   "labels": labels, "created": now_iso()}
            self.ssh_keys[key["id"]] = key
        return 201, {"ssh_key": key}

    def _ssh_keys_delete_one(self, key_id: int, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self._lock:
            if self.ssh_keys.pop(key_id, None) is None:
                raise ApiError(404, "not_found", f"ssh_key with ID {key_id} not found")
        return 204, None

    # servers

    def _server_json(self, server: FakeServer) -> dict[str, Any]:
        status = server.status
        if status == "running" and server.box_dir is not None and not server.box_dir.exists():
            status = "off"  # the box's backstop powered it off
        location = _by_id_or_name(LOCATIONS, server.location)
        image = self._image_json(server.image, self._type_arch(server.server_type))
        return {
            "id": server.id, "name": server.name, "status": status, "created": server.created,
            "public_net": {
                "ipv4": {"id": server.id + 1, "ip": server.ipv4, "blocked": False,
                         "dns_ptr": f"static.{server.ipv4}.clients.your-server.de"} if server.ipv4 else None,
                "ipv6": {"id": server.id + 2, "ip": server.ipv6, "blocked": False, "dns_ptr": []},
                "floating_ips": [], "firewalls": [],
            },
            "private_net": [], "server_type": self._type_json(server.server_type), "location": location,
            "image": image, "iso": None, "rescue_enabled": False, "locked": False,
            "backup_window": None, "outgoing_traffic": 0, "ingoing_traffic": 0, "included_traffic": 21990232555520,
            "protection": {"delete": False, "rebuild": False}, "labels": dict(server.labels), "volumes": [],
            "load_balancers": [], "primary_disk_size": 40, "placement_group": None,
        }

    def _type_json(self, name: str) -> dict[str, Any]:
        found = self.server_type(name)
        assert found is not None, name
        return found.json()

    def _type_arch(self, name: str) -> str:
        found = self.server_type(name)
        return found.architecture if found is not None else "x86"

    def _live(self, server_id: int) -> FakeServer:
        server = self.servers.get(server_id)
        if server is None:
            raise ApiError(404, "not_found", f"server with ID {server_id} not found")
        return server

    def _servers_get(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self._lock:
            servers = sorted(self.servers.values(), key=lambda s: s.id)
            if "name" in query:
                servers = [s for s in servers if s.name == query["name"][0]]
            if "label_selector" in query:
                servers = [s for s in servers if label_selector_matches(query["label_selector"][0], s.labels)]
            items = [self._server_json(s) for s in servers]
        if "status" in query:
            items = [s for s in items if s["status"] in query["status"]]
        return self._page("servers", items, query)

    def _servers_get_one(self, server_id: int, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self._lock:
            return 200, {"server": self._server_json(self._live(server_id))}

    def _servers_put_one(self, server_id: int, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self._lock:
            server = self._live(server_id)
            if "labels" in body:
                server.labels = self._check_labels(body["labels"])
            if "name" in body:
                server.name = body["name"]
            return 200, {"server": self._server_json(server)}

    def _new_server(self, name: str, server_type: str, location: str, image: str, labels: dict[str, str],
                    user_data: str | None, *, ipv4: bool) -> FakeServer:
        server_id = next(self._ids)
        n = next(self._hosts)
        a, b = self.subnet
        address = f"127.{a}.{(b + (n - 2) // 253) % 256}.{(n - 2) % 253 + 2}"
        server = FakeServer(
            id=server_id, name=name, server_type=server_type, location=location, image=image, labels=labels,
            user_data=user_data, ipv4=address if ipv4 else None,
            ipv6=f"2001:db8:{server_id:x}::/64" if ipv4 else "::/64", created=now_iso(),
        )
        self.servers[server_id] = server
        return server

    def _servers_post(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        faults = self.faults
        if faults.create_error is not None:
            status, code, message = faults.create_error
            raise ApiError(status, code, message)
        name = body.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ApiError(422, "invalid_input", "invalid input in field 'name': must be a valid hostname")
        type_name = body.get("server_type")
        with self._lock:
            found = self.server_type(type_name)
            stype = found.json() if found is not None else None
        if stype is None:
            raise ApiError(422, "invalid_input", f"invalid input in field 'server_type': {type_name} not found")
        location = _by_id_or_name(LOCATIONS, body.get("location", "fsn1"))
        if location is None:
            raise ApiError(422, "invalid_input", f"invalid input in field 'location': {body.get('location')} not found")
        offer = next((entry for entry in stype["locations"] if entry["name"] == location["name"]), None)
        if offer is None or not offer["available"]:
            raise ApiError(412, "resource_unavailable",
                           f"server type {stype['name']} is not available in location {location['name']}")
        image = _by_id_or_name([i for i in IMAGES if i["architecture"] == stype["architecture"]], body.get("image"))
        if image is None:
            raise ApiError(422, "invalid_input", f"invalid input in field 'image': {body.get('image')} not found "
                                                 f"for architecture {stype['architecture']}")
        labels = self._check_labels(body.get("labels") or {})
        user_data = body.get("user_data")
        if user_data is not None and len(user_data.encode()) > USER_DATA_MAX:
            raise ApiError(422, "invalid_input", "invalid input in field 'user_data': is too long (32 KiB max)")
        public_net = body.get("public_net") or {}
        with_ipv4 = public_net.get("enable_ipv4", True)
        with self._lock:
            for ref in body.get("ssh_keys") or []:
                if _by_id_or_name(list(self.ssh_keys.values()), ref) is None:
                    raise ApiError(422, "invalid_input", f"invalid input in field 'ssh_keys': ssh key {ref} not found")
            live = [s for s in self.servers.values() if not s.deleted]
            if any(s.name == name for s in live):
                raise ApiError(409, "uniqueness_error", "server name is already used", {"fields": [{"name": "name"}]})
            if len(live) >= faults.server_limit:
                raise ApiError(403, "resource_limit_exceeded", "server limit exceeded",
                               {"limits": [{"name": "server_limit"}]})
            if not with_ipv4 and any(s.ipv4 is None for s in live):
                raise ApiError(412, "resource_unavailable", "this fake serves one IPv6-only server at a time (::1)")
            server = self._new_server(name, stype["name"], location["name"], image["name"], labels, user_data,
                                      ipv4=with_ipv4)
            if user_data is not None:
                self.user_data_seen.append(user_data)
            root_password = None
            if not body.get("ssh_keys"):
                root_password = secrets.token_urlsafe(12)  # Hetzner e-mails it too
                self.root_passwords_issued += 1
            action = self._action("create_server", server.id)
            start = self._action("start_server", server.id)
            self.booting += 1
            self.peak_booting = max(self.peak_booting, self.booting)
            response = {"server": self._server_json(server), "action": dict(action), "next_actions": [dict(start)],
                        "root_password": root_password}
            lose = faults.lose_create_responses > 0
            if lose:
                faults.lose_create_responses -= 1
            delay, fail, unreachable = faults.boot_delay_s, faults.action_error, faults.unreachable
        self._spawn(self._boot, server, action, start, delay, fail, unreachable)
        if lose:
            raise DropConnection
        return 201, response

    def _boot(self, server: FakeServer, action: dict[str, Any], start: dict[str, Any], delay: float, fail: bool,
              unreachable: bool) -> None:
        try:
            self._boot_box(server, action, start, delay, fail, unreachable)
        finally:
            with self._lock:
                self.booting -= 1

    def _boot_box(self, server: FakeServer, action: dict[str, Any], start: dict[str, Any], delay: float,
                  fail: bool, unreachable: bool) -> None:
        """cloud-init's part: read the user data, start a box that presents its host key."""
        if server.cancel.wait(delay):
            return
        with server.lock:
            if server.deleted:
                return
            if fail:
                server.status = "off"
                self._finish(action, {"code": "action_failed", "message": "server creation failed on the host"})
                self._finish(start, {"code": "action_failed", "message": "server creation failed"})
                return
            if not unreachable:
                try:
                    server.box_dir = launch.launch_box(self.boxes_root, self._box_spec(server),
                                                         server=self.box_server, host=server.host,
                                                         port=self.ssh_port)
                except Exception as exc:
                    server.status = "off"
                    self._finish(action, {"code": "action_failed", "message": f"fake boot failed: {exc}"})
                    return
            server.status = "running"
            self._finish(action)
            self._finish(start)

    def _box_spec(self, server: FakeServer) -> BoxSpec:
        """What cloud-init would apply: host key pair, the user and its authorized key, the backstop."""
        config = parse_cloud_config(server.user_data or "")
        keys = config.get("ssh_keys") or {}
        if not config.get("ssh_deletekeys") or "ed25519_private" not in keys or "ed25519_public" not in keys:
            raise ValueError("user data does not pin an ed25519 host key (ssh_keys + ssh_deletekeys)")
        users = [u for u in config.get("users") or [] if isinstance(u, dict)]
        if len(users) != 1 or not users[0].get("ssh_authorized_keys"):
            raise ValueError("user data must create exactly one user with an authorized key")
        local_user = boxdir.current_user()
        if users[0]["name"] != local_user:
            raise ValueError(f"this fake runs boxes as the local user {local_user!r}, not {users[0]['name']!r}")
        labels = {}
        for entry in config.get("write_files") or []:
            if entry.get("path") == BACKSTOP_EXPIRES_FILE and str(entry.get("content", "")).strip().isdigit():
                labels[LABEL_EXPIRES_AT] = str(int(entry["content"]) + self.backstop_grace_s)
        return BoxSpec(
            name=server.name, request_id=server.labels.get(LABEL_REQUEST, str(server.id)), labels=labels,
            host_key_private=keys["ed25519_private"], host_key_public=keys["ed25519_public"],
            authorized_key=users[0]["ssh_authorized_keys"][0],
        )

    def _servers_delete_one(self, server_id: int, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self._lock:
            server = self._live(server_id)
            server.status = "deleting"
            action = self._action("delete_server", server.id)
        server.cancel.set()
        self._spawn(self._delete, server, action)
        return 200, {"action": dict(action)}

    def _delete(self, server: FakeServer, action: dict[str, Any]) -> None:
        with server.lock:
            server.deleted = True
            if server.box_dir is not None:
                burn.burn_box(server.box_dir)
        with self._lock:
            self.servers.pop(server.id, None)
        self._finish(action)


def parse_cloud_config(user_data: str) -> dict[str, Any]:
    """Read #cloud-config user data as cloud-init does (YAML; JSON is a subset)."""
    if not user_data.startswith("#cloud-config"):
        raise ValueError("user data is not #cloud-config")
    try:
        import yaml
    except ImportError:
        return json.loads(user_data.split("\n", 1)[1])
    return yaml.safe_load(user_data) or {}


@contextmanager
def running_fake(boxes_root: Path, *, token: str | None = None, box_server: str = "auto") -> Iterator[FakeHetzner]:
    """A started fake (with a fresh random token) that burns every box it made on exit."""
    boxes_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with FakeHetzner(boxes_root, token=token or "hc-test-" + secrets.token_hex(16), box_server=box_server) as fake:
        yield fake
