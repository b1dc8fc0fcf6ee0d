"""The SSH server of an unisolated local box, run by its supervisor: the system OpenSSH ``sshd`` as a
child, or an embedded asyncssh server (providers/local/sshd.py) on machines without OpenSSH. Either
answers on the box's loopback address with the pinned host key and admits only the box's client key.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import anyio

from providers.local.boxdir import (
    AUTHORIZED_KEYS_FILE,
    BOX_ENV_VAR,
    BOX_FILE,
    HOME_DIR,
    HOST_KEY_FILE,
    SERVER_PID_FILE,
    SSHD_CONFIG_FILE,
    SSHD_PID_FILE,
    BoxStartError,
    free_port,
    read_box_info,
    write_atomic,
    write_json,
)
from providers.probe import probe_ssh

ServerKind = Literal["openssh", "embedded"]

SERVER_START_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 5


def find_sshd() -> str | None:
    """The OpenSSH server binary, or None when this machine has none."""
    if os.access("/usr/sbin/sshd", os.X_OK):
        return "/usr/sbin/sshd"
    found = shutil.which("sshd")
    return str(Path(found).resolve()) if found else None


def resolve_server(server: str) -> ServerKind:
    """``auto`` means the system sshd when present, else the embedded server."""
    if server == "auto":
        return "openssh" if find_sshd() else "embedded"
    if server not in ("openssh", "embedded"):
        raise ValueError(f"unknown local SSH server {server!r}; use auto, openssh or embedded")
    if server == "openssh" and not find_sshd():
        raise BoxStartError("OpenSSH sshd is not installed here; use server='embedded' or 'auto'")
    return server  # type: ignore[return-value]


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


class OpenSSHServer:
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


class EmbeddedServer:
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


Server = OpenSSHServer | EmbeddedServer


async def start_server(box_dir: Path) -> Server:
    """Start the box's server and wait for its banner; a taken auto port is replaced."""
    for attempt in range(PORT_ATTEMPTS):
        info = read_box_info(box_dir)
        if info is None:
            raise BoxStartError("box.json is missing")
        server_cls = OpenSSHServer if info["server"] == "openssh" else EmbeddedServer
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
