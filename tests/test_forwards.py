"""Port forwards on real local boxes, through the real MCP client and the CLI: HTTP, WebSocket and plain
TCP servers started on the box and reached on this machine's loopback over the box's SSH connection; the
faults (nothing listening, local port in use, privileged local port, the box burning under an open
connection, the CLI's forward ending when the box burns); `.boxforge.yml` service ports forwarded as the
services start; listing and closing through the one tool."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.to_thread
from mcp import Client

from server.config import Settings
from tests.support import (
    assert_cli_words,
    boxforge_cmd,
    call,
    call_error,
    cli_env,
    eventually,
    git,
    make_repo,
    make_settings,
    readline_with_deadline,
)
from tests.workflow_support import session

# Started on the box: an HTTP server, a WebSocket echo server and a TCP echo server, each on a free port
# of the box's loopback; their ports go to ports.json. Standard library only (the box has no aiohttp).
BOX_SERVERS = r'''
import asyncio, base64, hashlib, http.server, json, os, threading

class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from {os.environ.get('BOXFORGE_BOX', '?')} at {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

async def tcp_echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

async def ws_echo(reader, writer):
    head = await reader.readuntil(b"\r\n\r\n")
    key = next(l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:"))
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    while True:
        b0, b1 = await reader.readexactly(2)
        n = b1 & 127
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await reader.readexactly(8), "big")
        mask = await reader.readexactly(4) if b1 & 128 else bytes(4)
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(await reader.readexactly(n)))
        if b0 & 15 == 8:
            writer.write(b"\x88\x00")
            await writer.drain()
            break
        if b0 & 15 == 1:
            out = b"echo:" + data
            size = bytes([len(out)]) if len(out) < 126 else bytes([126]) + len(out).to_bytes(2, "big")
            writer.write(b"\x81" + size + out)
            await writer.drain()
    writer.close()

async def main():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    tcp = await asyncio.start_server(tcp_echo, "127.0.0.1", 0)
    ws = await asyncio.start_server(ws_echo, "127.0.0.1", 0)
    ports = {"http": httpd.server_port, "tcp": tcp.sockets[0].getsockname()[1], "ws": ws.sockets[0].getsockname()[1]}
    with open("ports.tmp", "w") as f:
        json.dump(ports, f)
    os.replace("ports.tmp", "ports.json")
    await asyncio.Event().wait()

asyncio.run(main())
'''


async def forward(client: Client, server: str, port: int, **args: Any) -> dict[str, Any]:
    opened = await call(client, "vm_forward", server=server, port=port, **args)
    assert len(opened["forwards"]) == 1
    return opened["forwards"][0]


async def start_box_servers(client: Client, server: str) -> dict[str, int]:
    await call(client, "vm_write", server=server, path="servers.py", content=BOX_SERVERS)
    await call(client, "vm_bash", server=server, command="python3 servers.py", background=True)

    async def ports() -> dict[str, int] | None:
        result = await client.call_tool("vm_read", {"server": server, "path": "ports.json"})
        return None if result.is_error else json.loads(result.structured_content["content"])

    return await eventually(ports, timeout=30, what="the box's servers to start")


async def ws_roundtrip(local_port: int, text: str) -> str:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://127.0.0.1:{local_port}/") as ws:
        await ws.send_str(text)
        return await ws.receive_str(timeout=10)


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def refused(port: int) -> bool:
    try:
        stream = await anyio.connect_tcp("127.0.0.1", port)
    except OSError:
        return True
    await stream.aclose()
    return False


async def test_http_websocket_and_tcp_through_forwards(tmp_path: Path) -> None:
    async with session(make_settings(tmp_path / "state", local_sshd="embedded")) as client:
        await call(client, "create_server", name="fwd")
        ports = await start_box_servers(client, "fwd")

        web = await forward(client, "fwd", ports["http"])
        assert web["local_host"] == "127.0.0.1" and web["port"] == ports["http"]
        assert web["url"] == f"http://127.0.0.1:{web['local_port']}"
        body = await anyio.to_thread.run_sync(http_get, web["url"] + "/index")
        assert body.startswith("hello from ") and body.endswith(" at /index")
        again = await forward(client, "fwd", ports["http"])
        assert again["local_port"] == web["local_port"]  # the same forward, not a second one

        wanted = free_port()
        ws_fwd = await forward(client, "fwd", ports["ws"], local_port=wanted)
        assert ws_fwd["local_port"] == wanted
        for text in ("hi", "x" * 3000):
            assert await ws_roundtrip(wanted, text) == "echo:" + text

        tcp = await forward(client, "fwd", ports["tcp"])
        payload = os.urandom(1 << 20)
        async with await anyio.connect_tcp("127.0.0.1", tcp["local_port"]) as stream:
            async def send() -> None:
                await stream.send(payload)
                await stream.send_eof()

            got = bytearray()
            async with anyio.create_task_group() as tg:
                tg.start_soon(send)
                with anyio.fail_after(30):
                    while len(got) < len(payload):
                        got += await stream.receive()
        assert bytes(got) == payload

        closed = await call(client, "vm_forward", server="fwd", port=ports["http"], close=True)
        assert [f["port"] for f in closed["forwards"]] == [ports["http"]]
        assert await refused(web["local_port"])
        assert (await call(client, "vm_forward", server="fwd", port=ports["http"], close=True))["forwards"] == []
        assert "echo:x" == await ws_roundtrip(wanted, "x")  # the other forwards stay open


SERVICE_PORT, IDLE_PORT = 8765, 8766  # on the box's own loopback (its own network namespace)
SERVICES = f"""services:
  - name: web
    command: echo served > served.txt; exec python3 -m http.server --bind 127.0.0.1 {SERVICE_PORT}
    port: {SERVICE_PORT}
  - name: idle
    command: exec sleep 600
    port: {IDLE_PORT}
