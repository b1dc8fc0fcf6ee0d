"""What a box record looks like to a user: ``ServerInfo``, with time left, cost (for providers that
price their boxes) and the provider's size and warnings."""

from __future__ import annotations

import dataclasses
import time

from providers.base import Box, BoxState, Provider
from providers.capabilities import HasPricing
from server.domain.cost import cost_so_far
from server.domain.durations import WARN_LEFT_S, iso
from server.domain.states import BoxStatus
from server.schemas import ServerInfo, time_left
from server.store import BoxRecord

# Keys of BoxRecord.data that the service itself writes (the rest is the provider's own detail).
MADE_SIZE = "box_size"
WARNINGS = "box_warnings"
AGENT_INSTALLED = "agent_installed"  # {version, node_version, node_source}: what the bootstrap checked runs


def record_box(rec: BoxRecord) -> Box:
    """The provider's view of a box as far as the store kept it (for capability calls on stored data)."""
    return Box(id=rec.box_id or "", name=rec.name, state=BoxState.RUNNING, host=rec.host,
               ssh_port=rec.ssh_port or 0, ssh_user=rec.ssh_user or "", labels={}, created_at=rec.created_at,
               data=rec.data or {})


def _cost(rec: BoxRecord, prov: Provider | None, now: float) -> tuple[float | None, float | None]:
    """(price per hour, cost so far) where the provider prices its boxes."""
    if not isinstance(prov, HasPricing) or rec.box_id is None:
        return None, None
    price = prov.price(record_box(rec))
    if price is None:
        return None, None
    return price.hourly, cost_so_far(price.hourly, rec.created_at, rec.destroyed_at or now, price.monthly)


def _address(rec: BoxRecord) -> str | None:
    if not rec.host or not rec.live:
        return None
    host = f"[{rec.host}]" if ":" in rec.host else rec.host
    return f"{rec.ssh_user}@{host}:{rec.ssh_port}"


def server_info(rec: BoxRecord, prov: Provider | None, now: float | None = None,
                warn_s: int = WARN_LEFT_S) -> ServerInfo:
    now = time.time() if now is None else now
    left, left_s, warning = time_left(rec.expires_at, now, warn_s) if rec.live else (None, None, None)
    data = rec.data or {}
    price, cost = _cost(rec, prov, now)
    installed = data.get(AGENT_INSTALLED) or {}
    info = ServerInfo(
        name=rec.name, provider=rec.provider, state=rec.state,
        step=rec.step if rec.state == BoxStatus.PROVISIONING else None,
        address=_address(rec), project_dir=rec.project_dir, repo=rec.repo, branch=rec.branch,
        base_commit=rec.base_commit, agent=rec.agent, bootstrap_job_id=data.get("bootstrap_job_id"),
        setup_job_id=data.get("setup_job_id"), services=data.get("services"), from_pool=data.get("from_pool"),
        created_at=iso(rec.created_at),
        expires_at=iso(rec.expires_at), time_left=left, time_left_s=left_s, error=rec.error,
        ip=data.get("ip") if rec.live else None, price_per_hour=price, cost_so_far=cost,
        size=data.get(MADE_SIZE) or rec.size, warnings=data.get(WARNINGS) or None,
        auto_extended=data.get("auto_extended"), agent_version=installed.get("version"),
        node_version=installed.get("node_version"), node_source=installed.get("node_source"),
    )
    info.suggest("warning", dataclasses.replace(warning, server=rec.name) if warning else None)
    return info
