"""The one ssh_keys resource per owner (``boxforge-<owner>``) that every box of the owner is created with.

Its private half is thrown away at once: passing it only suppresses Hetzner's root password e-mail and leaves
root with no way in (boxforge logs in as the box user with a per-box key that cloud-init installs). It is made
on first use, found again by its labels by any orchestrator of the owner, and deleted when the owner's last
server goes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import anyio

from providers.base import NotFound, ProviderError, owner_labels
from providers.hetzner.api import HetznerApi, NameTaken

log = logging.getLogger("boxforge.hetzner")


def label_selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def lockout_public_key() -> str:
    """A fresh ed25519 public key whose private half is never kept: root gets no way in."""
    import asyncssh  # already a dependency; only needed the first time an owner's key is made

    key = asyncssh.generate_private_key("ssh-ed25519", comment="boxforge-root-lockout")
    return key.export_public_key("openssh").decode().strip()


class OwnerKeys:
    """Finds, makes and cleans up each owner's key; a create in flight keeps its owner's key alive."""

    def __init__(self, api: HetznerApi) -> None:
        self.api = api
        self._ids: dict[str, int] = {}
        self._lock = anyio.Lock()
        self._creating: dict[str, int] = {}

    @asynccontextmanager
    async def creating(self, owner: str) -> AsyncIterator[None]:
        """While a create of ``owner`` runs, ``forget_if_idle`` leaves the owner's key alone."""
        self._creating[owner] = self._creating.get(owner, 0) + 1
        try:
            yield
        finally:
            self._creating[owner] -= 1

    async def key_id(self, owner: str) -> int:
        """The id of the owner's ssh_keys resource, created on first use."""
        async with self._lock:
            if owner in self._ids:
                return self._ids[owner]
            keys = self.api.client.ssh_keys
            selector = label_selector(owner_labels(owner))
            found = await self.api.call("list ssh keys", keys.get_all, label_selector=selector)
            if found:
                key_id = found[0].id
            else:
                name = f"boxforge-{owner}"
                try:
                    key = await self.api.call(f"create ssh key {name}", keys.create, name=name,
                                              public_key=lockout_public_key(), labels=owner_labels(owner))
                    key_id = key.id
                except NameTaken:  # another orchestrator of this owner made it a moment ago
                    named = await self.api.call(f"get ssh key {name}", keys.get_by_name, name)
                    if named is None:
                        raise ProviderError(f"ssh key {name} exists and vanished; retry the create") from None
                    key_id = named.id
            self._ids[owner] = key_id
            return key_id

    def forget(self, owner: str) -> None:
        """The key was found gone: make it again on next use."""
        self._ids.pop(owner, None)

    async def exists(self, key_id: int) -> bool:
        try:
            await self.api.call(f"get ssh key {key_id}", self.api.client.ssh_keys.get_by_id, key_id)
        except NotFound:
            return False
        return True

    async def forget_if_idle(self, owner: str) -> None:
        """Delete the owner's ssh key when no server of the owner is left (best effort)."""
        async with self._lock:
            if self._creating.get(owner):
                return
            try:
                selector = label_selector(owner_labels(owner))
                servers = await self.api.call("list servers", self.api.client.servers.get_all, label_selector=selector)
                if any(s.status != "deleting" for s in servers):
                    return
                keys = await self.api.call("list ssh keys", self.api.client.ssh_keys.get_all, label_selector=selector)
                for key in keys:
                    try:
                        await self.api.call(f"delete ssh key {key.name}", self.api.client.ssh_keys.delete, key)
                    except NotFound:
                        pass
                self._ids.pop(owner, None)
            except ProviderError as exc:
                log.warning("could not clean up the ssh key of owner %s: %s", owner, exc)
