"""Coding agents on boxes: the presets, how one is installed, and how `run_agent` runs it.

An agent is two shell commands: how to install it (during the bootstrap job, in the project
dir) and how to run it non-interactively with the prompt on stdin. The bootstrap writes the
run command into ``~/.boxforge/agent-run`` on the box, so the box itself knows its agent and
`run_agent` is the same for every agent: ``~/.boxforge/agent-run [args] < prompt-file``.

The prompt travels over the SSH channel's stdin into a 0600 file; it is never part of a
command line and never interpolated by a shell.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from server import npm
from server.domain.inputs import is_one_line
from server.errors import InvalidInput
from server.onbox import protocol, scripts

AGENT_RUN_FILE = protocol.AGENT_RUN_FILE  # relative to the box user's home
PROMPTS_DIR = protocol.PROMPTS_DIR
MAX_AGENT_COMMAND_CHARS = 4096
MAX_PROMPT_BYTES = 1024 * 1024
MAX_AGENT_ARGS = 64


@dataclass(frozen=True)
class AgentPreset:
    """A known agent: the npm package that provides ``binary``, and its non-interactive run command."""

    name: str
    package: str | None
    binary: str | None
    run: str | None


PRESETS: dict[str, AgentPreset] = {
    "none": AgentPreset("none", None, None, None),
    # The box is the sandbox: the agents run without asking for permission.
    "claude": AgentPreset("claude", "@anthropic-ai/claude-code", "claude",
                          "claude -p --dangerously-skip-permissions"),
    "codex": AgentPreset("codex", "@openai/codex", "codex",
                         "codex exec --dangerously-bypass-approvals-and-sandbox --skip-git-repo-check -"),
    "custom": AgentPreset("custom", None, None, None),
}
AGENT_NAMES = tuple(PRESETS)


@dataclass(frozen=True)
class AgentPlan:
    """What the bootstrap does for the agent: install it (npm package or a shell command), then
    write its run command. ``name`` is what the store and ServerInfo show."""

    name: str
    package: str | None = None
    binary: str | None = None
    install: str | None = None
    run: str | None = None
    version: str | None = None  # a pinned release (agent_version); None: the registry's latest
    resolved: npm.AgentResolution | None = None  # set by the orchestrator from the registry before the create


def _check_agent_command(label: str, text: str | None) -> None:
    if text is None:
        return
    if not text.strip():
        raise InvalidInput(f"{label} is empty: give a shell command or leave it out")
    if "\x00" in text or len(text) > MAX_AGENT_COMMAND_CHARS:
        raise InvalidInput(f"{label} must be at most {MAX_AGENT_COMMAND_CHARS} characters without NUL bytes")


AGENT_VERSION = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")


def plan_agent(agent: str, *, install: str | None = None, command: str | None = None,
               version: str | None = None) -> AgentPlan:
    """Validate the agent choice. ``install`` replaces a preset's npm install; ``command``
    replaces its run command. ``custom`` needs ``command`` (``install`` is optional)."""
    if agent not in PRESETS:
        raise InvalidInput(f"unknown agent {agent!r}; choose one of: {', '.join(AGENT_NAMES)}")
    _check_agent_command("agent_install", install)
    _check_agent_command("agent_command", command)
    if command is not None and not is_one_line(command):
        raise InvalidInput("agent_command must be one line: the command that runs the agent with the prompt "
                           "on stdin, e.g. './tools/agent --yes'")
    preset = PRESETS[agent]
    if version is not None:
        if preset.package is None or install is not None:
            raise InvalidInput("agent_version pins an npm agent's release: use it with agent='claude' or "
                               "agent='codex' (and without agent_install)")
        if not AGENT_VERSION.match(version):
            raise InvalidInput(f"agent_version must be an exact release such as 2.1.300, not {version!r}")
    if agent == "none":
        if install or command:
            raise InvalidInput("agent_install/agent_command need an agent: use agent='custom' (or a preset)")
        return AgentPlan("none")
    if agent == "custom" and command is None:
        raise InvalidInput("agent='custom' needs agent_command: the command that runs your agent with the prompt "
                           "on stdin (and agent_install to install it, if the box lacks it)")
    return AgentPlan(
        name=agent,
        package=None if install else preset.package,
        binary=preset.binary,
        install=install,
        run=command or preset.run,
        version=version,
    )


def agent_run_script(plan: AgentPlan) -> str:
    """The content of ``~/.boxforge/agent-run`` (``sh/agent-run.sh``): the run command, extra args appended."""
    assert plan.run is not None
    return "#!/bin/sh\n" + scripts.program("agent-run.sh", {"run": plan.run})


def check_agent_args(args: list[str]) -> None:
    if len(args) > MAX_AGENT_ARGS:
        raise InvalidInput(f"at most {MAX_AGENT_ARGS} extra agent args")
    for arg in args:
        if "\x00" in arg or len(arg) > MAX_AGENT_COMMAND_CHARS:
            raise InvalidInput("agent args must be at most 4096 characters each, without NUL bytes")


def check_prompt(prompt: str) -> bytes:
    if not prompt.strip():
        raise InvalidInput("prompt is empty: say what the agent should do")
    data = prompt.encode()
    if len(data) > MAX_PROMPT_BYTES:
        raise InvalidInput("prompt is larger than 1 MiB; put the material in a file on the box (vm_write) "
                           "and point the prompt at it")
    return data


def write_prompt_script(prompt_id: str) -> str:
    """A command line that stores stdin as the prompt file ``prompt_id`` (0600)."""
    return scripts.command_line("agent-prompt.sh", {"prompt_id": prompt_id})


def run_command(prompt_id: str, args: list[str]) -> str:
    """The job's command: the box's agent-run script with ``args``, the prompt file on stdin."""
    extra = "".join(" " + shlex.quote(a) for a in args)
    return f'"$HOME/{AGENT_RUN_FILE}"{extra} < "$HOME/{PROMPTS_DIR}/{prompt_id}"'
