"""Every tool driven through a strict MCP client on one real local box: each call's arguments are
validated against the tool's published input schema (jsonschema) before they are sent, as a client that
follows the schema would. Along the way: secrets by name (env_from) from the secret store and from the
orchestrator's environment, never in the call; vm_job_wait returning when the first of several jobs ends;
a plan of two tasks (one done, one cancelled mid-run)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import jsonschema
from mcp import Client

from server.config import load_settings
from server.mcp.app import build_server
from server.vault import secret_store
from tests.support import eventually, git, make_repo

STORED_VALUE = "stored-" + secrets.token_hex(8)
ENV_VALUE = "environ-" + secrets.token_hex(8)


class StrictClient:
    """Calls a tool only with arguments its published schema admits; every tool it called is recorded."""

    def __init__(self, client: Client, schemas: dict[str, dict[str, Any]]) -> None:
        self.client = client
        self.schemas = schemas
        self.called: set[str] = set()

    async def __call__(self, tool: str, **args: Any) -> dict[str, Any]:
        jsonschema.Draft202012Validator(self.schemas[tool]).validate(args)
        result = await self.client.call_tool(tool, args)
        text = result.content[0].text if result.content else ""
        assert not result.is_error, f"{tool}: {text}"
        self.called.add(tool)
        assert STORED_VALUE not in text + str(result.structured_content)
        assert ENV_VALUE not in text + str(result.structured_content)
        return result.structured_content or {}


async def test_every_tool_through_a_client_that_follows_the_schemas(tmp_path: Path) -> None:
    home = tmp_path / "state"
    env = {**os.environ, "BOXFORGE_HOME": str(home), "BOXFORGE_OWNER": "ostrict" + secrets.token_hex(3),
           "BOXFORGE_CONFIG": str(home / "config.toml"), "ORCH_TOKEN": ENV_VALUE}
    settings = load_settings(env)
    secret_store(settings.config_path).set("STORED_KEY", STORED_VALUE)
    repo = make_repo(tmp_path / "repo")
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    async with Client(build_server(settings)) as client:
        schemas = {t.name: t.input_schema for t in (await client.list_tools()).tools}
        call = StrictClient(client, schemas)
        made = await call("create_server", name="strict", repo=str(repo), branch="feat/strict", ttl="30m",
                          env_from=["STORED_KEY"], agent="custom", agent_command="wc -c", wait=True)
        assert 29 * 60 <= made["time_left_s"] <= 30 * 60, "ttl='30m' is 30 minutes, not the default"
        assert None not in made.values() and "error" not in made, "results drop null fields"
        out = await call("vm_bash", server="strict", env_from=["ORCH_TOKEN"],
                         command='test "$STORED_KEY" = "$1" || true; printf %s "$STORED_KEY$ORCH_TOKEN" | wc -c')
        assert out["exit_code"] == 0 and out["stdout"].strip() == str(len(STORED_VALUE + ENV_VALUE))
        await call("extend_server", name="strict", ttl=90)
        await call("list_servers")
        await call("vm_write", server="strict", path="notes/a.txt", content="alpha\n")
        assert (await call("vm_read", server="strict", path="notes/a.txt"))["content"] == "alpha\n"
        assert (await call("vm_ls", server="strict", pattern="**/*.txt"))["count"] == 1
        assert (await call("vm_grep", server="strict", pattern="alph"))["count"] == 1
        (tmp_path / "up.txt").write_text("uploaded\n")
        await call("vm_upload", server="strict", local_path=str(tmp_path / "up.txt"), remote_path="up.txt")
        await call("vm_download", server="strict", remote_path="up.txt", local_path=str(tmp_path / "down.txt"))
        assert (tmp_path / "down.txt").read_text() == "uploaded\n"
        await call("vm_bash", server="strict", command="git add -A && git -c user.name=t -c user.email=t@x "
                                                       "commit -qm work")
        assert (await call("vm_diff", server="strict"))["commits"]

        quick = await call("vm_bash", server="strict", command="sleep 0.3; exit 3", background=True)
        slow = await call("vm_bash", server="strict", command="sleep 300", background=True)
        waited = await call("vm_job_wait", job_ids=[slow["job_id"], quick["job_id"]], wait_s=120)
        assert waited["ended"] == [quick["job_id"]] and waited["running"] == [slow["job_id"]]
        ended = {j["job_id"]: j for j in waited["jobs"]}[quick["job_id"]]
        assert ended["state"] == "failed" and ended["exit_code"] == 3
        assert "vm_job_status" in waited["hint"] and slow["job_id"] in waited["hint"]
        await call("vm_job_status", job_id=quick["job_id"])
        assert {j["job_id"] for j in (await call("vm_job_list", server="strict"))["jobs"]} >= {slow["job_id"]}
        assert (await call("vm_job_cancel", job_id=slow["job_id"], signal="KILL"))["state"] == "killed"
        agent = await call("run_agent", server="strict", prompt="hello", env_from=["ORCH_TOKEN"])
        done = await call("vm_job_wait", job_ids=[agent["job_id"]], wait_s=60)
        assert done["ended"] == [agent["job_id"]]
        assert (await call("vm_job_status", job_id=agent["job_id"]))["stdout"].strip() == "5"

        await call("vm_bash", server="strict", background=True,
                   command="exec python3 -m http.server --bind 127.0.0.1 8771")

        async def listening() -> bool:
            return not (await client.call_tool("vm_forward", {"server": "strict", "port": 8771})).is_error

        await eventually(listening, timeout=30, what="the box's web server")
        opened = await call("vm_forward", server="strict", port=8771)
        assert opened["forwards"][0]["url"].startswith("http://127.0.0.1:")
        assert [f["port"] for f in (await call("vm_forward", server="strict"))["forwards"]] == [8771]
        assert [f["port"] for f in (await call("vm_forward", server="strict", close=True))["forwards"]] == [8771]

        await call("vm_fetch", server="strict")
        await call("vm_compare", servers=["strict"])
        await call("vm_push", server="strict", remote=str(remote))
        forked = await call("fork_server", source="strict", names=["strict-fork"])
        assert [f["branch"] for f in forked["forks"]] == ["feat/strict-strict-fork"]
        await call("destroy_server", name="strict-fork", harvest=False)
        await call("destroy_server", name="strict")

        commit = "git -c user.name=t -c user.email=t@x commit -qm plan"
        plan = {"name": "strict-plan", "repo": str(repo), "boxes": {"max": 2, "ttl": "30m"}, "tasks": [
            {"id": "quick", "branch": "feat/quick", "command": f"echo q > q.txt && git add q.txt && {commit}",
             "owns": ["q.txt"], "check": "test -s q.txt"},
            {"id": "slow", "branch": "feat/slow", "command": "sleep 300", "owns": ["s/**"]}]}
        board = await call("plan_start", plan=plan)
        plan_id = board["plan_id"]

        async def quick_done_slow_running() -> bool:
            states = {t["id"]: t["state"] for t in (await call("plan_status", plan_id=plan_id, wait_s=5))["tasks"]}
            return states == {"quick": "succeeded", "slow": "running"}

        await eventually(quick_done_slow_running, timeout=120, what="quick done while slow runs")
        cancelled = await call("plan_cancel", plan_id=plan_id)
        states = {t["id"]: t["state"] for t in cancelled["tasks"]}
        assert cancelled["state"] == "cancelled" and states == {"quick": "succeeded", "slow": "cancelled"}
        assert git(repo, "show", "feat/quick:q.txt") == "q"
        assert (await call("list_servers"))["servers"] == []
    assert call.called == set(schemas)
