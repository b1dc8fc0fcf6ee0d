"""Waiting for a new Hetzner server: its create action, status ``running``, then an SSH banner.

Between API polls the address from the create response is probed over SSH (which costs no API call), and
the first banner brings the next poll forward: readiness shows within ~0.5 s of sshd answering rather than
up to ``poll_interval_s`` later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio

from providers.base import Box, BoxState, NotFound, ProviderError, ReadyTimeout
from providers.hetzner.api import HetznerApi
from providers.probe import probe_ssh

SSH_PROBE_INTERVAL_S = 0.5


async def until_banner(host: str | None, port: int, wait: float) -> bool:
    """Sleep ``wait``, or less: True as soon as ``host`` greets with an SSH banner."""
    end = time.monotonic() + wait
    while host is not None and time.monotonic() < end:
        if await probe_ssh(host, port, timeout=max(0.05, min(0.2, end - time.monotonic()))):
            return True
        await anyio.sleep(min(SSH_PROBE_INTERVAL_S, max(0.0, end - time.monotonic())))
    await anyio.sleep(max(0.0, end - time.monotonic()))
    return False


async def _create_done(api: HetznerApi, box_id: str, action_id: int) -> bool:
    """Whether the create action finished; ProviderError with Hetzner's reason when it failed."""
    action = await api.call(f"poll the creation of server {box_id}", api.client.actions.get_by_id, action_id)
    if action.status == "error":
        error = action.error or {}
        raise ProviderError(f"Hetzner failed to create server {box_id}: {error.get('message', 'unknown error')} "
                            f"({error.get('code', 'action error')}); try again, or another location or size")
    return action.status == "success"


def _timeout(box_id: str, box: Box | None, timeout: float) -> ReadyTimeout:
    if box is None:
        what = "was still being created"
    elif box.state is not BoxState.RUNNING:
        what = f"was still {box.data.get('status')}"
    else:
        what = f"was running but did not answer SSH at {box.host} port {box.ssh_port}"
    return ReadyTimeout(f"Hetzner server {box_id} {what} after {timeout:g}s; raise ready_timeout_s "
                        "(or BOXFORGE_READY_TIMEOUT) if boots are slow, or retry")


async def _poll(api: HetznerApi, box_id: str, action_id: int | None, box: Box | None,
                box_of: Callable[[Any], Box]) -> tuple[int | None, Box | None]:
    """One round of API reads: the create action until it is done, then the server until it runs."""
    if action_id is not None and await _create_done(api, box_id, action_id):
        action_id = None
    if action_id is None and (box is None or box.state is not BoxState.RUNNING):
        server = await api.server(box_id)
        if server is None:
            raise NotFound(f"Hetzner server {box_id} does not exist (any more)")
        box = box_of(server)
    return action_id, box


async def wait_ready(api: HetznerApi, box_id: str, *, box_of: Callable[[Any], Box], ssh_port: int,
                     action_id: int | None, early_host: str | None, timeout: float) -> Box:
    """The box RUNNING and greeting over SSH, or ``ReadyTimeout`` / ``NotFound`` / ``ProviderError``."""
    deadline = time.monotonic() + timeout
    box: Box | None = None
    while True:
        action_id, box = await _poll(api, box_id, action_id, box, box_of)
        running = box is not None and box.state is BoxState.RUNNING
        if running and box is not None and box.host:
            left = deadline - time.monotonic()
            if await probe_ssh(box.host, box.ssh_port, timeout=max(0.2, min(2.0, left))):
                return box
        left = deadline - time.monotonic()
        if left <= 0:
            raise _timeout(box_id, box, timeout)
        if running:
            await anyio.sleep(min(SSH_PROBE_INTERVAL_S, left))
        elif await until_banner(early_host, ssh_port, min(api.poll_interval_s, left)):
            early_host = None  # once: a box that answers while the API still says otherwise is polled as usual
