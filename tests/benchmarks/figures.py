"""The measurements behind each target of the performance issue, on local OpenSSH boxes.

Each ``measure_*`` function takes a fresh state dir and the run's sizes, and adds its samples and
its figure to the report. Everything goes through the real MCP client (in memory, or ``boxforge
mcp`` over stdio for the memory figure), as an agent would call the tools.
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from providers.base import LABEL_NAME
from providers.local.boxdir import current_user
from providers.probe import probe_ssh
from server import jobs
from server.config import Settings, load_settings
from server.keys import load_box_keys
from server.mcp.app import build_server
from server.ssh import ExecResult, SSHPool, SSHTarget
from tests.benchmarks.report import Figure, Report, Sample, fmt_ms
from tests.support import boxforge_cmd, cli_env, make_settings


@dataclass(frozen=True)
class Sizes:
    """How much to measure: the figures of record, or a quick run that only proves the code works."""

    iterations: int = 30
    creates: int = 30
    creates_at_once: int = 10
    burst_rounds: int = 10
    load_boxes: int = 20
    load_jobs_per_box: int = 10
    memory_boxes: int = 50
    memory_jobs: int = 500
    hetzner_creates: int = 30
    fanout_boxes: int = 10
    fanout_rounds: int = 5
    fanout_calls: int = 6  # per contender and round: 30 in all
    fanout_creates: int = 5
    fanout_create_rounds: int = 3
    fanout_burst: int = 5
    fanout_cli: int = 5

    @classmethod
    def quick(cls) -> Sizes:
        return cls(iterations=3, creates=2, creates_at_once=2, burst_rounds=1, load_boxes=2, load_jobs_per_box=2,
                   memory_boxes=2, memory_jobs=4, hetzner_creates=1, fanout_boxes=2, fanout_rounds=1,
                   fanout_calls=1, fanout_creates=1, fanout_create_rounds=1, fanout_burst=2, fanout_cli=1)


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    if result.is_error:
        text = result.content[0].text if result.content else str(result)
        raise RuntimeError(f"{tool} failed: {text}")
    assert result.structured_content is not None
    return result.structured_content


async def destroy(client: Client, name: str) -> None:
    await call(client, "destroy_server", name=name)


async def timed(n: int, fn: Callable[[], Awaitable[Any]], *, warmup: int = 2) -> tuple[float, ...]:
    for _ in range(warmup):
        await fn()
    values = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        values.append(time.perf_counter() - started)
    return tuple(values)


@asynccontextmanager
async def mcp_client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(settings)) as client:
        yield client


def busy_cpu_s() -> float:
    """Machine-wide CPU time spent so far outside idle and iowait (from /proc/stat), in seconds."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def box_target(settings: Settings, info: dict[str, Any]) -> SSHTarget:
    """The SSH target of a box created through MCP, from its address and its key files."""
    user, _, hostport = info["address"].partition("@")
    host, _, port = hostport.rpartition(":")
    (key_dir,) = settings.keys_dir.glob(f"{info['name']}-*")
    keys = load_box_keys(settings.keys_dir, key_dir.name)
    return SSHTarget(info["name"], host.strip("[]"), int(port), user, keys.client_key_path, keys.host_public)


def exec_only(pool: SSHPool, target: SSHTarget) -> jobs.BoxExec:
    """A BoxExec that opens a fresh SSH exec session for every call (the old transport)."""

    async def run(script: str, stdin: bytes | None = None, timeout: float | None = None) -> ExecResult:
        return await pool.run(target, script, stdin=stdin, timeout=timeout)

    return run


# 1 and 2 ------------------------------------------------------------------------------------


