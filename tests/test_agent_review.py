"""run_agent and vm_diff through the real MCP client: a stub agent installed from the test repo reads
its prompt on stdin and its key from the box env file; the review shows what it changed."""

from __future__ import annotations

from pathlib import Path

from tests.support import call, call_error, git, make_repo, make_settings
from tests.workflow_support import make_agent_repo, session

TRICKY_PROMPT = "fix it; $(touch /tmp/boxforge-pwned) `id` \"quoted\" 'single'\nsecond line"


async def test_run_agent_passes_the_prompt_on_stdin_with_the_box_env(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_agent_repo(tmp_path / "repo")
    key = "agent-key-1234567890"
    async with session(settings) as client:
        await call(client, "create_server", name="agent", repo=str(repo), agent="custom",
                   agent_install="./tools/install-agent.sh", agent_command="stub-agent --quiet",
                   env={"AGENT_KEY": key})
        started = await call(client, "run_agent", server="agent", prompt=TRICKY_PROMPT, args=["--model", "a b"])
        assert started["state"] == "running" and "vm_job_status" in started["hint"]
        done = await call(client, "vm_job_status", job_id=started["job_id"], wait_s=20)
        assert done["state"] == "succeeded", done
        lines = done["stdout"].splitlines()
        assert "\n".join(lines[:2]) == "prompt:" + TRICKY_PROMPT
        assert lines[2] == "args:--quiet --model a b"
        assert lines[3] == f"key-length:{len(key)}"
        assert lines[4] == "key:[redacted:AGENT_KEY]"
        assert not Path("/tmp/boxforge-pwned").exists()
        stored = await call(client, "vm_bash", server="agent", command=f"stat -c %a {started['prompt_path']}")
        assert stored["stdout"] == "600\n"


async def test_run_agent_needs_a_box_with_an_agent(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with session(settings) as client:
        await call(client, "create_server", name="plain")
        assert "has no agent" in await call_error(client, "run_agent", server="plain", prompt="hello")


async def test_vm_diff_shows_commits_modified_and_untracked_files_against_the_base(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_agent_repo(tmp_path / "repo")
    async with session(settings) as client:
        box = await call(client, "create_server", name="review", repo=str(repo), branch="feat/review",
                         agent="custom", agent_install="./tools/install-agent.sh", agent_command="stub-agent")
        clean = await call(client, "vm_diff", server="review")
        assert clean["files"] == [] and clean["base_commit"] == box["base_commit"] == git(repo, "rev-parse", "main")
        agent = await call(client, "run_agent", server="review", prompt="add notes")
        assert (await call(client, "vm_job_status", job_id=agent["job_id"], wait_s=20))["state"] == "succeeded"
        await call(client, "vm_bash", server="review",
                   command="git -c user.name=a -c user.email=a@b.c commit -qam 'agent: readme' && "
                           "git rm -q tools/install-agent.sh")
        review = await call(client, "vm_diff", server="review")
        files = {f["path"]: f for f in review["files"]}
        assert files["README.md"]["status"] == "M" and files["README.md"]["added"] == 1
        assert files["agent-notes.txt"]["status"] == "A"
        assert files["tools/install-agent.sh"]["status"] == "D"
        assert review["commits"][0].endswith(" agent: readme") and len(review["commits"]) == 1
        assert review["branch"] == "feat/review" and review["head_commit"] != review["base_commit"]
        assert "3 files changed" in review["stat"]
        assert "+edited by the agent" in review["diff"] and "+add notes" in review["diff"]
        stat_only = await call(client, "vm_diff", server="review", max_bytes=0)
        assert stat_only["diff"] == "" and stat_only["truncated"] is True and stat_only["diff_bytes"] > 0
        # the agent's own staging area is left as it was
        index = await call(client, "vm_bash", server="review", command="git diff --cached --name-only")
        assert index["stdout"] == "tools/install-agent.sh\n"


async def test_vm_diff_marks_untracked_files(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_repo(tmp_path / "repo")
    async with session(settings) as client:
        await call(client, "create_server", name="untracked", repo=str(repo))
        await call(client, "vm_write", server="untracked", path="new/thing.txt", content="one\ntwo\n")
        await call(client, "vm_write", server="untracked", path="README.md", content="changed\n")
        review = await call(client, "vm_diff", server="untracked")
        assert review["files"] == [
            {"path": "README.md", "status": "M", "added": 1, "deleted": 1, "untracked": False},
            {"path": "new/thing.txt", "status": "A", "added": 2, "deleted": 0, "untracked": True},
        ]
        assert review["commits"] == []


async def test_vm_diff_needs_a_repo(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with session(settings) as client:
        await call(client, "create_server", name="norepo")
        assert "not a git checkout" in await call_error(client, "vm_diff", server="norepo")
