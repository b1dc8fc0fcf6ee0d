"""Whether the box's own disk is full where a write failed: one ``df`` on the box, asked only after a failure
(a write tool's error, a job that ended non-zero), so that the answer says "no space left on … (path)" and
what to free instead of a bare ``Failure`` or an exit code."""

from __future__ import annotations

import shlex

from server.errors import ForgeError
from server.service.access import BoxAccess
from server.store import BoxRecord

FULL_BELOW_KIB = 64  # a filesystem with less free than this is full for any write that matters
DF_TIMEOUT_S = 10.0


async def box_disk_full(access: BoxAccess, rec: BoxRecord, path: str) -> str | None:
    """"no space left on the box's disk …" naming ``path``'s filesystem, or None (room left, or unknown). Over an
    SSH exec session: a control channel captures output in files, which a full disk cannot hold."""
    where = path if path.startswith("/") else "$HOME/" + shlex.quote(path.removeprefix("~/"))
    quoted = shlex.quote(path) if path.startswith("/") else where
    script = f"p={quoted}; while [ ! -e \"$p\" ] && [ \"$p\" != / ]; do p=$(dirname \"$p\"); done; df -Pk \"$p\""
    try:
        result = await access.pool.run(access.target(rec), script, timeout=DF_TIMEOUT_S)
    except (ForgeError, TimeoutError):
        return None
    lines = result.stdout.decode(errors="replace").strip().splitlines()
    fields = lines[-1].split() if result.exit_status == 0 and len(lines) >= 2 else []
    if len(fields) < 6 or not fields[3].isdigit() or int(fields[3]) >= FULL_BELOW_KIB:
        return None
    return (f"no space left on the box's disk ({fields[5]}, holding {path}, has {fields[3]} KiB free of "
            f"{fields[1]} KiB): free space on the box (remove files it no longer needs, e.g. the biggest under "
            "`du -xsh ~/* /tmp/* | sort -h`), then retry")
