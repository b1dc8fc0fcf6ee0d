"""Issue 17's figures (fan-out at the speed of SSH): each target as a ratio to a raw floor measured in
the same run, on the default box (an isolated local box where the machine allows it).

Contenders are measured in interleaved rounds (every contender once per round), so that load that comes
and goes on a shared machine falls on all of them alike. Box-side CPU is the CPU time of the box's
processes (its cgroup's, reaped children included), not the machine's. Peers (npm ssh-mcp,
mcp-ssh-manager) are not measured here (see docs/performance.md)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import asyncssh

from providers.local.servers import find_sshd
from server.ssh import SSHPool
from tests.benchmarks.figures import Sizes, box_target, call, child_rss_kib, destroy, mcp_client
from tests.benchmarks.report import Figure, Report, Sample, fmt_ms
from tests.support import REPO_ROOT, boxforge_cmd, cli_env, local_boxes_dir, make_settings

CGROUP_PIDS = Path("/sys/fs/cgroup/pids/boxforge-local")


def box_cpu_s(box_id: str) -> float | None:
    """CPU seconds of the box's live processes and of the children they reaped (None: no cgroup here)."""
    procs = CGROUP_PIDS / box_id / "cgroup.procs"
    if not procs.exists():
        procs = Path("/sys/fs/cgroup/boxforge-local") / box_id / "cgroup.procs"
    try:
        pids = procs.read_text().split()
    except OSError:
        return None
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


async def interleaved(rounds: int, per_round: int,
                      contenders: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, list[float]]:
    """Each contender ``per_round`` times per round, contenders taking turns; one warm-up call each."""
    for fn in contenders.values():
        await fn()
    values: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            for _ in range(per_round):
                started = time.perf_counter()
                await fn()
                values[name].append(time.perf_counter() - started)
    return values


async def cpu_per_call(box_id: str, n: int, fn: Callable[[], Awaitable[Any]]) -> float | None:
    """Box-side CPU seconds per call of ``fn``, over ``n`` calls."""
    before = box_cpu_s(box_id)
    for _ in range(n):
        await fn()
    after = box_cpu_s(box_id)
    return None if before is None or after is None else (after - before) / n


def ratio_figure(number: int, name: str, target: float, sample: Sample, floor: Sample, why: str,
                 floor_name: str) -> Figure:
    ratio = sample.median_ms / floor.median_ms
    return Figure(number, name, f"≤ {target:g}× {floor_name}",
                  f"{fmt_ms(sample.median_ms)} = {ratio:.1f}× {fmt_ms(floor.median_ms)}", ratio <= target, why=why)


