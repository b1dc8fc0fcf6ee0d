"""A box's network: its own netns, a veth pair with a /30 of 10.231.0.0/16, and host rules around it.

Box ``i`` gets 10.231.0.0 + 4i: the host side is ``.1`` (the box's gateway), the box ``.2``. IPv6 is off on both
ends. One set of host rules covers every box, by interface name (host ends are ``bfle…`` with egress and
``bfln…`` without):

- INPUT: nothing new from a box reaches the host (its services on any address, the MCP HTTP server included);
  only replies to connections the host opened (the orchestrator's SSH) come back.
- FORWARD: box to box is dropped; a ``bfln`` box forwards nothing; a ``bfle`` box reaches the internet but no
  private, link-local, CGNAT or loopback range (other boxes, Docker boxes, the LAN, a metadata service).
- nat POSTROUTING: boxes with egress leave through NAT.

The box's own root cannot change any of it: the netns belongs to the host's user namespace, not the box's.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from providers.local import syscalls

NET = ipaddress.ip_network("10.231.0.0/16")
MAX_BOXES = NET.num_addresses // 4
PREFIX = "bfl"
CHAIN_IN = "BOXFORGE-LOCAL-IN"
CHAIN_FWD = "BOXFORGE-LOCAL-FWD"
CHAIN_NAT = "BOXFORGE-LOCAL-NAT"
BLOCKED_FOR_EGRESS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10",
                      "127.0.0.0/8", "224.0.0.0/4")
LOCK = Path("/run/boxforge-local.lock")
CLAIMS = Path("/run/boxforge-local/claims")  # index -> the box dir holding it, machine-wide (every state dir)
STALE_CLAIM_S = 120.0  # a claim whose box dir is missing this long after it was made is a leftover


class NetworkError(Exception):
    pass


def addresses(index: int) -> tuple[str, str]:
    """(host side, box side) of box ``index``."""
    if not 0 <= index < MAX_BOXES:
        raise NetworkError(f"no address left in {NET} for box index {index}")
    base = int(NET.network_address) + 4 * index
    return str(ipaddress.ip_address(base + 1)), str(ipaddress.ip_address(base + 2))


def names(box_id: str, egress: bool) -> tuple[str, str]:
    """(netns name, host-side veth name) of a box."""
    suffix = box_id.removeprefix("lb-")[:11]
    return f"boxforge-{box_id}", f"{PREFIX}{'e' if egress else 'n'}{suffix}"


def _run(argv: list[str], stdin: str | None = None) -> None:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NetworkError(f"{' '.join(argv[:3])} failed: {(proc.stderr or proc.stdout).strip()}")


def nameservers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The host's IPv4 resolvers that a box can use through NAT (not loopback ones, which are the host's)."""
    found = []
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            with contextlib.suppress(ValueError):
                addr = ipaddress.ip_address(parts[1])
                if addr.version == 4 and not addr.is_loopback:
                    found.append(str(addr))
    return found


