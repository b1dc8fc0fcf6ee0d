"""Boxes that come up ready to work, through the real MCP client on local boxes: branches and base
commits, no token in any bootstrap, a custom agent installed by a script in the repo,
.boxforge.yml setup and services, and creates that finish in the background (wait=false)."""

from __future__ import annotations

from pathlib import Path

from server.agents import plan_agent
from tests.support import call, call_error, eventually, git, local_boxes_dir, make_repo, make_settings
from tests.workflow_support import make_agent_repo, session


async def test_new_and_existing_branches_record_their_base_commit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_repo(tmp_path / "repo")
    main_tip, feature_tip = git(repo, "rev-parse", "main"), git(repo, "rev-parse", "feat/existing")
    async with session(settings) as client:
        new = await call(client, "create_server", name="fresh", repo=str(repo), branch="feat/brand-new")
        old = await call(client, "create_server", name="old", repo=str(repo), branch="feat/existing")
        assert (new["base_commit"], old["base_commit"]) == (main_tip, feature_tip)
        shown = await call(client, "vm_bash", server="fresh",
                           command="git branch --show-current; git log -1 --format=%H")
        assert shown["stdout"].split() == ["feat/brand-new", main_tip]
        shown = await call(client, "vm_bash", server="old", command="git branch --show-current; ls")
        assert shown["stdout"].split()[:2] == ["feat/existing", "FEATURE.md"]


# What the bootstrap script does with each kind of repo: tests/onbox/test_bootstrap_script.py.


