"""The MCP server: an MCPServer whose lifespan opens the fleet's resources (store, SSH pool,
providers) and a task group it owns for the server's whole life, in which the Reaper runs and creates
with wait=false finish."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.server import MCPServer

from server import package_version
from server.board.hub import BoardHub
from server.config import Settings, load_settings
from server.mcp.tools import build_tools
from server.service import Fleet, open_resources
from server.service.reaper import Reaper
from server.service.wakeup import Wakeup

INSTRUCTIONS = """boxforge forges remote boxes for coding agents.
Typical flow: create_server(name, repo, branch, agent, ttl) -> vm_bash(server, command) for quick commands,
vm_bash(..., background=true) -> vm_job_status(job_id, wait_s=30) for long ones -> destroy_server(name).
Agents: run_agent(server, prompt) -> vm_job_status(job_id, wait_s=60) -> vm_diff(server) to review.
Files: vm_read, vm_write, vm_ls, vm_grep on the box; vm_upload / vm_download to and from this machine.
Paths and cwd on a box are relative to its project dir ('~/' is home). Keys and tokens: env_from names
(the user stores values with `boxforge secret set NAME`), never values in env.
Boxes are burned at their TTL; extend_server pushes it. Output offsets let you read only new output.
Fan-out: start jobs on several boxes, then vm_job_wait(job_ids) returns when any ends."""


@dataclass
class AppContext:
    fleet: Fleet
    reaper: Reaper
    settings: Settings


def build_server(settings: Settings | None = None, *, board: BoardHub | None = None) -> MCPServer[AppContext]:
    """The boxforge MCP server; settings are loaded when it starts unless given. ``board``: the board's hub
    (``mcp --http`` serves the board at /board), run over the lifespan's fleet."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[AppContext]:
        active = settings or load_settings()
        wakeup = Wakeup()
        async with open_resources(active) as res, anyio.create_task_group() as tg:
            # creates with wait=false finish in tg, or are burned when the server stops
            fleet = Fleet(res, background=tg, wakeup=wakeup)
            await fleet.recover()
            await fleet.plans.resume_orphans()  # plans whose orchestrator died go on here
            reaper = Reaper(fleet.reaping, wakeup, max_sleep_s=active.reaper_max_sleep_s)
            tg.start_soon(reaper.run_forever)
            tg.start_soon(fleet.pool_filler.run_forever)  # warm pools (none unless the config has [pool.*])
            try:
                async with board.serving(fleet) if board is not None else nullcontext():
                    yield AppContext(fleet=fleet, reaper=reaper, settings=active)
            finally:
                tg.cancel_scope.cancel()

    mcp: MCPServer[AppContext] = MCPServer(
        "boxforge", version=package_version(), instructions=INSTRUCTIONS, lifespan=lifespan, log_level="WARNING",
        tools=build_tools(),
    )
    return mcp


def configure_logging(settings: Settings) -> None:
    """Log to a file in the state dir: stdout belongs to the MCP stdio transport."""
    handler = logging.FileHandler(settings.log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("boxforge")
    root.setLevel(logging.INFO)
    root.addHandler(handler)