async def measure_status_and_bash(home: Path, sizes: Sizes, report: Report) -> None:
    settings = make_settings(home, local_sshd="openssh")
    pool = SSHPool()
    try:
        async with mcp_client(settings) as client:
            info = await call(client, "create_server", name="hot")
            target = box_target(settings, info)
            job = (await call(client, "vm_bash", server="hot", command="sleep 600", background=True))["job_id"]
            chatty = (await call(client, "vm_bash", server="hot", background=True,
                                 command="head -c 4096 /dev/zero | tr '\\0' x; sleep 600"))["job_id"]
            n = sizes.iterations

            poll = report.add(Sample("vm_job_status poll of a running job (MCP, in memory)", await timed(
                n, lambda: call(client, "vm_job_status", job_id=job))))
            report.add(Sample("vm_job_status reading 4 KiB of new output (MCP)", await timed(
                n, lambda: call(client, "vm_job_status", job_id=chatty))))
            channel = jobs.box_exec(pool, target)
            over_channel = report.add(Sample("the same status over a control channel (jobs.status, no MCP)",
                                             await timed(n, lambda: jobs.status(channel, job))))
            fresh = exec_only(pool, target)
            exec_status = report.add(Sample("the same status with a fresh exec on a pooled connection", await timed(
                n, lambda: jobs.status(fresh, job))))
            report.add(Sample("4 KiB of new output with a fresh exec on a pooled connection", await timed(
                n, lambda: jobs.status(fresh, chatty))))
            bash = report.add(Sample("vm_bash('true') in the foreground (MCP)", await timed(
                n, lambda: call(client, "vm_bash", server="hot", command="true"))))
            conn = await pool.connection(target)
            raw = report.add(Sample("asyncssh conn.run('true') on a pooled connection", await timed(
                n, lambda: conn.run("true"))))

            speedup = exec_status.median_ms / poll.median_ms
            report.figures.append(Figure(
                1, "vm_job_status poll through MCP", "≤ 10 ms, and ≥ 10× faster than a fresh exec",
                f"{fmt_ms(poll.median_ms)}; {speedup:.1f}× faster than exec ({fmt_ms(exec_status.median_ms)})",
                poll.median_ms <= 10 and speedup >= 10,
                why=("the ratio assumed an exec costing ~100 ms; here a whole `true` over a new session on an open "
                     f"OpenSSH connection takes {fmt_ms(raw.median_ms)} (root sshd without PAM, on loopback), and "
                     "the status script no longer starts any program for a quiet job, so the same read over a "
                     f"fresh exec takes only {fmt_ms(exec_status.median_ms)}. Over the channel it takes "
                     f"{fmt_ms(over_channel.median_ms)} (round trip, two forks on the box) and MCP adds "
                     f"{fmt_ms(poll.median_ms - over_channel.median_ms)} (in-memory transport, validation, one store "
                     f"read in a worker thread): 10× would need the whole poll under "
                     f"{fmt_ms(exec_status.median_ms / 10)}"),
            ))
            cli = await ssh_control_master_sample(target, n)
            measured = f"{fmt_ms(bash.median_ms)} = {bash.median_ms / raw.median_ms:.1f}× conn.run"
            if cli is not None:
                report.add(cli)
                measured += f", {bash.median_ms / cli.median_ms:.1f}× ssh ControlMaster ({fmt_ms(cli.median_ms)})"
            else:
                report.notes.append("the ssh client is not installed: no ControlMaster comparison")
            report.figures.append(Figure(
                2, "foreground vm_bash('true') through MCP", "≤ 1.2× asyncssh conn.run('true')", measured,
                bash.median_ms <= 1.2 * raw.median_ms,
                why=("a foreground command is a detached job the call starts and waits on in one round trip, so "
                     "that it survives the call, the connection and the orchestrator (the job protocol's guarantee): "
                     "mkdir, setsid, the wrapper's sh and flock, the command's shell and the wait's flock are six "
                     "program starts on the box at ~1 ms each on this machine, where conn.run('true') starts one "
                     "shell"),
            ))
            await call(client, "vm_job_cancel", job_id=job, signal="KILL")
            await call(client, "vm_job_cancel", job_id=chatty, signal="KILL")
            await call(client, "destroy_server", name="hot")
    finally:
        await pool.aclose()


