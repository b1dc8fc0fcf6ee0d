"""Boxes on Hetzner Cloud, through the hcloud library.

hcloud is synchronous: every call runs in a worker thread (``anyio.to_thread``), and
waiting (actions, boot, SSH) is done here with anyio sleeps, so a cancelled create never
sits in a ``time.sleep``. hcloud and requests exceptions are translated at this boundary
into ``providers.base`` errors whose messages say what to do next.

What a box is on Hetzner:

- a server named ``<box name>-<request id>`` (unique per create, so a retried create hits
  ``uniqueness_error`` instead of making a second server) carrying the boxforge labels;
- cloud-init user data that pins the orchestrator's host key, creates the non-root box user
  with the box's client key and passwordless sudo, and arms a backstop timer that powers
  the box off after its expiry plus a grace period. No token and no env secret ever goes
  into user data (Hetzner stores it, and any process on the box can read it back);
- one ssh_keys resource per owner (``boxforge-<owner>``), reused by all the owner's boxes:
  a public key whose private half was thrown away. Passing it suppresses the root password
  e-mail and leaves root with no way in. It is deleted when the owner's last box goes.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Self, TypeVar

import anyio
import anyio.to_thread
import requests
from hcloud import APIException, Client
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType
from hcloud.servers import Server, ServerCreatePublicNetwork
from hcloud.ssh_keys import SSHKey
from pydantic import SecretStr

from providers.base import (
    BACKSTOP_EXPIRES_FILE,
    CLOUD_INIT_FLAG_FILE,
    CLOUD_INIT_READY_FILE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_OWNER,
    LABEL_REQUEST,
    MANAGED_BY_VALUE,
    AuthError,
    Box,
    BoxSpec,
    BoxState,
    CapacityError,
    NotFound,
    Provider,
    ProviderContext,
    ProviderError,
    ProviderSettings,
    QuotaError,
    ReadyTimeout,
    TransientError,
    owner_labels,
)
from providers.capabilities import HasBackstop, HasPricing, OnboxCall, Price
from providers.localbox import probe_ssh

T = TypeVar("T")
log = logging.getLogger("boxforge.hetzner")

DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
BACKSTOP_GRACE_S = 900
REQUEST_TIMEOUT_S = (10.0, 30.0)  # connect, read
API_CONCURRENCY = 4
API_ATTEMPTS = 6
MAX_BACKOFF_S = 30.0
DESTROY_TIMEOUT_S = 120.0
CATALOG_TTL_S = 600.0
SSH_PROBE_INTERVAL_S = 0.5
SERVER_NAME_MAX = 63

STATES = {
    "running": BoxState.RUNNING,
    "initializing": BoxState.PENDING,
    "starting": BoxState.PENDING,
    "migrating": BoxState.PENDING,
    "rebuilding": BoxState.PENDING,
    "unknown": BoxState.PENDING,
    "stopping": BoxState.ERROR,
    "off": BoxState.ERROR,  # powered off (e.g. by the backstop) but still billed until deleted
    "deleting": BoxState.GONE,
}

TRANSIENT_CODES = {"rate_limit_exceeded", "conflict", "locked", "timeout", "bad_gateway", "server_error",
                   "unavailable", "maintenance", "service_error"}

BACKSTOP_SCRIPT = f"""#!/bin/sh
# boxforge backstop: power off once the box's expiry plus a grace period has passed.
# The orchestrator deletes the server at expiry; this only bounds the cost when it cannot.
at=$(cat {BACKSTOP_EXPIRES_FILE} 2>/dev/null) || exit 0
case "$at" in ''|*[!0-9]*) exit 0 ;; esac
if [ "$(date +%s)" -ge $((at + {BACKSTOP_GRACE_S})) ]; then
  logger -t boxforge "expired at $at (+{BACKSTOP_GRACE_S}s grace): powering off"
  systemctl poweroff
fi
"""

BACKSTOP_SERVICE = """[Unit]
Description=boxforge backstop: power off after the box's expiry

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/boxforge-backstop
"""

BACKSTOP_TIMER = """[Unit]
Description=boxforge backstop check, every minute

[Timer]
OnBootSec=1min
OnUnitActiveSec=1min
AccuracySec=15s

