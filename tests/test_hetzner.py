"""Hetzner end to end: the real MCP client (and the CLI's `up`) against the fake Hetzner API.

Every box is a fake Hetzner server backed by a real local box, so each test runs the whole
path: MCP tool -> fleet -> hcloud -> fake API -> cloud-init-equivalent -> SSH -> jobs -> delete.
Each fault test ends with no server of ours left in the fake and a clear error message.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from rich.console import Console

from providers.base import LABEL_EXPIRES_AT, LABEL_NAME, LABEL_OWNER, owner_labels
from providers.local.boxdir import current_user
from server.cli.parser import build_parser
from server.cli.render import servers_table as _servers_table
from server.cli.up import cmd_up
from server.config import Settings, load_settings
from server.mcp.app import build_server
from server.schemas import ServerInfo
from server.service import open_fleet
from tests.fakes.hetzner_api import FakeHetzner, running_fake
from tests.support import call, call_error, eventually, make_repo


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeHetzner]:
    with running_fake(tmp_path / "fake-boxes") as started:
        yield started


def hetzner_settings(home: Path, fake: FakeHetzner, *, owner: str | None = None, **env: str) -> Settings:
    """Settings as a user would set them: HCLOUD_TOKEN + HCLOUD_ENDPOINT, and the fake's SSH port and user."""
    return load_settings({
        "BOXFORGE_HOME": str(home), "BOXFORGE_OWNER": owner or "otest" + secrets.token_hex(3),
        "BOXFORGE_CONFIG": str(home / "no-config.toml"), "HCLOUD_TOKEN": fake.token, "HCLOUD_ENDPOINT": fake.url,
        "BOXFORGE_HETZNER_SSH_USER": current_user(), "BOXFORGE_HETZNER_SSH_PORT": str(fake.ssh_port),
        "BOXFORGE_HETZNER_POLL_INTERVAL_S": "0.02", "BOXFORGE_READY_TIMEOUT": "20", **env,
    })


def ours(fake: FakeHetzner, settings: Settings) -> list[Any]:
    return fake.live_servers(**{LABEL_OWNER: settings.owner})


def assert_token_kept_secret(fake: FakeHetzner, settings: Settings, *texts: str) -> None:
    token = fake.token
    for text in texts:
        assert token not in text
    for user_data in fake.user_data_seen:
        assert token not in user_data
    for path in settings.home.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


