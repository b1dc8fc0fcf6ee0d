"""The ``#cloud-config`` user data of a Hetzner box: what cloud-init does on its first boot.

It pins the orchestrator's host key, creates the non-root box user with the box's client key and
passwordless sudo, and arms the backstop (``sh/backstop.sh`` run by a systemd timer) that powers the box off
after its expiry plus a grace period. No token and no env secret ever goes into user data: Hetzner stores it,
and any process on the box can read it back.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from providers.base import (
    BACKSTOP_EXPIRES_FILE,
    CLOUD_INIT_FLAG_FILE,
    CLOUD_INIT_READY_FILE,
    LABEL_REQUEST,
    BoxSpec,
)

BACKSTOP_GRACE_S = 900
BACKSTOP_PATH = "/usr/local/sbin/boxforge-backstop"

BACKSTOP_SERVICE = f"""[Unit]
Description=boxforge backstop: power off after the box's expiry

[Service]
Type=oneshot
Environment=BACKSTOP_FILE={BACKSTOP_EXPIRES_FILE} BACKSTOP_GRACE_S={BACKSTOP_GRACE_S}
ExecStart={BACKSTOP_PATH}
"""

BACKSTOP_TIMER = """[Unit]
Description=boxforge backstop check, every minute

[Timer]
OnBootSec=1min
OnUnitActiveSec=1min
AccuracySec=15s

[Install]
WantedBy=timers.target
"""


@cache
def backstop_script() -> str:
    """The backstop program (package data ``providers/hetzner/sh/backstop.sh``)."""
    return resources.files("providers.hetzner").joinpath("sh", "backstop.sh").read_text()


def cloud_config(spec: BoxSpec, *, user: str, expires_at: int) -> str:
    """The #cloud-config user data of a box (JSON, which cloud-init reads as YAML).

    It holds the box's own host key pair (the pin) and the client public key; never a
    token or an env secret.
    """
    config: dict[str, Any] = {
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {
            "ed25519_private": spec.host_key_private.strip() + "\n",
            "ed25519_public": spec.host_key_public.strip(),
        },
        "disable_root": True,
        "ssh_pwauth": False,
        "users": [{
            "name": user,
            "gecos": "boxforge box user",
            "shell": "/bin/bash",
            "lock_passwd": True,
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "ssh_authorized_keys": [spec.authorized_key.strip()],
        }],
        "write_files": [
            {"path": CLOUD_INIT_FLAG_FILE, "permissions": "0644",
             "content": f"{LABEL_REQUEST}={spec.request_id}\n"},
            {"path": BACKSTOP_EXPIRES_FILE, "permissions": "0644", "content": f"{expires_at}\n"},
            {"path": BACKSTOP_PATH, "permissions": "0755", "content": backstop_script()},
            {"path": "/etc/systemd/system/boxforge-backstop.service", "permissions": "0644",
             "content": BACKSTOP_SERVICE},
            {"path": "/etc/systemd/system/boxforge-backstop.timer", "permissions": "0644",
             "content": BACKSTOP_TIMER},
        ],
        "runcmd": [
            ["chown", user, BACKSTOP_EXPIRES_FILE],  # extend_server moves the deadline over SSH
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "boxforge-backstop.timer"],
            ["touch", CLOUD_INIT_READY_FILE],
        ],
    }
    return "#cloud-config\n" + json.dumps(config, indent=1) + "\n"
