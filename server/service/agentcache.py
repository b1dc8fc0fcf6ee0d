"""Where a box's bootstrap installs its npm agent from: the orchestrator's npm cache, served on the box's
loopback for as long as the bootstrap runs, when the provider's boxes are near this machine; otherwise the
registry itself."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio.to_thread

from providers.base import Provider
from providers.capabilities import NearOrchestrator
from server import npm, npmcache
from server.agents import AgentPlan
from server.config import Settings, ensure_private_dir
from server.lazy import lazy_import
from server.service.access import BoxAccess
from server.store import BoxRecord

if TYPE_CHECKING:
    import asyncssh
else:
    asyncssh = lazy_import("asyncssh")  # loaded on first use, not by the CLI's start

log = logging.getLogger("boxforge.fleet")


class AgentRegistry:
    def __init__(self, settings: Settings, access: BoxAccess) -> None:
        self.access = access
        root = settings.npm_cache_dir
        self.cache = npmcache.NpmCache(root) if root is not None else None

    @contextlib.asynccontextmanager
    async def registry_for(self, rec: BoxRecord, plan: AgentPlan, prov: Provider) -> AsyncIterator[str]:
        """The registry URL the box's bootstrap uses, valid inside the ``with``."""
        if plan.resolved is None or self.cache is None or not isinstance(prov, NearOrchestrator):
            yield npm.REGISTRY
            return
        await anyio.to_thread.run_sync(ensure_private_dir, self.cache.root)
        roots = {plan.resolved.package: plan.resolved.version, npm.NPM_PACKAGE: plan.resolved.npm_version}
        async with contextlib.AsyncExitStack() as stack:
            conn = await self.access.pool.dial(self.access.target(rec))
            stack.push_async_callback(_close, conn)
            try:
                registry = await stack.enter_async_context(npmcache.serve(self.cache, conn, roots))
            except (asyncssh.Error, OSError) as exc:  # the box's SSH server allows no listener
                log.warning("%s: no npm cache on the box (%s); it installs from %s", rec.name, exc, npm.REGISTRY)
                registry = npm.REGISTRY
            yield registry


async def _close(conn: asyncssh.SSHClientConnection) -> None:
    conn.close()
    await conn.wait_closed()