async def test_three_boxes_forged_in_parallel_run_jobs_extend_and_burn(
    fake: FakeHetzner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = hetzner_settings(tmp_path / "state", fake)
    names = ["hz-a", "hz-b", "hz-c"]
    seen: list[str] = []
    async with Client(build_server(settings)) as client:
        created: dict[str, dict[str, Any]] = {}

        async def forge(name: str) -> None:
            created[name] = await call(client, "create_server", name=name, ttl="30m")

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(forge, name)
        seen += [json.dumps(c) for c in created.values()]
        assert {c["state"] for c in created.values()} == {"ready"}
        assert {c["provider"] for c in created.values()} == {"hetzner"}
        assert len(ours(fake, settings)) == 3 and fake.root_passwords_issued == 0
        assert [k["name"] for k in fake.ssh_keys.values()] == [f"boxforge-{settings.owner}"]  # one, reused

        for name in names:
            out = await call(client, "vm_bash", server=name, command=f"echo hello from {name}; pwd")
            assert out["stdout"].startswith(f"hello from {name}\n") and out["stdout"].rstrip().endswith("/project")
            seen.append(json.dumps(out))
        job = await call(client, "vm_bash", server="hz-a", command="sleep 0.2; echo done", background=True)
        status = await call(client, "vm_job_status", job_id=job["job_id"], wait_s=10)
        assert status["state"] == "succeeded" and status["stdout"] == "done\n"

        listed = await call(client, "list_servers")
        seen.append(json.dumps(listed))
        assert sorted(s["name"] for s in listed["servers"]) == names
        for info in listed["servers"]:
            server = fake.live_servers(**{LABEL_NAME: info["name"]})[0]
            assert info["ip"] == server.ipv4 and info["address"].endswith(f"@{server.ipv4}:{fake.ssh_port}")
            assert info["price_per_hour"] == pytest.approx(0.0067) and info["size"] == "cx23"
            assert info["cost_so_far"] == pytest.approx(0.0067)  # the first started hour
            assert 29 * 60 <= info["time_left_s"] <= 30 * 60

        extended = await call(client, "extend_server", name="hz-b", ttl="3h")
        assert extended.get("warning") is None and 179 * 60 <= extended["time_left_s"] <= 180 * 60
        label = int(fake.live_servers(**{LABEL_NAME: "hz-b"})[0].labels[LABEL_EXPIRES_AT])
        assert abs(label - (time.time() + 3 * 3600)) < 60

        for name in names:
            destroyed = await call(client, "destroy_server", name=name)
            assert destroyed["destroyed"] is True
        assert ours(fake, settings) == [] and fake.ssh_keys == {}
        assert (await call(client, "list_servers"))["count"] == 0
    assert_token_kept_secret(fake, settings, *seen, caplog.text)


async def test_reaper_burns_an_expired_box_from_labels_alone_and_spares_foreign_servers(
    fake: FakeHetzner, tmp_path: Path
) -> None:
    first = hetzner_settings(tmp_path / "first", fake)
    async with Client(build_server(first)) as client:
        await call(client, "create_server", name="old", ttl="30m")
    (server,) = ours(fake, first)
    server.labels[LABEL_EXPIRES_AT] = str(int(time.time()) - 5)  # time passed while nobody watched
    foreign = fake.add_server("ci-runner", {"managed-by": "boxforge", LABEL_EXPIRES_AT: "1"})  # no owner label
    other = fake.add_server("colleague", {**owner_labels("oelse"), LABEL_EXPIRES_AT: "1", LABEL_NAME: "old"})

    # Another orchestrator of the same owner with an empty store: only the labels tell it what to do.
    fresh = hetzner_settings(tmp_path / "fresh", fake, owner=first.owner, BOXFORGE_REAPER_MAX_SLEEP_S="0.2")
    async with Client(build_server(fresh)) as client:
        await eventually(lambda: not ours(fake, first), timeout=20, what="the reaper to delete the expired box")
        await eventually(lambda: not fake.ssh_keys, timeout=10, what="the owner's ssh key to be removed")
        assert (await call(client, "list_servers"))["count"] == 0
    assert fake.server_named(foreign.name) is not None and fake.server_named(other.name) is not None
    assert server.box_dir is not None and not server.box_dir.exists()


async def test_ipv6_only_box_is_reached_at_its_network_one(fake: FakeHetzner, tmp_path: Path) -> None:
    settings = hetzner_settings(tmp_path / "state", fake, BOXFORGE_HETZNER_IPV6_ONLY="1")
    async with Client(build_server(settings)) as client:
        created = await call(client, "create_server", name="v6", ttl="30m")
        assert created["ip"] == "::1" and created["address"] == f"{current_user()}@[::1]:{fake.ssh_port}"
        assert fake.live_servers(**{LABEL_NAME: "v6"})[0].ipv4 is None
        out = await call(client, "vm_bash", server="v6", command="echo over v6")
        assert out["stdout"] == "over v6\n"
        await call(client, "destroy_server", name="v6")
    assert ours(fake, settings) == []


async def test_parallel_up_of_ten_boxes_runs_under_max_parallel_creates(
    fake: FakeHetzner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = hetzner_settings(tmp_path / "state", fake, BOXFORGE_MAX_PARALLEL_CREATES="3")
    repo = make_repo(tmp_path / "repo")
    fake.faults.boot_delay_s = 0.3  # long enough for unlimited creates to pile up
    branches = [f"feat/b{i}" for i in range(10)]
    args = build_parser().parse_args(["up", *branches, "--repo", f"file://{repo}", "--ttl", "30m", "--json"])
    async with open_fleet(settings) as fleet:
        code = await cmd_up(fleet, args)
        report = json.loads(capsys.readouterr().out)
        assert code == 0, report["failed"]
        assert sorted(s["name"] for s in report["servers"]) == sorted(f"feat-b{i}" for i in range(10))
        assert {s["branch"] for s in report["servers"]} == set(branches)
        assert len(ours(fake, settings)) == 10
        assert 2 <= fake.peak_booting <= 3
        console = Console(file=io.StringIO(), width=300)
        console.print(_servers_table([ServerInfo(**s) for s in report["servers"]]))
        table = console.file.getvalue()
        assert "€/h" in table and table.count("0.0067") == 20  # price and first-hour cost of each box
        assert re.findall(r"\bcx23\b", table) == ["cx23"] * 10  # the size each box got
        async with anyio.create_task_group() as tg:
            for server in report["servers"]:
                tg.start_soon(fleet.destroy_server, server["name"])
    assert ours(fake, settings) == [] and fake.ssh_keys == {}


async def test_the_size_made_and_a_deprecation_show_in_create_server_and_in_boxforge_up(
    fake: FakeHetzner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = hetzner_settings(tmp_path / "state", fake)
    until = fake.deprecate("cx33", days=20)["unavailable_after"][:10]
    async with Client(build_server(settings)) as client:
        picked = await call(client, "create_server", name="picked", ttl="30m")
        assert picked["size"] == "cx23" and "warnings" not in picked  # the catalog's pick, said so
        old = await call(client, "create_server", name="old", size="cx33", ttl="30m")
        assert old["size"] == "cx33" and old["state"] == "ready"
        assert [w for w in old["warnings"] if f"ordered only until {until}" in w]
        listed = {s["name"]: s for s in (await call(client, "list_servers"))["servers"]}
        assert listed["old"]["size"] == "cx33" and listed["old"]["warnings"] == old["warnings"]
    capsys.readouterr()
    args = build_parser().parse_args(["up", "--name", "cli-old", "--size", "cx33", "--location", "nbg1", "--ttl",
                                      "30m"])
    async with open_fleet(settings) as fleet:
        assert await cmd_up(fleet, args) == 0
        shown = capsys.readouterr()
        assert re.search(r"cli-old .*\bcx33\b", shown.out), shown.out
        assert f"cli-old: server type cx33 is deprecated by Hetzner and can be ordered only until {until}" in shown.err
        assert [s.location for s in ours(fake, settings) if s.name.startswith("cli-old-")] == ["nbg1"]
        for name in ("picked", "old", "cli-old"):
            await fleet.destroy_server(name)
    assert ours(fake, settings) == []


# faults: each ends with no server of ours and a clear message


async def test_create_failure_reports_the_quota_and_leaves_nothing(fake: FakeHetzner, tmp_path: Path) -> None:
    settings = hetzner_settings(tmp_path / "state", fake)
    fake.faults.create_error = (403, "resource_limit_exceeded", "server limit exceeded")
    async with Client(build_server(settings)) as client:
        message = await call_error(client, "create_server", name="quota")
        assert "creating server 'quota' failed" in message
        assert "Hetzner project limit reached" in message and "destroy unused servers" in message
        assert (await call(client, "list_servers"))["count"] == 0
    assert ours(fake, settings) == []


async def test_failed_create_action_burns_the_server(fake: FakeHetzner, tmp_path: Path) -> None:
    settings = hetzner_settings(tmp_path / "state", fake)
    fake.faults.action_error = True
    async with Client(build_server(settings)) as client:
        message = await call_error(client, "create_server", name="broken")
        assert "Hetzner failed to create server" in message and "server creation failed on the host" in message
    assert any(method == "DELETE" and path.startswith("/servers/") for method, path, _ in fake.requests)
    assert ours(fake, settings) == [] and fake.ssh_keys == {}


async def test_rate_limit_burst_is_absorbed(fake: FakeHetzner, tmp_path: Path) -> None:
    settings = hetzner_settings(tmp_path / "state", fake)
    async with Client(build_server(settings)) as client:
        fake.faults.rate_limit_burst = 4
        created = await call(client, "create_server", name="patient")
        assert created["state"] == "ready" and fake.rate_limited == 4
        await call(client, "destroy_server", name="patient")
    assert ours(fake, settings) == []


async def test_rate_limit_storm_fails_with_a_clear_message(fake: FakeHetzner, tmp_path: Path) -> None:
    settings = hetzner_settings(tmp_path / "state", fake)
    async with Client(build_server(settings)) as client:
        fake.faults.rate_limit_burst = 60  # more than create, reaper and burn retry
        message = await call_error(client, "create_server", name="storm")
        fake.faults.rate_limit_burst = 0
        assert "Hetzner API rate limit reached" in message and "wait a minute" in message
    assert ours(fake, settings) == []


async def test_unreachable_server_times_out_and_is_burned(fake: FakeHetzner, tmp_path: Path) -> None:
    settings = hetzner_settings(tmp_path / "state", fake)
    fake.faults.unreachable = True
    async with Client(build_server(settings)) as client:
        message = await call_error(client, "create_server", name="silent", ready_timeout_s=1)
        assert "did not become reachable in time" in message
        assert "did not answer SSH at 127." in message and "after 1s" in message
    assert ours(fake, settings) == []


async def test_slow_boot_within_the_ready_timeout_succeeds(fake: FakeHetzner, tmp_path: Path) -> None:
    settings = hetzner_settings(tmp_path / "state", fake)
    fake.faults.boot_delay_s = 0.5
    async with Client(build_server(settings)) as client:
        created = await call(client, "create_server", name="slow")
        assert created["state"] == "ready"
        await call(client, "destroy_server", name="slow")
    assert ours(fake, settings) == []


async def test_slow_boot_beyond_boxforge_ready_timeout_fails_and_is_burned(fake: FakeHetzner, tmp_path: Path) -> None:
    settings = hetzner_settings(tmp_path / "state", fake, BOXFORGE_READY_TIMEOUT="0.5")
    assert settings.ready_timeout_s == 0.5
    fake.faults.boot_delay_s = 30
    async with Client(build_server(settings)) as client:
        message = await call_error(client, "create_server", name="sluggish")
        assert "was still being created after 0.5s" in message and "BOXFORGE_READY_TIMEOUT" in message
    assert ours(fake, settings) == []


async def test_lost_create_response_yields_exactly_one_server(fake: FakeHetzner, tmp_path: Path) -> None:
    settings = hetzner_settings(tmp_path / "state", fake)
    fake.faults.lose_create_responses = 1
    async with Client(build_server(settings)) as client:
        created = await call(client, "create_server", name="retried")
        assert created["state"] == "ready" and fake.lost_responses == 1
        assert len(ours(fake, settings)) == 1
        await call(client, "destroy_server", name="retried")
    assert ours(fake, settings) == []


async def test_retired_server_type_is_refused_naming_what_is_orderable(fake: FakeHetzner, tmp_path: Path) -> None:
    settings = hetzner_settings(tmp_path / "state", fake)
    async with Client(build_server(settings)) as client:
        message = await call_error(client, "create_server", name="helsinki", size="cx22", location="hel1")
        assert ("server type cx22 is no longer sold (deprecated 2025-10-16, unavailable after 2025-12-31); "
                "orderable in hel1: cax11 (2 vCPU, 4 GB, arm, 0.0071/h), cx33") in message
        assert not re.search(r"\bcx23\b", message)  # sold out in hel1
    assert ours(fake, settings) == []


async def test_invalid_token_says_how_to_fix_it(fake: FakeHetzner, tmp_path: Path) -> None:
    settings = hetzner_settings(tmp_path / "state", fake)
    wrong = "hc-wrong-" + secrets.token_hex(8)
    settings = dataclasses.replace(settings, env={**settings.env, "HCLOUD_TOKEN": wrong})
    async with Client(build_server(settings)) as client:
        message = await call_error(client, "create_server", name="denied")
        assert "rejected HCLOUD_TOKEN" in message and "Read & Write" in message
        assert wrong not in message
    assert fake.servers == {}
