"""One local box: its directory, its detached supervisor, its SSH server and its burn.

A local box is ``<root>/<box_id>/`` plus a supervisor process started detached from the
orchestrator (``python -m providers.localbox <box_dir>``). The supervisor runs the box's
SSH server (the system OpenSSH ``sshd`` or an embedded asyncssh server), writes
``ready.json`` once the server answers with an SSH banner, watches ``labels.json`` for the
TTL and burns the box at expiry or on SIGTERM, so a box dies on time even when no
orchestrator ever runs again.

Everything here is usable without ``LocalProvider``: ``launch_box`` (prepare the directory
and start the supervisor), ``burn_box`` (idempotent, also safe when the supervisor is dead),
the small readers/writers of the box files. A fake cloud reuses them to
put boxes on ``127.0.0.N`` with a fixed port.

Box directory::

    box.json              name, request_id, created_at, host, port, port_auto, user, server, sshd
    labels.json           the labels (boxforge-expires-at drives the watchdog); rewritten atomically
    ssh_host_ed25519_key  the pinned host key from the spec (0600)
    authorized_keys       the one client key allowed in
    home/                 HOME of every session (jobs live in home/.boxforge/jobs)
    sshd_config           OpenSSH only
    supervisor.pid        pid of the supervisor
    server.pid            pid of the sshd listener (OpenSSH only; sshd.pid is sshd's own)
    ready.json            written once the SSH server answers
    supervisor.log        stdout/stderr of the supervisor and of sshd
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import anyio

from providers.base import LABEL_EXPIRES_AT, BoxSpec, expires_at_from_labels
from providers.local import boxinit, cgroup, network, syscalls
from providers.probe import probe_ssh

ServerKind = Literal["openssh", "embedded"]

BOX_ID_PREFIX = "lb-"
BOX_ID_RE = re.compile(r"^lb-[0-9a-f]{12}$")

BOX_FILE = "box.json"
LABELS_FILE = "labels.json"
HOST_KEY_FILE = "ssh_host_ed25519_key"
AUTHORIZED_KEYS_FILE = "authorized_keys"
HOME_DIR = "home"
SSHD_CONFIG_FILE = "sshd_config"
SUPERVISOR_PID_FILE = "supervisor.pid"
SERVER_PID_FILE = "server.pid"
SSHD_PID_FILE = "sshd.pid"
READY_FILE = "ready.json"
LOG_FILE = "supervisor.log"

BOX_ENV_VAR = "BOXFORGE_BOX"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SUPERVISOR_MODULE = "providers.local.supervisor"
WATCH_INTERVAL_S = 0.25
SERVER_START_TIMEOUT_S = 10.0
ISOLATED_START_TIMEOUT_S = 120.0  # a loaded machine starting many boxes at once: wait_ready decides sooner
PORT_ATTEMPTS = 5
# How far a process's start (boot-relative ticks) and a file's mtime may disagree on one instant.
CLOCK_SLACK_S = 0.1


class BoxStartError(Exception):
    """The box's SSH server could not be started."""


# --- small file helpers -------------------------------------------------------------



# The watchdog is the backstop, as the poweroff timer is on a cloud box: it fires a little after
# expiry so the orchestrator's reaper, which burns within a second, gets the first go.
WATCHDOG_GRACE_S = 5.0

def new_box_id() -> str:
    return BOX_ID_PREFIX + secrets.token_hex(6)


def current_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def find_sshd() -> str | None:
    """The OpenSSH server binary, or None when this machine has none."""
    if os.access("/usr/sbin/sshd", os.X_OK):
        return "/usr/sbin/sshd"
    found = shutil.which("sshd")
    return str(Path(found).resolve()) if found else None