async def ssh_control_master_sample(target: SSHTarget, n: int) -> Sample | None:
    """``ssh true`` through an OpenSSH ControlMaster that holds the connection to the box."""
    ssh = shutil.which("ssh")
    if ssh is None:
        return None
    scratch = Path(tempfile.mkdtemp(prefix="bf-cm-"))  # short: a control socket path is limited to ~100 bytes
    known_hosts = scratch / "known_hosts"
    host = target.host if target.port == 22 else f"[{target.host}]:{target.port}"  # OpenSSH's known_hosts form
    known_hosts.write_text(f"{host} {target.host_public_key}\n")
    socket_path = scratch / "cm"
    base = [ssh, "-F", "/dev/null", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", f"ControlPath={socket_path}", "-p", str(target.port),
            "-l", target.user]
    master = [*base, "-o", "IdentitiesOnly=yes", "-i", str(target.client_key_path), "-o", "ControlMaster=yes",
              "-o", "ControlPersist=300", "-fN", target.host]
    try:
        await anyio.run_process(master)

        async def one() -> None:
            await anyio.run_process([*base, target.host, "true"])

        return Sample("ssh CLI `ssh -S <ControlMaster socket> true`", await timed(n, one))
    finally:
        await anyio.run_process([*base, "-O", "exit", target.host], check=False)
        shutil.rmtree(scratch, ignore_errors=True)


# 3 -----------------------------------------------------------------------------------------


async def measure_create(home: Path, sizes: Sizes, report: Report) -> None:
    settings = make_settings(home, local_sshd="openssh")
    async with mcp_client(settings) as client:
        async def forge_and_answer(name: str) -> float:
            """Seconds from the create call to a box that has answered a vm_bash."""
            started = time.perf_counter()
            await call(client, "create_server", name=name, ttl="30m")
            await call(client, "vm_bash", server=name, command="true")
            return time.perf_counter() - started

        singles = []
        cpu_per_box = []
        for i in range(sizes.creates + 1):
            took = await forge_and_answer(f"one-{i}")
            await call(client, "destroy_server", name=f"one-{i}")
            if i:  # the first create warms up imports and the store
                singles.append(took)
        one = report.add(Sample("create_server (local, no repo) + first vm_bash('true'), one box", tuple(singles)))

        walls = []
        for round_ in range(sizes.burst_rounds):
            names = [f"b{round_}-{i}" for i in range(sizes.creates_at_once)]
            busy = busy_cpu_s()
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for name in names:
                    tg.start_soon(forge_and_answer, name)
            walls.append(time.perf_counter() - started)
            cpu_per_box.append((busy_cpu_s() - busy) / len(names))
            async with anyio.create_task_group() as tg:
                for name in names:
                    tg.start_soon(destroy, client, name)
        burst = report.add(Sample(f"{sizes.creates_at_once} boxes created at once (wall time, each + vm_bash)",
                                  tuple(walls)))
    ratio = burst.median_ms / one.median_ms
    cpu_ms = statistics.median(cpu_per_box) * 1000
    report.notes.append(f"creating a local box (and answering one vm_bash) cost {cpu_ms:.0f} ms of CPU time, "
                        f"machine-wide, during the bursts of {sizes.creates_at_once}")
    report.figures.append(Figure(
        3, "create_server on the local provider (no repo)",
        f"≤ 300 ms to a box that answers vm_bash; {sizes.creates_at_once} at once ≤ 2× one",
        f"{fmt_ms(one.median_ms)}; {sizes.creates_at_once} at once {fmt_ms(burst.median_ms)} = {ratio:.1f}×",
        one.median_ms <= 300 and ratio <= 2,
        why=(f"the burst is CPU-bound: a box costs ~{cpu_ms:.0f} ms of CPU (its Python supervisor's start; "
             "sshd's per-connection re-exec, key exchange and auth; the orchestrator's side of the handshake; "
             f"the bootstrap job's ~25 program starts), so {sizes.creates_at_once} boxes need "
             f"~{cpu_ms * sizes.creates_at_once / 1000:.1f} s of CPU, ≥ "
             f"{cpu_ms * sizes.creates_at_once / 1000 / (os.cpu_count() or 1):.1f} s of wall time on "
             f"{os.cpu_count()} CPUs"),
    ))