async def test_custom_agent_is_installed_once_by_a_script_in_the_repo(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_agent_repo(tmp_path / "repo")
    seen: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((message or "").split(": ")[-1])

    async with session(settings) as client:
        result = await client.call_tool("create_server", {
            "name": "custom", "repo": str(repo), "agent": "custom", "agent_install": "./tools/install-agent.sh",
            "agent_command": "stub-agent --fast"}, progress_callback=on_progress)
        assert not result.is_error, result.content
        created = result.structured_content
        assert seen == ["provision", "ssh", "clone", "agent", "setup", "ready"]
        assert created["agent"] == "custom"
        log = await call(client, "vm_job_status", job_id=created["bootstrap_job_id"])
        assert log["state"] == "succeeded" and "stub agent installed" in log["stdout"]
        # Rerunning the whole bootstrap changes nothing: the install is skipped, the base stays.
        rerun = await call(client, "vm_bash", server="custom",
                           command=f"sh ~/.boxforge/jobs/{created['bootstrap_job_id']}/cmd && cat ~/install-count && "
                                   "cat ~/.boxforge/agent-run")
        assert rerun["exit_code"] == 0, rerun["stderr"]
        assert "agent custom: already installed" in rerun["stdout"]
        assert f"BOXFORGE_BASE={created['base_commit']}" in rerun["stdout"]
        assert "\n1\n" in rerun["stdout"] and "run='stub-agent --fast'" in rerun["stdout"]


async def test_agent_choices_are_checked_before_anything_is_made(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with session(settings) as client:
        assert "needs agent_command" in await call_error(client, "create_server", name="a1", agent="custom")
        assert "agent: input should be 'none'" in await call_error(client, "create_server", name="a2", agent="gpt")
        assert "one line" in await call_error(client, "create_server", name="a3", agent="custom",
                                              agent_command="a\nb")
        assert (await call(client, "list_servers"))["failed"] == []
    assert not list(local_boxes_dir(settings).glob("lb-*"))
    assert plan_agent("claude", command="claude -p --model opus").run == "claude -p --model opus"


async def test_boxforge_yml_runs_setup_then_starts_services(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_agent_repo(tmp_path / "repo", boxfile=(
        "setup:\n  - echo preparing with $SETUP_TOKEN_LEN\n  - printf built > build.out\n"
        "services:\n  - name: web\n    command: echo serving; sleep 300\n"))
    async with session(settings) as client:
        created = await call(client, "create_server", name="yml", repo=str(repo), env={"SETUP_TOKEN_LEN": "16"})
        setup = await call(client, "vm_job_status", job_id=created["setup_job_id"])
        assert setup["state"] == "succeeded"
        assert "preparing with 16" in setup["stdout"] and "[boxforge] setup 2/2: printf built > build.out" in \
            setup["stdout"]
        assert (await call(client, "vm_read", server="yml", path="build.out"))["content"] == "built"
        web = await call(client, "vm_job_status", job_id=created["services"]["web"], wait_s=0.5)
        assert web["state"] == "running"
        listed = await call(client, "list_servers")
        assert listed["servers"][0]["services"] == {"web": created["services"]["web"]}


async def test_a_failing_setup_burns_the_box_and_shows_the_log_tail(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_agent_repo(tmp_path / "repo", boxfile="setup:\n  - echo installing deps\n  - echo broken >&2; exit 7\n")
    async with session(settings) as client:
        text = await call_error(client, "create_server", name="doomed", repo=str(repo))
        assert "box was burned" in text and "setup from .boxforge.yml failed (exit 7)" in text
        assert "installing deps" in text and "broken" in text
        listed = await call(client, "list_servers")
        assert listed["count"] == 0
        assert [f["name"] for f in listed["failed"]] == ["doomed"]
    assert not list(local_boxes_dir(settings).glob("lb-*"))


async def test_an_invalid_boxforge_yml_fails_the_create_with_the_reason(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_agent_repo(tmp_path / "repo", boxfile="setup: [make]\nservise: []\n")
    async with session(settings) as client:
        text = await call_error(client, "create_server", name="badyml", repo=str(repo))
        assert ".boxforge.yml is invalid: servise: Extra inputs are not permitted" in text
    assert not list(local_boxes_dir(settings).glob("lb-*"))


async def test_wait_false_returns_at_once_and_list_servers_follows_the_steps(tmp_path: Path) -> None:
    # unisolated: the test releases the box's setup by creating a file in the box's home from the host
    settings = make_settings(tmp_path / "state", local_isolation="none")
    # setup waits for a file the test creates, so the box is caught in its setup step
    repo = make_agent_repo(tmp_path / "repo", boxfile="setup:\n  - until [ -e \"$HOME/go\" ]; do sleep 0.05; done\n")
    async with session(settings) as client:
        started = await call(client, "create_server", name="later", repo=str(repo), wait=False)
        assert started["state"] == "provisioning" and "list_servers" in started["hint"]

        async def in_setup() -> dict | None:
            box = (await call(client, "list_servers"))["servers"][0]
            return box if box.get("step") == "setup" and box.get("setup_job_id") else None

        box = await eventually(in_setup, what="the box to reach its setup step")
        assert box["state"] == "provisioning"
        boot = await call(client, "vm_job_status", job_id=box["bootstrap_job_id"])
        assert boot["state"] == "succeeded" and "BOXFORGE_STEP=agent" in boot["stdout"]
        Path(box["project_dir"]).parent.joinpath("go").touch()

        async def ready() -> bool:
            return (await call(client, "list_servers"))["servers"][0]["state"] == "ready"

        await eventually(ready, what="the background create to finish")
        assert (await call(client, "vm_bash", server="later", command="true"))["exit_code"] == 0


async def test_a_background_create_that_fails_shows_under_failed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_agent_repo(tmp_path / "repo", boxfile="setup: 'exit 9'\n")
    async with session(settings) as client:
        await call(client, "create_server", name="sad", repo=str(repo), wait=False)

        async def failed() -> list:
            return (await call(client, "list_servers"))["failed"]

        (box,) = await eventually(failed, what="the failure to show")
        assert box["name"] == "sad" and "exit 9" in box["error"]
    assert not list(local_boxes_dir(settings).glob("lb-*"))