[Install]
WantedBy=timers.target
"""


class _NameTaken(ProviderError):
    """uniqueness_error: a create or key name is in use (maybe by our own earlier attempt)."""


def cloud_config(spec: BoxSpec, *, user: str, expires_at: int) -> str:
    """The #cloud-config user data of a box (JSON, which cloud-init reads as YAML).

    It holds the box's own host key pair (the pin) and the client public key; never a
    token or an env secret.
    """
    config: dict[str, Any] = {
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {
            "ed25519_private": spec.host_key_private.strip() + "\n",
            "ed25519_public": spec.host_key_public.strip(),
        },
        "disable_root": True,
        "ssh_pwauth": False,
        "users": [{
            "name": user,
            "gecos": "boxforge box user",
            "shell": "/bin/bash",
            "lock_passwd": True,
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "ssh_authorized_keys": [spec.authorized_key.strip()],
        }],
        "write_files": [
            {"path": CLOUD_INIT_FLAG_FILE, "permissions": "0644",
             "content": f"{LABEL_REQUEST}={spec.request_id}\n"},
            {"path": BACKSTOP_EXPIRES_FILE, "permissions": "0644", "content": f"{expires_at}\n"},
            {"path": "/usr/local/sbin/boxforge-backstop", "permissions": "0755", "content": BACKSTOP_SCRIPT},
            {"path": "/etc/systemd/system/boxforge-backstop.service", "permissions": "0644",
             "content": BACKSTOP_SERVICE},
            {"path": "/etc/systemd/system/boxforge-backstop.timer", "permissions": "0644",
             "content": BACKSTOP_TIMER},
        ],
        "runcmd": [
            ["chown", user, BACKSTOP_EXPIRES_FILE],  # extend_server moves the deadline over SSH
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "boxforge-backstop.timer"],
            ["touch", CLOUD_INIT_READY_FILE],
        ],
    }
    return "#cloud-config\n" + json.dumps(config, indent=1) + "\n"


def server_name(spec: BoxSpec) -> str:
    """``<name>-<request id>``: unique per create, a valid hostname of at most 63 characters."""
    suffix = re.sub(r"[^a-z0-9-]", "", spec.request_id.lower()) or "r"
    head = spec.name[: SERVER_NAME_MAX - len(suffix) - 1].rstrip("-")
    return f"{head}-{suffix}"


def label_selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def lockout_public_key() -> str:
    """A fresh ed25519 public key whose private half is never kept: root gets no way in."""
    import asyncssh  # already a dependency; only needed the first time an owner's key is made

    key = asyncssh.generate_private_key("ssh-ed25519", comment="boxforge-root-lockout")
    return key.export_public_key("openssh").decode().strip()


def _api_code(exc: APIException) -> str:
    return exc.code if isinstance(exc.code, str) else str(exc.code)


def translate(exc: BaseException, what: str) -> ProviderError:
    """The providers.base error for an hcloud/requests exception raised while doing ``what``."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, APIException):
        code = _api_code(exc)
        message = exc.message
        if code in ("unauthorized", "401"):
            return AuthError(
                f"the Hetzner API rejected HCLOUD_TOKEN while trying to {what} ({message}): create a Read & Write "
                "API token in the Hetzner Console (your project -> Security -> API tokens) and set HCLOUD_TOKEN"
            )
        if code == "token_readonly":
            return AuthError(f"HCLOUD_TOKEN is read-only, so boxforge cannot {what}: create a Read & Write token")
        if code in ("forbidden", "403"):
            return AuthError(f"the Hetzner API refused to {what} ({message}): check the token's project and rights")
        if code == "resource_limit_exceeded":
            return QuotaError(
                f"Hetzner project limit reached while trying to {what} ({message}): destroy unused servers "
                "(list_servers / destroy_server) or ask Hetzner support to raise the project's limits"
            )
        if code in ("rate_limit_exceeded", "429"):
            return TransientError(
                f"Hetzner API rate limit reached while trying to {what} (3600 requests per hour per project by "
                "default, refilled at 1 per second): wait a minute and retry, or create fewer boxes at once"
            )
        if code in ("resource_unavailable", "placement_error"):
            return CapacityError(f"Hetzner cannot {what} right now ({message})")
        if code in ("not_found", "404"):
            return NotFound(f"Hetzner says not found while trying to {what} ({message})")
        if code == "uniqueness_error":
            return _NameTaken(f"cannot {what}: {message}")
        if code in TRANSIENT_CODES or (code.isdigit() and int(code) >= 500):
            return TransientError(f"the Hetzner API failed to {what} ({message}, {code}); retry shortly")
        return ProviderError(f"the Hetzner API rejected the request to {what}: {message} ({code})")
    if isinstance(exc, requests.exceptions.RequestException):
        return TransientError(f"cannot reach the Hetzner API to {what}: {type(exc).__name__}; check the network "
                              "(and HCLOUD_ENDPOINT if set)")
    return ProviderError(f"unexpected error from hcloud while trying to {what}: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class _TypeOffer:
    """A server type as sold in one location."""

    name: str
    price_hourly: float | None
    price_monthly: float | None

    def shown(self) -> str:
        return self.name if self.price_hourly is None else f"{self.name} ({self.price_hourly:.4f}/h)"


def _prices(server_type: Any, location: str) -> tuple[float | None, float | None]:
    for price in server_type.prices or []:
        if price.get("location") == location:
            hourly = (price.get("price_hourly") or {}).get("gross")
            monthly = (price.get("price_monthly") or {}).get("gross")
            return (float(hourly) if hourly is not None else None, float(monthly) if monthly is not None else None)
    return None, None


def _available_locations(server_type: Any) -> set[str]:
    """Where the type can be ordered now (per-location availability, else where it has a price)."""
    if server_type.locations is not None:
        return {entry.location.name for entry in server_type.locations if entry.available is not False}
    return {price.get("location") for price in server_type.prices or []}


class HetznerSettings(ProviderSettings):
    """Minimal settings for the spine-b branch only (the Hetzner branch brings the real ones): HCLOUD_TOKEN,
    HCLOUD_ENDPOINT, BOXFORGE_HETZNER_*; legacy top-level ``hcloud_*`` and ``hetzner_*`` config keys."""

    env_prefix: ClassVar[str] = "BOXFORGE_HETZNER_"
    env_aliases: ClassVar[dict[str, str]] = {"token": "HCLOUD_TOKEN", "endpoint": "HCLOUD_ENDPOINT"}
    legacy_prefix: ClassVar[str] = "hetzner_"
    token: SecretStr | None = None
    endpoint: str | None = None
    server_type: str = "cx22"
    image: str = "ubuntu-24.04"
    location: str = "fsn1"
    ssh_user: str = "boxforge"
    ssh_port: int = 22
    ipv6_only: bool = False
    poll_interval_s: float = 2.0

    @classmethod
    def load(cls, env: Mapping[str, str], file_values: Mapping[str, Any], name: str) -> Self:
        legacy = {f"hetzner_{key}": file_values[f"hcloud_{key}"] for key in ("token", "endpoint")
                  if f"hcloud_{key}" in file_values}  # the first edition's hcloud_token / hcloud_endpoint keys
        return super().load(env, {**file_values, **legacy}, name)


class HetznerProvider(Provider, HasBackstop, HasPricing):
    """Boxes on Hetzner Cloud. See providers.base.Provider for the contract.

    ``ssh_port`` is where the boxes' sshd listens (22 on Hetzner; other values serve the test
    fake). ``ipv6_only`` creates servers without a public IPv4 (cheaper); such a box is reached
    at the ``::1`` address of its /64. ``poll_interval_s`` paces action/status polling and is
    the base of the retry backoff.
    """

    name: ClassVar[str] = "hetzner"
    Settings: ClassVar[type[ProviderSettings]] = HetznerSettings
    default_when_configured: ClassVar[bool] = True

    def __init__(
        self,
        token: str,
        *,
        endpoint: str | None = None,
        server_type: str = "cx22",
        image: str = "ubuntu-24.04",
        location: str = "fsn1",
        ssh_user: str = "boxforge",
        ssh_port: int = 22,
        ipv6_only: bool = False,
        poll_interval_s: float = 2.0,
        api_attempts: int = API_ATTEMPTS,
    ) -> None:
        if not token:
            raise AuthError("HCLOUD_TOKEN is not set: create a Read & Write API token in a dedicated Hetzner "
                            "project and export HCLOUD_TOKEN")
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.client = Client(token=token, api_endpoint=self.endpoint, application_name="boxforge",
                             timeout=REQUEST_TIMEOUT_S)
        # Retries happen in _api with anyio sleeps (cancellable); hcloud has no public switch for its own.
        if hasattr(self.client, "_client") and hasattr(self.client._client, "_retry_max_retries"):
            self.client._client._retry_max_retries = 0
        self.server_type = server_type
        self.image = image
        self.location = location
        self.ssh_user = ssh_user
        self.ssh_port = ssh_port
        self.ipv6_only = ipv6_only
        self.poll_interval_s = poll_interval_s
        self.api_attempts = max(1, api_attempts)
        self._limiter = anyio.CapacityLimiter(API_CONCURRENCY)
        self._create_actions: dict[str, int] = {}
        self._create_hosts: dict[str, str] = {}  # server id -> address, known from the create response
        self._key_ids: dict[str, int] = {}
        self._key_lock = anyio.Lock()
        self._creating: dict[str, int] = {}
        self._catalog: tuple[float, list[Any], list[str]] | None = None

    @classmethod
    def configured(cls, settings: ProviderSettings) -> bool:
        return isinstance(settings, HetznerSettings) and settings.token is not None

    @classmethod
    def from_settings(cls, settings: ProviderSettings, ctx: ProviderContext) -> HetznerProvider:
        assert isinstance(settings, HetznerSettings)
        return cls(
            settings.token.get_secret_value() if settings.token else "",
            endpoint=settings.endpoint,
            server_type=settings.server_type,
            image=settings.image,
            location=settings.location,
            ssh_user=settings.ssh_user,
            ssh_port=settings.ssh_port,
            ipv6_only=settings.ipv6_only,
            poll_interval_s=settings.poll_interval_s,
        )

    # capabilities (minimal, for the spine-b branch: the Hetzner branch brings its own)

    def backstop_move(self, box: Box, expires_at: int) -> OnboxCall:
        return OnboxCall("backstop-move.sh", {"BACKSTOP_FILE": BACKSTOP_EXPIRES_FILE, "EXPIRES_AT": str(expires_at)})

    def price(self, box: Box) -> Price | None:
        hourly = box.data.get("price_hourly")
        return None if hourly is None else Price(hourly, box.data.get("price_monthly"))

    # plumbing

    async def _api(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one hcloud call in a thread; translate its errors; retry transient ones with backoff.

        Every call boxforge makes is safe to repeat: reads, label updates, deletes (gone is
        success) and creates (their names are unique, so a repeat gets uniqueness_error).
        """
        attempt = 0
        while True:
            try:
                return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._limiter)
            except Exception as exc:
                error = translate(exc, what)
                if not isinstance(error, TransientError) or attempt + 1 >= self.api_attempts:
                    raise error from exc
                log.info("retrying %s after %s", what, type(error).__name__)
            await anyio.sleep(min(MAX_BACKOFF_S, self.poll_interval_s * 2**attempt))
            attempt += 1

    async def _server(self, box_id: str) -> Any | None:
        """The hcloud server, or None when it is gone (or being deleted)."""
        if not box_id.isdigit():
            return None
        try:
            server = await self._api(f"get server {box_id}", self.client.servers.get_by_id, int(box_id))
        except NotFound:
            return None
        return None if server.status == "deleting" else server

    def _host(self, server: Any) -> str | None:
        net = server.public_net
        if net is None:
            return None
        if net.ipv4 is not None and net.ipv4.ip and not self.ipv6_only:
            return net.ipv4.ip
        if net.ipv6 is not None and net.ipv6.ip:
            return str(ipaddress.IPv6Network(net.ipv6.ip, strict=False).network_address + 1)
        return None

    def _box(self, server: Any) -> Box:
        labels = dict(server.labels or {})
        location = server.location.name if server.location is not None else None
        server_type = server.server_type
        hourly, monthly = _prices(server_type, location) if server_type is not None and location else (None, None)
        host = self._host(server)
        return Box(
            id=str(server.id),
            name=labels.get(LABEL_NAME, server.name),
            state=STATES.get(server.status, BoxState.PENDING),
            host=host,
            ssh_port=self.ssh_port,
            ssh_user=self.ssh_user,
            labels=labels,
            created_at=server.created.timestamp() if server.created else time.time(),
            data={
                "server_id": server.id,
                "server_name": server.name,
                "status": server.status,
                "ip": host,
                "ipv6_only": server.public_net is not None and server.public_net.ipv4 is None,
                "server_type": server_type.name if server_type is not None else None,
                "location": location,
                "price_hourly": hourly,
                "price_monthly": monthly,
            },
        )

    async def _catalog_now(self) -> tuple[list[Any], list[str]]:
        """Server types and location names, cached for a while (they change rarely)."""
        now = time.monotonic()
        if self._catalog is None or now - self._catalog[0] > CATALOG_TTL_S:
            types = await self._api("list server types", self.client.server_types.get_all)
            locations = await self._api("list locations", self.client.locations.get_all)
            self._catalog = (now, types, sorted(loc.name for loc in locations))
        return self._catalog[1], self._catalog[2]

    async def _offers(self, location: str) -> list[_TypeOffer]:
        types, _ = await self._catalog_now()
        offers = [_TypeOffer(t.name, *_prices(t, location)) for t in types if location in _available_locations(t)]
        return sorted(offers, key=lambda o: (o.price_hourly is None, o.price_hourly or 0.0, o.name))

    async def _unavailable(self, size: str, location: str, reason: str | None = None) -> CapacityError:
        self._catalog = None  # availability changed under us: refetch
        offers = await self._offers(location)
        types, _ = await self._catalog_now()
        elsewhere = sorted(next((_available_locations(t) for t in types if t.name == size), set()))
        message = f"server type {size} is unavailable in {location}"
        if reason:
            message += f" ({reason})"
        message += "; available there: " + (", ".join(o.shown() for o in offers[:12]) or "none")
        if elsewhere:
            message += f"; {size} is available in: {', '.join(elsewhere)}"
        return CapacityError(message + ". Pass another size or location to create_server.")

    async def _check_offer(self, size: str, location: str) -> None:
        types, locations = await self._catalog_now()
        if location not in locations:
            raise ProviderError(f"unknown Hetzner location {location!r}; locations: {', '.join(locations)}")
        server_type = next((t for t in types if t.name == size), None)
        if server_type is None:
            offers = await self._offers(location)
            raise ProviderError(f"unknown Hetzner server type {size!r}; available in {location}: "
                                + ", ".join(o.shown() for o in offers[:12]))
        if location not in _available_locations(server_type):
            raise await self._unavailable(size, location)

    async def _owner_key(self, owner: str) -> int:
        """The id of the owner's ssh_keys resource, created on first use."""
        async with self._key_lock:
            if owner in self._key_ids:
                return self._key_ids[owner]
            selector = label_selector(owner_labels(owner))
            keys = await self._api("list ssh keys", self.client.ssh_keys.get_all, label_selector=selector)
            if keys:
                key_id = keys[0].id
            else:
                name = f"boxforge-{owner}"
                try:
                    key = await self._api(f"create ssh key {name}", self.client.ssh_keys.create, name=name,
                                          public_key=lockout_public_key(), labels=owner_labels(owner))
                    key_id = key.id
                except _NameTaken:  # another orchestrator of this owner made it a moment ago
                    found = await self._api(f"get ssh key {name}", self.client.ssh_keys.get_by_name, name)
                    if found is None:
                        raise ProviderError(f"ssh key {name} exists and vanished; retry the create") from None
                    key_id = found.id
            self._key_ids[owner] = key_id
            return key_id

    async def _key_exists(self, key_id: int) -> bool:
        try:
            await self._api(f"get ssh key {key_id}", self.client.ssh_keys.get_by_id, key_id)
        except NotFound:
            return False
        return True

    async def _forget_owner_key_if_idle(self, owner: str) -> None:
        """Delete the owner's ssh key when no server of the owner is left (best effort)."""
        async with self._key_lock:
            if self._creating.get(owner):
                return
            try:
                selector = label_selector(owner_labels(owner))
                servers = await self._api("list servers", self.client.servers.get_all, label_selector=selector)
                if any(s.status != "deleting" for s in servers):
                    return
                keys = await self._api("list ssh keys", self.client.ssh_keys.get_all, label_selector=selector)
                for key in keys:
                    try:
                        await self._api(f"delete ssh key {key.name}", self.client.ssh_keys.delete, key)
                    except NotFound:
                        pass
                self._key_ids.pop(owner, None)
            except ProviderError as exc:
                log.warning("could not clean up the ssh key of owner %s: %s", owner, exc)

    async def _find_request(self, request_id: str) -> Any | None:
        servers = await self._api("list servers", self.client.servers.get_all,
                                  label_selector=label_selector({LABEL_REQUEST: request_id}))
        live = [s for s in servers if s.status != "deleting"]
        return live[0] if live else None

    async def _wait_action(self, action_id: int, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            action = await self._api(f"poll the action of {what}", self.client.actions.get_by_id, action_id)
            if action.status == "success":
                return
            if action.status == "error":
                error = action.error or {}
                raise ProviderError(f"Hetzner failed to {what}: {error.get('message', 'unknown error')} "
                                    f"({error.get('code', 'error')})")
            if time.monotonic() >= deadline:
                raise TransientError(f"Hetzner did not finish to {what} within {timeout:g}s; retry later")
            await anyio.sleep(self.poll_interval_s)

    # the contract

    async def verify(self) -> None:
        """Check that the token works (a read of the catalog); AuthError otherwise."""
        self._catalog = None
        await self._catalog_now()

    async def create(self, spec: BoxSpec) -> Box:
        """Create the server and return it PENDING; idempotent by ``spec.request_id``.

        A create whose response was lost and that is retried (here or by the caller) finds the
        server by its unique name and request label instead of making a second one.
        """
        owner = spec.labels.get(LABEL_OWNER)
        if not owner:
            raise ProviderError(f"box {spec.name!r} has no {LABEL_OWNER} label; refusing to create an unowned server")
        existing = await self._find_request(spec.request_id)
        if existing is not None:
            return self._box(existing)
        size = spec.size or self.server_type
        location = spec.location or self.location
        image = spec.image or self.image
        name = server_name(spec)
        await self._check_offer(size, location)
        expires_at = spec.expires_at or int(time.time())
        user_data = cloud_config(spec, user=self.ssh_user, expires_at=expires_at)
        self._creating[owner] = self._creating.get(owner, 0) + 1
        try:
            for attempt in range(2):
                key_id = await self._owner_key(owner)
                try:
                    response = await self._api(
                        f"create server {name} ({size} in {location})", self.client.servers.create,
                        name=name, server_type=ServerType(name=size), image=Image(name=image),
                        location=Location(name=location), ssh_keys=[SSHKey(id=key_id)], user_data=user_data,
                        labels=dict(spec.labels),
                        public_net=ServerCreatePublicNetwork(enable_ipv4=not self.ipv6_only, enable_ipv6=True),
                    )
                except _NameTaken:
                    return await self._adopt(name, spec.request_id)
                except CapacityError as exc:
                    raise await self._unavailable(size, location, getattr(exc.__cause__, "message", None)) from exc
                except (AuthError, QuotaError, TransientError):
                    raise
                except ProviderError:
                    if attempt == 0 and not await self._key_exists(key_id):
                        self._key_ids.pop(owner, None)  # another orchestrator deleted the owner key: make it again
                        continue
                    raise
                break
        finally:
            self._creating[owner] -= 1
        box = self._box(response.server)
        self._create_actions[box.id] = response.action.id
        if box.host:
            self._create_hosts[box.id] = box.host
        return box

    async def _adopt(self, name: str, request_id: str) -> Box:
        """After uniqueness_error on a create: the server is ours if it carries our request label."""
        server = await self._api(f"get server {name}", self.client.servers.get_by_name, name)
        if server is not None and (server.labels or {}).get(LABEL_REQUEST) == request_id:
            return self._box(server)
        raise ProviderError(f"a server named {name} already exists in the Hetzner project and was not made by this "
                            "request; delete it in the Hetzner Console or use another box name")

    async def wait_ready(self, box_id: str, *, timeout: float) -> Box:
        """Wait for the create action, status running, then an SSH banner on the box's address.

        Between API polls the address from the create response is probed over SSH (which costs no
        API call), and the first banner brings the next poll forward: readiness shows within
        ~0.5 s of sshd answering rather than up to ``poll_interval_s`` later.
        """
        deadline = time.monotonic() + timeout
        action_id = self._create_actions.get(box_id)
        early_host = self._create_hosts.pop(box_id, None)
        box: Box | None = None
        while True:
            if action_id is not None:
                action = await self._api(f"poll the creation of server {box_id}", self.client.actions.get_by_id,
                                         action_id)
                if action.status == "error":
                    self._create_actions.pop(box_id, None)
                    error = action.error or {}
                    raise ProviderError(
                        f"Hetzner failed to create server {box_id}: {error.get('message', 'unknown error')} "
                        f"({error.get('code', 'action error')}); try again, or another location or size"
                    )
                if action.status == "success":
                    action_id = None
                    self._create_actions.pop(box_id, None)
            if action_id is None and (box is None or box.state is not BoxState.RUNNING):
                server = await self._server(box_id)
                if server is None:
                    raise NotFound(f"Hetzner server {box_id} does not exist (any more)")
                box = self._box(server)
            if box is not None and box.state is BoxState.RUNNING and box.host:
                left = deadline - time.monotonic()
                if await probe_ssh(box.host, box.ssh_port, timeout=max(0.2, min(2.0, left))):
                    return box
            left = deadline - time.monotonic()
            if left <= 0:
                if box is None:
                    what = "was still being created"
                elif box.state is not BoxState.RUNNING:
                    what = f"was still {box.data.get('status')}"
                else:
                    what = f"was running but did not answer SSH at {box.host} port {box.ssh_port}"
                raise ReadyTimeout(f"Hetzner server {box_id} {what} after {timeout:g}s; raise ready_timeout_s "
                                   "(or BOXFORGE_READY_TIMEOUT) if boots are slow, or retry")
            if box is not None and box.state is BoxState.RUNNING:
                await anyio.sleep(min(SSH_PROBE_INTERVAL_S, left))
            elif await self._until_banner(early_host, min(self.poll_interval_s, left)):
                early_host = None  # once: a box that answers while the API still says otherwise is polled as usual

    async def _until_banner(self, host: str | None, wait: float) -> bool:
        """Sleep ``wait``, or less: True as soon as ``host`` greets with an SSH banner."""
        end = time.monotonic() + wait
        while host is not None and time.monotonic() < end:
            if await probe_ssh(host, self.ssh_port, timeout=max(0.05, min(0.2, end - time.monotonic()))):
                return True
            await anyio.sleep(min(SSH_PROBE_INTERVAL_S, max(0.0, end - time.monotonic())))
        await anyio.sleep(max(0.0, end - time.monotonic()))
        return False

    async def get(self, box_id: str) -> Box | None:
        server = await self._server(box_id)
        return self._box(server) if server is not None else None

    async def list(self, labels: Mapping[str, str]) -> list[Box]:
        """Servers carrying every given label (a label_selector query), except those being deleted."""
        servers = await self._api("list servers", self.client.servers.get_all, label_selector=label_selector(labels))
        return [self._box(s) for s in servers if s.status != "deleting"]

    async def set_labels(self, box_id: str, labels: Mapping[str, str]) -> Box:
        if not box_id.isdigit():
            raise NotFound(f"Hetzner server {box_id} does not exist")
        server = await self._api(f"update the labels of server {box_id}", self.client.servers.update,
                                 Server(id=int(box_id)), labels=dict(labels))
        return self._box(server)

    async def destroy(self, box_id: str) -> None:
        """Delete the server and wait for it to go; gone already is success.

        Refuses a server without ``managed-by=boxforge``; afterwards deletes the owner's
        ssh key if the owner has no server left.
        """
        server = await self._server(box_id)
        if server is None:
            return
        labels = dict(server.labels or {})
        if labels.get(LABEL_MANAGED_BY) != MANAGED_BY_VALUE:
            raise ProviderError(f"refusing to delete Hetzner server {server.name}: it has no "
                                f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE} label, so boxforge did not make it")
        try:
            action = await self._api(f"delete server {server.name}", self.client.servers.delete, server)
        except NotFound:
            action = None
        if action is not None:
            await self._wait_action(action.id, f"delete server {server.name}", DESTROY_TIMEOUT_S)
        self._create_actions.pop(box_id, None)
        self._create_hosts.pop(box_id, None)
        owner = labels.get(LABEL_OWNER)
        if owner:
            await self._forget_owner_key_if_idle(owner)

    async def aclose(self) -> None:
        """Close the HTTP session; servers outlive this object on purpose."""
        session = getattr(getattr(self.client, "_client", None), "_session", None)
        if session is not None:
            session.close()


__all__ = ["HetznerProvider", "cloud_config", "server_name", "translate"]
