"""The part of the orchestrator's environment every box gets (the ``forward_env`` setting): by default the
proxy variables and the CA bundle variables, so a box behind the same proxy or TLS-inspecting middlebox
works like the machine that forged it. A box cannot see the host's paths, so a file a forwarded variable
names (a CA bundle) is copied into the box and the variable points at the copy."""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
              "http_proxy", "https_proxy", "all_proxy", "no_proxy")
# Variables whose value is a file of CA certificates (Node, OpenSSL and Python's ssl, requests, curl, git,
# pip, npm): the file is copied in.
CA_FILE_VARS = ("NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO",
                "PIP_CERT", "NPM_CONFIG_CAFILE", "npm_config_cafile")
DEFAULT_FORWARD_ENV = PROXY_VARS + CA_FILE_VARS
DEFAULT_WORD = "default"  # in forward_env: the default set, so a config can add to it
MAX_FILE_BYTES = 4 * 1024 * 1024
BOX_DIR = ".boxforge/forwarded"  # under the box user's home: the copied files
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


@dataclass(frozen=True)
class Forwarded:
    """What goes to a box from this environment: plain values, files to copy in (the variable is set to the
    copy's path on the box), and what was left out or will not work there, and why."""

    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return sorted({*self.env, *self.files})

    def without(self, names: Iterable[str]) -> Forwarded:
        """These names dropped (the caller passes its own values for them)."""
        drop = set(names)
        return Forwarded({k: v for k, v in self.env.items() if k not in drop},
                         {k: v for k, v in self.files.items() if k not in drop}, self.notes)


def parse_names(raw: object) -> tuple[str, ...]:
    """``forward_env`` from the config file (a list) or the env (``BOXFORGE_FORWARD_ENV``: names separated by
    commas or spaces); the word ``default`` stands for the default set; empty forwards nothing."""
    if isinstance(raw, str):
        words = raw.replace(",", " ").split()
    elif isinstance(raw, (list, tuple)) and all(isinstance(w, str) for w in raw):
        words = [w.strip() for w in raw]
    else:
        raise ValueError(raw)
    names: list[str] = []
    for word in words:
        expanded = DEFAULT_FORWARD_ENV if word == DEFAULT_WORD else (word,)
        for name in expanded:
            if not name.isidentifier() or not name.isascii():
                raise ValueError(f"{name!r} is not an environment variable name")
            if name not in names:
                names.append(name)
    return tuple(names)


def _is_file_var(name: str, value: str) -> bool:
    if name in CA_FILE_VARS:
        return True
    return os.path.isabs(value) and os.path.isfile(value)  # any other forwarded file path: the box cannot see it


def _loopback_proxy(value: str) -> bool:
    try:
        host = urlsplit(value if "://" in value else "http://" + value).hostname
    except ValueError:
        return False
    if host is None:
        return False
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def collect(names: Iterable[str], env: Mapping[str, str], *, loopback_unreachable: bool = False) -> Forwarded:
    """The values of ``names`` set (non-empty) in ``env``, with the files they name read in. A CA variable whose
    file cannot be read, or is over 4 MiB, is left out with a note. ``loopback_unreachable``: the box cannot
    reach this machine's loopback, so a proxy there gets a note."""
    plain: dict[str, str] = {}
    files: dict[str, bytes] = {}
    notes: list[str] = []
    for name in names:
        value = env.get(name)
        if not value:
            continue
        if not _is_file_var(name, value):
            plain[name] = value
            if loopback_unreachable and name in PROXY_VARS and name.lower() != "no_proxy" and _loopback_proxy(value):
                notes.append(f"{name} points at this machine's loopback, which the box cannot reach: use an "
                             "address the box can reach, or drop it from forward_env")
            continue
        try:
            st = os.stat(value)
            if not stat.S_ISREG(st.st_mode):
                raise OSError("not a regular file")
            if st.st_size > MAX_FILE_BYTES:
                raise OSError(f"{st.st_size} bytes, over the {MAX_FILE_BYTES // (1024 * 1024)} MiB limit")
            files[name] = Path(value).read_bytes()
        except OSError as exc:
            notes.append(f"{name} was not forwarded: its file {value} could not be read "
                         f"({exc.strerror or exc})")
    return Forwarded(plain, files, tuple(notes))


def box_path(home: str, name: str) -> str:
    """Where the copy of the file variable ``name`` lives on a box whose user's home is ``home``."""
    return f"{home.rstrip('/')}/{BOX_DIR}/{name}"
