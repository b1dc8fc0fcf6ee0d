"""The Hetzner provider against the stateful fake API, through the real hcloud library.

Covers the adapter's contract and error translation; the end-to-end paths through MCP live
in test_hetzner.py. Each test ends with no server of ours left in the fake.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import asyncssh
import pytest
from hcloud import APIException

from providers.base import (
    BACKSTOP_EXPIRES_FILE,
    CLOUD_INIT_FLAG_FILE,
    CLOUD_INIT_READY_FILE,
    LABEL_OWNER,
    LABEL_REQUEST,
    AuthError,
    BoxSpec,
    BoxState,
    CapacityError,
    NotFound,
    ProviderError,
    QuotaError,
    TransientError,
    box_labels,
    owner_labels,
)
from providers.capabilities import OnboxCall, capabilities
from providers.hetzner import HetznerProvider
from providers.hetzner.api import translate
from providers.hetzner.cloud_init import BACKSTOP_GRACE_S, BACKSTOP_SERVICE, backstop_script, cloud_config
from providers.hetzner.servers import server_name
from providers.local.boxdir import current_user
from server.keys import create_box_keys
from server.onbox import scripts
from tests.fakes.hetzner_api import FakeHetzner, label_selector_matches, parse_cloud_config, running_fake

OWNER = "otest" + secrets.token_hex(3)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeHetzner]:
    with running_fake(tmp_path / "fake-boxes") as started:
        yield started


def make_provider(fake: FakeHetzner, **options: object) -> HetznerProvider:
    settings = {"ssh_user": current_user(), "ssh_port": fake.ssh_port, "poll_interval_s": 0.02, **options}
    return HetznerProvider(fake.token, endpoint=fake.url, **settings)  # type: ignore[arg-type]


def make_spec(tmp_path: Path, name: str = "t1", ttl_s: float = 600, **fields: object) -> tuple[BoxSpec, Path, str]:
    request_id = "r" + secrets.token_hex(6)
    keys = create_box_keys(tmp_path / "keys", f"{name}-{request_id}")
    spec = BoxSpec(
        name=name, request_id=request_id,
        labels=box_labels(owner=OWNER, name=name, request_id=request_id, expires_at=time.time() + ttl_s),
        host_key_private=keys.host_private, host_key_public=keys.host_public, authorized_key=keys.client_public,
        **fields,  # type: ignore[arg-type]
    )
    return spec, keys.client_key_path, keys.host_public


def ours(fake: FakeHetzner) -> list[object]:
    return fake.live_servers(**{LABEL_OWNER: OWNER})


async def test_box_presents_the_pinned_host_key_and_destroy_removes_server_and_owner_key(
    fake: FakeHetzner, tmp_path: Path
) -> None:
    provider = make_provider(fake)
    spec, client_key, host_public = make_spec(tmp_path)
    box = await provider.create(spec)
    assert box.state is BoxState.PENDING
    box = await provider.wait_ready(box.id, timeout=20)
    assert box.state is BoxState.RUNNING and box.host and box.host.startswith("127.")
    assert box.data["price_hourly"] == pytest.approx(0.0067) and box.data["server_type"] == "cx23"
    assert box.size == "cx23" and box.warnings == ()
    assert [k["name"] for k in fake.ssh_keys.values()] == [f"boxforge-{OWNER}"]
    assert fake.root_passwords_issued == 0
    async with asyncssh.connect(box.host, box.ssh_port, username=box.ssh_user, client_keys=[str(client_key)],
                                known_hosts=([asyncssh.import_public_key(host_public)], [], []),
                                agent_path=None, config=None) as conn:
        assert (await conn.run("echo pinned", check=True)).stdout == "pinned\n"
    await provider.destroy(box.id)
    assert ours(fake) == [] and fake.ssh_keys == {}
    assert await provider.get(box.id) is None
    await provider.destroy(box.id)  # gone already: success
    await provider.aclose()


async def test_create_is_idempotent_by_request_id(fake: FakeHetzner, tmp_path: Path) -> None:
    provider = make_provider(fake)
    spec, _, _ = make_spec(tmp_path)
    first = await provider.create(spec)
    second = await provider.create(spec)
    assert first.id == second.id and len(ours(fake)) == 1
    await provider.destroy(first.id)
    assert ours(fake) == []


async def test_lost_create_response_is_retried_and_adopted_without_a_duplicate(
    fake: FakeHetzner, tmp_path: Path
) -> None:
    provider = make_provider(fake)
    spec, _, _ = make_spec(tmp_path)
    fake.faults.lose_create_responses = 1
    box = await provider.create(spec)
    assert fake.lost_responses == 1
    assert ("POST", "/servers", 409) in fake.requests  # the retry met uniqueness_error
    assert [s.id for s in ours(fake)] == [int(box.id)]
    assert (await provider.wait_ready(box.id, timeout=20)).state is BoxState.RUNNING
    await provider.destroy(box.id)
    assert ours(fake) == []


async def test_a_name_taken_by_a_foreign_server_is_reported_and_left_alone(fake: FakeHetzner, tmp_path: Path) -> None:
    provider = make_provider(fake)
    spec, _, _ = make_spec(tmp_path)
    foreign = fake.add_server(server_name(spec), {"team": "web"})
    with pytest.raises(ProviderError, match="already exists in the Hetzner project and was not made by this request"):
        await provider.create(spec)
    assert fake.server_named(foreign.name) is not None and ours(fake) == []
    with pytest.raises(ProviderError, match="refusing to delete"):
        await provider.destroy(str(foreign.id))
    assert fake.server_named(foreign.name) is not None


async def test_unavailable_server_type_names_what_is_available_there(fake: FakeHetzner, tmp_path: Path) -> None:
    provider = make_provider(fake)
    spec, _, _ = make_spec(tmp_path, size="cx23", location="hel1")  # sold out there
    with pytest.raises(CapacityError) as caught:
        await provider.create(spec)
    message = str(caught.value)
    assert message.startswith("server type cx23 is unavailable in hel1; available there: "
                              "cax11 (2 vCPU, 4 GB, arm, 0.0071/h), cx33 (4 vCPU, 8 GB, x86, 0.0106/h)")
    assert "cpx22" in message and "cx22" not in message and "cx23 is available in: fsn1, nbg1" in message
    assert ours(fake) == []


async def test_unknown_type_and_location_list_the_choices(fake: FakeHetzner, tmp_path: Path) -> None:
    provider = make_provider(fake)
    with pytest.raises(ProviderError, match=r"unknown Hetzner location 'mars1'; locations: ash, fsn1, hel1, hil, nbg1"):
        await provider.create(make_spec(tmp_path, location="mars1")[0])
    with pytest.raises(ProviderError, match=r"unknown Hetzner server type 'cx999'; available in fsn1: cx23"):
        await provider.create(make_spec(tmp_path, size="cx999")[0])
    assert ours(fake) == []


async def test_placement_failure_at_create_is_a_capacity_error_with_alternatives(
    fake: FakeHetzner, tmp_path: Path
) -> None:
    provider = make_provider(fake)
    fake.faults.create_error = (412, "resource_unavailable", "no capacity for cx23 in fsn1 right now")
    with pytest.raises(CapacityError, match=r"cx23 is unavailable in fsn1 \(no capacity .*\); available there: cx23"):
        await provider.create(make_spec(tmp_path)[0])
    assert ours(fake) == []


async def test_resource_limit_exceeded_is_a_quota_error(fake: FakeHetzner, tmp_path: Path) -> None:
    provider = make_provider(fake)
    fake.faults.server_limit = 0
    with pytest.raises(QuotaError, match=r"Hetzner project limit reached .*server limit exceeded.*destroy unused"):
        await provider.create(make_spec(tmp_path)[0])
    assert ours(fake) == []


async def test_invalid_token_is_an_auth_error_that_does_not_echo_the_token(fake: FakeHetzner) -> None:
    wrong = "hc-wrong-" + secrets.token_hex(8)
    provider = HetznerProvider(wrong, endpoint=fake.url, poll_interval_s=0.02)
    with pytest.raises(AuthError) as caught:
        await provider.verify()
    assert "rejected HCLOUD_TOKEN" in str(caught.value) and "Read & Write" in str(caught.value)
    assert wrong not in str(caught.value) and fake.token not in str(caught.value)
    with pytest.raises(AuthError, match="HCLOUD_TOKEN is not set"):
        HetznerProvider("", endpoint=fake.url)


async def test_rate_limit_burst_is_retried(fake: FakeHetzner, tmp_path: Path) -> None:
    provider = make_provider(fake)
    fake.faults.rate_limit_burst = 3
    box = await provider.create(make_spec(tmp_path)[0])
    assert fake.rate_limited == 3
    await provider.destroy(box.id)
    assert ours(fake) == []


async def test_rate_limit_beyond_the_retries_says_so(fake: FakeHetzner, tmp_path: Path) -> None:
    provider = make_provider(fake, api_attempts=3)
    fake.faults.rate_limit_burst = 3
    with pytest.raises(TransientError, match=r"rate limit reached .*3600 requests per hour"):
        await provider.create(make_spec(tmp_path)[0])
    assert ours(fake) == []


async def test_failed_create_action_is_reported(fake: FakeHetzner, tmp_path: Path) -> None:
    provider = make_provider(fake)
    fake.faults.action_error = True
    box = await provider.create(make_spec(tmp_path)[0])
    with pytest.raises(ProviderError, match=r"Hetzner failed to create server .*server creation failed on the host"):
        await provider.wait_ready(box.id, timeout=10)
    await provider.destroy(box.id)
    assert ours(fake) == []


async def test_unreachable_server_times_out_naming_the_address(fake: FakeHetzner, tmp_path: Path) -> None:
    provider = make_provider(fake)
    fake.faults.unreachable = True
    box = await provider.create(make_spec(tmp_path)[0])
    with pytest.raises(ProviderError, match=rf"was running but did not answer SSH at 127\.\S+ port {fake.ssh_port}"):
        await provider.wait_ready(box.id, timeout=0.5)
    await provider.destroy(box.id)
    assert ours(fake) == []


async def test_list_finds_boxes_by_labels_across_pages(fake: FakeHetzner) -> None:
    provider = make_provider(fake)
    for i in range(57):
        fake.add_server(f"p{i}", {**owner_labels(OWNER), LABEL_REQUEST: f"r{i}"})
    fake.add_server("foreign", {"managed-by": "boxforge"})
    boxes = await provider.list(owner_labels(OWNER))
    assert len(boxes) == 57 and {b.name for b in boxes} == {f"p{i}" for i in range(57)}
    assert [r for r in fake.requests if r[1] == "/servers"] == [("GET", "/servers", 200)] * 2  # two pages of 50
    assert [b.name for b in await provider.list({LABEL_REQUEST: "r7"})] == ["p7"]
    for box in boxes:
        await provider.destroy(box.id)
    assert ours(fake) == [] and fake.server_named("foreign") is not None


async def test_set_labels_replaces_the_labels(fake: FakeHetzner) -> None:
    provider = make_provider(fake)
    server = fake.add_server("lab", {**owner_labels(OWNER), "boxforge-expires-at": "100"})
    box = await provider.set_labels(str(server.id), {**owner_labels(OWNER), "boxforge-expires-at": "200"})
    assert box.expires_at == 200 and fake.servers[server.id].labels["boxforge-expires-at"] == "200"
    with pytest.raises(NotFound):
        await provider.set_labels("424242", {})
    await provider.destroy(box.id)


async def test_owner_key_deleted_by_another_orchestrator_is_made_again(fake: FakeHetzner, tmp_path: Path) -> None:
    provider = make_provider(fake)
    first = await provider.create(make_spec(tmp_path, name="k1")[0])
    fake.ssh_keys.clear()  # another orchestrator of this owner cleaned up in between
    second = await provider.create(make_spec(tmp_path, name="k2")[0])
    assert len(fake.ssh_keys) == 1 and len(ours(fake)) == 2
    await provider.destroy(first.id)
    assert len(fake.ssh_keys) == 1  # still in use by k2
    await provider.destroy(second.id)
    assert ours(fake) == [] and fake.ssh_keys == {}


async def test_ipv6_only_box_is_reached_at_its_network_one(fake: FakeHetzner, tmp_path: Path) -> None:
    provider = make_provider(fake, ipv6_only=True)
    spec, client_key, host_public = make_spec(tmp_path)
    box = await provider.wait_ready((await provider.create(spec)).id, timeout=20)
    assert box.host == "::1" and box.data["ipv6_only"] is True
    async with asyncssh.connect(box.host, box.ssh_port, username=box.ssh_user, client_keys=[str(client_key)],
                                known_hosts=([asyncssh.import_public_key(host_public)], [], []),
                                agent_path=None, config=None) as conn:
        assert (await conn.run("echo v6", check=True)).stdout == "v6\n"
    await provider.destroy(box.id)
    assert ours(fake) == []


def test_cloud_config_pins_the_host_key_and_carries_no_secret(tmp_path: Path) -> None:
    spec, _, _ = make_spec(tmp_path)
    text = cloud_config(spec, user="boxforge", expires_at=1234)
    assert text.startswith("#cloud-config\n")
    config = parse_cloud_config(text)
    assert config["ssh_deletekeys"] is True and config["ssh_genkeytypes"] == []
    assert config["ssh_keys"]["ed25519_private"].strip() == spec.host_key_private.strip()
    assert config["ssh_keys"]["ed25519_public"] == spec.host_key_public
    assert config["disable_root"] is True and config["ssh_pwauth"] is False
    (user,) = config["users"]
    assert user["name"] == "boxforge" and user["sudo"] == "ALL=(ALL) NOPASSWD:ALL" and user["lock_passwd"] is True
    assert user["ssh_authorized_keys"] == [spec.authorized_key]
    files = {f["path"]: f for f in config["write_files"]}
    assert files[BACKSTOP_EXPIRES_FILE]["content"] == "1234\n" and CLOUD_INIT_FLAG_FILE in files
    assert "OnUnitActiveSec=1min" in files["/etc/systemd/system/boxforge-backstop.timer"]["content"]
    service = files["/etc/systemd/system/boxforge-backstop.service"]["content"]
    assert service == BACKSTOP_SERVICE and f"BACKSTOP_FILE={BACKSTOP_EXPIRES_FILE}" in service
    assert files["/usr/local/sbin/boxforge-backstop"]["content"] == backstop_script()
    assert ["systemctl", "enable", "--now", "boxforge-backstop.timer"] in config["runcmd"]
    assert config["runcmd"][-1] == ["touch", CLOUD_INIT_READY_FILE]
    assert "token" not in text.lower() and "HCLOUD" not in text
    assert len(text.encode()) < 32 * 1024


def test_server_names_are_unique_per_request_and_valid_hostnames() -> None:
    spec = BoxSpec(name="a" * 63, request_id="r0123456789ab", labels={}, host_key_private="", host_key_public="",
                   authorized_key="")
    name = server_name(spec)
    assert len(name) <= 63 and name.endswith("-r0123456789ab")


def _run_with(script: str, tmp_path: Path, replacements: dict[str, str],
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    for old, new in replacements.items():
        script = script.replace(old, new)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("systemctl", "cloud-init", "logger"):
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{tmp_path}/calls"\n')
        stub.chmod(0o755)
    full_env = {**os.environ, **(env or {}), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=full_env, check=False)


@pytest.mark.parametrize(("expires_ago", "powers_off"), [(0, False), (BACKSTOP_GRACE_S - 60, False),
                                                         (BACKSTOP_GRACE_S + 1, True)])
def test_backstop_powers_off_only_after_expiry_plus_grace(tmp_path: Path, expires_ago: int, powers_off: bool) -> None:
    expires = tmp_path / "expires-at"
    expires.write_text(f"{int(time.time()) - expires_ago}\n")
    result = _run_with(backstop_script(), tmp_path, {},
                       {"BACKSTOP_FILE": str(expires), "BACKSTOP_GRACE_S": str(BACKSTOP_GRACE_S)})
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls").read_text() if (tmp_path / "calls").exists() else ""
    assert ("systemctl poweroff" in calls) is powers_off


@pytest.mark.parametrize(("code", "kind", "fragment"), [
    ("unauthorized", AuthError, "rejected HCLOUD_TOKEN"),
    ("token_readonly", AuthError, "read-only"),
    ("resource_limit_exceeded", QuotaError, "project limit reached"),
    ("rate_limit_exceeded", TransientError, "rate limit reached"),
    ("resource_unavailable", CapacityError, "cannot"),
    ("placement_error", CapacityError, "cannot"),
    ("not_found", NotFound, "not found"),
    ("conflict", TransientError, "retry shortly"),
    ("server_error", TransientError, "retry shortly"),
    ("invalid_input", ProviderError, "rejected the request"),
])
def test_api_errors_translate_to_provider_errors(code: str, kind: type[ProviderError], fragment: str) -> None:
    error = translate(APIException(code=code, message="m", details=None), "create server x")
    assert type(error) is kind and fragment in str(error)


def test_fake_label_selector_follows_the_documented_language() -> None:
    labels = {"env": "prod", "tier": "web"}
    assert label_selector_matches("env=prod,tier==web", labels)
    assert not label_selector_matches("env!=prod", labels)
    assert label_selector_matches("env in (dev,prod),!owner", labels)
    assert not label_selector_matches("tier notin (web,db)", labels)
    assert label_selector_matches("env", labels) and not label_selector_matches("owner", labels)


# capabilities: the box-side programs, run without SSH under each POSIX shell a box may have

SHELLS = [[shutil.which("dash") or "dash", "-c"], [shutil.which("busybox") or "busybox", "sh", "-c"]]


def _onbox(call: OnboxCall) -> str:
    return scripts.program(call.script, call.params)  # what the transport runs under the box's /bin/sh


def _stubs(tmp_path: Path, *tools: str) -> Path:
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in tools:
        (bin_dir / tool).write_text(f'#!/bin/sh\nprintf "{tool}" >> "{tmp_path}/calls"\n'
                                    f'for a in "$@"; do printf " [%s]" "$a" >> "{tmp_path}/calls"; done\n'
                                    f'echo >> "{tmp_path}/calls"\n')
        (bin_dir / tool).chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
def test_boot_wait_waits_for_cloud_init_and_requires_the_ready_marker(tmp_path: Path, shell: list[str]) -> None:
    provider = HetznerProvider("t", endpoint="http://127.0.0.1:9/v1")
    flag, ready = tmp_path / "flag", tmp_path / "ready"
    call = provider.boot_wait(None)  # type: ignore[arg-type]
    assert call.params == {"FLAG_FILE": CLOUD_INIT_FLAG_FILE, "READY_FILE": CLOUD_INIT_READY_FILE}
    script = _onbox(dataclasses.replace(call, params={"FLAG_FILE": str(flag), "READY_FILE": str(ready)}))
    env = {"PATH": f"{_stubs(tmp_path, 'cloud-init')}:/usr/bin:/bin"}
    unmarked = subprocess.run([*shell, script], capture_output=True, text=True, env=env, check=False)
    assert unmarked.returncode == 0 and unmarked.stdout == ""  # no boxforge cloud-init ran: nothing to wait for
    assert not (tmp_path / "calls").exists()
    flag.touch()
    missing = subprocess.run([*shell, script], capture_output=True, text=True, env=env, check=False)
    assert missing.returncode == 4 and "cloud-init did not finish" in missing.stderr
    assert (tmp_path / "calls").read_text() == "cloud-init [status] [--wait]\n"
    ready.touch()
    done = subprocess.run([*shell, script], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
def test_package_install_runs_apt_with_each_name_as_one_argument(tmp_path: Path, shell: list[str]) -> None:
    provider = HetznerProvider("t", endpoint="http://127.0.0.1:9/v1")
    call = provider.package_install(("nodejs", "npm"))
    assert call.sudo and call.script == "apt-install.sh"
    with_apt = subprocess.run([*shell, _onbox(call)], capture_output=True, text=True, check=False,
                              env={"PATH": f"{_stubs(tmp_path, 'apt-get')}:/usr/bin:/bin"})
    assert with_apt.returncode == 0, with_apt.stderr
    assert (tmp_path / "calls").read_text().splitlines()[-1] == \
        "apt-get [-q] [-y] [-o] [DPkg::Lock::Timeout=300] [install] [nodejs] [npm]"
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    for tool in ("sh", "echo", "printf"):
        if (found := shutil.which(tool)) is not None:
            (empty / tool).symlink_to(found)
    without = subprocess.run([*shell, _onbox(call)], capture_output=True, text=True, check=False,
                             env={"PATH": str(empty)})
    assert without.returncode == 3 and "no apt-get" in without.stderr


def test_package_install_refuses_what_is_not_a_package_name() -> None:
    provider = HetznerProvider("t", endpoint="http://127.0.0.1:9/v1")
    for bad in (("nodejs; reboot",), ("$(id)",), ("-o",), ()):
        with pytest.raises(ProviderError, match="not distribution package names"):
            provider.package_install(bad)


def test_the_hetzner_box_side_programs_are_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None and not os.environ.get("BOXFORGE_REQUIRE_OPENSSH"):
        pytest.skip("shellcheck is not installed (CI installs it)")
    scripts = [str(p) for p in resources.files("providers.hetzner").joinpath("sh").iterdir()  # type: ignore[attr-defined]
               if p.name.endswith(".sh")]
    scripts += [str(resources.files("server").joinpath("onbox", "sh", n)) for n in ("cloud-init-wait.sh",
                                                                                   "apt-install.sh")]
    assert any(s.endswith("backstop.sh") for s in scripts)
    result = subprocess.run(["shellcheck", "-s", "sh", *scripts], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_the_provider_declares_its_capabilities() -> None:
    provider = HetznerProvider("t", endpoint="http://127.0.0.1:9/v1")
    assert capabilities(provider) == ["PinsHostKey", "WaitsForBoot", "HasBackstop", "HasPricing", "InstallsPackages"]