def _rules() -> str:
    fwd = [f"-A {CHAIN_FWD} -i {PREFIX}+ -o {PREFIX}+ -j DROP",
           f"-A {CHAIN_FWD} -i {PREFIX}n+ -j DROP",
           f"-A {CHAIN_FWD} -o {PREFIX}n+ -j DROP"]
    # DNS to the host's own resolvers, which may sit in a private range the next rules close
    fwd += [f"-A {CHAIN_FWD} -d {ns}/32 -i {PREFIX}e+ -p {proto} -m {proto} --dport 53 -j ACCEPT"
            for ns in nameservers() for proto in ("udp", "tcp")]
    fwd += [f"-A {CHAIN_FWD} -d {net} -i {PREFIX}e+ -j DROP" for net in BLOCKED_FOR_EGRESS]
    fwd += [f"-A {CHAIN_FWD} -i {PREFIX}e+ -j ACCEPT",
            f"-A {CHAIN_FWD} -o {PREFIX}e+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            f"-A {CHAIN_FWD} -o {PREFIX}+ -j DROP"]
    return "\n".join([
        "*filter", f":{CHAIN_IN} - [0:0]", f":{CHAIN_FWD} - [0:0]",
        f"-A {CHAIN_IN} -i {PREFIX}+ -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        f"-A {CHAIN_IN} -i {PREFIX}+ -j DROP",
        *fwd, "COMMIT",
        "*nat", f":{CHAIN_NAT} - [0:0]", f"-A {CHAIN_NAT} -s {NET} ! -o {PREFIX}+ -j MASQUERADE", "COMMIT", ""])


def _rules_in_place(saved: str) -> bool:
    wanted = [line for line in _rules().splitlines() if line.startswith("-A")]
    return (all(line in saved for line in wanted) and f"-A INPUT -j {CHAIN_IN}" in saved
            and f"-A FORWARD -j {CHAIN_FWD}" in saved and f"-A POSTROUTING -j {CHAIN_NAT}" in saved)


def ensure_host_rules() -> None:
    """Install the host rules once (checked on every box start; reinstalled if someone flushed them)."""
    saved = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout
    if _rules_in_place(saved):
        return
    with _locked():
        saved = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout
        if _rules_in_place(saved):
            return
        _run(["iptables-restore", "-w", "--noflush"], _rules())
        for table, chain, target in (("filter", "INPUT", CHAIN_IN), ("filter", "FORWARD", CHAIN_FWD),
                                     ("nat", "POSTROUTING", CHAIN_NAT)):
            if subprocess.run(["iptables", "-w", "-t", table, "-C", chain, "-j", target],
                              capture_output=True, check=False).returncode != 0:
                _run(["iptables", "-w", "-t", table, "-I", chain, "1", "-j", target])


@contextlib.contextmanager
def _locked():  # type: ignore[no-untyped-def]
    LOCK.parent.mkdir(exist_ok=True)
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def claim(box_dir: Path, cleanup: Callable[[str], None]) -> int:
    """The lowest free box index on this machine, claimed for ``box_dir`` (boxes of every state dir share
    10.231.0.0/16). A claim left by a box whose dir is gone is cleaned up (``cleanup(box_id)``) and reused."""
    CLAIMS.mkdir(parents=True, exist_ok=True)
    with _locked():
        for index in range(MAX_BOXES):
            path = CLAIMS / str(index)
            try:
                owner, made = path.read_text().split("\n")[:2]
            except (OSError, ValueError):
                owner = None
            if owner is not None:
                if Path(owner).exists() or time.time() - float(made or 0) < STALE_CLAIM_S:
                    continue
                cleanup(Path(owner).name)
            path.write_text(f"{box_dir}\n{time.time()}\n")
            return index
    raise NetworkError(f"every address of {NET} is taken: burn some local boxes")


def release(index: int, box_dir: Path) -> None:
    path = CLAIMS / str(index)
    with _locked(), contextlib.suppress(OSError, ValueError):
        if path.read_text().split("\n")[0] == str(box_dir):
            path.unlink()


def _in_netns(netns: str, settings: dict[str, str]) -> None:
    """Write sysctls inside the netns from a forked child (setns moves only the caller)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            syscalls.setns(fd, syscalls.CLONE_NEWNET)
            for key, value in settings.items():
                with contextlib.suppress(FileNotFoundError):
                    Path("/proc/sys", key).write_text(value)
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise NetworkError(f"cannot configure the network namespace {netns}")


def setup(box_id: str, index: int, *, egress: bool) -> None:
    netns, veth = names(box_id, egress)
    host, box = addresses(index)
    ensure_host_rules()
    if egress and Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "1":
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
    _run(["ip", "-batch", "-"], f"netns add {netns}\nlink add {veth} type veth peer name eth0 netns {netns}\n")
    Path(f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6").write_text("1")
    _in_netns(netns, {"net/ipv6/conf/all/disable_ipv6": "1", "net/ipv6/conf/default/disable_ipv6": "1",
                      "net/ipv6/conf/eth0/disable_ipv6": "1", "net/ipv6/conf/lo/disable_ipv6": "1",
                      "net/ipv4/ip_unprivileged_port_start": "0"})
    _run(["ip", "-batch", "-"], f"addr add {host}/30 dev {veth}\nlink set {veth} up\n")
    _run(["ip", "-n", netns, "-batch", "-"],
         f"link set lo up\naddr add {box}/30 dev eth0\nlink set eth0 up\nroute add default via {host}\n")


def netns_pids(netns: str) -> set[int]:
    proc = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False)
    return {int(x) for x in proc.stdout.split() if x.isdigit()}


def exists(netns: str) -> bool:
    return Path("/run/netns", netns).exists()


def teardown(box_id: str, egress: bool | None = None) -> None:
    """Remove the box's netns and host veth (both egress variants when ``egress`` is None). Idempotent."""
    for flag in (True, False) if egress is None else (egress,):
        netns, veth = names(box_id, flag)
        if exists(netns):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        if Path("/sys/class/net", veth).exists():
            subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)
