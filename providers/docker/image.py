"""The boxforge base image: the same Debian root as local boxes, imported into the daemon.

``ensure_base_image`` returns a tag the daemon has: ``boxforge/base:<key>``. When the daemon lacks it, the
rootfs tarball in the image cache (``BOXFORGE_IMAGE_CACHE``, else ``<home>/images``) is imported
(``docker import``, 3-6 s); when the cache lacks that too, it is built once with ``debootstrap`` (about a
minute and a half; root and a Debian mirror needed), under a lock so parallel creates build it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from providers.base import ProviderError

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("openssh-server", "git", "ca-certificates", "procps", "iproute2", "python3")
IMAGE_KEY = "bookworm-1"  # bump when SUITE, PACKAGES or the fix-ups below change
IMAGE_REPO = "boxforge/base"
BUILD_TIMEOUT_S = 900.0


class ImageError(Exception):
    """The base image cannot be built or imported; the message says why and what to do."""


def base_tag() -> str:
    return f"{IMAGE_REPO}:{IMAGE_KEY}"


def rootfs_tarball(cache_dir: Path) -> Path:
    return cache_dir / f"docker-rootfs-{IMAGE_KEY}.tar"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fix_up(root: Path) -> None:
    """Make a debootstrapped root a box root: no host keys of its own (each box gets the orchestrator's),
    root's password field ``*`` (sshd without PAM refuses a locked ``!`` account), no package cache."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    shadow = root / "etc/shadow"
    lines = shadow.read_text().splitlines()
    shadow.write_text("".join(
        ("root:*:" + line.split(":", 2)[2] if line.startswith("root:") else line) + "\n" for line in lines))
    for cached in (root / "var/cache/apt/archives").glob("*.deb"):
        cached.unlink()
    (root / "run/sshd").mkdir(parents=True, exist_ok=True)


def build_rootfs_tarball(cache_dir: Path) -> Path:
    """The cached rootfs tarball, built with debootstrap when missing (blocking; minutes)."""
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tarball = rootfs_tarball(cache_dir)
    with _locked(cache_dir / f".docker-rootfs-{IMAGE_KEY}.lock"):
        if tarball.exists():
            return tarball
        if shutil.which("debootstrap") is None or os.geteuid() != 0:
            raise ImageError("the boxforge base image needs building, which takes debootstrap run as root; "
                             "install debootstrap and run as root once, or name an image the daemon has "
                             "(BOXFORGE_DOCKER_IMAGE, with sh and OpenSSH's sshd in it)")
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".build-") as tmp:
            root = Path(tmp) / "rootfs"
            try:
                subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                                str(root), MIRROR], capture_output=True, text=True, check=True,
                               timeout=BUILD_TIMEOUT_S)
            except subprocess.CalledProcessError as exc:
                raise ImageError(f"debootstrap failed ({exc.returncode}): {exc.stderr.strip()[-500:]}") from None
            except subprocess.TimeoutExpired:
                raise ImageError(f"debootstrap did not finish within {BUILD_TIMEOUT_S:g}s") from None
            _fix_up(root)
            partial = tarball.with_suffix(".tar.part")
            subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), "."],
                           check=True, capture_output=True, timeout=BUILD_TIMEOUT_S)
            partial.rename(tarball)
    return tarball


def ensure_image(client: Any, name: str | None, cache_dir: Path) -> str:
    """``name`` when the daemon has it (pulled if a registry serves it), else the boxforge base image."""
    from docker.errors import ImageNotFound

    if not name:
        return ensure_base_image(client, cache_dir)
    try:
        client.images.get(name)
    except ImageNotFound:
        try:
            client.images.pull(name)
        except Exception as exc:
            raise ProviderError(f"image {name!r} is not on the Docker daemon and could not be pulled "
                                f"({type(exc).__name__}); load it (docker load / docker import) or name another; "
                                "it needs sh and OpenSSH's sshd") from None
    return name


def ensure_base_image(client: Any, cache_dir: Path) -> str:
    """The base image's tag, imported from the cached rootfs tarball (built first if need be) when the
    daemon lacks it."""
    from docker.errors import ImageNotFound

    tag = base_tag()
    try:
        client.images.get(tag)
        return tag
    except ImageNotFound:
        pass
    try:
        tarball = build_rootfs_tarball(cache_dir)
    except ImageError as exc:
        raise ProviderError(str(exc)) from None
    repo, _, key = tag.partition(":")
    client.api.import_image_from_file(str(tarball), repository=repo, tag=key)
    return tag
