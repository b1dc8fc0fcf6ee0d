"""Fork a local box: a new box whose filesystem starts as a copy of a running box's.

An isolated box's own files are its overlay upper dir (the image below is shared and read-only): the fork
gets a copy (``cp -a --reflink=auto``: shared extents where the filesystem has reflinks, a plain copy on
ext4), every owner moved from the source's host uid range to the fork's, so the fork can never touch a file
the source owns. An unisolated box's files are its home dir. Job directories are not copied: their processes
run in the source, not in the fork.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from providers.local import boxinit
from providers.local import boxdir

JOBS_DIR = Path(".boxforge/jobs")  # mirrors server.onbox.protocol.JOBS_DIR (providers never import server/)
COPY_TIMEOUT_S = 600.0


class ForkError(Exception):
    """The copy failed; the message says why."""


def copy_tree(src: Path, dst: Path) -> None:
    """``src`` copied to ``dst`` (which must not exist) with owners, modes, times, xattrs (overlay whiteouts
    and opaque dirs) and device nodes; reflinked where the filesystem can."""
    try:
        done = subprocess.run(["cp", "-a", "--reflink=auto", "--", str(src), str(dst)], capture_output=True,
                              text=True, timeout=COPY_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ForkError(f"copying the box's files took over {COPY_TIMEOUT_S:g}s") from exc
    if done.returncode != 0:
        raise ForkError(f"copying the box's files failed: {done.stderr.strip()[-500:]}")


def shift_owners(top: Path, src_base: int, dst_base: int, size: int = boxinit.UID_RANGE) -> None:
    """Every uid/gid in ``src_base..src_base+size`` under ``top`` (not following links) moved to the same
    offset from ``dst_base``; others (none expected) left alone."""

    def shifted(value: int) -> int:
        return value - src_base + dst_base if src_base <= value < src_base + size else value

    for path in (top, *top.rglob("*")):
        st = path.lstat()
        uid, gid = shifted(st.st_uid), shifted(st.st_gid)
        if (uid, gid) != (st.st_uid, st.st_gid):
            os.lchown(path, uid, gid)
            if not path.is_symlink() and st.st_mode & 0o6000:  # chown clears setuid/setgid: put them back
                os.chmod(path, st.st_mode & 0o7777)


def _drop_jobs(home: Path) -> None:
    shutil.rmtree(home / JOBS_DIR, ignore_errors=True)


def copy_isolated(source_dir: Path, fork_dir: Path) -> None:
    """The source box's upper dir becomes the fork's (the fork is not started yet)."""
    src_info, fork_info = boxdir.read_box_info(source_dir), boxdir.read_box_info(fork_dir)
    if src_info is None or fork_info is None:
        raise ForkError("the source box is gone")
    upper = fork_dir / boxinit.FS_DIR / "upper"
    staged = upper.with_name("upper.fork")
    copy_tree(source_dir / boxinit.FS_DIR / "upper", staged)
    shift_owners(staged, int(src_info["uid"]), int(fork_info["uid"]))
    _drop_jobs(staged / "root")
    upper.rmdir()  # the empty one prepare_fs made
    staged.rename(upper)


def copy_unisolated(source_dir: Path, fork_dir: Path) -> None:
    """The source box's home becomes the fork's (same user: nothing to shift)."""
    home = fork_dir / boxdir.HOME_DIR
    staged = home.with_name("home.fork")
    copy_tree(source_dir / boxdir.HOME_DIR, staged)
    _drop_jobs(staged)
    shutil.rmtree(home)
    staged.rename(home)
