"""Box setup over SSH, as a bootstrap job: project checkout at a branch (the base commit
recorded), agent install, ready marker. The script runs on the box (POSIX sh) and is sent
over the job protocol's stdin, so nothing in it shows on a command line. The program is
``server/onbox/sh/bootstrap.sh``; this module only chooses its parameters.

A repo is normally seeded by the orchestrator before this job runs (``server/git/seed.py``);
the job then only reads the base it recorded. With ``repo_via="box"`` the job clones a public
URL itself; a repo token never goes to a box, by either path.

Each step announces itself with a ``BOXFORGE_STEP=<step>`` stdout line; the last stdout
line of a successful bootstrap is ``BOXFORGE_BASE=<commit>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from server import npm
from server.agents import AgentPlan, agent_run_script, plan_agent
from server.domain.inputs import is_one_line
from server.errors import InvalidInput
from server.onbox import scripts

BASE_MARKER = "BOXFORGE_BASE="
STEP_MARKER = "BOXFORGE_STEP="  # a line "BOXFORGE_STEP=clone" on stdout: the bootstrap reached that step
AGENT_MARKER = "BOXFORGE_AGENT="  # "BOXFORGE_AGENT=<agent version> <node version> <node source>" (agent-ensure.sh)
NODE_SOURCES = ("box", "npm")  # the box's own Node, or the npm registry's node package installed by the bootstrap


@dataclass(frozen=True)
class RepoSource:
    """Where to clone from: ``url`` is safe to show and store; ``secret_env`` is not."""

    url: str
    is_local_path: bool
    secret_env: dict[str, str]

    @property
    def is_ssh(self) -> bool:
        """Cloned over SSH: ``ssh://`` or scp-like ``git@host:org/repo``."""
        return self.url.startswith("ssh://") or ("://" not in self.url and not self.is_local_path)


def parse_repo(repo: str) -> RepoSource:
    """Split credentials off a repo URL; resolve a local path to an absolute one."""
    if not is_one_line(repo):
        raise InvalidInput("repo must be a git URL or a path, without control characters")
    if "://" in repo:
        parts = urlsplit(repo)
        if parts.scheme not in ("https", "http", "ssh", "git", "file"):
            raise InvalidInput(f"unsupported repo URL scheme {parts.scheme!r}: use https://, ssh://, git:// or a path")
        secret_env: dict[str, str] = {}
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        if parts.username and parts.scheme in ("https", "http"):
            if parts.password:
                secret_env = {"BOXFORGE_GIT_USER": parts.username, "BOXFORGE_GIT_PASSWORD": parts.password}
            else:  # a bare token as user name, as GitHub accepts
                secret_env = {"BOXFORGE_GIT_USER": "x-access-token", "BOXFORGE_GIT_PASSWORD": parts.username}
        elif parts.username and parts.scheme == "ssh":
            netloc = f"{parts.username}@{netloc}"  # an ssh login name is not a secret; a password is dropped
        return RepoSource(urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), False, secret_env)
    if ":" in repo.split("/")[0] and not repo.startswith(("/", ".")):
        return RepoSource(repo, False, {})  # scp-like ssh: git@host:org/repo.git
    path = Path(repo).expanduser().resolve()
    if not path.exists():
        raise InvalidInput(f"repo path {repo!r} does not exist on this machine; give a git URL or an existing path")
    return RepoSource(str(path), True, {})


def bootstrap_script(*, project_dir: str, repo: RepoSource | None, branch: str | None,
                     agent: AgentPlan | str = "none", seeded: bool = False, npm_registry: str = npm.REGISTRY) -> str:
    """The bootstrap job's script (``sh/bootstrap.sh`` with its parameters): check out, then install
    the agent. ``npm_registry`` is where the box gets the agent and, when its own is missing or too old,
    Node and npm: the orchestrator's cache served on the box's loopback, or the registry itself."""
    plan = plan_agent(agent) if isinstance(agent, str) else agent
    params = {"project": project_dir, **_checkout_params(repo, branch, seeded), **_agent_params(plan),
              "npm_registry": npm_registry.rstrip("/")}
    # the agent-ensure.sh functions come between the parameters and the program that calls them
    return scripts.assignments(params) + scripts.text("agent-ensure.sh") + scripts.text("bootstrap.sh")


def _checkout_params(repo: RepoSource | None, branch: str | None, seeded: bool) -> dict[str, str]:
    if seeded:  # the orchestrator made the checkout and recorded the base
        return {"checkout": "seeded", "repo_url": "", "repo_ssh": "0", "branch": branch or ""}
    if repo is None:
        return {"checkout": "empty", "repo_url": "", "repo_ssh": "0", "branch": branch or ""}
    if repo.secret_env:
        raise InvalidInput("a repo token never goes to a box: clone it through the orchestrator "
                           "(repo_via='orchestrator', the default)")
    return {"checkout": "clone", "repo_url": repo.url, "repo_ssh": "1" if repo.is_ssh else "0",
            "branch": branch or ""}


def _agent_params(plan: AgentPlan) -> dict[str, str]:
    if plan.package and plan.resolved is None:
        raise InvalidInput(f"the {plan.name} agent's release is resolved from the npm registry first")
    return {
        "agent_name": plan.name,
        "agent_package": plan.package or "",
        "agent_binary": plan.binary or "",
        "agent_install": plan.install or "",
        "agent_version": plan.resolved.version if plan.resolved else "",
        "node_condition": plan.resolved.node_condition if plan.resolved else "any",
        "node_pkg": " ".join(plan.resolved.node_versions) if plan.resolved else "",
        "npm_pkg": plan.resolved.npm_version if plan.resolved else "",
        "agent_run_file": agent_run_script(plan) if plan.run is not None else "",
    }


@dataclass(frozen=True)
class InstalledAgent:
    """What the bootstrap installed and checked: the agent's release and the Node it runs on."""

    version: str
    node_version: str
    node_source: str  # one of NODE_SOURCES


def installed_agent_from(stdout: str) -> InstalledAgent | None:
    """The agent the bootstrap's last ``BOXFORGE_AGENT=`` line reports; None without a valid one."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(AGENT_MARKER):
            fields = line[len(AGENT_MARKER):].split()
            if len(fields) == 3 and fields[2] in NODE_SOURCES and all(len(f) <= 64 for f in fields):
                return InstalledAgent(*fields)
            return None
    return None


def base_commit_from(stdout: str) -> str | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(BASE_MARKER):
            return line[len(BASE_MARKER):].strip() or None
    return None