async def measure_fanout(home: Path, sizes: Sizes, report: Report) -> None:
    settings = make_settings(home)  # the default local box (isolated where this machine allows)
    pool = SSHPool()
    rounds, per_round = sizes.fanout_rounds, sizes.fanout_calls
    try:
        async with mcp_client(settings) as client:
            hot = await call(client, "create_server", name="hot", ttl="30m")
            (box_dir,) = [d for d in local_boxes_dir(settings).iterdir() if d.is_dir()]
            kind = "isolated" if "@10.231." in hot["address"] else "unisolated"
            report.notes.append(f"issue 17's boxes: {kind} local boxes (the default local box of this machine; "
                                f"the first at {hot['address']})")
            names = [f"fan-{i}" for i in range(1, sizes.fanout_boxes)]
            async with anyio.create_task_group() as tg:
                for name in names:
                    tg.start_soon(lambda n=name: call(client, "create_server", name=n, ttl="30m"))
            names = ["hot", *names]
            by_name = {s["name"]: s for s in (await call(client, "list_servers"))["servers"]}
            targets = [box_target(settings, by_name[name]) for name in names]
            conns = [await pool.connection(t) for t in targets]
            hot_conn = conns[0]
            finished = (await call(client, "vm_bash", server="hot", command="true", background=True))["job_id"]
            await call(client, "vm_job_status", job_id=finished, wait_s=30)

            async def raw() -> None:
                await hot_conn.run("true")

            async def bash() -> None:
                result = await call(client, "vm_bash", server="hot", command="true")
                assert result["exit_code"] == 0, result

            async def finished_status() -> None:
                await call(client, "vm_job_status", job_id=finished)

            async def background_long_poll() -> None:
                job = (await call(client, "vm_bash", server="hot", command="true", background=True))["job_id"]
                while (await call(client, "vm_job_status", job_id=job, wait_s=10))["state"] == "running":
                    pass

            async def raw_gather() -> None:
                await asyncio.gather(*(c.run("echo hi") for c in conns))

            async def fan_out() -> None:
                async with anyio.create_task_group() as tg:
                    for name in names:
                        tg.start_soon(lambda n=name: call(client, "vm_bash", server=n, command="echo hi"))

            values = await interleaved(rounds, per_round, {
                "raw": raw, "bash": bash, "finished": finished_status, "long_poll": background_long_poll,
                "gather": raw_gather, "fan_out": fan_out})
            floor = report.add(Sample("asyncssh conn.run('true') on an open connection (issue 17 floor)",
                                      tuple(values["raw"])))
            fg = report.add(Sample("vm_bash('true') in the foreground (MCP, one round trip)", tuple(values["bash"])))
            fin = report.add(Sample("vm_job_status of a finished job (MCP)", tuple(values["finished"])))
            lp = report.add(Sample("vm_bash background + vm_job_status(wait_s=10) to the result (MCP)",
                                   tuple(values["long_poll"])))
            gather = report.add(Sample(f"asyncssh gather of conn.run('echo hi') on {len(conns)} open connections",
                                       tuple(values["gather"])))
            fan = report.add(Sample(f"{len(names)} concurrent vm_bash('echo hi') on {len(names)} boxes, one session",
                                    tuple(values["fan_out"])))
            n_cpu = max(per_round * rounds, 10)
            cpu_fg = await cpu_per_call(box_dir.name, n_cpu, bash)
            cpu_raw = await cpu_per_call(box_dir.name, n_cpu, raw)
            orch = await orchestrator_cpu(n_cpu, bash, raw)
            async with anyio.create_task_group() as tg:
                for name in names:
                    tg.start_soon(destroy, client, name)
        profile = (f"per call the box spends {fmt_cpu(cpu_fg)} of CPU (conn.run: {fmt_cpu(cpu_raw)}) and this "
                   f"process {orch[0] * 1000:.1f} ms (conn.run: {orch[1] * 1000:.1f} ms)")
        report.figures.append(ratio_figure(
            8, "issue 17: vm_bash('true') in the foreground through MCP", 2, fg, floor, floor_name="conn.run",
            why=("a foreground command is a detached job that survives the call, the connection and the "
                 "orchestrator: on the box the channel loop forks the call, mkdir makes the job dir, setsid "
                 "starts the wrapper (sh) in a session of its own, the wrapper takes its lock (flock) and "
                 "starts the command's shell, the call waits on that lock (flock): 6 program starts where "
                 f"conn.run starts one shell; then MCP, validation and 4 store writes here; {profile}")))
        report.figures.append(ratio_figure(
            9, "issue 17: vm_job_status of a finished job", 1.3, fin, floor, floor_name="conn.run",
            why=("one channel round trip (the loop's fork, builtins only on the box) plus MCP: in-memory "
                 "transport, pydantic validation of the call and of its structured result, and a store read "
                 "and a write in worker threads")))
        report.figures.append(ratio_figure(
            10, "issue 17: background + long-poll to the result", 2.5, lp, floor, floor_name="conn.run",
            why=("two MCP calls and two channel round trips: the launch (mkdir, setsid, the wrapper's sh and "
                 "flock, the command's shell) and the long-poll's flock wait")))
        fan_ratio = fan.median_ms / gather.median_ms
        report.figures.append(Figure(
            11, f"issue 17: {len(names)} concurrent vm_bash on {len(names)} boxes, one session",
            "≤ 2× the asyncssh gather (peers: not measured in this benchmark)",
            f"{fmt_ms(fan.median_ms)} = {fan_ratio:.1f}× {fmt_ms(gather.median_ms)}", fan_ratio <= 2,
            why=(f"CPU-bound on {os.cpu_count()} cores: {len(names)} foreground jobs' program starts on the boxes "
                 f"({fmt_cpu(cpu_fg)} each) plus the orchestrator's {orch[0] * 1000:.1f} ms per call in one "
                 "Python process, against one shell start per box for the gather")))
        cpu_ok = cpu_fg is not None and cpu_fg <= 0.006
        report.figures.append(Figure(
            12, "issue 17: box-side CPU per foreground command", "≤ 6 ms",
            f"{fmt_cpu(cpu_fg)} (conn.run: {fmt_cpu(cpu_raw)})", cpu_ok,
            why=("six program starts (mkdir, setsid, sh for the wrapper, flock twice, the command's shell) and "
                 "five forks of the channel loop, the call and the wrapper; sshd's share of the channel traffic; "
                 "every exec costs ~0.5–1 ms of CPU here (dynamic loading), more under load")))
    finally:
        await pool.aclose()
    await measure_creates(home, sizes, report)
    await measure_cli_and_rss(home, sizes, report)


