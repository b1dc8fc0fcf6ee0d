"""How the service reaches a box: its keys (read once), its exec over the SSH pool, and its health
(when it last answered, since when it has not)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio.to_thread

from providers.capabilities import OnboxCall
from server import jobs
from server.config import Settings
from server.errors import BoxBusy, BoxUnreachable, ForgeError
from server.keys import BoxKeys, delete_box_keys, load_box_keys
from server.service import onbox
from server.service.forwards import Forwards
from server.ssh import ExecResult, SSHPool, SSHTarget
from server.store import BoxRecord


@dataclass
class Health:
    """When a box last answered over SSH, and since when it has not."""

    last_seen: float | None = None
    unreachable_since: float | None = None
    error: str | None = None


class BoxAccess:
    """Targets and execs for the boxes of the store, over one SSH pool."""

    def __init__(self, settings: Settings, pool: SSHPool) -> None:
        self.settings = settings
        self.pool = pool
        self._keys: dict[str, BoxKeys] = {}  # key id -> the box's key files, read once
        self._health: dict[str, Health] = {}  # box name -> reachability
        self.forwards = Forwards(pool)  # the boxes' port forwards, over connections of their own

    def target(self, rec: BoxRecord) -> SSHTarget:
        if rec.host is None or rec.ssh_port is None or rec.ssh_user is None:
            raise BoxUnreachable(f"box {rec.name!r} has no SSH address yet (state {rec.state})")
        keys = self._keys.get(rec.key_id)
        if keys is None:  # a box's keys never change: read them once, not on every poll
            keys = self._keys[rec.key_id] = load_box_keys(self.settings.keys_dir, rec.key_id)
        return SSHTarget(rec.name, rec.host, rec.ssh_port, rec.ssh_user, keys.client_key_path, keys.host_public)

    def exec_only(self, rec: BoxRecord) -> jobs.BoxExec:
        """The box's exec over plain SSH exec sessions, never a control channel: a channel captures a call's
        binary output and stderr in files on the box, which a full disk cuts short; an exec session's pipes
        do not."""
        target = self.target(rec)

        async def run(script: str, stdin: bytes | None = None, timeout: float | None = None) -> ExecResult:
            return await self.pool.run(target, getattr(script, "shell_call", script), stdin=stdin, timeout=timeout)

        return run

    def exec(self, rec: BoxRecord, *, long: bool = False) -> jobs.BoxExec:
        """The box's exec, recording when it last answered and since when it has not. ``long``: for
        scripts that may run for minutes (grep, diff), which take the pool's long lane so that they
        never hold up short calls (status, launch, cancel) to the same box."""
        target = self.target(rec)
        inner = jobs.box_exec(self.pool, target)
        health = self._health.setdefault(rec.name, Health())

        async def run(script: str, stdin: bytes | None = None, timeout: float | None = None) -> ExecResult:
            try:
                if long:
                    result = await self.pool.channel_run(target, script, stdin=stdin, timeout=timeout, long=True)
                else:
                    result = await inner(script, stdin, timeout)
            except BoxBusy:
                raise  # the box answers; its sessions are all in use
            except BoxUnreachable as exc:
                health.unreachable_since = health.unreachable_since or time.time()
                health.error = str(exc)
                raise
            health.last_seen, health.unreachable_since, health.error = time.time(), None, None
            return result

        return run

    def last_seen(self, name: str) -> float | None:
        health = self._health.get(name)
        return health.last_seen if health else None

    async def answers(self, rec: BoxRecord) -> bool:
        """Whether the box runs a trivial command within the probe timeout."""
        timeout = self.settings.probe_timeout_s
        try:
            with anyio.fail_after(timeout):
                await self.exec(rec)("true", None, timeout)
        except (ForgeError, TimeoutError):
            return False
        return True

    async def call(self, rec: BoxRecord, call: OnboxCall, timeout: float = 30.0) -> bool:
        """Run a box-side script a provider capability asked for; whether it succeeded."""
        try:
            result = await onbox.run(self.exec(rec), call, timeout)
        except (ForgeError, TimeoutError):
            return False
        return result.exit_status == 0

    async def drop(self, name: str) -> None:
        """Close the box's pooled connection and its port forwards (it is being burned, or has gone)."""
        await self.forwards.close_box(name)
        await self.pool.drop(name)

    async def forget(self, rec: BoxRecord) -> None:
        """A box has ended: drop its keys and what this process remembered of its health."""
        self._keys.pop(rec.key_id, None)
        self._health.pop(rec.name, None)
        await anyio.to_thread.run_sync(delete_box_keys, self.settings.keys_dir, rec.key_id)
