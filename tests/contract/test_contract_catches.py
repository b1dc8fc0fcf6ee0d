"""The contract checks fail a provider that breaks the contract: each check against a local provider
broken in the one way the check is about (so a passing run means something)."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import pytest

from providers.base import LABEL_EXPIRES_AT, Box, BoxSpec, NotFound
from providers.contract import (
    EXTRA_LABEL,
    ContractTarget,
    ContractViolation,
    check_create_is_idempotent_by_request_id,
    check_destroy_twice_is_silent,
    check_labels_round_trip,
    check_list_by_labels_needs_no_local_state,
    check_owner_label_is_respected,
)
from providers.local import LocalProvider, boxdir, burn


class RecreatesEachTime(LocalProvider):
    """Ignores the request id: every create makes a new box."""

    async def create(self, spec: BoxSpec) -> Box:
        return await super().create(dataclasses.replace(spec, request_id="r" + secrets.token_hex(6)))


class ListsEverything(LocalProvider):
    """Ignores the labels it is asked to list by."""

    async def list(self, labels: Mapping[str, str]) -> list[Box]:
        return await super().list({})


class RemembersInMemory(LocalProvider):
    """Lists only what this instance created: its view is local state."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.made: set[str] = set()

    async def create(self, spec: BoxSpec) -> Box:
        box = await super().create(spec)
        self.made.add(box.id)
        return box

    async def list(self, labels: Mapping[str, str]) -> list[Box]:
        return [b for b in await super().list(labels) if b.id in self.made]


class LoudAboutTheGone(LocalProvider):
    """Raises NotFound when asked to destroy a box that is gone."""

    async def destroy(self, box_id: str) -> None:
        if await self.get(box_id) is None:
            raise NotFound(f"local box {box_id} does not exist")
        await super().destroy(box_id)


class DropsOwnLabels(LocalProvider):
    """Keeps only boxforge's labels, and never takes an expiry change."""

    async def set_labels(self, box_id: str, labels: Mapping[str, str]) -> Box:
        box = await self.get(box_id)
        assert box is not None
        kept = {k: v for k, v in labels.items() if k != EXTRA_LABEL}
        return await super().set_labels(box_id, {**kept, LABEL_EXPIRES_AT: box.labels[LABEL_EXPIRES_AT]})


CASES: list[tuple[type[LocalProvider], Callable[[ContractTarget], Awaitable[None]]]] = [
    (RecreatesEachTime, check_create_is_idempotent_by_request_id),
    (ListsEverything, check_owner_label_is_respected),
    (ListsEverything, check_list_by_labels_needs_no_local_state),
    (RemembersInMemory, check_list_by_labels_needs_no_local_state),
    (LoudAboutTheGone, check_destroy_twice_is_silent),
    (DropsOwnLabels, check_labels_round_trip),
]


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "boxes"
    yield root
    for box_dir in sorted(root.glob("*")) if root.exists() else []:  # whatever a broken provider left
        if boxdir.BOX_ID_RE.match(box_dir.name):
            burn.burn_box(box_dir)


@pytest.mark.parametrize(("broken", "check"), CASES, ids=[f"{b.__name__}-{c.__name__}" for b, c in CASES])
async def test_a_provider_breaking_the_contract_fails_its_check(
    broken: type[LocalProvider], check: Callable[[ContractTarget], Awaitable[None]], root: Path, tmp_path: Path
) -> None:
    target = ContractTarget(broken.__name__, lambda: broken(root), tmp_path / "keys")
    with pytest.raises(ContractViolation):
        await check(target)
