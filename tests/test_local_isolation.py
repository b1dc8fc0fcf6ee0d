"""Isolated local boxes, attacked from inside: every escape the issue lists is tried through vm_bash and must
fail with the error the box observes; the killed supervisor, the OOM and the burn are checked from the host.

Real boxes (bwrap, netns, cgroup, overlay on the cached image); no mocks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import anyio
import asyncssh
import pytest
from mcp import Client

from providers.base import BoxSpec, box_labels
from providers.local import LocalProvider, cgroup, isolation_problems, network
from providers.local.boxdir import SUPERVISOR_PID_FILE, read_box_info, read_pid
from providers.local.procs import supervisor_pid
from server.keys import create_box_keys
from server.mcp.app import build_server
from tests.support import call, eventually, local_boxes_dir, make_settings

pytestmark = pytest.mark.skipif(bool(isolation_problems()) and os.environ.get("BOXFORGE_REQUIRE_ISOLATION") != "1",
                                reason="isolated local boxes need root and namespaces: " + "; ".join(
                                    isolation_problems()))


def leftovers(box_dir: Path, info: dict) -> list[str]:
    """What of a box still exists anywhere on the host."""
    box_id = box_dir.name
    found = []
    if box_dir.exists():
        found.append("box dir")
    if network.exists(info["netns"]):
        found.append("netns")
    if Path("/sys/class/net", info["veth"]).exists():
        found.append("veth")
    if any(d.exists() for d in cgroup.dirs(box_id)):
        found.append("cgroup")
    uids = range(int(info["uid"]), int(info["uid"]) + 65536)
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            if os.stat(f"/proc/{pid}").st_uid in uids:
                found.append(f"process {pid}")
        except OSError:
            continue
    claim = network.CLAIMS / str(info["index"])
    if claim.exists() and claim.read_text().startswith(f"{box_dir}\n"):
        found.append("address claim")
    return found


async def bash(client: Client, server: str, command: str) -> dict:
    return await call(client, "vm_bash", server=server, command=command, timeout_s=20)


class Listener:
    """A TCP listener on every host address (0.0.0.0): the host service a box must not reach."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("0.0.0.0", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)

    def accepted(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return False
        conn.close()
        return True


CONNECT = "python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)' {} {}"


async def test_escapes_from_inside_a_box_all_fail(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    boxes = local_boxes_dir(settings)
    listener = Listener()
    failures: list[str] = []

    def attempt(what: str, result: dict, *observed: str) -> None:
        """The attempt must have failed, and its output must show one of the errors the box observed."""
        text = result["stdout"] + result["stderr"]
        if result["exit_code"] == 0 or not any(word in text for word in observed):
            failures.append(f"{what}: exit {result['exit_code']}, output {text[-300:]!r}")

    async with Client(build_server(settings)) as client:
        a = await call(client, "create_server", name="box-a", ttl="30m")
        b = await call(client, "create_server", name="box-b", ttl="30m")
        a_dir, b_dir = (next(d for d in boxes.glob("lb-*") if read_box_info(d)["name"] == n) for n in ("box-a", "box-b"))
        a_info, b_info = read_box_info(a_dir), read_box_info(b_dir)
        who = await bash(client, "box-a", "id -u; cat /proc/self/uid_map")
        assert who["stdout"].split()[:4] == ["0", "0", str(a_info["uid"]), "65536"], who
        assert os.stat(a_dir / "fs" / "upper").st_uid == a_info["uid"] != b_info["uid"] != os.getuid()

        attempt("read the state dir", await bash(client, "box-a", f"ls {settings.home}; cat {settings.db_path}"),
                "No such file or directory")
        attempt("read the orchestrator's environ",
                await bash(client, "box-a", f"cat /proc/{os.getpid()}/environ"), "No such file or directory")
        attempt("read box B's host key and files",
                await bash(client, "box-a", f"cat {b_dir}/fs/ssh/ssh_host_ed25519_key; ls {b_dir}"),
                "No such file or directory")
        procs = await bash(client, "box-a", "ps -eo pid=,comm=")
        if any(name in procs["stdout"] for name in ("pytest", "python", "supervisor")) or \
                len(procs["stdout"].splitlines()) > 12:
            failures.append(f"the box sees host processes: {procs['stdout']!r}")
        attempt("signal the orchestrator", await bash(client, "box-a", f"kill -0 {os.getpid()}"), "No such process")
        b_sshd = read_pid(b_dir / "server.pid")
        attempt("signal box B's init", await bash(client, "box-a", f"kill -9 {b_sshd}"), "No such process")
        attempt("ptrace-attach to pid 1 of the host",
                await bash(client, "box-a", "cat /proc/1/environ | tr '\\0' '\\n' | grep -c HCLOUD"),
                "")  # pid 1 here is the box's own init: it carries no host variable, so grep finds nothing
        gateway = a_info["gateway"]
        attempt("connect to a host listener through the gateway",
                await bash(client, "box-a", CONNECT.format(gateway, listener.port)), "timed out", "refused")
        attempt("connect to a host listener on loopback",
                await bash(client, "box-a", CONNECT.format("127.0.0.1", listener.port)), "refused")
        host_ips = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
        for ip in [ip for ip in host_ips if not ip.startswith("10.231.")][:2]:
            attempt(f"connect to a host listener on {ip}",
                    await bash(client, "box-a", CONNECT.format(ip, listener.port)), "timed out", "refused",
                    "unreachable", "Cannot assign requested address")  # the box has no IPv6 at all
        if listener.accepted():
            failures.append("the host listener accepted a connection from the box")
        attempt("connect to box B's SSH server", await bash(client, "box-a", CONNECT.format(b_info["host"], 22)),
                "timed out", "unreachable", "refused")
        attempt("find the labels anywhere in the box",
                await bash(client, "box-a", "find / -xdev -name labels.json 2>/dev/null | grep ."), "")
        attempt("change the host network",
                await bash(client, "box-a", "ip addr add 10.231.255.1/32 dev eth0"), "Operation not permitted")
        attempt("mount the host's disk", await bash(client, "box-a", "mount /dev/vda /mnt"),
                "No such file", "Permission denied", "not permitted", "mount:")
        writes = await bash(client, "box-a", "touch /etc/boxforge-write && echo root-writes-etc && echo $IS_SANDBOX")
        assert writes["stdout"].split() == ["root-writes-etc", "1"], writes
        assert not listener.accepted()

        # Burn is total: a detached, session-less process without the box's marker dies with the box.
        await bash(client, "box-a", "env -u BOXFORGE_BOX setsid -f sleep 1000 >/dev/null 2>&1 < /dev/null; "
                                    "(sh -c 'sleep 1001 &' &) ; true")
        assert len(cgroup.pids(a_dir.name)) >= 4
        assert (await call(client, "destroy_server", name="box-a"))["destroyed"] is True
        await eventually(lambda: not leftovers(a_dir, a_info), timeout=15,
                         what=f"nothing of box A to be left ({leftovers(a_dir, a_info)})")
        again = await bash(client, "box-b", "echo b-still-serves")
        assert again["stdout"] == "b-still-serves\n"
        await call(client, "destroy_server", name="box-b")
        await eventually(lambda: not leftovers(b_dir, b_info), timeout=15, what="nothing of box B to be left")
    listener.sock.close()
    assert not failures, "escapes that did not fail:\n" + "\n".join(failures)


def _spec(keys_root: Path, name: str, ttl_s: float, size: str | None = None) -> tuple[BoxSpec, object]:
    request_id = "r-" + os.urandom(6).hex()
    keys = create_box_keys(keys_root, request_id)
    labels = box_labels(owner="o-iso", name=name, request_id=request_id, expires_at=time.time() + ttl_s)
    return BoxSpec(name=name, request_id=request_id, labels=labels, host_key_private=keys.host_private,
                   host_key_public=keys.host_public, authorized_key=keys.client_public, size=size), keys


async def _ssh(box, keys, command: str) -> asyncssh.SSHCompletedProcess:
    async with asyncssh.connect(box.host, box.ssh_port, username=box.ssh_user,
                                client_keys=[str(keys.client_key_path)],
                                known_hosts=([asyncssh.import_public_key(keys.host_public)], [], []),
                                agent_path=None, config=None, connect_timeout=10) as conn:
        return await conn.run(command, check=False, timeout=60)


async def test_killing_the_supervisor_burns_the_box(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "boxes", watchdog_grace_s=5)
    spec, keys = _spec(tmp_path / "keys", "victim", ttl_s=60)
    box = await provider.wait_ready((await provider.create(spec)).id, timeout=30)
    box_dir = Path(box.data["box_dir"])
    info = read_box_info(box_dir)
    await _ssh(box, keys, "setsid -f sleep 1000 >/dev/null 2>&1 </dev/null")
    pid = supervisor_pid(box_dir)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # no orchestrator acts from here on: the box's undertaker must burn it
    await eventually(lambda: not leftovers(box_dir, info), timeout=15,
                     what=f"the box to be burned after its supervisor died ({leftovers(box_dir, info)})")


async def test_a_box_past_its_memory_limit_is_oom_killed_inside_its_cgroup(tmp_path: Path, monkeypatch) -> None:
    from providers.base import SIZE_PRESETS, SizePreset

    monkeypatch.setitem(SIZE_PRESETS, "test-64m", SizePreset(cores=1, memory_gb=64 / 1024))
    provider = LocalProvider(tmp_path / "boxes")
    spec, keys = _spec(tmp_path / "keys", "hog", ttl_s=300, size="test-64m")
    box = await provider.wait_ready((await provider.create(spec)).id, timeout=30)
    try:
        hog = await _ssh(box, keys, "python3 -c 'x = bytearray(256 << 20); print(len(x))'")
        assert hog.exit_status == 137 or hog.exit_signal is not None, (hog.exit_status, hog.stdout, hog.stderr)
        assert cgroup.oom_kills(box.id) >= 1
        alive = await _ssh(box, keys, "echo still-here")  # the box (and this orchestrator) live on
        assert alive.stdout == "still-here\n"
    finally:
        await provider.destroy(box.id)


async def test_egress_none_cuts_outbound_and_the_box_says_so(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "boxes", egress="none")
    spec, keys = _spec(tmp_path / "keys", "quiet", ttl_s=300)
    box = await provider.wait_ready((await provider.create(spec)).id, timeout=30)
    try:
        info = read_box_info(Path(box.data["box_dir"]))
        assert info["egress"] is False and info["veth"].startswith("bfln")
        rules = subprocess.run(["iptables", "-S", network.CHAIN_FWD], capture_output=True, text=True).stdout
        assert f"-A {network.CHAIN_FWD} -i bfln+ -j DROP" in rules
    finally:
        await provider.destroy(box.id)


def test_image_build_and_ls_on_the_cli(tmp_path: Path) -> None:
    from tests.support import assert_cli_words, boxforge_cmd, cli_env

    env = cli_env(make_settings(tmp_path / "state"))
    built = assert_cli_words(subprocess.run([*boxforge_cmd(), "image", "build"], env=env, capture_output=True,
                                            text=True, timeout=600))
    assert built.returncode == 0, built.stderr
    listed = assert_cli_words(subprocess.run([*boxforge_cmd(), "image", "ls", "--json"], env=env,
                                             capture_output=True, text=True, timeout=60))
    import json

    images = json.loads(listed.stdout)["images"]
    assert any(img["name"].startswith("debian-") and Path(img["rootfs"], "usr/sbin/sshd").exists() for img in images)
    assert images[0]["source"].startswith("debootstrap ")  # suite and mirror as this machine's apt sources say