def fmt_cpu(seconds: float | None) -> str:
    return "n/a (no box cgroup)" if seconds is None else f"{seconds * 1000:.1f} ms"


async def orchestrator_cpu(n: int, fn: Callable[[], Awaitable[Any]],
                           floor: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """This process's CPU seconds per call of ``fn`` and of ``floor`` (threads included)."""
    out = []
    for each in (fn, floor):
        before = sum(os.times()[:2])
        for _ in range(n):
            await each()
        out.append((sum(os.times()[:2]) - before) / n)
    return out[0], out[1]


# create to first command, against hand-started sshds ---------------------------------------


async def hand_sshd_to_true(scratch: Path, sshd: str) -> float:
    """Seconds from spawning a fresh sshd on a loopback port to the first ``true`` over SSH."""
    host = asyncssh.generate_private_key("ssh-ed25519")
    client = asyncssh.generate_private_key("ssh-ed25519")
    d = Path(tempfile.mkdtemp(dir=scratch))
    (d / "host").write_bytes(host.export_private_key())
    (d / "host").chmod(0o600)
    (d / "auth").write_bytes(client.export_public_key())
    port = _free_port()
    config = (f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nAuthorizedKeysFile {d / 'auth'}\n"
              f"PidFile none\nUsePAM no\nStrictModes no\nPermitRootLogin yes\nPasswordAuthentication no\n"
              f"KbdInteractiveAuthentication no\n")
    (d / "config").write_text(config)
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(sshd, "-D", "-e", "-f", str(d / "config"),
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = await asyncssh.connect("127.0.0.1", port, username=_user(), client_keys=[client],
                                              known_hosts=None, agent_path=None, config=None)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.005)  # polls the port: the floor's own readiness check
        async with conn:
            await conn.run("true", check=True)
        return time.perf_counter() - started
    finally:
        proc.terminate()
        await proc.wait()


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def measure_creates(home: Path, sizes: Sizes, report: Report) -> None:
    sshd = find_sshd()
    if sshd is None:
        report.notes.append("issue 17: no OpenSSH sshd: the create figures were not measured")
        return
    scratch = Path(tempfile.mkdtemp(prefix="bf-hand-sshd-"))
    settings = make_settings(home / "creates")
    try:
        async with mcp_client(settings) as client:
            async def forge(name: str) -> float:
                started = time.perf_counter()
                await call(client, "create_server", name=name, ttl="30m")
                await call(client, "vm_bash", server=name, command="true")
                took = time.perf_counter() - started
                await destroy(client, name)
                return took

            await forge("warm")
            singles, floors, bursts, floor_bursts = [], [], [], []
            for i in range(sizes.fanout_creates):
                singles.append(await forge(f"c{i}"))
                floors.append(await hand_sshd_to_true(scratch, sshd))
            for r in range(sizes.fanout_create_rounds):
                started = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for i in range(sizes.fanout_burst):
                        tg.start_soon(forge, f"b{r}-{i}")
                bursts.append(time.perf_counter() - started)
                started = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for _ in range(sizes.fanout_burst):
                        tg.start_soon(hand_sshd_to_true, scratch, sshd)
                floor_bursts.append(time.perf_counter() - started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    one = report.add(Sample("create_server (default local box) + first vm_bash('true')", tuple(singles)))
    floor = report.add(Sample("hand-started sshd on loopback to the first `true`", tuple(floors)))
    k = sizes.fanout_burst
    five = report.add(Sample(f"{k} creates at once (wall, each + first vm_bash)", tuple(bursts)))
    five_floor = report.add(Sample(f"{k} hand-started sshds at once (wall, each to its first `true`)",
                                   tuple(floor_bursts)))
    why = ("an isolated box also starts its isolation (a Python supervisor, a netns with a veth and its rules, "
           "a cgroup, an overlay, bwrap) before its sshd, and boxforge then connects, probes, writes the box's "
           "files and runs the bootstrap job; the floor starts only an sshd")
    report.figures.append(ratio_figure(13, "issue 17: local create to first command", 1.5, one, floor,
                                       floor_name="a hand-started sshd", why=why))
    report.figures.append(ratio_figure(14, f"issue 17: {k} creates at once", 2, five, five_floor,
                                       floor_name=f"{k} hand-started sshds", why=why))


# the CLI's start and the MCP server's memory ------------------------------------------------


async def measure_cli_and_rss(home: Path, sizes: Sizes, report: Report) -> None:
    settings = make_settings(home / "cli")
    env = cli_env(settings)
    cmd = boxforge_cmd()

    def wall(argv: list[str]) -> float:
        started = time.perf_counter()
        subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, check=True, timeout=120)
        return time.perf_counter() - started

    ls = [await anyio.to_thread.run_sync(wall, [*cmd, "ls", "--json"]) for _ in range(sizes.fanout_cli)]
    bare = [await anyio.to_thread.run_sync(wall, [sys.executable, "-c", "pass"]) for _ in range(sizes.fanout_cli)]
    imports = [await anyio.to_thread.run_sync(wall, [sys.executable, "-c", "import server.cli.main"])
               for _ in range(sizes.fanout_cli)]
    ls_s = report.add(Sample("`boxforge ls --json` (a new process, empty state dir)", tuple(ls)))
    bare_s = report.add(Sample("`python -c pass` (the interpreter's own start)", tuple(bare)))
    imp_s = report.add(Sample("`python -c 'import server.cli.main'`", tuple(imports)))
    sdk = await anyio.to_thread.run_sync(_rss_after_import, "mcp.server")
    report.figures.append(Figure(
        15, "issue 17: `boxforge ls --json` (CLI start)", "≤ 150 ms", fmt_ms(ls_s.median_ms), ls_s.median_ms <= 150,
        why=(f"the interpreter starts in {fmt_ms(bare_s.median_ms)}; importing the CLI takes "
             f"{fmt_ms(imp_s.median_ms - bare_s.median_ms)} more, most of it pydantic building the models of "
             "server.schemas, server.plans.model and providers.base at import (asyncssh, mcp, hcloud, docker "
             "and kubernetes_asyncio are no longer imported)")))
    params_cmd = [*cmd, "mcp"]
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=params_cmd[0], args=params_cmd[1:], env=env, cwd=str(home))
    async with Client(params) as client:
        await client.list_tools()
        idle, _ = child_rss_kib("mcp")
    report.figures.append(Figure(
        16, "issue 17: `boxforge mcp` idle RSS", "≤ 60 MiB", f"{idle / 1024:.1f} MiB", idle / 1024 <= 60,
        why=(f"`import mcp.server` alone (the interpreter and the MCP SDK 2.x with its pydantic types) holds "
             f"{sdk:.1f} MiB here: the floor is above the target; boxforge's own modules (schemas, service, "
             "store, tools) add the rest. asyncssh, hcloud and requests are loaded on first use")))


def _rss_after_import(module: str) -> float:
    probe = f"import {module}\nfor l in open('/proc/self/status'):\n    l.startswith('VmRSS') and print(l.split()[1])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return int(out.stdout.split()[0]) / 1024

