"""A user repo carrying the stand-in agent, and plans for it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tests.support import git

AGENT = Path(__file__).with_name("agent.sh")


def plan_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "tools").mkdir()
    shutil.copy(AGENT, path / "tools" / "agent.sh")
    (path / "README.md").write_text("plan test repo\n")
    git(path, "add", ".")
    git(path, "commit", "-qm", "initial")
    return path


def three_tasks(repo: Path, *, pool: int = 2, name: str = "three") -> dict[str, Any]:
    """api and ui in parallel; e2e after both, its check proving it sees both prerequisites' files."""
    return {
        "name": name, "repo": str(repo), "base": "main",
        "boxes": {"max": pool, "ttl": "30m", "agent": "custom", "agent_command": "sh tools/agent.sh"},
        "tasks": [
            {"id": "api", "branch": "feat/api", "prompt": "write server/api.txt the api", "owns": ["server/**"],
             "check": "test -s server/api.txt"},
            {"id": "ui", "branch": "feat/ui", "prompt": "write web/ui.txt the ui", "owns": ["web/**"]},
            {"id": "e2e", "branch": "feat/e2e", "depends_on": ["api", "ui"], "prompt": "write e2e/e2e.txt both",
             "owns": ["e2e/**"], "check": "test -s server/api.txt && test -s web/ui.txt && test -s e2e/e2e.txt"},
        ],
    }
