"""Start an isolated box: the steps between the supervisor (root, on the host) and the box's sshd.

``spawn`` forks a child of the supervisor that joins the box's cgroup and netns, makes a private mount
namespace, mounts the image read-only and id-shifted to the box's uid range (an idmapped mount), overlays the
box's own upper dir on it, drops to the box's host uid and execs ``bwrap`` into a user namespace mapping
0..65535 inside to the box's host range, with its own pid, ipc, uts and cgroup namespaces, ``/proc``, ``/dev``
and ``/run``, the pinned SSH files read-only, and ``sshd`` inside. bwrap dies with the supervisor
(``--die-with-parent``) and with bwrap dies the box's pid 1, and with it every process of the box.

Nothing of the host is bound in: not the orchestrator's state dir, keys, config or home, not /sys.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from providers.local import cgroup, syscalls

UID_RANGE = 65536
UID_BASE = 1 << 31  # host uids 2^31 + 65536·i .. : far above any account and never the orchestrator's
FS_DIR = "fs"  # per-box dirs the box's uid owns: upper, work, lower, root, ssh
BOX_SSH_DIR = "/etc/boxforge/ssh"
STAGE = Path("/run/boxforge-local/stage")  # an empty dir on the host; each box mounts its own tmpfs on it
BOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def host_uid(index: int) -> int:
    return UID_BASE + index * UID_RANGE


def sshd_config_text(box_id: str) -> str:
    return "\n".join([
        "ListenAddress 0.0.0.0", "Port 22",
        f"HostKey {BOX_SSH_DIR}/ssh_host_ed25519_key",
        f"AuthorizedKeysFile {BOX_SSH_DIR}/authorized_keys",
        "PidFile /run/sshd.pid",
        # IS_SANDBOX: the agent presets run as root here, in a box that is a sandbox (Claude Code asks for it)
        f"SetEnv BOXFORGE_BOX={box_id} IS_SANDBOX=1",
        "AllowUsers root", "PermitRootLogin prohibit-password", "PubkeyAuthentication yes",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "UseDNS no", "PrintMotd no", "AcceptEnv LANG LC_*", "MaxSessions 200", "MaxStartups 200",
        "LoginGraceTime 30", "Subsystem sftp internal-sftp", "LogLevel ERROR", ""])


def prepare_fs(box_dir: Path, info: dict[str, Any], host_key: str, authorized_key: str) -> None:
    """The box-owned dirs and its SSH files, owned by the box's host uid (root inside)."""
    uid = int(info["uid"])
    fs = box_dir / FS_DIR
    for sub in ("", "upper", "work", "lower", "ssh"):
        (fs / sub).mkdir(mode=0o755 if sub == "upper" else 0o700, exist_ok=True)
    ssh = fs / "ssh"
    (ssh / "ssh_host_ed25519_key").write_text(host_key.strip() + "\n")
    (ssh / "ssh_host_ed25519_key").chmod(0o600)
    (ssh / "authorized_keys").write_text(authorized_key.strip() + "\n")
    (ssh / "sshd_config").write_text(sshd_config_text(info["id"]))
    for path in (fs / "upper", ssh, *ssh.iterdir()):
        os.chown(path, uid, uid)
    STAGE.mkdir(parents=True, exist_ok=True)


def _userns_fd(uid: int) -> int:
    """A user namespace owned by ``uid`` that maps 0..65535 to uid.. (and the same for gids)."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(done_w)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError("the user namespace helper died")
        for name in ("uid_map", "gid_map"):
            Path(f"/proc/{pid}/{name}").write_text(f"0 {uid} {UID_RANGE}\n")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY)
    finally:
        os.close(done_w)
        os.close(ready_r)
        os.waitpid(pid, 0)


def bwrap_argv(info: dict[str, Any], root: Path, ssh: Path, userns_fd: int) -> list[str]:
    bwrap = shutil.which("bwrap") or "/usr/bin/bwrap"
    # the host's resolvers (the rules let a box with egress reach them; a copy would go stale)
    resolv = ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"] if info.get("egress") else []
    hostname = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in info["name"])[:63] or "box"
    return [bwrap, "--userns", str(userns_fd), "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--hostname", hostname, "--die-with-parent", "--cap-add", "ALL",
            "--bind", str(root), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/run", "--dir", "/run/sshd",
            "--ro-bind", str(ssh), BOX_SSH_DIR, *resolv,
            "--clearenv", "--setenv", "PATH", BOX_PATH, "--setenv", "HOME", "/root", "--setenv", "LANG", "C.UTF-8",
            "--chdir", "/root",
            "--", "/usr/sbin/sshd", "-D", "-e", "-f", f"{BOX_SSH_DIR}/sshd_config"]


def _child(box_dir: Path, info: dict[str, Any]) -> None:
    uid = int(info["uid"])
    fs = box_dir / FS_DIR
    cgroup.join(box_dir.name)
    netns_fd = os.open(f"/run/netns/{info['netns']}", os.O_RDONLY)
    syscalls.setns(netns_fd, syscalls.CLONE_NEWNET)
    os.close(netns_fd)
    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount("none", "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    userns_fd = _userns_fd(uid)
    syscalls.idmapped_bind(info["image"], str(fs / "lower"), userns_fd)
    # The box's uid cannot pass through the orchestrator's 0700 state dir: in this private mount namespace a
    # tmpfs on a fixed, passable path carries the box's root and SSH files for bwrap to pick up.
    syscalls.mount("tmpfs", str(STAGE), "tmpfs", 0, "mode=0755,size=64k")
    root, ssh = STAGE / "root", STAGE / "ssh"
    root.mkdir()
    ssh.mkdir()
    syscalls.mount("overlay", str(root), "overlay", 0,
                   f"lowerdir={fs / 'lower'},upperdir={fs / 'upper'},workdir={fs / 'work'}")
    syscalls.mount(str(fs / "ssh"), str(ssh), None, syscalls.MS_BIND)
    os.set_inheritable(userns_fd, True)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    argv = bwrap_argv(info, root, ssh, userns_fd)
    os.execv(argv[0], argv)


def spawn(box_dir: Path, info: dict[str, Any]) -> int:
    """Fork the box's pid 1-to-be (bwrap) as a child of the caller; returns its host pid. Call it from the
    main thread: bwrap dies with the thread that forked it."""
    pid = os.fork()
    if pid == 0:
        try:
            _child(box_dir, info)
        except BaseException as exc:  # noqa: BLE001 - the child must never return into the supervisor
            os.write(2, f"cannot start the box: {exc}\n".encode())
        os._exit(127)
    return pid
