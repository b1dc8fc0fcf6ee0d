"""What a Fleet runs on: the resources it opens and closes (the store's repository, the SSH pool, the
providers) and what it does with them at start (``recover``), with the notices the person running boxforge
must see."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from server.config import Settings
from server.service.boxes import Boxes
from server.service.providers import ProviderSet
from server.ssh import SSHPool
from server.store import Repository

log = logging.getLogger("boxforge.fleet")


def notice(message: str) -> None:
    """Something the person running boxforge must know at start: on stderr (never stdout, which may be the
    MCP stdio transport) and in the log."""
    log.warning(message)
    print(f"boxforge: {message}", file=sys.stderr)


@dataclass(frozen=True)
class FleetResources:
    """What a Fleet needs opened and closed: settings, the store repository, the SSH pool, the providers."""

    settings: Settings
    repo: Repository
    pool: SSHPool
    providers: ProviderSet


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[FleetResources]:
    """The store, SSH pool and providers, all closed on exit (shielded: closing survives a cancel)."""
    repo = await Repository.open(settings.db_path)
    pool = SSHPool(keepalive_interval=settings.keepalive_interval_s)
    providers = ProviderSet(settings)
    try:
        yield FleetResources(settings, repo, pool, providers)
    finally:
        with anyio.CancelScope(shield=True):
            await pool.aclose()
            await providers.aclose()
            repo.close()


async def recover(settings: Settings, repo: Repository, boxes: Boxes, timeout_s: float) -> list[str]:
    """At start: a store that was unreadable is said, a fresh one is rebuilt from the providers' labels,
    and the creates whose orchestrator died are ended (adopted or burned). Bounded by ``timeout_s``: a
    provider that stalls leaves them to the reaper. Returns the names of the creates ended."""
    if repo.moved_aside is not None:
        aside, why = repo.moved_aside
        notice(f"the state store {settings.db_path} was unreadable ({why}): moved it to {aside} and started "
               "a new one")
    handled: list[str] = []
    with anyio.move_on_after(timeout_s):
        if repo.fresh:
            rebuilt = await boxes.rebuild_from_labels()
            if rebuilt or repo.moved_aside is not None:
                notice(f"rebuilt {len(rebuilt)} box{'es' if len(rebuilt) != 1 else ''} from the providers' "
                       f"labels ({', '.join(rebuilt) or 'none'}); not recoverable: earlier jobs (their "
                       "job output tails and idempotency keys), failed-create history, repo and branch")
            repo.rebuilt()
        handled = await boxes.recover_dead_creates()
    return handled
