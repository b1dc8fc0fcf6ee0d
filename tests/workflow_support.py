"""Helpers for the agent-workflow tests: an MCP session per test, a repo with a stub agent and a
.boxforge.yml, and a git server over HTTP that wants a token (to follow a token through a clone)."""

from __future__ import annotations

import base64
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from server.config import Settings
from server.mcp.app import build_server
from tests.support import git, make_repo

# Reads the prompt on stdin, shows what it got (args, the env file's key), leaves an untracked
# file and a modification behind: everything vm_diff and vm_job_status should show.
STUB_AGENT = r"""#!/bin/sh
prompt=$(cat)
printf 'prompt:%s\n' "$prompt"
printf 'args:%s\n' "$*"
printf 'key-length:%s\n' "${#AGENT_KEY}"
printf 'key:%s\n' "$AGENT_KEY"
printf '%s\n' "$prompt" > agent-notes.txt
echo 'edited by the agent' >> README.md
"""

INSTALL_AGENT = """#!/bin/sh
set -e
mkdir -p "$HOME/.local/bin"
cp tools/stub-agent "$HOME/.local/bin/stub-agent"
chmod 755 "$HOME/.local/bin/stub-agent"
count=$(cat "$HOME/install-count" 2>/dev/null || echo 0)
echo $((count + 1)) > "$HOME/install-count"
echo "stub agent installed"
"""


@asynccontextmanager
async def session(settings: Settings) -> AsyncIterator[Client]:
    """An MCP client on an in-memory server, opened and closed inside one test task; every box still
    live at the end is burned."""
    async with Client(build_server(settings)) as client:
        try:
            yield client
        finally:
            with anyio.CancelScope(shield=True):
                listed = await client.call_tool("list_servers", {})
                for box in (listed.structured_content or {}).get("servers", []):
                    await client.call_tool("destroy_server", {"name": box["name"]})


def make_agent_repo(path: Path, *, boxfile: str | None = None) -> Path:
    """make_repo plus tools/install-agent.sh (installs tools/stub-agent) and an optional .boxforge.yml."""
    repo = make_repo(path)
    tools = repo / "tools"
    tools.mkdir()
    (tools / "stub-agent").write_text(STUB_AGENT)
    (tools / "install-agent.sh").write_text(INSTALL_AGENT)
    (tools / "install-agent.sh").chmod(0o755)
    if boxfile is not None:
        (repo / ".boxforge.yml").write_text(boxfile)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "agent tools")
    return repo


@contextmanager
def token_git_server(repo: Path, token: str) -> Iterator[str]:
    """Serve ``repo`` as a bare repository over git's dumb HTTP protocol, answering 401 to any request
    without Basic auth ``x-access-token:<token>``; yields the clone URL (without the token)."""
    root = repo.parent / "served"
    bare = root / "repo.git"
    git(repo.parent, "clone", "-q", "--bare", str(repo), str(bare))
    git(bare, "update-server-info")
    expected = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
    seen: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/repo.git"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
