"""Git through the orchestrator on cloud boxes: a Hetzner box (the fake API, its machine a real local box)
is seeded from a path on the orchestrator's machine — which a cloud box cannot see — and its work comes
home with vm_fetch and at the burn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client

from server.mcp.app import build_server
from tests.fakes.hetzner_api import FakeHetzner, running_fake
from tests.support import call, git, make_repo
from tests.test_hetzner import hetzner_settings, ours


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeHetzner]:
    with running_fake(tmp_path / "fake-boxes") as started:
        yield started


async def test_a_cloud_box_is_seeded_from_a_local_path_and_its_work_comes_home(fake: FakeHetzner,
                                                                               tmp_path: Path) -> None:
    settings = hetzner_settings(tmp_path / "state", fake)
    repo = make_repo(tmp_path / "repo")
    async with Client(build_server(settings)) as client:
        made = await call(client, "create_server", name="hz-git", repo=str(repo), branch="feat/cloud", ttl="30m")
        assert made["provider"] == "hetzner" and made["base_commit"] == git(repo, "rev-parse", "main")
        await call(client, "vm_bash", server="hz-git",
                   command="echo cloud > cloud.txt && git add cloud.txt && "
                           "git -c user.name=a -c user.email=a@x commit -qm 'cloud work' && echo wip > wip.txt")
        got = await call(client, "vm_fetch", server="hz-git")
        assert [c["subject"] for c in got["commits"]][-1] == "cloud work"
        assert git(repo, "show", f"{got['ref']}:wip.txt") == "wip"
        await call(client, "vm_bash", server="hz-git", command="echo later > later.txt")
        burned = await call(client, "destroy_server", name="hz-git")
        assert burned["harvested"] and ours(fake, settings) == []
    assert git(repo, "show", "refs/boxforge/hz-git/feat/cloud:later.txt") == "later"
