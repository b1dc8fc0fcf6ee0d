"""Per-box key material.

Each box gets its own ed25519 client key (the orchestrator logs in with it) and its own
ed25519 host key (the box presents it, the orchestrator pins it). The host private key is
handed to the provider in the BoxSpec and never written on the orchestrator's side; the
client private key and the host public key are kept under ``keys/<key_id>/`` with mode 0600
in a 0700 directory.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from server.config import ensure_private_dir
from server.lazy import lazy_import

if TYPE_CHECKING:
    import asyncssh
else:
    asyncssh = lazy_import("asyncssh")  # loaded on first use, not by the CLI's start

CLIENT_KEY_FILE = "client_ed25519"
HOST_PUB_FILE = "host_ed25519.pub"


@dataclass(frozen=True)
class BoxKeys:
    key_dir: Path
    client_public: str
    host_public: str
    host_private: str = field(repr=False, default="")

    @property
    def client_key_path(self) -> Path:
        return self.key_dir / CLIENT_KEY_FILE


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    path.chmod(0o600)


def generate_keypair(comment: str) -> tuple[str, str]:
    """A fresh ed25519 pair as (OpenSSH private, OpenSSH public) text."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    private = key.export_private_key("openssh").decode()
    public = key.export_public_key("openssh").decode().strip()
    return private, public


def create_box_keys(keys_root: Path, key_id: str) -> BoxKeys:
    """Generate and store a box's client key and host key pair; returns all of it."""
    ensure_private_dir(keys_root)
    key_dir = ensure_private_dir(keys_root / key_id)
    client_private, client_public = generate_keypair(f"boxforge-client-{key_id}")
    host_private, host_public = generate_keypair(f"boxforge-host-{key_id}")
    _write_private(key_dir / CLIENT_KEY_FILE, client_private.encode())
    _write_private(key_dir / (CLIENT_KEY_FILE + ".pub"), (client_public + "\n").encode())
    _write_private(key_dir / HOST_PUB_FILE, (host_public + "\n").encode())
    return BoxKeys(key_dir, client_public, host_public, host_private)


def load_box_keys(keys_root: Path, key_id: str) -> BoxKeys:
    key_dir = keys_root / key_id
    return BoxKeys(
        key_dir=key_dir,
        client_public=(key_dir / (CLIENT_KEY_FILE + ".pub")).read_text().strip(),
        host_public=(key_dir / HOST_PUB_FILE).read_text().strip(),
    )


def delete_box_keys(keys_root: Path, key_id: str) -> None:
    shutil.rmtree(keys_root / key_id, ignore_errors=True)
