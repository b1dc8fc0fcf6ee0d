"""An orchestrator process for the restart test: forges a box, starts a background job,
prints the box and job ids, then waits to be killed."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from server.config import load_settings
from server.fleet import open_fleet


async def main(home: str, owner: str, command: str) -> None:
    settings = load_settings({"BOXFORGE_HOME": home, "BOXFORGE_OWNER": owner,
                              "BOXFORGE_CONFIG": str(Path(home) / "no-config.toml")})
    async with open_fleet(settings) as fleet:
        await fleet.create_server("survivor")
        result = await fleet.run("survivor", command, background=True)
        print(result.job_id, flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
