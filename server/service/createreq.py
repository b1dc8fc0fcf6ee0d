"""A create request, checked and completed before anything is made (the first steps of the create saga in
service/forge.py): the TTL, agent, env, repo and provider checked; egress, the forwarded env, the npm agent's
release and the repo's seed bundle prepared; and the small pure helpers the saga and the forks share."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from providers.base import Box, Provider, ReadyTimeout
from providers.capabilities import SeesLocalPaths
from server import forwardenv, npm
from server.agents import AgentPlan, plan_agent
from server.bootstrap import RepoSource, parse_repo
from server.config import Settings
from server.domain.durations import check_ttl_within, parse_ttl
from server.domain.hints import Hint, HintKind
from server.domain.inputs import check_env
from server.errors import InvalidInput
from server.git import seed as seed_git
from server.git.seed import Seed
from server.service.harvest import GIT_DATA
from server.service.providers import ProviderSet
from server.service.views import MADE_SIZE, WARNINGS

REPO_VIA = ("orchestrator", "box")


@dataclass(frozen=True)
class CreateRequest:
    """A checked create: what to make and how to bootstrap it."""

    prov: Provider
    source: RepoSource | None
    plan: AgentPlan
    env: dict[str, str]
    image: str | None
    timeout: float
    repo_via: str = "orchestrator"
    seed: Seed | None = None  # prepared by the orchestrator before anything is made
    egress: str | None = None  # "nat" or "none"; None: the provider's default
    # forward_env: proxies, CA bundles (their files copied in)
    forwarded: forwardenv.Forwarded = dataclasses.field(default_factory=forwardenv.Forwarded)
    pool: str | None = None  # the warm pool profile this box is made for (it waits there, unnamed by a user)


def reason(exc: BaseException) -> str:
    if isinstance(exc, ReadyTimeout):
        return f"the box did not become reachable in time ({exc})"
    return str(exc) or type(exc).__name__


def drop_bundle(req: CreateRequest) -> None:
    """The seed bundle is a temporary file: gone once the box has it (or the create failed)."""
    if req.seed is not None:
        req.seed.bundle.unlink(missing_ok=True)


def git_data(req: CreateRequest) -> dict[str, Any] | None:
    """What the git unit needs later: the box's home repo (where its work comes home) and the seed."""
    if req.seed is None:
        return None
    return {GIT_DATA: {"home_repo": str(req.seed.home_repo), "user_repo": req.seed.home_is_user_repo,
                       "default_branch": req.seed.default_branch, "branch_existed": req.seed.branch_existed}}


def made_data(box: Box, notes: tuple[str, ...] = ()) -> dict[str, Any]:
    data = dict(box.data)
    if box.size:
        data[MADE_SIZE] = box.size
    if box.warnings or notes:
        data[WARNINGS] = [*box.warnings, *notes]
    return data


def check_request(settings: Settings, providers: ProviderSet, *, has_background: bool, ttl_s: int | None,
                  repo: str | None, branch: str | None, agent: str, agent_install: str | None,
                  agent_command: str | None, env: Mapping[str, str] | None, image: str | None, provider: str | None,
                  ready_timeout_s: float | None, wait: bool, repo_via: str = "orchestrator",
                  agent_version: str | None = None) -> tuple[str, int, CreateRequest]:
    """Refuse a bad request before anything is made: (provider name, ttl, the request)."""
    ttl_s = ttl_s if ttl_s is not None else parse_ttl(settings.default_ttl)
    refused = check_ttl_within(ttl_s, settings.max_ttl_s)
    if refused:
        raise InvalidInput(refused, hint=Hint(HintKind.EXTEND_LATER))
    plan = plan_agent(agent, install=agent_install, command=agent_command, version=agent_version)
    env = dict(env or {})
    check_env(env)
    if branch and not repo:
        raise InvalidInput("branch needs a repo: pass repo (a git URL or a local path) too")
    if repo_via not in REPO_VIA:
        raise InvalidInput(f"repo_via must be one of {', '.join(REPO_VIA)}")
    source = parse_repo(repo) if repo else None
    name = provider or settings.provider
    prov = providers.get(name)
    if source is not None and repo_via == "box":
        check_box_clone(source, prov)
    if not wait and not has_background:
        raise InvalidInput("wait=false needs a long-running MCP server to finish the create; wait for it instead")
    timeout = ready_timeout_s if ready_timeout_s is not None else settings.ready_timeout_s
    return name, ttl_s, CreateRequest(prov, source, plan, env, image, timeout, repo_via)


async def prepare_request(settings: Settings, req: CreateRequest, *, egress: str | None, repo_via: str,
                          branch: str | None, pool: str | None) -> CreateRequest:
    """The checked request completed before anything is made: egress, the forwarded env, the npm agent's
    release resolved, the repo read into a seed bundle (a repo that cannot be read fails here)."""
    if egress is not None:
        if egress not in ("nat", "none"):
            raise InvalidInput("egress must be 'nat' (outbound internet through NAT) or 'none'")
        req = dataclasses.replace(req, egress=egress)
    if settings.forward_env:
        # a box that shares this machine's loopback (an unisolated local box) also sees its paths
        prov = req.prov
        forwarded = await anyio.to_thread.run_sync(lambda: forwardenv.collect(
            settings.forward_env, settings.env,
            loopback_unreachable=not isinstance(prov, SeesLocalPaths)))
        req = dataclasses.replace(req, forwarded=forwarded.without(req.env))
    if req.plan.package is not None:
        resolved = await npm.resolve_agent(req.plan.package, req.plan.version)
        req = dataclasses.replace(req, plan=dataclasses.replace(req.plan, resolved=resolved))
    if req.source is not None and repo_via == "orchestrator":
        req = dataclasses.replace(req, seed=await seed_git.prepare(settings.home, req.source, branch,
                                                               settings.env or None))
    return req if pool is None else dataclasses.replace(req, pool=pool)


def check_box_clone(source: RepoSource, prov: Provider) -> None:
    """A repo the box clones itself must be public and reachable from the box."""
    if source.secret_env:
        raise InvalidInput("repo_via='box' clones a public URL on the box, and a token never goes to a box: "
                           "drop the token from the URL, or let the orchestrator seed the box (the default)")
    if source.is_local_path and not isinstance(prov, SeesLocalPaths):
        raise InvalidInput("repo_via='box' needs a URL the box can reach; a local path is seeded by the "
                           "orchestrator (repo_via='orchestrator', the default)")