# 4 -----------------------------------------------------------------------------------------


async def measure_load(home: Path, sizes: Sizes, report: Report) -> None:
    settings = make_settings(home, local_sshd="openssh")
    boxes = [f"load-{i}" for i in range(sizes.load_boxes)]
    job_seconds = 1.0
    overheads: list[float] = []
    failures: list[str] = []
    async with mcp_client(settings) as client:
        limiter = anyio.CapacityLimiter(10)

        async def create(name: str) -> None:
            async with limiter:
                await call(client, "create_server", name=name, ttl="30m")

        async with anyio.create_task_group() as tg:
            for name in boxes:
                tg.start_soon(create, name)

        async def one(box: str, n: int) -> None:
            expected = f"{box}-job-{n}\n"
            try:
                started = time.perf_counter()
                job = await call(client, "vm_bash", server=box, background=True,
                                 command=f"sleep {job_seconds:g}; echo {box}-job-{n}")
                out, offset = "", 0
                while True:
                    st = await call(client, "vm_job_status", job_id=job["job_id"], stdout_offset=offset, wait_s=30)
                    out += st["stdout"]
                    offset = st["stdout_offset"]
                    if st["state"] != "running" and not st["more"]:
                        break
                done = time.perf_counter()
                if st["state"] != "succeeded" or out != expected:
                    failures.append(f"{box} job {n}: {st['state']} {out!r}")
                    return
                overheads.append(done - started - (st["duration_s"] or 0.0))
            except Exception as exc:  # a failure to count, not to stop the run
                failures.append(f"{box} job {n}: {exc}")

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for box in boxes:
                for n in range(sizes.load_jobs_per_box):
                    tg.start_soon(one, box, n)
        wall = time.perf_counter() - started
        async with anyio.create_task_group() as tg:
            for name in boxes:
                tg.start_soon(destroy, client, name)
    total = sizes.load_boxes * sizes.load_jobs_per_box
    latency = report.add(Sample(
        f"{total} background jobs at once: each one's launch call to its final status, minus its run time",
        tuple(overheads) or (float("nan"),)))
    amortized_ms = (wall - job_seconds) / total * 1000
    report.figures.append(Figure(
        4, f"{sizes.load_boxes} boxes × {sizes.load_jobs_per_box} background jobs, launched and polled to completion",
        "overhead per job reported; zero failures",
        f"{total} jobs of {job_seconds:g} s done in {wall:.2f} s: {fmt_ms(amortized_ms)} of orchestration per job "
        f"(wall minus one run, over {total}); each job's own wait beyond its run {fmt_ms(latency.median_ms)} median "
        f"(all {total} queue at once); {len(failures)} failures",
        not failures,
        why="failures: " + "; ".join(failures[:5]),
    ))


# 5 -----------------------------------------------------------------------------------------


async def measure_long_poll(home: Path, sizes: Sizes, report: Report) -> None:
    settings = make_settings(home, local_sshd="openssh")
    async with mcp_client(settings) as client:
        await call(client, "create_server", name="poll")
        lags = []
        for _ in range(sizes.iterations):
            job = await call(client, "vm_bash", server="poll", background=True, command="sleep 0.3; date +%s.%N")
            st = await call(client, "vm_job_status", job_id=job["job_id"], wait_s=10)
            answered = time.time()
            if st["state"] != "succeeded":
                raise RuntimeError(f"long-poll job ended {st['state']}")
            lags.append(answered - float(st["stdout"]))
        await call(client, "destroy_server", name="poll")
    lag = report.add(Sample("vm_job_status(wait_s=10): answer after the job's last command ended", tuple(lags)))
    report.figures.append(Figure(
        5, "long-poll answer after the job finishes", "≤ 50 ms", f"{fmt_ms(lag.median_ms)} (p90 {fmt_ms(lag.p90_ms)})",
        lag.median_ms <= 50,
        why="the wait is event driven (flock on the wrapper); what remains is the wrapper recording the exit",
    ))


