"""Issue 15's figures: ports, forks and warm pools, on real local boxes (and the Hetzner fake).

- forward overhead: a small HTTP GET through ``vm_forward``'s forward against the same GET straight to the
  box's address (the same server on the box), a new connection per request, median of N (target: <= 1 ms
  more);
- a local fork of a box whose checkout holds ~200 MB: the copy of its upper dir, and fork_server end to end
  (target: <= 1 s);
- create from a warm local pool to the first command's answer, against a cold create (target: <= 50 ms);
- against the Hetzner fake with a boot delay: a warm create against a cold one (the boot wait skipped).

``python -m tests.benchmarks.ports [--requests N] [--mb N] [--creates N]``; figures go to
docs/performance.md by hand, with the load average printed here. Never a timed assertion."""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from providers.local import fork as fork_copy
from providers.local.boxdir import current_user
from server.config import load_settings
from server.service import open_fleet
from tests.support import eventually, make_repo, make_settings

BOX_PORT = 8801  # python3 -m http.server: headers and body in two writes
ONE_WRITE_PORT = 8802  # a server answering in one write (no Nagle wait behind the first segment)
ONE_WRITE_SERVER = (
    "import asyncio\n"
    "async def h(r, w):\n"
    "    while await r.readuntil(b'\\r\\n\\r\\n'):\n"
    "        w.write(b'HTTP/1.1 200 OK\\r\\nContent-Length: 3\\r\\nConnection: close\\r\\n\\r\\nhi\\n')\n"
    "        await w.drain(); w.close(); return\n"
    "async def main():\n"
    f"    s = await asyncio.start_server(h, '0.0.0.0', {ONE_WRITE_PORT})\n"
    "    await s.serve_forever()\n"
    "asyncio.run(main())\n")


def _get(host: str, port: int) -> float:
    started = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/")
    body = conn.getresponse().read()
    conn.close()
    assert body
    return time.perf_counter() - started


def _median_ms(host: str, port: int, n: int) -> float:
    for _ in range(5):  # warm up both paths alike
        _get(host, port)
    return statistics.median(_get(host, port) for _ in range(n)) * 1000


async def forward_overhead(home: Path, n: int) -> dict[str, Any]:
    async with open_fleet(make_settings(home / "state")) as fleet:
        info = await fleet.create_server("fwd", ttl_s=1800)
        await fleet.run("fwd", f"echo hi > index.html; exec python3 -m http.server --bind 0.0.0.0 {BOX_PORT} "
                               "> /dev/null 2>&1", background=True)
        await fleet.write_file("fwd", "one.py", ONE_WRITE_SERVER)
        await fleet.run("fwd", "exec python3 one.py > one.log 2>&1", background=True)
        rec = await fleet.repo.live_box("fwd")
        assert rec is not None and rec.host
        figures: dict[str, Any] = {"requests": n, "address": info.address}
        for label, port in (("http.server", BOX_PORT), ("one-write", ONE_WRITE_PORT)):
            fwd = await eventually(lambda port=port: _try_forward(fleet, port), timeout=30, what="the box's server")
            via = await anyio.to_thread.run_sync(_median_ms, "127.0.0.1", fwd.local_port, n)
            direct = await anyio.to_thread.run_sync(_median_ms, rec.host, port, n)
            figures[label] = {"forward_ms": round(via, 2), "direct_ms": round(direct, 2),
                              "overhead_ms": round(via - direct, 2)}
        await fleet.destroy_server("fwd", harvest=False)
    return figures


async def _try_forward(fleet: Any, port: int) -> Any:
    try:
        return await fleet.forward("fwd", port)
    except Exception:  # noqa: BLE001 - nothing listening yet: poll again
        return None


async def local_fork(home: Path, mb: int) -> dict[str, Any]:
    repo = make_repo(home / "repo")
    copies: list[float] = []
    copy_isolated = fork_copy.copy_isolated

    def timed_copy(source_dir: Path, fork_dir: Path) -> None:
        started = time.perf_counter()
        copy_isolated(source_dir, fork_dir)
        copies.append(time.perf_counter() - started)

    fork_copy.copy_isolated = timed_copy  # type: ignore[assignment]
    try:
        async with open_fleet(make_settings(home / "state")) as fleet:
            await fleet.create_server("big", repo=str(repo), ttl_s=1800)
            files = max(1, mb)  # 1 MiB files in a tree, as a checkout with build output would have
            made = await fleet.run("big", f"mkdir -p build && for i in $(seq {files}); do "
                                          "head -c 1048576 /dev/urandom > build/f$i.bin; done; du -sm . | cut -f1",
                                   timeout_s=300)
            size_mb = int(made.stdout.strip())
            started = time.perf_counter()
            result = await fleet.fork_server("big", ["big-fork"])
            total = time.perf_counter() - started
            assert not result.failed, result.failed
            counted = await fleet.run("big-fork", "du -sm . | cut -f1")
            for name in ("big-fork", "big"):
                await fleet.destroy_server(name, harvest=False)
    finally:
        fork_copy.copy_isolated = copy_isolated  # type: ignore[assignment]
    return {"checkout_mb": size_mb, "fork_checkout_mb": int(counted.stdout.strip()), "copy_s": copies[0],
            "fork_server_s": total}


