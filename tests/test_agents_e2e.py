"""Agents that install and run today (issue 20), through the real MCP client on local boxes and the
real npm registry: the box's Node (this machine's, 20) is too old for the current Claude Code, so the
create must bring a Node that meets the release's engines, install the registry's latest, and check it
runs; a pin installs that release; an impossible pin fails before anything is made. No model API is
reachable here, so the checks stop at ``--version``."""

from __future__ import annotations

from pathlib import Path

from server import npm
from tests.support import call, call_error, make_settings
from tests.workflow_support import session

CLAUDE = "@anthropic-ai/claude-code"


def _node_on(stdout: str) -> str:
    line = next(x for x in stdout.splitlines() if x.startswith("node="))
    return line.removeprefix("node=v")


async def test_claude_latest_and_a_pin_install_with_a_node_that_meets_their_engines(tmp_path: Path) -> None:
    meta = await npm.fetch(CLAUDE)
    latest, engines = meta.latest, meta.engines[meta.latest]
    # an older release that still runs on Node 20 (2.1.197 was the last to accept it), pinned
    pinned = "2.1.197"
    assert pinned in meta.engines and npm.satisfies("20.0.0", meta.engines[pinned])
    # An unisolated box, whose Node is this machine's 20 (too old for the latest release): on an isolated
    # box the create first apt-installs Debian's nodejs/npm, which takes minutes more than the suite can give.
    settings = make_settings(tmp_path / "state", local_isolation="none")
    async with session(settings) as client:
        made = await call(client, "create_server", name="cl", agent="claude", ready_timeout_s=900)
        assert made["agent_version"] == latest and made["node_source"] == "npm", made
        assert npm.satisfies(made["node_version"], engines)
        listed = {s["name"]: s for s in (await call(client, "list_servers"))["servers"]}
        assert listed["cl"]["agent_version"] == latest and listed["cl"]["node_version"] == made["node_version"]
        # on the PATH of vm_bash, not only of run_agent
        shown = await call(client, "vm_bash", server="cl",
                           command='echo "node=$(node --version)"; claude --version; command -v claude')
        assert shown["exit_code"] == 0, shown
        assert shown["stdout"].splitlines()[1].split()[0] == latest
        assert npm.satisfies(_node_on(shown["stdout"]), engines), (shown["stdout"], engines)

        await call(client, "create_server", name="pin", agent="claude", agent_version=pinned, ready_timeout_s=900)
        shown = await call(client, "vm_bash", server="pin", command='echo "node=$(node --version)"; claude --version')
        assert shown["stdout"].splitlines()[1].split()[0] == pinned
        assert npm.satisfies(_node_on(shown["stdout"]), meta.engines[pinned])


async def test_impossible_pins_fail_before_anything_is_made(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with session(settings) as client:
        missing = await call_error(client, "create_server", name="nope", agent="claude", agent_version="0.0.1")
        assert "has no release '0.0.1'" in missing and "latest" in missing
        shape = await call_error(client, "create_server", name="nope", agent="claude", agent_version="latest")
        assert "agent_version" in shape
        custom = await call_error(client, "create_server", name="nope", agent="custom", agent_command="x",
                                  agent_version="1.0.0")
        assert "agent_version pins an npm agent's release" in custom
        listed = await call(client, "list_servers")
        assert listed["servers"] == []
