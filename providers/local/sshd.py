"""The embedded SSH server of a local box, for machines without OpenSSH's sshd.

Built on asyncssh's server API inside the box's supervisor: public-key auth for the box's
user with the one authorized key, the pinned host key, exec requests run as
``<login shell> -c <command>`` in their own session with ``HOME`` and ``BOXFORGE_BOX``
set and the box home as cwd, binary-safe stdio, exit status or exit signal reported,
client signals forwarded while stdin is open, and SFTP. It behaves like sshd wherever a
caller can tell: the user's passwd shell runs the command (else /bin/sh), only
``LANG``/``LC_*`` are accepted from the client's environment (a stock sshd_config), and
the session ends when the command has exited and its output pipes are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import asyncssh

from providers.local.boxdir import AUTHORIZED_KEYS_FILE, BOX_ENV_VAR, DEFAULT_PATH, HOME_DIR, HOST_KEY_FILE

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _accepted_client_env(name: str) -> bool:
    return name == "LANG" or name.startswith("LC_")


class _BoxServer(asyncssh.SSHServer):
    """Public-key auth only: the box's user with the box's authorized key."""

    def __init__(self, user: str, authorized: list[asyncssh.SSHKey]) -> None:
        self._user = user
        self._authorized = {key.public_data for key in authorized}

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == self._user and key.public_data in self._authorized

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        """``direct-tcpip`` (the orchestrator's port forwards): only to the box's own loopback."""
        return dest_host in _LOOPBACK_NAMES


def _login_shell(user: str) -> str:
    """The user's login shell, as sshd uses it for ``<shell> -c <command>``; else /bin/sh."""
    shell = pwd.getpwnam(user).pw_shell
    return shell if shell and os.access(shell, os.X_OK) else "/bin/sh"


def _session_env(box_dir: Path, user: str, client_env: Mapping[str, str]) -> dict[str, str]:
    env = {
        "PATH": DEFAULT_PATH,
        "USER": user,
        "LOGNAME": user,
        "SHELL": _login_shell(user),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    env.update({name: value for name, value in client_env.items() if _accepted_client_env(name)})
    env["HOME"] = str(box_dir / HOME_DIR)
    env[BOX_ENV_VAR] = box_dir.name
    return env


def _forward_signal(pid: int, name: str) -> None:
    sig = getattr(signal, f"SIG{name}", None)
    if isinstance(sig, signal.Signals):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def _pump_stdin(process: asyncssh.SSHServerProcess[bytes], child: asyncio.subprocess.Process) -> None:
    """Copy the channel's stdin into the command, forwarding signals that arrive on the way.

    Done by hand rather than with ``process.redirect(stdin=...)``: asyncio's write-pipe
    transport drops buffered data when EOF arrives while it resumes the protocol, which
    asyncssh's pipe writer triggers (inputs lost their last chunks).
    """
    assert child.stdin is not None
    try:
        while True:
            try:
                data = await process.stdin.read(65536)
            except asyncssh.SignalReceived as exc:
                _forward_signal(child.pid, exc.signal)
                continue
            except asyncssh.BreakReceived:
                _forward_signal(child.pid, "INT")
                continue
            except asyncssh.TerminalSizeChanged:
                continue
            if not data:
                break
            child.stdin.write(data)
            await child.stdin.drain()
    except (OSError, asyncssh.Error):
        pass  # the command stopped reading or the channel went away
    finally:
        child.stdin.close()


async def _run_session(process: asyncssh.SSHServerProcess[bytes], box_dir: Path, user: str) -> None:
    """Run one exec (or a plain ``/bin/sh`` reading stdin) and report how it ended."""
    shell = _login_shell(user)
    argv = [shell, "-c", process.command] if process.command is not None else [shell]
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        child = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=out_w,
            stderr=err_w,
            cwd=box_dir / HOME_DIR,
            env=_session_env(box_dir, user, process.env),
            start_new_session=True,
        )
    except OSError as exc:
        os.close(out_r)
        os.close(err_r)
        process.stderr.write(f"cannot start the command: {exc}\n".encode())
        process.exit(127)
        return
    finally:
        os.close(out_w)
        os.close(err_w)
    # send_eof=False: EOF on stdout must not end the channel while stderr still has data.
    await process.redirect(stdout=out_r, stderr=err_r, send_eof=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_pump_stdin, process, child)
        returncode = await child.wait()
        tg.cancel_scope.cancel()
    # Like sshd: the session ends once the output pipes close (a detached command that
    # redirected its output does not hold them).
    with contextlib.suppress(Exception):
        await process.stdout.drain()
        await process.stderr.drain()
    if process.is_closing():
        return
    if returncode < 0:
        process.exit_with_signal(signal.Signals(-returncode).name.removeprefix("SIG"))
    else:
        process.exit(returncode)


async def listen(box_dir: Path, info: Mapping[str, Any]) -> asyncssh.SSHAcceptor:
    """Start the box's embedded SSH server on ``info['host']:info['port']``."""
    host_key = asyncssh.import_private_key((box_dir / HOST_KEY_FILE).read_text())
    authorized = [
        asyncssh.import_public_key(line)
        for line in (box_dir / AUTHORIZED_KEYS_FILE).read_text().splitlines()
        if line.strip()
    ]
    user = info["user"]

    async def on_process(process: asyncssh.SSHServerProcess[bytes]) -> None:
        await _run_session(process, box_dir, user)

    return await asyncssh.listen(
        info["host"],
        info["port"],
        server_host_keys=[host_key],
        server_factory=lambda: _BoxServer(user, authorized),
        process_factory=on_process,
        sftp_factory=True,
        allow_scp=True,
        encoding=None,
        line_editor=False,
        reuse_address=True,
    )
