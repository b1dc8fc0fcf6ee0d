"""End to end through the real MCP client: in memory, and `boxforge mcp` as a stdio subprocess.

forge -> foreground command -> background job -> poll to completion with offsets -> cancel a
sleeping job -> destroy; afterwards no process and no directory of the box is left.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from server.mcp.app import build_server
from tests.support import box_pids, boxforge_cmd, call, cli_env, eventually, local_boxes_dir, make_repo, make_settings

TOOL_NAMES = {"create_server", "vm_bash", "vm_job_status", "vm_job_list", "vm_job_cancel", "destroy_server",
              "list_servers", "extend_server", "vm_read", "vm_write", "vm_ls", "vm_grep", "vm_upload", "vm_download",
              "vm_diff", "run_agent", "vm_fetch", "vm_compare", "vm_push", "vm_job_wait", "plan_start", "plan_status",
              "plan_cancel", "vm_forward", "fork_server"}


async def full_flow(client: Client, repo: Path, local_boxes: Path) -> None:
    created = await call(client, "create_server", name="feat-a", repo=str(repo), branch="feat/a", ttl="30m")
    assert created["state"] == "ready"
    assert created["branch"] == "feat/a"
    assert re.fullmatch(r"root@10\.231\.\d+\.\d+:22", created["address"])  # an isolated box on its own veth
    assert created["project_dir"].endswith("/project")
    assert 29 * 60 <= created["time_left_s"] <= 30 * 60
    assert created["expires_at"].endswith("Z")

    fg = await call(client, "vm_bash", server="feat-a", command="git status && ls")
    assert fg["state"] == "succeeded" and fg["exit_code"] == 0
    assert "On branch feat/a" in fg["stdout"]
    assert "README.md" in fg["stdout"]
    assert fg["duration_s"] is not None

    failing = await call(client, "vm_bash", server="feat-a", command="echo oops >&2; exit 3")
    assert failing["state"] == "failed" and failing["exit_code"] == 3 and failing["stderr"] == "oops\n"

    bg = await call(client, "vm_bash", server="feat-a", background=True,
                    command="for i in $(seq 1 40); do echo line-$i; sleep 0.02; done; echo warn >&2")
    assert bg["state"] == "running" and bg["job_id"].startswith("j-")
    collected, out_off, err_off = "", 0, 0
    for _ in range(200):
        st = await call(client, "vm_job_status", job_id=bg["job_id"], stdout_offset=out_off,
                        stderr_offset=err_off, wait_s=0.2)
        collected += st["stdout"]
        assert st["stdout_offset"] == out_off + len(st["stdout"].encode())
        out_off, err_off = st["stdout_offset"], st["stderr_offset"]
        if st["state"] != "running" and not st["more"]:
            break
    assert st["state"] == "succeeded" and st["exit_code"] == 0
    assert collected == "".join(f"line-{i}\n" for i in range(1, 41))
    assert out_off == st["stdout_size"]

    sleeper = await call(client, "vm_bash", server="feat-a", command="sleep 300", background=True)
    listed = await call(client, "vm_job_list", server="feat-a")
    assert {bg["job_id"], sleeper["job_id"]} <= {j["job_id"] for j in listed["jobs"]}
    cancelled = await call(client, "vm_job_cancel", job_id=sleeper["job_id"])
    assert cancelled["state"] == "killed"
    again = await call(client, "vm_job_cancel", job_id=sleeper["job_id"])
    assert "nothing to cancel" in again["message"]

    servers = await call(client, "list_servers")
    assert [s["name"] for s in servers["servers"]] == ["feat-a"]
    box_dirs = list(local_boxes.glob("lb-*"))
    assert len(box_dirs) == 1
    box_id = box_dirs[0].name
    await call(client, "vm_bash", server="feat-a", command="sleep 600", background=True)
    await eventually(lambda: box_pids(box_id), what="the running job to show up among the box's processes")

    destroyed = await call(client, "destroy_server", name="feat-a")
    assert destroyed["destroyed"] is True
    assert not list(local_boxes.glob("lb-*")), "the box directory is removed"
    await eventually(lambda: not box_pids(box_id), what="every process of the box to end")
    assert (await call(client, "list_servers"))["count"] == 0
    twice = await call(client, "destroy_server", name="feat-a")
    assert twice["destroyed"] is False


async def test_full_flow_in_memory(tmp_path: Path, ssh_server_kind: str) -> None:
    settings = make_settings(tmp_path / "state", local_sshd=ssh_server_kind)
    repo = make_repo(tmp_path / "repo")
    async with Client(build_server(settings)) as client:
        await full_flow(client, repo, local_boxes_dir(settings))


async def test_full_flow_over_stdio_subprocess(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_repo(tmp_path / "repo")
    cmd = boxforge_cmd()
    params = StdioServerParameters(command=cmd[0], args=[*cmd[1:], "mcp"], env=cli_env(settings),
                                   cwd=str(tmp_path))
    async with Client(params) as client:
        tools = await client.list_tools()
        assert {t.name for t in tools.tools} == TOOL_NAMES
        await full_flow(client, repo, local_boxes_dir(settings))


async def test_tools_carry_annotations_and_output_schemas(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with Client(build_server(settings)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOL_NAMES
    for tool in tools.values():
        assert tool.output_schema is not None, tool.name
        assert tool.annotations is not None, tool.name
        assert tool.description and len(tool.description) > 20 and "\n " not in tool.description, tool.name
    assert tools["list_servers"].annotations.read_only_hint is True
    assert tools["vm_job_status"].annotations.read_only_hint is True
    assert tools["destroy_server"].annotations.destructive_hint is True
    assert tools["destroy_server"].annotations.idempotent_hint is True
    assert tools["create_server"].annotations.read_only_hint is False
    props = tools["create_server"].input_schema["properties"]
    assert {"name", "repo", "branch", "agent", "ttl", "env"} <= set(props)


async def test_create_checks_out_an_existing_branch(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_repo(tmp_path / "repo")
    async with Client(build_server(settings)) as client:
        created = await call(client, "create_server", name="existing", repo=str(repo), branch="feat/existing")
        assert created["base_commit"]
        out = await call(client, "vm_bash", server="existing", command="git branch --show-current; ls")
        assert out["stdout"].splitlines()[0] == "feat/existing"
        assert "FEATURE.md" in out["stdout"]
        await call(client, "destroy_server", name="existing")


async def test_progress_is_reported_while_forging(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    seen: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message or "")

    async with Client(build_server(settings)) as client:
        result = await client.call_tool("create_server", {"name": "prog"}, progress_callback=on_progress)
        assert not result.is_error
        await call(client, "destroy_server", name="prog")
    assert [m.split(": ")[1] for m in seen] == ["provision", "ssh", "clone", "agent", "setup", "ready"]


@pytest.mark.parametrize("env_value", ["s3cr3t-canary-value"])
async def test_env_reaches_jobs_but_not_results(tmp_path: Path, env_value: str) -> None:
    settings = make_settings(tmp_path / "state")
    async with Client(build_server(settings)) as client:
        created = await client.call_tool("create_server", {"name": "envbox", "env": {"API_KEY": env_value}})
        assert env_value not in str(created.content) + str(created.structured_content)
        out = await call(client, "vm_bash", server="envbox", command='test "$API_KEY" = "$EXPECTED" && echo same',
                         env={"EXPECTED": env_value})
        assert out["stdout"] == "same\n"
        await call(client, "destroy_server", name="envbox")
    assert env_value.encode() not in settings.db_path.read_bytes()
