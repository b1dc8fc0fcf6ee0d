"""A box's files as a host-side test reaches them, isolated or not: through ``/proc/<pid>/root`` of a process of
the box, which is the box's own root as its mount namespace shows it (the overlay merged, for an isolated box;
``/`` for an unisolated one). Files a test makes there belong to the box's root (its host uid), as if the box had
made them. For the tests that used to run on unisolated boxes only to touch a box's files from the host."""

from __future__ import annotations

import os
from pathlib import Path

from providers.local.boxdir import read_box_info, read_pid
from server.config import Settings
from tests.support import local_boxes_dir


class BoxFiles:
    def __init__(self, box_dir: Path) -> None:
        self.box_dir = box_dir
        info = read_box_info(box_dir) or {}
        self.uid = int(info["uid"]) if info.get("uid") is not None else None  # None: an unisolated box

    @classmethod
    def of(cls, settings: Settings, name: str) -> BoxFiles:
        """The files of the local box called ``name``."""
        for box_dir in local_boxes_dir(settings).glob("lb-*"):
            if (read_box_info(box_dir) or {}).get("name") == name:
                return cls(box_dir)
        raise AssertionError(f"no local box called {name!r} under {local_boxes_dir(settings)}")

    @property
    def root(self) -> Path:
        """The box's ``/`` (a live view: valid while its SSH server runs)."""
        pid = read_pid(self.box_dir / "server.pid")
        assert pid is not None and Path(f"/proc/{pid}").exists(), f"box {self.box_dir.name} has no live process"
        if self.uid is not None:  # server.pid is bwrap, still outside the box's root: its child is the box's init
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            assert children, f"box {self.box_dir.name}: bwrap {pid} has no child yet"
            pid = int(children[0])
        return Path(f"/proc/{pid}/root")

    def path(self, inside: str) -> Path:
        """Where the box's ``inside`` (an absolute path in the box) is on the host."""
        assert inside.startswith("/"), inside
        return self.root / inside.lstrip("/")

    def give(self, host_path: Path) -> Path:
        """Make a file the test created in the box the box's root's, as if the box had made it."""
        if self.uid is not None:
            os.chown(host_path, self.uid, self.uid, follow_symlinks=False)
        return host_path