async def warm_creates(home: Path, creates: int) -> dict[str, Any]:
    repo = make_repo(home / "repo")
    settings = make_settings(home / "state", config=f"[pool.plain]\ncount = {creates}\nttl = \"1h\"\n")
    warm: list[float] = []
    cold: list[float] = []
    async with open_fleet(settings) as fleet:
        await fleet.fill_pools()
        for i in range(creates):
            started = time.perf_counter()
            info = await fleet.create_server(f"warm{i}", repo=str(repo), ttl_s=1800)
            await fleet.run(f"warm{i}", "true")
            warm.append(time.perf_counter() - started)
            assert info.from_pool == "plain"
        for i in range(max(1, creates // 2)):
            started = time.perf_counter()
            info = await fleet.create_server(f"cold{i}", repo=str(repo), ttl_s=1800)
            await fleet.run(f"cold{i}", "true")
            cold.append(time.perf_counter() - started)
            assert info.from_pool is None
        for rec in await fleet.repo.live_boxes():
            await fleet.destroy_server(rec.name, harvest=False)
    return {"warm_median_ms": statistics.median(warm) * 1000, "warm_ms": [round(w * 1000) for w in warm],
            "cold_median_ms": statistics.median(cold) * 1000}


async def hetzner_warm(home: Path, boot_delay_s: float) -> dict[str, Any]:
    from tests.fakes.hetzner_api import running_fake

    repo = make_repo(home / "repo")
    with running_fake(home / "fake-boxes") as fake:
        (home / "config.toml").write_text('[pool.hz]\ncount = 1\nprovider = "hetzner"\ncloud = true\n'
                                          'max_cost_per_hour = 1.0\nttl = "1h"\n')
        settings = load_settings({
            "BOXFORGE_HOME": str(home / "state"), "BOXFORGE_OWNER": "obench" + secrets.token_hex(3),
            "BOXFORGE_CONFIG": str(home / "config.toml"), "HCLOUD_TOKEN": fake.token, "HCLOUD_ENDPOINT": fake.url,
            "BOXFORGE_HETZNER_SSH_USER": current_user(), "BOXFORGE_HETZNER_SSH_PORT": str(fake.ssh_port),
            "BOXFORGE_PROVIDER": "hetzner"})
        fake.faults.boot_delay_s = boot_delay_s
        async with open_fleet(settings) as fleet:
            status = (await fleet.pool_status()).profiles[0]
            assert status.off is None, status.off
            started = time.perf_counter()
            await fleet.fill_pools()
            fill = time.perf_counter() - started
            started = time.perf_counter()
            info = await fleet.create_server("hz-warm", repo=str(repo), ttl_s=1800)
            warm = time.perf_counter() - started
            assert info.from_pool == "hz"
            started = time.perf_counter()
            await fleet.create_server("hz-cold", repo=str(repo), ttl_s=1800)
            cold = time.perf_counter() - started
            for rec in await fleet.repo.live_boxes():
                await fleet.destroy_server(rec.name, harvest=False)
    return {"boot_delay_s": boot_delay_s, "pool_fill_s": fill, "warm_create_s": warm, "cold_create_s": cold}


async def main_async(args: argparse.Namespace) -> None:
    print(f"load average before: {os.getloadavg()}")
    for title, run in (("forward", lambda h: forward_overhead(h, args.requests)),
                       ("fork", lambda h: local_fork(h, args.mb)),
                       ("warm local", lambda h: warm_creates(h, args.creates)),
                       ("warm hetzner fake", lambda h: hetzner_warm(h, args.boot_delay))):
        home = Path(tempfile.mkdtemp(prefix="boxforge-bench-"))
        try:
            print(title, await run(home), f"load {os.getloadavg()[0]:.2f}", flush=True)
        finally:
            shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.ports", description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--creates", type=int, default=6)
    parser.add_argument("--boot-delay", type=float, default=3.0)
    anyio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
