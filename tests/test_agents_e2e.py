"""Agents that install and run today (issue 20), through the real MCP client and the real npm registry; no
model API is reachable here, so the checks stop at ``--version``.

- an isolated local box without egress (``egress="none"``) whose base image has no Node at all: the create
  brings a Node that meets the latest Claude Code's engines and npm, installs that release and checks it
  runs, all through the orchestrator's npm cache served on the box's loopback (the run's own cache,
  ``BOXFORGE_NPM_CACHE``, kept across runs like the base image: only its first run downloads);
- a Docker box (codex, latest: Node from the cache, fetched with python3, the image having no curl);
- a Hetzner box of the fake (codex, an older pinned release: the box's own Node 20 meets its engines,
  and a cloud box installs from the registry itself);
- an install that exits 0 and leaves no binary fails the create with its log's tail; impossible pins fail
  before anything is made."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import anyio
import pytest
from mcp import Client

from providers.local.boxdir import current_user
from server import npm
from server.config import Settings, load_settings
from tests.docker_fixtures import docker_env  # noqa: F401 - the daemon fixture
from tests.fakes.hetzner_api import running_fake
from tests.support import boxforge_cmd, call, call_error, cli_env, make_settings
from tests.workflow_support import session

CLAUDE = "@anthropic-ai/claude-code"
CODEX = "@openai/codex"
SHOW = 'echo "node=$(node --version)"; {agent} --version; command -v {agent}'


def _node_on(stdout: str) -> str:
    line = next(x for x in stdout.splitlines() if x.startswith("node="))
    return line.removeprefix("node=v")


@pytest.fixture(scope="module")
def registry_docs() -> dict[str, npm.Packument]:
    return {name: anyio.run(npm.fetch, name) for name in (CLAUDE, CODEX)}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "state", npm_cache=os.environ["BOXFORGE_NPM_CACHE"])


async def check_installed(client: Client, name: str, agent: str, want: str, engines: str, *, node_source: str = "npm",
                          **create: object) -> dict:
    """Create a box with ``agent`` and check it runs release ``want`` on a Node that meets ``engines``."""
    made = await call(client, "create_server", name=name, agent=agent, ready_timeout_s=600, **create)
    assert (made["agent_version"], made["node_source"]) == (want, node_source), made
    assert npm.satisfies(made["node_version"], engines), (made["node_version"], engines)
    # on the PATH of vm_bash, not only of run_agent; the version the registry has, running
    shown = await call(client, "vm_bash", server=name, command=SHOW.format(agent=agent))
    assert shown["exit_code"] == 0, shown
    assert any(want in line.split() for line in shown["stdout"].splitlines()[1:]), shown["stdout"]
    assert _node_on(shown["stdout"]) == made["node_version"]
    return made


async def test_claude_latest_installs_on_a_box_without_egress_and_its_versions_show(
        settings: Settings, registry_docs: dict[str, npm.Packument]) -> None:
    claude = registry_docs[CLAUDE]
    async with session(settings) as client:
        # the base image has no Node at all: the box gets the registry's, from the cache
        made = await check_installed(client, "cl", "claude", claude.latest, claude.engines[claude.latest],
                                     egress="none")
        listed = {s["name"]: s for s in (await call(client, "list_servers"))["servers"]}
        assert listed["cl"]["agent_version"] == claude.latest
        assert listed["cl"]["node_version"] == made["node_version"]
        ls = subprocess.run([*boxforge_cmd(), "ls", "--json"], env=cli_env(settings), capture_output=True,
                            text=True, timeout=120)
        assert ls.returncode == 0, ls.stderr
        shown = {s["name"]: s for s in json.loads(ls.stdout)["servers"]}
        assert (shown["cl"]["agent"], shown["cl"]["agent_version"], shown["cl"]["node_source"]) == \
            ("claude", claude.latest, "npm")


async def test_an_install_that_exits_0_without_a_working_binary_fails_the_create_with_the_log_tail(
        tmp_path: Path) -> None:
    # an unisolated box: this machine's Node 20 meets codex's engines, so nothing but the agent is installed
    settings = make_settings(tmp_path / "state", local_isolation="none", npm_cache=os.environ["BOXFORGE_NPM_CACHE"])
    async with session(settings) as client:
        # npm's dry run: the install command succeeds and leaves nothing behind
        text = await call_error(client, "create_server", name="broken", agent="codex",
                                env={"NPM_CONFIG_DRY_RUN": "true"}, ready_timeout_s=600)
        assert "codex --version failed" in text and "the install log ends" in text, text
        listed = await call(client, "list_servers")
        assert listed["servers"] == [] and listed["failed"][0]["name"] == "broken"


async def test_impossible_pins_fail_before_anything_is_made(settings: Settings) -> None:
    async with session(settings) as client:
        await _impossible_pins(client)


async def _impossible_pins(client: Client) -> None:
    missing = await call_error(client, "create_server", name="nope", agent="claude", agent_version="0.0.1")
    assert "has no release '0.0.1'" in missing and "latest" in missing
    shape = await call_error(client, "create_server", name="nope", agent="claude", agent_version="latest")
    assert "agent_version" in shape
    custom = await call_error(client, "create_server", name="nope", agent="custom", agent_command="x",
                              agent_version="1.0.0")
    assert "agent_version pins an npm agent's release" in custom
    listed = await call(client, "list_servers")
    assert listed["servers"] == [] and listed["failed"] == []


@pytest.mark.docker
async def test_codex_latest_on_a_docker_box_comes_through_the_cache(
        docker_env: dict[str, str], tmp_path: Path, registry_docs: dict[str, npm.Packument]) -> None:  # noqa: F811
    codex = registry_docs[CODEX]
    settings = load_settings({"BOXFORGE_HOME": str(tmp_path / "state"), "BOXFORGE_OWNER": "oa" + secrets.token_hex(3),
                              "BOXFORGE_CONFIG": str(tmp_path / "none.toml"), "BOXFORGE_PROVIDER": "docker",
                              "BOXFORGE_NPM_CACHE": os.environ["BOXFORGE_NPM_CACHE"], **docker_env})
    async with session(settings) as mcp:
        # the base image has no Node and no curl: Node comes from the cache, fetched with python3
        await check_installed(mcp, "dx", "codex", codex.latest, codex.engines[codex.latest])


async def test_a_pinned_older_codex_on_a_hetzner_box_uses_the_boxs_own_node_and_the_registry(
        tmp_path: Path, registry_docs: dict[str, npm.Packument]) -> None:
    codex = registry_docs[CODEX]
    releases = sorted((v for v in codex.engines if (p := npm.parse_version(v)) and not p[1]),
                      key=lambda v: npm.parse_version(v)[0])  # type: ignore[index]
    older = releases[-2]
    with running_fake(tmp_path / "fake-boxes") as fake:
        settings = load_settings({
            "BOXFORGE_HOME": str(tmp_path / "state"), "BOXFORGE_OWNER": "oh" + secrets.token_hex(3),
            "BOXFORGE_CONFIG": str(tmp_path / "none.toml"), "HCLOUD_TOKEN": fake.token, "HCLOUD_ENDPOINT": fake.url,
            "BOXFORGE_HETZNER_SSH_USER": current_user(), "BOXFORGE_HETZNER_SSH_PORT": str(fake.ssh_port),
            "BOXFORGE_HETZNER_POLL_INTERVAL_S": "0.02"})
        async with session(settings) as mcp:
            # the fake's machines are this machine's user: its Node 20 meets codex's engines; a cloud box
            # is not near the orchestrator, so it installs from the registry itself
            await check_installed(mcp, "hx", "codex", older, codex.engines[older], node_source="box",
                                  agent_version=older)
