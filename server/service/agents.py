"""Running a box's coding agent on a prompt: the prompt stored 0600 on the box, the agent started as a
background job with the prompt on its stdin (never on a command line)."""

from __future__ import annotations

import posixpath
import secrets
from collections.abc import Mapping

from server import agents
from server.domain.hints import Hint, HintKind
from server.errors import ForgeError, InvalidInput
from server.schemas import AgentRun
from server.service.access import BoxAccess
from server.service.boxes import Boxes
from server.service.jobs import Jobs

PROMPT_STORE_TIMEOUT_S = 60.0


class Agents:
    def __init__(self, access: BoxAccess, boxes: Boxes, jobs: Jobs) -> None:
        self.access = access
        self.boxes = boxes
        self.jobs = jobs

    async def run_agent(self, server: str, prompt: str, *, args: list[str] | None = None,
                        env: Mapping[str, str] | None = None, cwd: str | None = None,
                        idempotency_key: str | None = None) -> AgentRun:
        """Start the box's agent non-interactively as a background job, the prompt on its stdin."""
        data = agents.check_prompt(prompt)
        extra = list(args or [])
        agents.check_agent_args(extra)
        rec = await self.boxes.ready(server)
        if not rec.agent or rec.agent == "none":
            raise InvalidInput(f"server {server!r} has no agent (created with agent='none')",
                               hint=Hint(HintKind.NEEDS_AGENT))
        prompt_id = "p-" + secrets.token_hex(6)
        stored = await self.access.exec(rec)(agents.write_prompt_script(prompt_id),
                                             data, PROMPT_STORE_TIMEOUT_S)
        if stored.exit_status != 0:
            raise ForgeError(f"could not store the prompt on {server!r}: "
                             f"{stored.stderr.decode(errors='replace').strip()[-300:]}")
        started = await self.jobs.run(server, agents.run_command(prompt_id, extra), background=True, cwd=cwd,
                                      env=env, idempotency_key=idempotency_key,
                                      asked={"agent": rec.agent, "prompt": prompt, "args": extra})
        run = AgentRun(server=rec.name, job_id=started.job_id, agent=rec.agent, state=started.state,
                       prompt_path=posixpath.join(rec.home or "~", agents.PROMPTS_DIR, prompt_id), hint="")
        run.suggest("hint", Hint(HintKind.AGENT_STARTED, server=rec.name, job_id=started.job_id))
        return run
