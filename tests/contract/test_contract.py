"""Every provider passes the same contract (providers/contract.py), each check against real boxes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from providers.contract import CHECKS, ContractTarget


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])
async def test_provider_keeps_the_contract(target: ContractTarget,
                                           check: Callable[[ContractTarget], Awaitable[None]]) -> None:
    await check(target)