def write_atomic(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Write ``path`` through a temp file and ``os.replace`` so readers never see half a file."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=1, sort_keys=True) + "\n")


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing or unreadable (a box being burned)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_box_info(box_dir: Path) -> dict[str, Any] | None:
    return read_json(box_dir / BOX_FILE)


def read_labels(box_dir: Path) -> dict[str, str] | None:
    return read_json(box_dir / LABELS_FILE)


def write_labels(box_dir: Path, labels: Mapping[str, str]) -> None:
    write_json(box_dir / LABELS_FILE, {str(k): str(v) for k, v in labels.items()})


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def log_tail(box_dir: Path, max_bytes: int = 2000) -> str:
    try:
        with open(box_dir / LOG_FILE, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            return fh.read().decode(errors="replace").strip()
    except OSError:
        return ""


def free_port(host: str) -> int:
    """A port that was free a moment ago (bind to 0, read it back, release)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# --- processes (Linux /proc) --------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, start ticks) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def _proc_cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _proc_has_env(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _boot_time() -> float:
    """The wall-clock time of boot, to 10 ms (``btime`` in /proc/stat is truncated to the second)."""
    return time.time() - float(Path("/proc/uptime").read_text().split()[0])


def pid_alive(pid: int | None, marker: str | None = None) -> bool:
    """True when ``pid`` runs (zombies are dead) and its command line contains ``marker``."""
    if not pid:
        return False
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return marker is None or any(marker in arg for arg in _proc_cmdline(pid))


def supervisor_pid(box_dir: Path) -> int | None:
    """The pid of the box's supervisor when it is alive, else None."""
    pid = read_pid(box_dir / SUPERVISOR_PID_FILE)
    return pid if pid_alive(pid, str(box_dir)) and pid_alive(pid, SUPERVISOR_MODULE) else None


def _ancestors(pid: int) -> set[int]:
    chain = set()
    while pid > 1 and pid not in chain:
        chain.add(pid)
        stat = _proc_stat(pid)
        if stat is None:
            break
        pid = stat[1]
    return chain


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _box_processes(box_id: str, job_groups: Mapping[int, float], roots: set[int], not_before: float) -> set[int]:
    """Live processes of the box: the roots, the members of its running jobs' process groups, all
    their descendants, and anything carrying ``BOXFORGE_BOX=<box_id>`` in its environment.

    Pids from files may have been reused, and a job's pgid too once the job's group died. So a
    process older than the box is never the box's, and a job group (``job_groups``: pgid -> mtime
    of the job's pid file) counts only when one of its members already lived when the job's leader
    wrote its pid (a group that has had members ever since cannot have been reused), or when its
    leader is a root (found in an earlier pass of ``burn_box``).
    """
    needle = f"{BOX_ENV_VAR}={box_id}".encode()
    spare = _ancestors(os.getpid())
    stats = {pid: stat for pid in _all_pids() if (stat := _proc_stat(pid)) is not None}
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    boot, ticks = _boot_time(), os.sysconf("SC_CLK_TCK")
    born = {pid: boot + stat[3] / ticks for pid, stat in stats.items()}
    fresh = {pid for pid in stats if born[pid] >= not_before}
    job_members = {pid for pid in fresh if stats[pid][2] in job_groups}
    proven = {stats[pid][2] for pid in job_members if born[pid] <= job_groups[stats[pid][2]] + CLOCK_SLACK_S}
    proven |= roots & set(job_groups)
    found: set[int] = set()
    todo = [pid for pid in roots if pid in fresh] + [pid for pid in job_members if stats[pid][2] in proven]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    found |= {pid for pid in stats if _proc_has_env(pid, needle)}
    return {pid for pid in found if pid not in spare and stats[pid][0] not in ("Z", "X")}


def _running_job_groups(home: Path) -> dict[int, float]:
    """pgid -> mtime of the pid file, for the jobs without an ``exit`` file: a finished job's pid
    may belong to anyone by now."""
    groups = {}
    for pid_file in (home / ".boxforge" / "jobs").glob("*/pid"):
        if (pid_file.parent / "exit").exists():
            continue
        pid = read_pid(pid_file)
        with contextlib.suppress(OSError):
            if pid and pid > 1:
                groups[pid] = pid_file.stat().st_mtime
    return groups


def burn_box(box_dir: Path, *, timeout: float = 5.0) -> None:
    """Stop the box's SSH server, kill every process of the box, remove its directory.

    An isolated box burns through its cgroup and netns (``burn_isolated``).

    Idempotent and safe from any process: the supervisor calls it at expiry or SIGTERM, the
    provider calls it as a fallback when the supervisor is dead or stuck. Never kills the
    calling process or its ancestors. Blocking (up to ``timeout`` while processes die).
    """
    box_dir = Path(box_dir).resolve()
    box_id = box_dir.name
    info = read_box_info(box_dir) or {}
    if info.get("isolation") == "full":
        burn_isolated(box_dir, info, timeout=timeout)
        return
    if any(d.exists() for d in cgroup.dirs(box_id)) or any(
            network.exists(network.names(box_id, flag)[0]) for flag in (True, False)):
        burn_leftover(box_id, timeout)  # an isolated box whose box.json is already gone
    not_before = float(info.get("created_at", 0)) - 2.0
    roots = set()
    sup = supervisor_pid(box_dir)
    if sup is not None and sup != os.getpid():
        _kill(sup)  # first, so it cannot restart the server behind our back
        roots.add(sup)
    for name in (SERVER_PID_FILE, SSHD_PID_FILE):
        pid = read_pid(box_dir / name)
        if pid is not None:
            roots.add(pid)
    job_groups = _running_job_groups(box_dir / HOME_DIR)
    deadline = time.monotonic() + timeout
    while True:
        victims = _box_processes(box_id, job_groups, roots, not_before)
        if not victims or time.monotonic() > deadline:
            break
        for pid in victims:
            _kill(pid)
        roots |= victims
        time.sleep(0.02)
    shutil.rmtree(box_dir, ignore_errors=True)


# --- preparing and launching a box -------------------------------------------------


def resolve_server(server: str) -> ServerKind:
    """``auto`` means the system sshd when present, else the embedded server."""
    if server == "auto":
        return "openssh" if find_sshd() else "embedded"
    if server not in ("openssh", "embedded"):
        raise ValueError(f"unknown local SSH server {server!r}; use auto, openssh or embedded")
    if server == "openssh" and not find_sshd():
        raise BoxStartError("OpenSSH sshd is not installed here; use server='embedded' or 'auto'")
    return server  # type: ignore[return-value]


def prepare_box_dir(
    root: Path,
    spec: BoxSpec,
    *,
    server: ServerKind,
    host: str = "127.0.0.1",
    port: int = 0,
    box_id: str | None = None,
    watchdog_grace_s: float = WATCHDOG_GRACE_S,
) -> Path:
    """Write a complete box directory (built aside, then renamed into place) and return it."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    box_id = box_id or new_box_id()
    box_dir = root / box_id
    staging = root / f".staging-{box_id}"
    staging.mkdir(mode=0o700)
    try:
        (staging / HOME_DIR).mkdir(mode=0o700)
        write_atomic(staging / HOST_KEY_FILE, spec.host_key_private.strip() + "\n")
        write_atomic(staging / AUTHORIZED_KEYS_FILE, spec.authorized_key.strip() + "\n")
        write_labels(staging, spec.labels)
        write_json(
            staging / BOX_FILE,
            {
                "id": box_id,
                "name": spec.name,
                "request_id": spec.request_id,
                "created_at": time.time(),
                "host": host,
                "port": port or free_port(host),
                "port_auto": port == 0,
                "watchdog_grace_s": watchdog_grace_s,
                "user": current_user(),
                "server": server,
                "sshd": find_sshd() if server == "openssh" else None,
            },
        )
        staging.rename(box_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return box_dir


def _supervisor_env(home: Path) -> dict[str, str]:
    """A clean environment: the orchestrator's secrets must not reach a box."""
    # The supervisor must import this very code (and the same dependencies) as its creator.
    python_path = [str(Path(__file__).resolve().parents[2]), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {"PATH": os.environ.get("PATH", DEFAULT_PATH), "PYTHONPATH": os.pathsep.join(python_path)}
    env["HOME"] = str(home)
    for name in ("LANG", "LC_ALL", "TZ"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def start_supervisor(box_dir: Path) -> int:
    """Start the box's supervisor detached from this process; returns its pid. Blocking (short)."""
    box_dir = Path(box_dir)
    with open(box_dir / LOG_FILE, "ab") as log:
        launcher = subprocess.Popen(
            [sys.executable, "-m", SUPERVISOR_MODULE, str(box_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=box_dir / HOME_DIR if (box_dir / HOME_DIR).is_dir() else box_dir,
            env=_supervisor_env(box_dir / HOME_DIR),
            start_new_session=True,
        )
    # The launcher forks the real supervisor and exits at once, so no zombie is left here.
    code = launcher.wait()
    pid = read_pid(box_dir / SUPERVISOR_PID_FILE)
    if code != 0 or pid is None:
        raise BoxStartError(f"the supervisor of {box_dir.name} did not start: {log_tail(box_dir)}")
    return pid


def launch_box(
    root: Path,
    spec: BoxSpec,
    *,
    server: str = "auto",
    host: str = "127.0.0.1",
    port: int = 0,
    box_id: str | None = None,
) -> Path:
    """Prepare a box directory and start its supervisor; returns the box dir. Blocking (short).

    The box becomes reachable a moment later: poll ``probe_ssh`` or ``ready.json``.
    """
    box_dir = prepare_box_dir(root, spec, server=resolve_server(server), host=host, port=port, box_id=box_id)
    start_supervisor(box_dir)
    return box_dir


# --- the SSH servers ----------------------------------------------------------------


def _sshd_version(sshd: str) -> tuple[int, int]:
    out = subprocess.run([sshd, "-V"], capture_output=True, text=True, check=False)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stderr + out.stdout)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _quote(value: str) -> str:
    return f'"{value}"' if any(ch.isspace() for ch in value) else value


def sshd_config_text(box_dir: Path, info: Mapping[str, Any], sshd_version: tuple[int, int]) -> str:
    home = box_dir / HOME_DIR
    lines = [
        f"ListenAddress {info['host']}",
        f"Port {info['port']}",
        f"HostKey {_quote(str(box_dir / HOST_KEY_FILE))}",
        f"PidFile {_quote(str(box_dir / SSHD_PID_FILE))}",
        f"AuthorizedKeysFile {_quote(str(box_dir / AUTHORIZED_KEYS_FILE))}",
        f"SetEnv {_quote(f'HOME={home}')} {BOX_ENV_VAR}={box_dir.name}",
        f"AllowUsers {info['user']}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "StrictModes no",
        # As root PAM is not needed; without root, sshd cannot read the shadow file and
        # refuses every account as locked unless PAM does the account check.
        f"UsePAM {'no' if os.geteuid() == 0 or not Path('/etc/pam.d/sshd').exists() else 'yes'}",
        "UseDNS no",
        "PrintMotd no",
        "AcceptEnv LANG LC_*",
        "MaxSessions 200",
        "MaxStartups 200",
        "LoginGraceTime 30",
        f"Subsystem sftp internal-sftp -d {_quote(str(home))}",
        "LogLevel ERROR",
    ]
    if sshd_version >= (9, 8):
        lines.append("PerSourcePenalties no")  # tests and parallel agents reconnect a lot
    return "\n".join(lines) + "\n"


class _OpenSSHServer:
    """The system sshd as a child of the supervisor."""

    def __init__(self, box_dir: Path, info: Mapping[str, Any]) -> None:
        self.box_dir = box_dir
        self.info = info
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self._spawn)

    def _spawn(self) -> None:
        sshd = self.info.get("sshd") or find_sshd()
        if not sshd:
            raise BoxStartError("OpenSSH sshd is not installed here")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        config = self.box_dir / SSHD_CONFIG_FILE
        write_atomic(config, sshd_config_text(self.box_dir, self.info, _sshd_version(sshd)))
        self.proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, cwd=self.box_dir / HOME_DIR
        )
        write_atomic(self.box_dir / SERVER_PID_FILE, f"{self.proc.pid}\n")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
        if self.proc is not None:
            await anyio.to_thread.run_sync(self.proc.wait)


class _EmbeddedServer:
    """An asyncssh server inside the supervisor: exec + SFTP, one user, one key."""

    def __init__(self, box_dir: Path, info: Mapping[str, Any]) -> None:
        self.box_dir = box_dir
        self.info = info
        self.acceptor: Any = None

    async def start(self) -> None:
        from providers.local import sshd as embedded_sshd  # asyncssh is only needed by embedded boxes

        self.acceptor = await embedded_sshd.listen(self.box_dir, self.info)

    def alive(self) -> bool:
        return self.acceptor is not None

    async def stop(self) -> None:
        if self.acceptor is not None:
            self.acceptor.close()
            await self.acceptor.wait_closed()
            self.acceptor = None


async def _start_server(box_dir: Path) -> _OpenSSHServer | _EmbeddedServer:
    """Start the box's server and wait for its banner; a taken auto port is replaced."""
    for attempt in range(PORT_ATTEMPTS):
        info = read_box_info(box_dir)
        if info is None:
            raise BoxStartError("box.json is missing")
        server_cls = _OpenSSHServer if info["server"] == "openssh" else _EmbeddedServer
        server = server_cls(box_dir, info)
        try:
            await server.start()
            with anyio.fail_after(SERVER_START_TIMEOUT_S):
                while not await probe_ssh(info["host"], info["port"], timeout=0.5):
                    if not server.alive():
                        raise BoxStartError(f"the SSH server exited on {info['host']}:{info['port']}")
                    await anyio.sleep(0.02)
            return server
        except (OSError, BoxStartError, TimeoutError) as exc:
            await server.stop()
            if not info.get("port_auto") or attempt == PORT_ATTEMPTS - 1:
                raise BoxStartError(f"cannot start the SSH server: {exc}") from exc
            print(f"port {info['port']} unusable ({exc}); retrying on another", file=sys.stderr, flush=True)
            write_json(box_dir / BOX_FILE, {**info, "port": free_port(info["host"])})
    raise AssertionError("unreachable")


# --- the supervisor -----------------------------------------------------------------


def _expired(box_dir: Path) -> bool:
    labels = read_labels(box_dir)
    if labels is None:
        return False
    expires_at = expires_at_from_labels(labels)
    grace = float((read_box_info(box_dir) or {}).get("watchdog_grace_s", WATCHDOG_GRACE_S))
    return expires_at is not None and expires_at + grace <= time.time()


async def _watch(box_dir: Path, server: _OpenSSHServer | _EmbeddedServer) -> str:
    """Return why the box must end: expiry, or its directory vanished. Restarts a dead server."""
    while True:
        if not (box_dir / BOX_FILE).exists():
            return "box directory vanished"
        if _expired(box_dir):
            return f"expired ({LABEL_EXPIRES_AT} reached)"
        if not server.alive():
            print("SSH server died; restarting it", file=sys.stderr, flush=True)
            await server.stop()
            await server.start()
        await anyio.sleep(WATCH_INTERVAL_S)


async def supervise(box_dir: Path) -> None:
    """Run the box until it expires or is told to stop, then burn it.

    A server that never starts leaves the directory (and its log) for the provider to
    report; a box that was up is always burned on the way out.
    """
    reason: str | None = None
    server: _OpenSSHServer | _EmbeddedServer | None = None
    try:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as tg:

                async def on_signal() -> None:
                    nonlocal reason
                    async for signum in signals:
                        reason = f"received {signal.Signals(signum).name}"
                        tg.cancel_scope.cancel()

                tg.start_soon(on_signal)
                if _expired(box_dir):
                    reason = "expired before start"
                else:
                    server = await _start_server(box_dir)
                    info = read_box_info(box_dir) or {}
                    write_json(box_dir / READY_FILE, {"port": info.get("port"), "ready_at": time.time()})
                    print(f"ready on {info.get('host')}:{info.get('port')}", file=sys.stderr, flush=True)
                    reason = await _watch(box_dir, server)
                tg.cancel_scope.cancel()
    except Exception:
        traceback.print_exc()  # into supervisor.log, where wait_ready reports it from
    finally:
        with anyio.CancelScope(shield=True):
            if server is not None:
                await server.stop()
            if reason is not None or server is not None:
                print(f"burning {box_dir.name}: {reason or 'supervisor failed'}", file=sys.stderr, flush=True)
                await anyio.to_thread.run_sync(burn_box, box_dir)


def _daemonize(box_dir: Path) -> None:
    """Fork: the parent records the child's pid and exits, the child carries on detached."""
    child = os.fork()
    if child:
        with contextlib.suppress(OSError):  # the child may already have burned an expired box
            write_atomic(box_dir / SUPERVISOR_PID_FILE, f"{child}\n")
        os._exit(0)


# --- isolated boxes ------------------------------------------------------------------


def prepare_isolated_dir(root: Path, spec: BoxSpec, *, egress: bool, image: Path, size: str,
                         limits: cgroup.Limits, watchdog_grace_s: float = WATCHDOG_GRACE_S) -> Path:
    """Write an isolated box's directory (built aside, then renamed into place) and return it.

    Orchestrator-side files (box.json, labels.json, logs, pids) are root's, 0600: the box cannot see this dir
    at all (its own mount namespace), and its host uid cannot read them either."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    box_id = new_box_id()
    box_dir = root / box_id
    index = network.claim(box_dir, burn_leftover)
    staging = root / f".staging-{box_id}"
    staging.mkdir(mode=0o700)
    try:
        host_side, box_addr = network.addresses(index)
        netns, veth = network.names(box_id, egress)
        info = {
            "id": box_id, "name": spec.name, "request_id": spec.request_id, "created_at": time.time(),
            "isolation": "full", "index": index, "uid": boxinit.host_uid(index), "host": box_addr,
            "gateway": host_side, "port": 22, "port_auto": False, "user": "root", "server": "openssh",
            "netns": netns, "veth": veth, "egress": egress, "image": str(image), "size": size,
            "limits": limits.describe(), "watchdog_grace_s": watchdog_grace_s,
        }
        write_labels(staging, spec.labels)
        write_json(staging / BOX_FILE, info)
        boxinit.prepare_fs(staging, info, spec.host_key_private, spec.authorized_key)
        staging.rename(box_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        network.release(index, box_dir)
        raise
    return box_dir


def _kill_until_gone(pids_of: Callable[[], set[int]], timeout: float) -> None:
    spare = _ancestors(os.getpid())
    deadline = time.monotonic() + timeout
    while True:
        victims = {pid for pid in pids_of() - spare if pid_alive(pid)}
        if not victims or time.monotonic() > deadline:
            return
        for pid in victims:
            _kill(pid)
        time.sleep(0.01)


def _remove_cgroup(box_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:  # a cgroup can be removed once its last (killed) process is reaped
        cgroup.remove(box_id)
        if not any(d.exists() for d in cgroup.dirs(box_id)) or time.monotonic() > deadline:
            return
        time.sleep(0.01)


def burn_leftover(box_id: str, timeout: float = 5.0) -> None:
    """What a box whose dir is gone may have left: processes in its cgroup or netns, the netns, the cgroup."""
    if not BOX_ID_RE.match(box_id):
        return
    netnses = [network.names(box_id, flag)[0] for flag in (True, False)]
    _kill_until_gone(lambda: cgroup.pids(box_id) | {p for ns in netnses for p in network.netns_pids(ns)}, timeout)
    network.teardown(box_id)
    _remove_cgroup(box_id, timeout)


def _limits_of(info: Mapping[str, Any]) -> cgroup.Limits:
    raw = info["limits"]
    return cgroup.Limits(int(raw["cores"]), int(raw["memory_mib"]) << 20, int(raw["pids"]))


def burn_isolated(box_dir: Path, info: Mapping[str, Any], *, timeout: float = 5.0) -> None:
    """Kill the supervisor, then every process in the box's cgroup and netns, then remove the netns, veth,
    cgroup and dirs. The box's mounts live only in its own mount namespace: they go with its last process."""
    box_id = box_dir.name
    sup = supervisor_pid(box_dir)
    if sup is not None and sup != os.getpid():
        _kill(sup)
    netns = str(info.get("netns", ""))
    _kill_until_gone(lambda: cgroup.pids(box_id) | network.netns_pids(netns), timeout)
    network.teardown(box_id, bool(info.get("egress")))
    if not (box_dir / READY_FILE).exists() and (box_dir / LOG_FILE).exists():
        # a box that never came up: keep why, for the create that waits on it (wait_ready reports it)
        with contextlib.suppress(OSError):
            write_atomic(box_dir.parent / f".failed-{box_id}.log", log_tail(box_dir))
    _remove_cgroup(box_id, timeout)
    shutil.rmtree(box_dir, ignore_errors=True)
    if "index" in info:
        network.release(int(info["index"]), box_dir)


def _start_isolated(box_dir: Path) -> int:
    """Network, cgroup, then the box itself (a child of this, the supervisor). Blocking, main thread only."""
    info = read_box_info(box_dir)
    if info is None:
        raise BoxStartError("box.json is missing")
    cgroup.create(box_dir.name, _limits_of(info))
    network.setup(box_dir.name, int(info["index"]), egress=bool(info["egress"]))
    pid = boxinit.spawn(box_dir, info)
    write_atomic(box_dir / SERVER_PID_FILE, f"{pid}\n")
    return pid


def _spawn_undertaker(box_dir: Path) -> None:
    """A small shell that burns the box when this supervisor dies however it dies (SIGKILL included): it
    waits for EOF on a pipe only the supervisor holds."""
    read_end, write_end = os.pipe()
    env = _supervisor_env(box_dir)
    subprocess.Popen(["/bin/sh", "-c", 'cat >/dev/null; exec "$0" -m "$1" --burn "$2"', sys.executable,
                      SUPERVISOR_MODULE, str(box_dir)],
                     stdin=read_end, stdout=subprocess.DEVNULL, stderr=None, env=env, start_new_session=True)
    os.close(read_end)
    os.set_inheritable(write_end, False)  # kept open, never passed on: its EOF is this process's death


async def supervise_isolated(box_dir: Path, box_pid: int) -> None:
    """Watch an isolated box until it expires, is told to stop, or its pid 1 dies; then burn it."""
    reason = "supervisor failed"
    info = read_box_info(box_dir) or {}
    try:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as tg:

                async def on_signal() -> None:
                    nonlocal reason
                    async for signum in signals:
                        reason = f"received {signal.Signals(signum).name}"
                        tg.cancel_scope.cancel()

                tg.start_soon(on_signal)
                with anyio.fail_after(ISOLATED_START_TIMEOUT_S):
                    while not await probe_ssh(info["host"], 22, timeout=0.5):
                        if not pid_alive(box_pid):
                            raise BoxStartError("the box's init exited before its SSH server answered")
                        await anyio.sleep(0.005)
                write_json(box_dir / READY_FILE, {"port": 22, "ready_at": time.time()})
                print(f"ready on {info['host']}:22", file=sys.stderr, flush=True)
                while True:
                    if not (box_dir / BOX_FILE).exists():
                        reason = "box directory vanished"
                        break
                    if _expired(box_dir):
                        reason = f"expired ({LABEL_EXPIRES_AT} reached)"
                        break
                    if not pid_alive(box_pid):
                        reason = "the box's init exited"
                        break
                    await anyio.sleep(WATCH_INTERVAL_S)
                tg.cancel_scope.cancel()
    except Exception:
        traceback.print_exc()
    finally:
        with anyio.CancelScope(shield=True):
            print(f"burning {box_dir.name}: {reason}", file=sys.stderr, flush=True)
            await anyio.to_thread.run_sync(burn_box, box_dir)


def _reap_children(signum: int, frame: object) -> None:
    """As a child subreaper, collect every orphan of the box's host-side chain at once (no zombies)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def main(argv: Iterable[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "--burn":
        burn_box(Path(args[1]).resolve())
        return
    if len(args) != 1:
        sys.exit("usage: python -m providers.local.supervisor [--burn] <box_dir>")
    box_dir = Path(args[0]).resolve()
    if not (box_dir / BOX_FILE).is_file():
        sys.exit(f"{box_dir} is not a box directory")
    _daemonize(box_dir)
    if (read_box_info(box_dir) or {}).get("isolation") != "full":
        anyio.run(supervise, box_dir)
        return
    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
    _spawn_undertaker(box_dir)
    try:
        if _expired(box_dir):
            raise BoxStartError("expired before start")
        box_pid = _start_isolated(box_dir)
    except Exception:
        traceback.print_exc()
        burn_box(box_dir)
        return
    anyio.run(supervise_isolated, box_dir, box_pid)


if __name__ == "__main__":
    main()
