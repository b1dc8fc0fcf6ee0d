"""Boxes on Hetzner Cloud, through the hcloud library.

What a box is on Hetzner:

- a server named ``<box name>-<request id>`` (unique per create, so a retried create hits
  ``uniqueness_error`` instead of making a second server) carrying the boxforge labels, of a server type
  chosen from the live catalog (``catalog.py``);
- cloud-init user data (``cloud_init.py``) that pins the orchestrator's host key, creates the non-root box
  user and arms the backstop; never a token or an env secret;
- one ssh_keys resource per owner (``keys.py``), reused by all the owner's boxes.

hcloud is synchronous: every call runs in a worker thread (``api.py``), and waiting (``waiting.py``) uses
anyio sleeps, so a cancelled create never sits in a ``time.sleep``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from providers.base import (
    BACKSTOP_EXPIRES_FILE,
    CLOUD_INIT_FLAG_FILE,
    CLOUD_INIT_READY_FILE,
    LABEL_MANAGED_BY,
    LABEL_OWNER,
    LABEL_REQUEST,
    MANAGED_BY_VALUE,
    AuthError,
    Box,
    BoxSpec,
    CapacityError,
    NotFound,
    Provider,
    ProviderContext,
    ProviderError,
    ProviderSettings,
    QuotaError,
    ReadyTimeout,
    SizePreset,
    TransientError,
)
from providers.capabilities import (
    HasBackstop,
    HasPricing,
    InstallsPackages,
    OnboxCall,
    PinsHostKey,
    Price,
    WaitsForBoot,
)
from providers.hetzner import catalog
from providers.hetzner.api import API_ATTEMPTS, HetznerApi, NameTaken
from providers.hetzner.cloud_init import cloud_config
from providers.hetzner.keys import OwnerKeys, label_selector
from providers.hetzner.servers import server_name, to_box
from providers.hetzner.settings import HetznerSettings
from providers.hetzner.waiting import wait_ready

DESTROY_TIMEOUT_S = 120.0
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]*$")

class HetznerProvider(Provider, PinsHostKey, WaitsForBoot, HasBackstop, HasPricing, InstallsPackages):
    """Boxes on Hetzner Cloud. See providers.base.Provider for the contract.

    ``server_type`` pins the default size (None: the catalog's cheapest fit for the ``floor``).
    ``ssh_port`` is where the boxes' sshd listens (22 on Hetzner; other values serve the test fake).
    ``ipv6_only`` creates servers without a public IPv4 (cheaper); such a box is reached at the ``::1``
    address of its /64. ``poll_interval_s`` paces action/status polling and is the base of the retry backoff.
    """

    name: ClassVar[str] = "hetzner"
    Settings: ClassVar[type[ProviderSettings]] = HetznerSettings
    default_when_configured: ClassVar[bool] = True

    def __init__(
        self,
        token: str,
        *,
        endpoint: str | None = None,
        server_type: str | None = None,
        floor: SizePreset = SizePreset(cores=2, memory_gb=4),  # noqa: B008 - frozen
        image: str = "ubuntu-24.04",
        location: str = "fsn1",
        ssh_user: str = "boxforge",
        ssh_port: int = 22,
        ipv6_only: bool = False,
        poll_interval_s: float = 2.0,
        api_attempts: int = API_ATTEMPTS,
    ) -> None:
        self.api = HetznerApi(token, endpoint=endpoint, poll_interval_s=poll_interval_s, attempts=api_attempts)
        self.client = self.api.client
        self.catalog = catalog.Catalog(self.api)
        self.keys = OwnerKeys(self.api)
        self.server_type = server_type
        self.floor = floor
        self.image = image
        self.location = location
        self.ssh_user = ssh_user
        self.ssh_port = ssh_port
        self.ipv6_only = ipv6_only
        self.poll_interval_s = poll_interval_s
        self._create_actions: dict[str, int] = {}
        self._create_hosts: dict[str, str] = {}  # server id -> address, known from the create response
        self._choices: dict[str, catalog.Choice] = {}  # server id -> the size choice made at create, till ready

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
            floor=SizePreset(settings.min_cores, settings.min_memory_gb),
            image=settings.image,
            location=settings.location,
            ssh_user=settings.ssh_user,
            ssh_port=settings.ssh_port,
            ipv6_only=settings.ipv6_only,
            poll_interval_s=settings.poll_interval_s,
        )

    # capabilities

    def boot_wait(self, box: Box) -> OnboxCall:
        return OnboxCall("cloud-init-wait.sh", {"FLAG_FILE": CLOUD_INIT_FLAG_FILE, "READY_FILE": CLOUD_INIT_READY_FILE})

    def backstop_move(self, box: Box, expires_at: int) -> OnboxCall:
        return OnboxCall("backstop-move.sh", {"BACKSTOP_FILE": BACKSTOP_EXPIRES_FILE, "EXPIRES_AT": str(expires_at)})

    def price(self, box: Box) -> Price | None:
        hourly = box.data.get("price_hourly")
        return None if hourly is None else Price(hourly, box.data.get("price_monthly"))

    async def quote(self, size: str | None, location: str | None, image: str | None) -> Price | None:
        """The gross price of the server type a create of ``size`` would pick (from the catalog)."""
        where = location or self.location
        choice = await self.catalog.choose(size=size or self.server_type, location=where, image=image or self.image,
                                           floor=self.floor)
        types, _ = await self.catalog.get()
        chosen = next((t for t in types if t.name == choice.server_type), None)
        hourly, monthly = catalog.prices(chosen, where) if chosen is not None else (None, None)
        return None if hourly is None else Price(hourly, monthly)

    def package_install(self, packages: tuple[str, ...]) -> OnboxCall:
        bad = [p for p in packages if not PACKAGE_RE.match(p)]
        if bad or not packages:
            raise ProviderError(f"not distribution package names: {', '.join(bad) or '(none given)'}")
        return OnboxCall("apt-install.sh", {"PACKAGES": " ".join(packages)}, sudo=True)

    # the contract

    async def verify(self) -> None:
        """Check that the token works (a read of the catalog); AuthError otherwise."""
        self.catalog.invalidate()
        await self.catalog.get()

    async def create(self, spec: BoxSpec) -> Box:
        """Create the server and return it PENDING, with the server type chosen and its warnings;
        idempotent by ``spec.request_id``.

        A create whose response was lost and that is retried (here or by the caller) finds the
        server by its unique name and request label instead of making a second one.
        """
        owner = spec.labels.get(LABEL_OWNER)
        if not owner:
            raise ProviderError(f"box {spec.name!r} has no {LABEL_OWNER} label; refusing to create an unowned server")
        existing = await self._find_request(spec.request_id)
        if existing is not None:
            return self._box(existing)
        location = spec.location or self.location
        image = spec.image or self.image
        try:
            choice = await self.catalog.choose(size=spec.size or self.server_type, location=location, image=image,
                                               floor=self.floor)
        except ProviderError as exc:
            if spec.size is None and self.server_type:  # the user did not name this size here: say where it is set
                raise type(exc)(f"{exc} (the default size {self.server_type} is pinned by "
                                "BOXFORGE_HETZNER_SERVER_TYPE or server_type in [providers.hetzner])") from exc
            raise
        async with self.keys.creating(owner):
            server, action_id = await self._create_server(spec, choice.server_type, location, image, owner)
        if server is None:
            return await self._adopt(server_name(spec), spec.request_id, choice)
        box = self._box(server, choice)
        self._choices[box.id] = choice
        if action_id is not None:
            self._create_actions[box.id] = action_id
        if box.host:
            self._create_hosts[box.id] = box.host
        return box

    async def _create_server(self, spec: BoxSpec, size: str, location: str, image: str,
                             owner: str) -> tuple[Any | None, int | None]:
        """(server, create action id); (None, None) when the name is taken (maybe by our own lost attempt)."""
        from hcloud.images import Image  # the SDK loads with the first call (providers/hetzner/api.py)
        from hcloud.locations import Location
        from hcloud.server_types import ServerType
        from hcloud.servers import ServerCreatePublicNetwork
        from hcloud.ssh_keys import SSHKey

        name = server_name(spec)
        user_data = cloud_config(spec, user=self.ssh_user, expires_at=spec.expires_at or int(time.time()))
        for attempt in range(2):
            key_id = await self.keys.key_id(owner)
            try:
                response = await self.api.call(
                    f"create server {name} ({size} in {location})", self.client.servers.create,
                    name=name, server_type=ServerType(name=size), image=Image(name=image),
                    location=Location(name=location), ssh_keys=[SSHKey(id=key_id)], user_data=user_data,
                    labels=dict(spec.labels),
                    public_net=ServerCreatePublicNetwork(enable_ipv4=not self.ipv6_only, enable_ipv6=True),
                )
            except NameTaken:
                return None, None
            except CapacityError as exc:
                raise await self.catalog.unavailable(size, location, getattr(exc.__cause__, "message", None)) from exc
            except (AuthError, QuotaError, TransientError):
                raise
            except ProviderError:
                if attempt == 0 and not await self.keys.exists(key_id):
                    self.keys.forget(owner)  # another orchestrator deleted the owner key: make it again
                    continue
                raise
            return response.server, response.action.id if response.action is not None else None
        raise AssertionError("unreachable")

    async def _adopt(self, name: str, request_id: str, choice: catalog.Choice) -> Box:
        """After uniqueness_error on a create: the server is ours if it carries our request label."""
        server = await self.api.call(f"get server {name}", self.client.servers.get_by_name, name)
        if server is not None and (server.labels or {}).get(LABEL_REQUEST) == request_id:
            return self._box(server, choice)
        raise ProviderError(f"a server named {name} already exists in the Hetzner project and was not made by this "
                            "request; delete it in the Hetzner Console or use another box name")

    async def _find_request(self, request_id: str) -> Any | None:
        servers = await self.api.call("list servers", self.client.servers.get_all,
                                      label_selector=label_selector({LABEL_REQUEST: request_id}))
        live = [s for s in servers if s.status != "deleting"]
        return live[0] if live else None

    async def wait_ready(self, box_id: str, *, timeout: float) -> Box:
        """Wait for the create action, status running, then an SSH banner on the box's address."""
        choice = self._choices.get(box_id)
        try:
            box = await wait_ready(self.api, box_id, box_of=lambda server: self._box(server, choice),
                                   ssh_port=self.ssh_port,
                                   action_id=self._create_actions.get(box_id),
                                   early_host=self._create_hosts.pop(box_id, None), timeout=timeout)
        except ReadyTimeout:
            raise
        except ProviderError:
            self._create_actions.pop(box_id, None)
            self._choices.pop(box_id, None)
            raise
        self._create_actions.pop(box_id, None)
        self._choices.pop(box_id, None)
        return box

    async def get(self, box_id: str) -> Box | None:
        server = await self.api.server(box_id)
        return self._box(server) if server is not None else None

    async def list(self, labels: Mapping[str, str]) -> list[Box]:
        """Servers carrying every given label (a label_selector query), except those being deleted."""
        servers = await self.api.call("list servers", self.client.servers.get_all,
                                      label_selector=label_selector(labels))
        return [self._box(s) for s in servers if s.status != "deleting"]

    async def set_labels(self, box_id: str, labels: Mapping[str, str]) -> Box:
        if not box_id.isdigit():
            raise NotFound(f"Hetzner server {box_id} does not exist")
        from hcloud.servers import Server

        server = await self.api.call(f"update the labels of server {box_id}", self.client.servers.update,
                                     Server(id=int(box_id)), labels=dict(labels))
        return self._box(server)

    async def destroy(self, box_id: str) -> None:
        """Delete the server and wait for it to go; gone already is success.

        Refuses a server without ``managed-by=boxforge``; afterwards deletes the owner's
        ssh key if the owner has no server left.
        """
        server = await self.api.server(box_id)
        if server is None:
            return
        labels = dict(server.labels or {})
        if labels.get(LABEL_MANAGED_BY) != MANAGED_BY_VALUE:
            raise ProviderError(f"refusing to delete Hetzner server {server.name}: it has no "
                                f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE} label, so boxforge did not make it")
        try:
            action = await self.api.call(f"delete server {server.name}", self.client.servers.delete, server)
        except NotFound:
            action = None
        if action is not None:
            await self.api.wait_action(action.id, f"delete server {server.name}", DESTROY_TIMEOUT_S)
        self._create_actions.pop(box_id, None)
        self._create_hosts.pop(box_id, None)
        self._choices.pop(box_id, None)
        owner = labels.get(LABEL_OWNER)
        if owner:
            await self.keys.forget_if_idle(owner)

    async def aclose(self) -> None:
        """Close the HTTP session; servers outlive this object on purpose."""
        self.api.close()

    def _box(self, server: Any, choice: catalog.Choice | None = None) -> Box:
        return to_box(server, ssh_port=self.ssh_port, ssh_user=self.ssh_user, ipv6_only=self.ipv6_only,
                      choice=choice)
