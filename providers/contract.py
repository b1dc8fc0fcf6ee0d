"""The provider contract as executable checks, for every provider (``tests/contract`` runs them).

A ``ContractTarget`` says how to make the provider under test (a fresh instance per call, sharing nothing
in memory, as a restarted orchestrator would) and where its keys go; each ``check_*`` coroutine exercises one
guarantee of ``providers.base.Provider`` against real machines and removes what it made. Violations raise
``ContractViolation`` with what was expected and what was seen. Nothing here imports a test framework, so a
provider outside this repository can run the same checks.

The guarantees checked: create is idempotent by request id; list finds boxes by labels from a fresh
instance with no local state; destroy twice is silent and leaves nothing listed; boxes of another owner are
never listed as ours, and a machine without ``managed-by=boxforge`` is never destroyed; labels round-trip
through create and ``set_labels``; a ready box is reachable through ``access()`` with the spec's host key
where the provider ``PinsHostKey``.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import asyncssh

from providers.base import (
    LABEL_EXPIRES_AT,
    LABEL_MANAGED_BY,
    LABEL_OWNER,
    LABEL_READY,
    LABEL_REQUEST,
    BoxSpec,
    BoxState,
    Provider,
    ProviderError,
    SSHAccess,
    StdioAccess,
    box_labels,
    owner_labels,
)
from providers.capabilities import PinsHostKey

EXTRA_LABEL = "boxforge-contract"  # a label of the caller's own, carried like any other


class ContractViolation(AssertionError):
    """The provider broke a guarantee of the contract."""


def expect(condition: object, message: str) -> None:
    if not condition:
        raise ContractViolation(message)


@dataclass
class ContractTarget:
    """One provider under test.

    ``make_provider`` returns a new instance on each call (two instances must agree through the place the
    boxes live, not through memory). ``add_foreign`` (optional) puts a machine without boxforge's labels
    where the provider looks and returns its id; ``remove_foreign`` takes it away again.
    """

    name: str
    make_provider: Callable[[], Provider]
    keys_dir: Path
    owner: str = field(default_factory=lambda: "oc" + secrets.token_hex(4))
    ready_timeout_s: float = 60.0
    add_foreign: Callable[[], Awaitable[str]] | None = None
    remove_foreign: Callable[[str], Awaitable[None]] | None = None

    def spec(self, name: str, *, owner: str | None = None, extra: Mapping[str, str] | None = None,
             ttl_s: float = 600, size: str | None = None) -> tuple[BoxSpec, Path]:
        """A spec with a fresh request id, fresh keys and the owner's labels; (spec, client key path)."""
        request_id = "r" + secrets.token_hex(6)
        host = asyncssh.generate_private_key("ssh-ed25519", comment=f"boxforge-host-{request_id}")
        client = asyncssh.generate_private_key("ssh-ed25519", comment=f"boxforge-client-{request_id}")
        self.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        client_key = self.keys_dir / f"{name}-{request_id}"
        client_key.touch(mode=0o600)
        client_key.write_bytes(client.export_private_key("openssh"))
        labels = {**box_labels(owner=owner or self.owner, name=name, request_id=request_id,
                               expires_at=time.time() + ttl_s), **(extra or {})}
        spec = BoxSpec(name=name, request_id=request_id, labels=labels,
                       host_key_private=host.export_private_key("openssh").decode(),
                       host_key_public=host.export_public_key("openssh").decode().strip(),
                       authorized_key=client.export_public_key("openssh").decode().strip(), size=size)
        return spec, client_key


async def burn_all(provider: Provider, *owners: str) -> None:
    """Destroy every box of these owners (a check's cleanup, also after a violation)."""
    for owner in owners:
        for box in await provider.list(owner_labels(owner)):
            await provider.destroy(box.id)


async def _left(provider: Provider, owner: str) -> None:
    left = await provider.list(owner_labels(owner))
    expect(left == [], f"boxes of owner {owner} left after the check: {[b.id for b in left]}")


async def check_create_is_idempotent_by_request_id(target: ContractTarget) -> None:
    provider = target.make_provider()
    spec, _ = target.spec("c-idem")
    try:
        first = await provider.create(spec)
        again = await provider.create(spec)
        other = await target.make_provider().create(spec)  # a retry from another instance (a restart)
        expect(first.id == again.id == other.id, f"one request made several boxes: {first.id}, {again.id}, "
                                                 f"{other.id}")
        found = await provider.list({LABEL_REQUEST: spec.request_id})
        expect([b.id for b in found] == [first.id], f"list by request label gave {[b.id for b in found]}")
    finally:
        await burn_all(provider, target.owner)
    await _left(provider, target.owner)


async def check_list_by_labels_needs_no_local_state(target: ContractTarget) -> None:
    maker = target.make_provider()
    spec, _ = target.spec("c-list", extra={EXTRA_LABEL: "list"})
    try:
        made = await maker.create(spec)
        fresh = target.make_provider()
        by_owner = await fresh.list(owner_labels(target.owner))
        expect([b.id for b in by_owner] == [made.id], f"a fresh instance listed {[b.id for b in by_owner]} for the "
                                                      f"owner, not [{made.id}]")
        by_extra = await fresh.list({**owner_labels(target.owner), EXTRA_LABEL: "list"})
        expect([b.id for b in by_extra] == [made.id], "list by an added label did not find the box")
        missing = await fresh.list({**owner_labels(target.owner), EXTRA_LABEL: "other"})
        expect(missing == [], f"list by a label value the box lacks gave {[b.id for b in missing]}")
        expect((await fresh.get(made.id)) is not None, "a fresh instance cannot get the box by id")
    finally:
        await burn_all(maker, target.owner)
    await _left(maker, target.owner)