"""


def repo_with_services(path: Path) -> Path:
    repo = make_repo(path)
    (repo / ".boxforge.yml").write_text(SERVICES)
    git(repo, "add", ".boxforge.yml")
    git(repo, "commit", "-qm", "services with ports")
    return repo


async def test_service_ports_then_the_faults_and_the_box_burning_under_a_connection(tmp_path: Path) -> None:
    repo = repo_with_services(tmp_path / "repo")
    async with session(make_settings(tmp_path / "state")) as client:
        made = await call(client, "create_server", name="faults", repo=str(repo))
        by_service = {f["service"]: f for f in made["forwards"]}
        assert set(by_service) == {"web", "idle"} and by_service["idle"]["listening"] is False
        assert by_service["web"]["port"] == SERVICE_PORT and by_service["web"]["url"].startswith("http://127.0.0.1:")

        async def web_listening() -> bool:
            listed = (await call(client, "vm_forward", server="faults"))["forwards"]
            return {f["service"]: f["listening"] for f in listed} == {"web": True, "idle": False}

        await eventually(web_listening, timeout=30, what="the web service to listen behind its forward")
        body = await anyio.to_thread.run_sync(http_get, by_service["web"]["url"] + "/")
        assert "served.txt" in body
        listed = await call(client, "list_servers")
        assert {f["service"] for f in listed["servers"][0]["forwards"]} == {"web", "idle"}
        error = await call_error(client, "vm_forward", server="faults", local_port=free_port())
        assert "local_port needs the box's port" in error
        closed = await call(client, "vm_forward", server="faults", close=True)
        assert {f["port"] for f in closed["forwards"]} == {SERVICE_PORT, IDLE_PORT}
        assert await refused(by_service["web"]["local_port"])
        assert (await call(client, "vm_forward", server="faults"))["forwards"] == []
        ports = await start_box_servers(client, "faults")

        nobody = free_port()  # nothing listens there, on the box's loopback either
        error = await call_error(client, "vm_forward", server="faults", port=nobody)
        assert f"nothing listens on port {nobody}" in error and "start the server" in error

        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            taken = busy.getsockname()[1]
            error = await call_error(client, "vm_forward", server="faults", port=ports["tcp"], local_port=taken)
            assert f"local port {taken} on 127.0.0.1 is already in use" in error

        for bad in (80, 0, 70000):
            error = await call_error(client, "vm_forward", server="faults", port=ports["tcp"], local_port=bad)
            assert "local_port" in error
        error = await call_error(client, "vm_forward", server="faults", port=0)
        assert "port" in error
        error = await call_error(client, "vm_forward", server="nosuchbox", port=ports["tcp"])
        assert "unknown server 'nosuchbox'" in error
        assert (await call(client, "vm_forward", server="faults", port=ports["tcp"], close=True))["forwards"] == []

        fwd = await forward(client, "faults", ports["tcp"])
        async with await anyio.connect_tcp("127.0.0.1", fwd["local_port"]) as stream:
            await stream.send(b"ping")
            with anyio.fail_after(10):
                assert await stream.receive() == b"ping"
            await call(client, "destroy_server", name="faults", harvest=False)

            async def ended() -> bool:
                try:
                    with anyio.fail_after(1):
                        await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    return True
                except TimeoutError:
                    return False
                return False

            await eventually(ended, timeout=20, what="the open connection to end when the box burned")
        assert await refused(fwd["local_port"])


def boxforge(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return assert_cli_words(subprocess.run([*boxforge_cmd(), *args], env=cli_env(settings), capture_output=True,
                                           text=True, timeout=120))


def start_forward(settings: Settings, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*boxforge_cmd(), "forward", *args], env=cli_env(settings), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str]:
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert_cli_words(subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr))
    return proc.returncode, stderr


async def test_cli_forward_until_interrupted_and_until_the_box_burns(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    assert boxforge(settings, "up", "--name", "clifwd").returncode == 0
    script = "echo ok > served.txt; exec python3 -u -m http.server --bind 127.0.0.1 0 > http.log 2>&1"
    assert boxforge(settings, "run", "clifwd", script, "--background").returncode == 0

    def box_port() -> int | None:
        log = boxforge(settings, "run", "clifwd", "cat http.log").stdout
        words = [w for w in log.split() if w.isdigit()]
        return int(words[0]) if words else None

    port = await eventually(lambda: anyio.to_thread.run_sync(box_port), timeout=30, what="the box's web server")

    bad = boxforge(settings, "forward", "clifwd", str(port), "--local-port", "80")
    assert bad.returncode != 0 and "privileged" in bad.stderr

    proc = start_forward(settings, "clifwd", str(port))
    try:
        url = readline_with_deadline(proc).strip()
        assert url.startswith("http://127.0.0.1:")
        assert "served.txt" in await anyio.to_thread.run_sync(http_get, url + "/")
        proc.send_signal(signal.SIGINT)
        code, stderr = finish(proc)
        assert code == 0, stderr
    finally:
        proc.kill() if proc.poll() is None else None

    proc = start_forward(settings, "clifwd", str(port), "--json")
    try:
        shown: dict[str, Any] = json.loads(readline_with_deadline(proc))
        assert shown["local_host"] == "127.0.0.1"
        assert boxforge(settings, "burn", "clifwd", "--no-harvest").returncode == 0
        code, stderr = finish(proc)
        assert code == 1 and "burned or its SSH connection was lost" in stderr
        assert await refused(shown["local_port"])
    finally:
        proc.kill() if proc.poll() is None else None
