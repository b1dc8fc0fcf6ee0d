"""The CLI's start-up cost: ``boxforge ls --json`` must not pay for the MCP server or optional providers' SDKs.

Checked in a fresh interpreter (this process has imported everything already)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO_ROOT

# what the CLI's non-MCP verbs never use: the MCP SDK (only `boxforge mcp`), optional providers' SDKs
# (loaded when a provider is first used)
HEAVY = ("mcp", "docker", "hcloud", "kubernetes_asyncio")


def test_importing_the_cli_loads_no_mcp_and_no_optional_provider_sdk() -> None:
    probe = ("import json, sys; import server.cli.main; "
             f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120, check=True)
    assert json.loads(result.stdout) == []


def test_importing_the_cli_loads_no_asyncssh_until_a_verb_connects() -> None:
    # asyncssh is registered as a lazy module (server/lazy.py): none of its submodules is loaded yet
    probe = ("import sys; import server.cli.main; "
             "print(sorted(m for m in sys.modules if m.startswith('asyncssh.'))[:3])")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.strip() == "[]"