async def check_destroy_twice_is_silent(target: ContractTarget) -> None:
    provider = target.make_provider()
    spec, _ = target.spec("c-burn")
    try:
        box = await provider.create(spec)
        await provider.destroy(box.id)
        try:
            await provider.destroy(box.id)  # gone already: success, no error
            await target.make_provider().destroy(box.id)  # from an instance that never saw it
        except ProviderError as exc:
            raise ContractViolation(f"destroy of a box already gone raised {type(exc).__name__}: {exc}") from exc
        gone = await provider.get(box.id)
        expect(gone is None or gone.state is BoxState.GONE, f"get after destroy gave {gone}")
    finally:
        await burn_all(provider, target.owner)
    await _left(provider, target.owner)


async def check_owner_label_is_respected(target: ContractTarget) -> None:
    provider = target.make_provider()
    stranger = "os" + secrets.token_hex(4)
    theirs, _ = target.spec("c-theirs", owner=stranger)
    ours, _ = target.spec("c-ours")
    foreign_id: str | None = None
    try:
        their_box = await provider.create(theirs)
        our_box = await provider.create(ours)
        listed = [b.id for b in await provider.list(owner_labels(target.owner))]
        expect(listed == [our_box.id], f"our owner's list gave {listed}; the other owner's box is {their_box.id}")
        expect(all(b.labels.get(LABEL_OWNER) == target.owner for b in await provider.list(owner_labels(target.owner))),
               "a listed box lacks our owner label")
        if target.add_foreign is not None:
            foreign_id = await target.add_foreign()
            managed = [b.id for b in await provider.list({LABEL_MANAGED_BY: "boxforge"})]
            expect(foreign_id not in managed, "a machine without managed-by=boxforge was listed as managed")
            try:
                await provider.destroy(foreign_id)
            except ProviderError:
                pass
            else:
                raise ContractViolation("destroy of a machine without managed-by=boxforge did not refuse")
            expect((await provider.get(foreign_id)) is not None, "the foreign machine is gone")
    finally:
        await burn_all(provider, target.owner, stranger)
        if foreign_id is not None and target.remove_foreign is not None:
            await target.remove_foreign(foreign_id)
    await _left(provider, target.owner)
    await _left(provider, stranger)


async def check_labels_round_trip(target: ContractTarget) -> None:
    provider = target.make_provider()
    spec, _ = target.spec("c-labels", extra={EXTRA_LABEL: "v1.a_b-c"})
    try:
        box = await provider.create(spec)
        read = await target.make_provider().get(box.id)
        expect(read is not None and dict(read.labels) == dict(spec.labels),
               f"labels after create: {read.labels if read else None} != {dict(spec.labels)}")
        moved = {**spec.labels, LABEL_EXPIRES_AT: str(int(time.time()) + 7200), LABEL_READY: "1"}
        updated = await provider.set_labels(box.id, moved)
        expect(dict(updated.labels) == moved, f"set_labels returned {dict(updated.labels)} != {moved}")
        again = await target.make_provider().get(box.id)
        expect(again is not None and dict(again.labels) == moved and again.ready,
               f"labels read back after set_labels: {again.labels if again else None} != {moved}")
        expect(again is not None and again.expires_at == int(moved[LABEL_EXPIRES_AT]), "expiry did not round-trip")
    finally:
        await burn_all(provider, target.owner)
    await _left(provider, target.owner)


async def _reach_ssh(access: SSHAccess, client_key: Path, host_public: str | None) -> str:
    known = ([asyncssh.import_public_key(host_public)], [], []) if host_public else None
    async with asyncssh.connect(access.host, access.port, username=access.user, client_keys=[str(client_key)],
                                known_hosts=known, agent_path=None, config=None) as conn:
        return (await conn.run("echo contract-ok", check=True)).stdout or ""


async def _reach_stdio(access: StdioAccess) -> str:
    result = await anyio.run_process(list(access.argv), input=b"echo contract-ok\n",
                                     env={**os.environ, **access.env})
    return result.stdout.decode()


async def check_ready_box_is_reachable_through_access(target: ContractTarget) -> None:
    provider = target.make_provider()
    spec, client_key = target.spec("c-ready")
    try:
        box = await provider.create(spec)
        ready = await provider.wait_ready(box.id, timeout=target.ready_timeout_s)
        expect(ready.state is BoxState.RUNNING, f"wait_ready returned a {ready.state} box")
        access = provider.access(ready)
        with anyio.fail_after(30):
            if isinstance(access, SSHAccess):
                pinned = spec.host_key_public if isinstance(provider, PinsHostKey) else None
                said = await _reach_ssh(access, client_key, pinned)
            else:
                said = await _reach_stdio(access)
        expect(said == "contract-ok\n", f"the box said {said!r} to echo")
    finally:
        await burn_all(provider, target.owner)
    await _left(provider, target.owner)


CHECKS: tuple[Callable[[ContractTarget], Awaitable[None]], ...] = (
    check_create_is_idempotent_by_request_id,
    check_list_by_labels_needs_no_local_state,
    check_destroy_twice_is_silent,
    check_owner_label_is_respected,
    check_labels_round_trip,
    check_ready_box_is_reachable_through_access,
)