# 6 -----------------------------------------------------------------------------------------


def child_rss_kib(marker: str) -> tuple[int, int]:
    """VmRSS and VmHWM (KiB) of this process's child whose command line contains ``marker``."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        if ppid == me and marker.encode() in cmdline:
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    raise RuntimeError("the boxforge mcp process was not found among this process's children")


async def measure_memory(home: Path, sizes: Sizes, report: Report) -> None:
    settings = make_settings(home, local_sshd="openssh")
    cmd = boxforge_cmd()
    params = StdioServerParameters(command=cmd[0], args=[*cmd[1:], "mcp"], env=cli_env(settings), cwd=str(home))
    boxes = [f"mem-{i}" for i in range(sizes.memory_boxes)]
    async with Client(params) as client:
        idle_rss, _ = child_rss_kib("mcp")
        limiter = anyio.CapacityLimiter(10)

        async def create(name: str) -> None:
            async with limiter:
                await call(client, "create_server", name=name, ttl="30m")

        async with anyio.create_task_group() as tg:
            for name in boxes:
                tg.start_soon(create, name)

        async def job(n: int) -> None:
            async with limiter:
                started = await call(client, "vm_bash", server=boxes[n % len(boxes)], command=f"echo {n}",
                                     background=True)
                await call(client, "vm_job_status", job_id=started["job_id"], wait_s=30)

        async with anyio.create_task_group() as tg:
            for n in range(sizes.memory_jobs):
                tg.start_soon(job, n)
        listed = await call(client, "vm_job_list")
        rss, peak = child_rss_kib("mcp")
        async with anyio.create_task_group() as tg:
            for name in boxes:
                tg.start_soon(destroy, client, name)
    report.notes.append(f"the MCP server process held {idle_rss / 1024:.0f} MB right after start, "
                        f"{rss / 1024:.0f} MB with {len(boxes)} boxes and {listed['count']} tracked jobs "
                        f"(peak {peak / 1024:.0f} MB)")
    report.figures.append(Figure(
        6, f"RSS of the MCP server with {len(boxes)} boxes and {listed['count']} tracked jobs", "≤ 150 MB",
        f"{rss / 1024:.0f} MB (peak {peak / 1024:.0f} MB)", rss / 1024 <= 150,
        why="the interpreter with mcp, pydantic, asyncssh and hcloud loaded, plus a connection per box",
    ))
    report.figures.append(Figure(
        17, f"issue 17: `boxforge mcp` RSS with {len(boxes)} boxes and {listed['count']} jobs", "≤ 100 MiB",
        f"{rss / 1024:.1f} MiB (idle {idle_rss / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB)", rss / 1024 <= 100,
        why=("the idle server (see 16) plus asyncssh once the first box connects (~8 MiB), an SSH connection "
             "with its channels per box, and the caches of jobs and output"),
    ))


# 7 -----------------------------------------------------------------------------------------


async def measure_hetzner(home: Path, sizes: Sizes, report: Report) -> None:
    try:
        from tests.fakes.hetzner_api import running_fake
    except ImportError as exc:
        report.notes.append(f"the Hetzner fake could not be imported ({exc}): figure 7 was not measured")
        report.figures.append(Figure(7, "Hetzner path against the fake, zero boot delay", "≤ 1 s after SSH accepts",
                                     "not measured", False, why=f"the fake API is not usable here ({exc})"))
        return
    lags: list[float] = []
    totals: list[float] = []
    with running_fake(home / "fake-boxes") as fake:
        fake.faults.boot_delay_s = 0.0
        running_at: dict[int, float] = {}
        finish = fake._finish

        def finish_and_note(action: dict[str, Any], error: dict[str, str] | None = None) -> None:
            if action.get("command") == "create_server" and error is None:
                for resource in action.get("resources", []):
                    running_at.setdefault(resource["id"], time.time())
            finish(action, error)

        fake._finish = finish_and_note  # type: ignore[method-assign]

        def named(name: str) -> Any:
            """The fake server of box ``name`` (the Hetzner server name carries a request suffix)."""
            found = fake.live_servers(**{LABEL_NAME: name})
            return found[0] if found else None

        settings = load_settings({
            "BOXFORGE_HOME": str(home / "state"), "BOXFORGE_OWNER": "obench" + secrets.token_hex(3),
            "BOXFORGE_CONFIG": str(home / "no-config.toml"), "HCLOUD_TOKEN": fake.token, "HCLOUD_ENDPOINT": fake.url,
            "BOXFORGE_HETZNER_SSH_USER": current_user(), "BOXFORGE_HETZNER_SSH_PORT": str(fake.ssh_port),
        })
        async with mcp_client(settings) as client:
            for i in range(sizes.hetzner_creates + 1):
                name = f"hz-{i}"
                accepts_at: list[float] = []

                async def watch_ssh(name: str = name, accepts_at: list[float] = accepts_at) -> None:
                    while True:
                        server = named(name)
                        if server is not None and server.ipv4 and await probe_ssh(server.ipv4, fake.ssh_port, 0.2):
                            accepts_at.append(time.time())
                            return
                        await anyio.sleep(0.005)

                started = time.time()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch_ssh)
                    await call(client, "create_server", name=name, ttl="30m")
                    ready = time.time()
                    tg.cancel_scope.cancel()
                server = named(name)
                running = running_at.get(server.id) if server is not None else None
                if i and running is not None and accepts_at:  # the first create warms up the client
                    lags.append(ready - max(running, accepts_at[0]))
                    totals.append(ready - started)
                await call(client, "destroy_server", name=name)
    lag = report.add(Sample("Hetzner (fake API, zero boot delay): ready after the API said running and SSH accepted",
                            tuple(lags)))
    report.add(Sample("Hetzner (fake API, zero boot delay): create_server from call to ready", tuple(totals)))
    report.figures.append(Figure(
        7, "Hetzner path against the fake, zero boot delay",
        "ready ≤ 1 s after the API says running and SSH accepts",
        f"{fmt_ms(lag.median_ms)} (p90 {fmt_ms(lag.p90_ms)})", lag.median_ms <= 1000,
        why=("between API polls (every hetzner_poll_interval_s, 2 s by default, well inside the API's rate limit) "
             "the provider probes the new server's SSH every 0.5 s; after the first banner it asks the API, "
             "connects and runs the bootstrap job"),
    ))


def ensure_openssh() -> None:
    if not os.access("/usr/sbin/sshd", os.X_OK) and shutil.which("sshd") is None:
        raise SystemExit("the benchmarks run on local OpenSSH boxes: install openssh-server (sshd)")
    if shutil.which("ssh") is None:
        print("note: no ssh client; the ControlMaster comparison is skipped")


# Docker beside local -------------------------------------------------------------------------


async def _beside(providers: dict[str, Settings], sizes: Sizes, report: Report, run: str,
                  short: Callable[[str], str]) -> dict[str, tuple[float, float]]:
    """Per provider, in one run: create_server + first vm_bash (the first create warms up imports, the image
    or the API client, and is not counted), then a foreground vm_bash; (create, vm_bash) medians in ms."""
    medians: dict[str, tuple[float, float]] = {}
    for name, settings in providers.items():
        async with mcp_client(settings) as client:
            creates = []
            for i in range(sizes.creates + 1):
                box = f"{short(name)}-{i}"
                started = time.perf_counter()
                await call(client, "create_server", name=box, ttl="30m")
                await call(client, "vm_bash", server=box, command="true")
                took = time.perf_counter() - started
                await destroy(client, box)
                if i:
                    creates.append(took)
            create = report.add(Sample(f"create_server ({name}, no repo) + first vm_bash('true'), {run}",
                                       tuple(creates)))
            hot = f"{short(name)}-hot"
            await call(client, "create_server", name=hot, ttl="30m")
            bash = report.add(Sample(f"vm_bash('true') in the foreground on a {name} box (MCP), {run}", await timed(
                sizes.iterations, lambda hot=hot: call(client, "vm_bash", server=hot, command="true"))))
            await destroy(client, hot)
            medians[name] = (create.median_ms, bash.median_ms)
    return medians


async def measure_docker(home: Path, sizes: Sizes, report: Report) -> None:
    """create_server + first vm_bash, and a foreground vm_bash, on Docker and on local boxes in the same run."""
    from providers.docker import DockerProvider, DockerSettings

    docker_env = {k: os.environ[k] for k in ("DOCKER_HOST", "BOXFORGE_IMAGE_CACHE") if os.environ.get(k)}
    if not DockerProvider.configured(DockerSettings.load(docker_env, {}, "docker")):
        report.notes.append("no Docker daemon answered (DOCKER_HOST): the Docker figures were not measured")
        return
    providers = {
        "local": make_settings(home / "local", local_sshd="openssh"),
        "docker": load_settings({"BOXFORGE_HOME": str(home / "docker"), "BOXFORGE_PROVIDER": "docker",
                                 "BOXFORGE_OWNER": "obench" + secrets.token_hex(3),
                                 "BOXFORGE_CONFIG": str(home / "no-config.toml"), **docker_env}),
    }
    medians = await _beside(providers, sizes, report, "same run", lambda name: name)
    report.notes.append(
        f"Docker beside local in one run: create + first vm_bash {fmt_ms(medians['docker'][0])} on Docker vs "
        f"{fmt_ms(medians['local'][0])} local; a foreground vm_bash {fmt_ms(medians['docker'][1])} vs "
        f"{fmt_ms(medians['local'][1])} (a Docker create makes a network, a container and its iptables guard)")


# Kubernetes (through the fake API) beside local ------------------------------------------------


async def measure_kubernetes(home: Path, sizes: Sizes, report: Report) -> None:
    """create_server + first vm_bash, and a foreground vm_bash, on kubernetes (tests/fakes/kube_api.py: Pods backed
    by local boxes, every SSH connection a port-forward websocket over the API) and on local boxes, same run."""
    from tests.fakes.kube_api import running_kube

    with running_kube(home / "kube-fake") as fake:
        config = fake.write_kubeconfig(home / "kubeconfig")
        providers = {
            "local": make_settings(home / "local-k", local_sshd="openssh"),
            "kubernetes": load_settings({"BOXFORGE_HOME": str(home / "kubernetes"), "BOXFORGE_PROVIDER": "kubernetes",
                                         "BOXFORGE_OWNER": "obench" + secrets.token_hex(3),
                                         "BOXFORGE_KUBECONFIG": str(config), "BOXFORGE_KUBE_KIND": "pod",
                                         "BOXFORGE_CONFIG": str(home / "no-config.toml")}),
        }
        medians = await _beside(providers, sizes, report, "kube run", lambda name: name[:4])
    report.notes.append(
        f"Kubernetes (fake API, Pods = local boxes) beside local in one run: create + first vm_bash "
        f"{fmt_ms(medians['kubernetes'][0])} vs {fmt_ms(medians['local'][0])} local; a foreground vm_bash "
        f"{fmt_ms(medians['kubernetes'][1])} vs {fmt_ms(medians['local'][1])} (a real cluster adds scheduling, "
        "image pulls and its API server's latency: not measured here)")
