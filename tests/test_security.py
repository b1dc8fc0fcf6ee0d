"""Secrets stay secret: canary values passed every way a user passes secrets, then looked for
everywhere boxforge writes or shows anything. A canary may appear only in the box's 0600 env
file and the job's process environment."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from tests.support import boxforge_cmd, cli_env, make_repo, make_settings

CANARIES = {
    "create_env": "canary-create-7f3a9c51",
    "bash_env": "canary-bash-2b8e4d60",
    "hcloud": "canary-hcloud-9d1c7e42",
    "repo_token": "canaryrepotoken5a6b",
}


def hits(data: bytes | str) -> set[str]:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    return {where for where, canary in CANARIES.items() if canary in text}


def scan_tree(root: Path, allowed: set[Path]) -> dict[str, set[str]]:
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path not in allowed:
            try:
                found_here = hits(path.read_bytes())
            except OSError:
                continue
            if found_here:
                found[str(path)] = found_here
    return found


async def test_secret_canaries_appear_nowhere_but_the_box_env_file(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_repo(tmp_path / "repo")
    env = cli_env(settings)
    # A token is configured; the cloud is out of reach (a closed port), so the reaper's calls fail fast.
    env.update(HCLOUD_TOKEN=CANARIES["hcloud"], HCLOUD_ENDPOINT="http://127.0.0.1:9/v1", BOXFORGE_PROVIDER="local")
    cmd = boxforge_cmd()
    shown: list[str] = []
    ps_listings: list[str] = []
    async with Client(StdioServerParameters(command=cmd[0], args=[*cmd[1:], "mcp"], env=env)) as client:
        async def call(tool: str, **args: object) -> dict:
            result = await client.call_tool(tool, args)
            shown.append(json.dumps([c.model_dump() for c in result.content]))
            shown.append(json.dumps(result.structured_content))
            assert not result.is_error, result.content
            return result.structured_content

        await call("create_server", name="vault", repo=f"file://{CANARIES['repo_token']}@{repo}",
                   env={"API_KEY": CANARIES["create_env"]})
        job = await call("vm_bash", server="vault", background=True, env={"DB_PASSWORD": CANARIES["bash_env"]},
                         command='test -n "$API_KEY" && test -n "$DB_PASSWORD" && sleep 2 && echo checked')
        for _ in range(5):  # ps on both sides while the job runs (local boxes share this machine)
            ps = subprocess.run(["ps", "-eww", "-o", "pid=,args="], capture_output=True, text=True)
            ps_listings.append(ps.stdout)
            await anyio.sleep(0.1)
        status = await call("vm_job_status", job_id=job["job_id"], wait_s=20)
        assert status["state"] == "succeeded" and status["stdout"] == "checked\n"
        await call("vm_job_list")
        await call("list_servers")
        cli_outputs = [
            subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=60)
            for args in (["ls", "--json"], ["jobs", "--json"], ["job", job["job_id"]], ["run", "vault", "env | wc -l"])
        ]
        shown += [o.stdout + o.stderr for o in cli_outputs]
        (box_dir,) = settings.local_boxes_dir.glob("lb-*")
        box_env_file = box_dir / "home" / ".boxforge" / "env"
        assert box_env_file.stat().st_mode & 0o777 == 0o600
        assert CANARIES["create_env"] in box_env_file.read_text()
        leaks = scan_tree(settings.home, allowed={box_env_file})
        await call("destroy_server", name="vault")

    assert hits("\n".join(shown)) == set(), "a tool result or CLI output shows a secret"
    assert hits("\n".join(ps_listings)) == set(), "a command line shows a secret"
    assert leaks == {}, f"secrets written to disk: {leaks}"
    assert scan_tree(settings.home, allowed=set()) == {}, "secrets left after destroy"


async def test_output_that_prints_a_secret_comes_back_redacted(tmp_path: Path) -> None:
    from server.app import build_server

    settings = make_settings(tmp_path / "state")
    async with Client(build_server(settings)) as client:
        await client.call_tool("create_server", {"name": "leaky", "env": {"API_KEY": CANARIES["create_env"]}})
        result = await client.call_tool("vm_bash", {
            "server": "leaky", "env": {"DB_PASSWORD": CANARIES["bash_env"]},
            "command": 'echo "key=$API_KEY"; echo "pw=$DB_PASSWORD" >&2'})
        out = result.structured_content
        assert out["stdout"] == "key=[redacted:API_KEY]\n"
        assert out["stderr"] == "pw=[redacted:DB_PASSWORD]\n"
        bg = await client.call_tool("vm_bash", {"server": "leaky", "command": "echo $API_KEY", "background": True})
        polled = await client.call_tool("vm_job_status", {"job_id": bg.structured_content["job_id"], "wait_s": 10})
        assert polled.structured_content["stdout"] == "[redacted:API_KEY]\n"
        await client.call_tool("destroy_server", {"name": "leaky"})
    assert hits(settings.db_path.read_bytes()) == set()
