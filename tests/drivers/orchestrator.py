"""An orchestrator process for the restart tests, killed by the test at a chosen moment.

mode "job":    forge a box, start a background job, print its id, wait to be killed.
mode "foreground": forge a box, print "ready", run the command in the foreground (killed mid-call).
mode "create": start forging a box whose readiness never comes (the provider's wait_ready
               hangs after the box exists), print "creating", wait to be killed mid-create.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from providers.base import Box
from providers.local import LocalProvider
from server.config import load_settings
from server.service import open_fleet
from tests.support import local_boxes_dir


class HangingProvider(LocalProvider):
    async def wait_ready(self, box_id: str, *, timeout: float) -> Box:
        box = await super().wait_ready(box_id, timeout=timeout)
        print("creating", flush=True)
        await anyio.sleep_forever()
        return box


async def main(mode: str, home: str, owner: str, command: str = "", ready_timeout: str = "2") -> None:
    settings = load_settings({"BOXFORGE_HOME": home, "BOXFORGE_OWNER": owner, "BOXFORGE_READY_TIMEOUT": ready_timeout,
                              "BOXFORGE_CONFIG": str(Path(home) / "no-config.toml")})
    async with open_fleet(settings) as fleet:
        if mode == "create":
            fleet.providers["local"] = HangingProvider(local_boxes_dir(settings))
            await fleet.create_server("halfmade")
        elif mode == "foreground":
            await fleet.create_server("survivor")
            print("ready", flush=True)
            await fleet.run("survivor", command)
        else:
            await fleet.create_server("survivor")
            result = await fleet.run("survivor", command, background=True)
            print(result.job_id, flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:])
