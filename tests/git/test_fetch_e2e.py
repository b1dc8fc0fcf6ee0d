"""The work comes home, through the real MCP client on real local boxes: seed from a local repo, the
agent commits and leaves uncommitted work, vm_fetch brings both home (the uncommitted part as one marked
commit, the box's tree untouched), repeated fetches report only what is new, faults leave the user's repo
as it was, and destroy_server harvests before it burns."""

from __future__ import annotations

from pathlib import Path

from tests.support import call, call_error, git, make_repo, make_settings
from tests.workflow_support import session

AGENT_WORK = ("git -c user.name=agent -c user.email=a@x commit -qam 'agent: edit readme' --allow-empty "
              "&& echo new > added.txt && git add added.txt "
              "&& git -c user.name=agent -c user.email=a@x commit -qm 'agent: add file' "
              "&& echo dirty >> README.md && echo scratch > untracked.txt")


async def test_fetch_brings_commits_and_uncommitted_work_home_without_touching_either_tree(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", harvest_max_file_bytes=64 * 1024)
    repo = make_repo(tmp_path / "repo")
    (repo / "mine.txt").write_text("the user's own uncommitted file\n")
    user_head, user_status = git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain")
    async with session(settings) as client:
        box = await call(client, "create_server", name="fan1", repo=str(repo), branch="feat/one")
        await call(client, "vm_bash", server="fan1", command=AGENT_WORK)
        await call(client, "vm_bash", server="fan1",
                   command="head -c 200000 /dev/urandom > huge.bin; printf '\\000\\001bin' > small.bin")
        got = await call(client, "vm_fetch", server="fan1")
        assert got["ref"] == "refs/boxforge/fan1/feat/one" and got["repo"] == str(repo)
        assert git(repo, "rev-parse", got["ref"]) == got["tip"] == got["uncommitted_commit"]
        assert git(repo, "log", "-1", "--format=%s", got["tip"]) == "boxforge: uncommitted changes on fan1"
        assert git(repo, "rev-parse", got["tip"] + "^") == got["head"]
        assert [c["subject"] for c in got["commits"]][1:] == ["agent: add file", "agent: edit readme"]
        assert {"README.md", "added.txt", "untracked.txt", "small.bin"} <= set(got["files"])
        assert "huge.bin" not in got["files"] and any("huge.bin" in f for f in got["skipped_files"])
        assert "huge.bin" in got["warning"]
        assert git(repo, "show", f"{got['tip']}:small.bin") == "\x00\x01bin"
        # the box's own tree and index are as the agent left them
        status = await call(client, "vm_bash", server="fan1", command="git status --porcelain; git log -1 --format=%s")
        assert " M README.md" in status["stdout"] and "?? untracked.txt" in status["stdout"]
        assert status["stdout"].strip().endswith("agent: add file")
        # the user's repo: same HEAD, their own uncommitted file untouched
        assert (git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain")) == (user_head, user_status)

        again = await call(client, "vm_fetch", server="fan1")
        assert again["tip"] == got["tip"] and again["new_commits"] == []
        await call(client, "vm_bash", server="fan1",
                   command="git -c user.name=agent -c user.email=a@x commit -qam 'agent: more'")
        more = await call(client, "vm_fetch", server="fan1", include_uncommitted=False)
        assert [c["subject"] for c in more["new_commits"]] == ["agent: more"]
        assert more.get("uncommitted_commit") is None and more["tip"] == more["head"]
        assert box["base_commit"] == more["base_commit"]


async def test_rewritten_history_detached_head_and_a_deleted_repo_are_said(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_repo(tmp_path / "repo")
    async with session(settings) as client:
        await call(client, "create_server", name="rw", repo=str(repo), branch="feat/existing")
        await call(client, "vm_bash", server="rw",
                   command="git -c user.name=a -c user.email=a@x commit -qm one --allow-empty")
        first = await call(client, "vm_fetch", server="rw")
        await call(client, "vm_bash", server="rw",
                   command="git reset -q --hard HEAD~1 && git -c user.name=a -c user.email=a@x commit -qm two "
                           "--allow-empty")
        moved = await call(client, "vm_fetch", server="rw")
        assert moved["rewritten"] and "rewritten" in moved["warning"]
        assert git(repo, "rev-parse", moved["ref"]) == moved["tip"] != first["tip"]
        await call(client, "vm_bash", server="rw", command="git checkout -q --detach")
        detached = await call(client, "vm_fetch", server="rw")
        assert detached.get("branch") is None and "detached" in detached["warning"]
        await call(client, "vm_bash", server="rw", command="rm -rf .git")
        refs_before = git(repo, "for-each-ref")
        assert "no longer a git repository" in await call_error(client, "vm_fetch", server="rw")
        refused = await call_error(client, "destroy_server", name="rw")
        assert "not burned" in refused and "harvest=false" in refused
        burned = await call(client, "destroy_server", name="rw", harvest=False)
        assert burned["destroyed"] and burned.get("harvested") is None
        assert git(repo, "for-each-ref") == refs_before


async def test_destroy_harvests_first_and_a_vanished_source_leaves_a_bundle(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_repo(tmp_path / "repo")
    gone = make_repo(tmp_path / "gone")
    async with session(settings) as client:
        await call(client, "create_server", name="keep", repo=str(repo), branch="feat/keep")
        await call(client, "create_server", name="lost", repo=str(gone), branch="feat/lost")
        for name in ("keep", "lost"):
            await call(client, "vm_bash", server=name, command=f"echo {name} > work.txt")
        burned = await call(client, "destroy_server", name="keep")
        assert burned["harvested"] and "refs/boxforge/keep/feat/keep" in burned["harvest"]
        assert git(repo, "show", "refs/boxforge/keep/feat/keep:work.txt") == "keep"
        for path in sorted(gone.rglob("*"), reverse=True):
            path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
        gone.rmdir()
        burned = await call(client, "destroy_server", name="lost")
        assert burned["harvested"] and "bundle" in burned["harvest"]
    (bundle,) = (settings.home / "harvests").glob("lost-*.bundle")
    restored = make_repo(tmp_path / "restore")
    heads = git(restored, "bundle", "list-heads", str(bundle))
    ref = heads.split()[1]
    git(restored, "fetch", "-q", str(bundle), f"{ref}:refs/heads/lost")
    assert git(restored, "show", "lost:work.txt") == "lost"


async def test_bad_repos_are_refused_before_anything_is_made(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    plain = tmp_path / "not-a-repo"
    plain.mkdir()
    async with session(settings) as client:
        assert "does not exist" in await call_error(client, "create_server", name="x1",
                                                    repo=str(tmp_path / "missing"))
        assert "not a git repository" in await call_error(client, "create_server", name="x2", repo=str(plain))
        assert "could not read repo" in await call_error(client, "create_server", name="x3",
                                                         repo="http://127.0.0.1:9/none.git")
        repo = make_repo(tmp_path / "repo")
        assert "git refuses the branch name" in await call_error(client, "create_server", name="x4", repo=str(repo),
                                                                 branch="feat/.hidden")
        assert "token never goes to a box" in await call_error(
            client, "create_server", name="x5", repo="https://tok@example.invalid/r.git", repo_via="box")
        assert (await call(client, "list_servers"))["count"] == 0
