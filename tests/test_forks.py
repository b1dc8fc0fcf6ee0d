"""Forks of a real local box, through the real MCP client and the CLI: each fork starts with the source's
files at the moment of the call (checkout with uncommitted work, tools installed outside the checkout),
owned by the fork's own uid range, on its own branch, with its own keys and expiry; running jobs are not
copied and the result says so; a fork's writes never reach the source; the work of a fork comes home on its
branch; bad requests are refused before anything is made."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mcp import Client

from server.config import Settings
from tests.support import assert_cli_words, boxforge_cmd, call, call_error, cli_env, git, make_repo, make_settings
from tests.workflow_support import session


async def sh(client: Client, server: str, command: str) -> str:
    result = await call(client, "vm_bash", server=server, command=command)
    assert result["exit_code"] == 0, result
    return result["stdout"].strip()


def boxforge(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return assert_cli_words(subprocess.run([*boxforge_cmd(), *args], env=cli_env(settings), capture_output=True,
                                           text=True, timeout=120))


async def test_forks_copy_the_files_not_the_jobs_each_on_its_own_branch(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    settings = make_settings(tmp_path / "state")
    async with session(settings) as client:
        src = await call(client, "create_server", name="src", repo=str(repo), branch="feat/base")
        await sh(client, "src", "echo wip >> README.md; mkdir -p /opt/tool && echo v1 > /opt/tool/version; "
                                "git add README.md && git -c user.name=t -c user.email=t@x commit -qm base-work; "
                                "echo dirty > notes.txt")
        job = await call(client, "vm_bash", server="src", command="sleep 300", background=True)

        forked = await call(client, "fork_server", source="src", names=["try-a", "try-b"],
                            branches=["feat/a", "feat/b"])
        assert forked["failed"] == [] and forked["jobs_not_copied"] == [job["job_id"]]
        assert "not copied" in forked["note"]
        forks = {f["name"]: f for f in forked["forks"]}
        assert set(forks) == {"try-a", "try-b"}
        assert {f["branch"] for f in forks.values()} == {"feat/a", "feat/b"}
        assert all(f["state"] == "ready" and f["address"] != src["address"] for f in forks.values())
        assert all(f["base_commit"] == src["base_commit"] for f in forks.values())

        head = await sh(client, "src", "git rev-parse HEAD")
        for name, branch in (("try-a", "feat/a"), ("try-b", "feat/b")):
            shown = await sh(client, name, "git branch --show-current; git rev-parse HEAD; cat notes.txt; "
                                           "cat /opt/tool/version; stat -c %u README.md /opt/tool/version")
            assert shown.split("\n") == [branch, head, "dirty", "v1", "0", "0"]  # root inside, its own uid outside
            fork_jobs = (await call(client, "vm_job_list", server=name))["jobs"]
            assert job["job_id"] not in {j["job_id"] for j in fork_jobs}
            assert await sh(client, name, "pgrep -x sleep || echo none") == "none"

        await sh(client, "try-a", "echo from-a > notes.txt; echo v2 > /opt/tool/version")
        assert await sh(client, "src", "cat notes.txt /opt/tool/version") == "dirty\nv1"
        assert await sh(client, "try-b", "cat notes.txt") == "dirty"

        await sh(client, "try-a", "git add -A && git -c user.name=t -c user.email=t@x commit -qm fork-work")
        fetched = await call(client, "vm_fetch", server="try-a")
        assert fetched["ref"] == "refs/boxforge/try-a/feat/a"
        assert git(repo, "log", "-1", "--format=%s", fetched["ref"]).strip() == "fork-work"

        for args, expected in (
            ({"source": "src", "names": ["try-a"]}, "already exists"),
            ({"source": "nosuch", "names": ["x1"]}, "unknown server 'nosuch'"),
            ({"source": "src", "names": ["x1", "x2"], "branches": ["feat/x"]}, "one entry per name"),
            ({"source": "src", "names": ["x1", "x1"]}, "distinct"),
            ({"source": "src", "names": ["x1", "x2"], "branches": ["feat/x", "feat/x"]}, "share one branch"),
        ):
            assert expected in await call_error(client, "fork_server", **args)
        live = {s["name"] for s in (await call(client, "list_servers"))["servers"]}
        assert live == {"src", "try-a", "try-b"}, "a refused fork makes nothing"

        made = boxforge(settings, "fork", "src", "cli-fork", "--ttl", "30m", "--json")
        assert made.returncode == 0, made.stderr
        shown = json.loads(made.stdout)
        assert [f["name"] for f in shown["forks"]] == ["cli-fork"] and shown["forks"][0]["branch"] == "feat/base-cli-fork"
        assert shown["forks"][0]["time_left_s"] <= 30 * 60
        assert await sh(client, "cli-fork", "git branch --show-current") == "feat/base-cli-fork"
