"""A private Docker daemon for tests and CI: Debian's ``dockerd`` with its own data root, exec root and
socket under one directory, stopped and cleaned up (its iptables chains, its bridges) when done.

``python -m tests.docker_daemon serve DIR`` (what ``.ci/services/docker.sh`` runs) starts one and keeps it
until SIGTERM. Tests use ``DockerDaemon`` directly, e.g. to restart a daemon under a running box.

Addresses: the daemon has no default bridge (``--bridge=none``); boxforge makes a network per box in the
provider's subnet (10.232.0.0/16). ``--live-restore`` keeps containers running while dockerd restarts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
BRIDGE_PREFIX = "bfd-"  # the Docker provider's per-box bridges (providers/docker/network.py)
FILTER_CHAINS = ("DOCKER", "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2", "DOCKER-USER")
SERVE_PID_FILE = "serve.pid"


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True, check=False)


def _chains(table: str) -> set[str]:
    out = _iptables("-t", table, "-S").stdout
    return {line.split()[1] for line in out.splitlines() if line.startswith("-N ")}


def _forward_policy() -> str:
    for line in _iptables("-S", "FORWARD").stdout.splitlines():
        if line.startswith("-P FORWARD "):
            return line.split()[2]
    return "ACCEPT"


def other_dockerd_running(except_pid: int | None = None) -> bool:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == except_pid:
            continue
        with contextlib.suppress(OSError):
            if (proc / "comm").read_text().strip() == "dockerd":
                return True
    return False


def bridges(prefix: str = BRIDGE_PREFIX) -> list[str]:
    """Network interfaces on this host whose names start with ``prefix``."""
    return sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith(prefix))


def ping(sock: Path, timeout: float = 2.0) -> bool:
    """True when a daemon answers ``GET /_ping`` on the unix socket ``sock``."""
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in s.recv(256)
    except OSError:
        return False


class DockerDaemon:
    """One dockerd under ``root`` (data/, exec/, docker.sock, dockerd.log)."""

    def __init__(self, root: Path, *, userns_remap: bool = False) -> None:
        self.root = Path(root)
        self.sock = self.root / "docker.sock"
        self.userns_remap = userns_remap
        self.proc: subprocess.Popen[bytes] | None = None
        self._chains_before: dict[str, set[str]] = {}
        self._forward_policy_before = "ACCEPT"

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def argv(self) -> list[str]:
        argv = ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
                "-H", self.url, "--pidfile", str(self.root / "dockerd.pid"), "--bridge=none",
                "--live-restore", "--log-level=warn"]
        if self.userns_remap:
            argv.append("--userns-remap=default")
        return argv

    def start(self) -> None:
        if not shutil.which("dockerd"):
            raise RuntimeError("dockerd is not installed (Debian package docker.io)")
        self.root.mkdir(parents=True, exist_ok=True)
        if self.userns_remap:
            self.root.chmod(0o711)  # the remapped root must traverse to its graph dir
        if not self._chains_before:
            self._chains_before = {"filter": _chains("filter"), "nat": _chains("nat")}
            self._forward_policy_before = _forward_policy()
        log = open(self.root / "dockerd.log", "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ping(self.sock, timeout=0.5):
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self.proc.returncode}: see {self.root / 'dockerd.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not answer within {START_TIMEOUT_S:g}s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop dockerd (containers live on with --live-restore until their daemon comes back)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        # dockerd bind-mounts its data root onto itself and leaves the mount behind when it exits
        data = str((self.root / "data").resolve())
        if any(line.split()[1] == data for line in Path("/proc/mounts").read_text().splitlines()):
            subprocess.run(["umount", data], capture_output=True, check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def clean_host(self) -> None:
        """Remove what dockerd added to the host: its iptables chains (when no other dockerd still uses
        them) and leftover per-box bridges. Call after ``stop``, with every container gone."""
        for name in bridges():
            subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)
        if other_dockerd_running() or not shutil.which("iptables"):
            return
        added = {t: _chains(t) - self._chains_before.get(t, set()) for t in ("filter", "nat")}
        for table, chains in added.items():
            for builtin in ("FORWARD", "PREROUTING", "OUTPUT", "POSTROUTING", "INPUT"):
                for line in _iptables("-t", table, "-S", builtin).stdout.splitlines():
                    parts = line.split()
                    if parts[:1] == ["-A"] and "-j" in parts and parts[parts.index("-j") + 1] in chains:
                        _iptables("-t", table, "-D", *parts[1:])
            for chain in chains:
                _iptables("-t", table, "-F", chain)
            for chain in chains:
                _iptables("-t", table, "-X", chain)
        if _forward_policy() != self._forward_policy_before:
            _iptables("-P", "FORWARD", self._forward_policy_before)

    def remove_containers(self) -> None:
        """Force-remove every container and non-builtin network of this daemon (before a final stop)."""
        env = {**os.environ, "DOCKER_HOST": self.url}
        ids = subprocess.run(["docker", "ps", "-aq"], env=env, capture_output=True, text=True, check=False).stdout
        if ids.split():
            subprocess.run(["docker", "rm", "-f", *ids.split()], env=env, capture_output=True, check=False)
        nets = subprocess.run(["docker", "network", "ls", "-q", "--filter", "type=custom"], env=env,
                              capture_output=True, text=True, check=False).stdout
        if nets.split():
            subprocess.run(["docker", "network", "rm", *nets.split()], env=env, capture_output=True, check=False)


def serve(root: Path) -> int:
    """Run a daemon until SIGTERM/SIGINT (SIGHUP restarts dockerd), then remove its containers, stop it and
    clean the host. ``serve.pid`` in ``root`` names this process while it serves."""
    daemon = DockerDaemon(root)
    daemon.start()
    print(daemon.url, flush=True)
    (root / SERVE_PID_FILE).write_text(f"{os.getpid()}\n")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
    while daemon.proc is not None and daemon.proc.poll() is None:
        got = signal.sigtimedwait([signal.SIGTERM, signal.SIGINT, signal.SIGHUP], 1.0)
        if got is not None and got.si_signo == signal.SIGHUP:
            daemon.restart()  # the daemon-restart test asks for this; containers live on (--live-restore)
        elif got is not None:
            break
    (root / SERVE_PID_FILE).unlink(missing_ok=True)
    daemon.remove_containers()
    daemon.stop()
    daemon.clean_host()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "serve":
        sys.exit("usage: python -m tests.docker_daemon serve DIR")
    sys.exit(serve(Path(sys.argv[2])))


def dockerd_pid(root: Path) -> int | None:
    try:
        return int((root / "dockerd.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def restart_served(sock: Path, timeout: float = START_TIMEOUT_S) -> bool:
    """Ask the ``serve`` process owning the daemon at ``sock`` to restart dockerd and wait until a new dockerd
    answers. False when no such process serves it (the daemon is not ours to restart)."""
    root = sock.parent
    try:
        serve_pid = int((root / SERVE_PID_FILE).read_text().strip())
        os.kill(serve_pid, 0)
    except (OSError, ValueError):
        return False
    old = dockerd_pid(root)
    os.kill(serve_pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while not (dockerd_pid(root) not in (None, old) and ping(sock, timeout=0.5)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"dockerd at {sock} did not come back within {timeout:g}s")
        time.sleep(0.05)
    return True
