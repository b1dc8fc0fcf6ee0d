"""Issue 10, what an isolated box can reach, attacked from inside through vm_bash: the real MCP HTTP server
(`boxforge mcp --http` on every host address, driving the box itself), and the box's own owner/expiry labels,
which the reaper must still act on at the real TTL.

Real boxes, a real `boxforge mcp --http` subprocess, the real MCP client over streamable HTTP; no mocks.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from providers.base import LABEL_EXPIRES_AT, LABEL_OWNER
from providers.local import isolation_problems
from providers.local.boxdir import read_box_info
from server.service import open_fleet
from tests.support import REPO_ROOT, cli_env, eventually, local_boxes_dir, make_settings

pytestmark = pytest.mark.skipif(bool(isolation_problems()) and os.environ.get("BOXFORGE_REQUIRE_ISOLATION") != "1",
                                reason="isolated local boxes need root and namespaces: " + "; ".join(
                                    isolation_problems()))

# Tries every target at once (2 s each) and prints one line per target: "<host>:<port> <outcome>".
PROBE = r"""
import socket, sys, threading
def one(host, port, out):
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        out[(host, port)] = "CONNECTED"
    except OSError as exc:
        out[(host, port)] = type(exc).__name__ + " " + str(exc)
out = {}
targets = [t.rsplit(":", 1) for t in sys.argv[1:]]
threads = [threading.Thread(target=one, args=(h, p, out)) for h, p in targets]
[t.start() for t in threads]
[t.join() for t in threads]
for h, p in targets:
    print(h + ":" + p, out[(h, p)])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _host_addresses() -> list[str]:
    """This machine's own IPv4 addresses outside the local boxes' range (at most two)."""
    ips = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return [ip for ip in ips if ":" not in ip and not ip.startswith("10.231.")][:2]


async def test_a_box_cannot_reach_the_mcp_http_server_that_made_it(tmp_path: Path) -> None:
    """`boxforge mcp --http --host 0.0.0.0` (a token, every host address): the box it creates tries the server's
    port on its gateway, on loopback and on the host's own addresses; every attempt fails, while the host
    itself reaches the server on the very same addresses (the control that makes this test able to fail)."""
    settings = make_settings(tmp_path / "state")
    port = _free_port()
    env = {**cli_env(settings), "BOXFORGE_HTTP_TOKEN": "reach-token"}
    err_log = (tmp_path / "server.err").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "mcp", "--http", "--host", "0.0.0.0",
                             "--port", str(port)], env=env, cwd=REPO_ROOT, stderr=err_log, text=True)
    http = httpx2.AsyncClient(headers={"Authorization": "Bearer reach-token"}, timeout=60)
    try:
        async def up() -> bool:
            try:
                return (await http.get(f"http://127.0.0.1:{port}/mcp")).status_code < 500
            except httpx2.HTTPError:
                return False

        await eventually(up, timeout=60, interval=0.2, what="the HTTP server to start")
        async with Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)) as client:
            made = await client.call_tool("create_server", {"name": "reacher", "ttl": "30m"})
            assert not made.is_error, made.content
            (box_dir,) = local_boxes_dir(settings).glob("lb-*")
            info = read_box_info(box_dir)
            targets = [f"{ip}:{port}" for ip in (info["gateway"], "127.0.0.1", *_host_addresses())]
            for target in targets:  # the host reaches the server on each of these
                host, _, p = target.rpartition(":")
                socket.create_connection((host, int(p)), timeout=2).close()
            probe = await client.call_tool("vm_bash", {
                "server": "reacher", "timeout_s": 20,
                "command": "python3 -c " + _quote(PROBE) + " " + " ".join(targets)})
            assert not probe.is_error, probe.content
            lines = dict(line.split(" ", 1) for line in probe.structured_content["stdout"].splitlines())
            assert sorted(lines) == sorted(targets), probe.structured_content
            reached = {t: outcome for t, outcome in lines.items() if outcome == "CONNECTED"}
            assert not reached, f"the box reached the MCP HTTP server: {lines}"
            assert all(("timed out" in o or "refused" in o or "unreachable" in o) for o in lines.values()), lines
            gone = await client.call_tool("destroy_server", {"name": "reacher"})
            assert not gone.is_error and gone.structured_content["destroyed"] is True
        assert proc.poll() is None  # the server kept serving throughout
    finally:
        await http.aclose()
        proc.terminate()
        proc.wait(timeout=30)
        err_log.close()


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


async def test_a_box_cannot_rewrite_its_labels_and_the_reaper_burns_it_at_its_ttl(tmp_path: Path) -> None:
    """From inside (root in its user namespace): rewrite owner and expiry in the box's labels.json at its host path,
    through /proc/1/root, anywhere it can find one, and kill its own init; the labels on the host stay as made, and
    the reaper burns the box at its real TTL (the box's own watchdog is held back so that the reaper must act)."""
    settings = make_settings(tmp_path / "state", local_watchdog_grace_s=600)
    async with open_fleet(settings) as fleet:
        await fleet.create_server("fated", ttl_s=10)
        (box_dir,) = local_boxes_dir(settings).glob("lb-*")
        before = (box_dir / "labels.json").read_text()
        far = int(time.time()) + 10 * 365 * 86400
        forged = json.dumps({LABEL_OWNER: "someone-else", LABEL_EXPIRES_AT: str(far)})
        attempts = [
            f"printf '%s' {_quote(forged)} > {box_dir}/labels.json",
            f"printf '%s' {_quote(forged)} > /proc/1/root{box_dir}/labels.json",
            f"for f in $(find / -xdev -name labels.json 2>/dev/null) /boxforge/labels.json; do "
            f"printf '%s' {_quote(forged)} > \"$f\" || exit 1; done; test -n \"$(find / -xdev -name labels.json "
            "2>/dev/null)\"",
            "kill -9 1; sleep 0.2; kill -0 1",  # its init ignores SIGKILL from inside its own pid namespace
        ]
        outcomes = []
        for command in attempts:
            result = await fleet.run("fated", command, timeout_s=20)
            outcomes.append((command[:60], result.exit_code, (result.stdout + result.stderr)[-200:]))
        assert [o[1] != 0 for o in outcomes[:3]] == [True, True, True], outcomes
        assert "No such file or directory" in outcomes[0][2] and "No such file or directory" in outcomes[1][2]
        assert outcomes[3][1] == 0, outcomes  # init still there: the box lives until the reaper's TTL
        assert (box_dir / "labels.json").read_text() == before
        assert (await fleet.reap_once())[0] == []  # not yet expired
        expires_at = fleet.store.live_box("fated").expires_at
        await eventually(lambda: time.time() > expires_at, timeout=20, what="the box's TTL to pass")
        burned, _ = await fleet.reap_once()
        assert burned == ["fated"]
        assert not box_dir.exists()
