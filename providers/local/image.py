"""The base image of isolated local boxes: a Debian root filesystem, built once and cached.

``ensure_image`` returns a ready rootfs directory: the user's own (``BOXFORGE_LOCAL_IMAGE``, a directory or a
tarball, unpacked once into the cache), or the Debian image built with ``debootstrap`` from the suite and
mirror this machine's own apt sources name (never a mirror written into the code). Builds run under a file
lock, so several processes asking at once build it once; a finished image is renamed into place whole, so a
half-built one is never used. Every image is read-only to boxes: each box mounts it as the lower layer of an
overlay of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("coreutils", "git", "ca-certificates", "openssh-server", "curl", "python3", "procps", "iproute2")
IMAGE_FORMAT = 1  # bump when the post-build steps change, so old caches are rebuilt
MARKER = "image.json"
ROOTFS = "rootfs"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

Progress = Callable[[str], None]


class ImageError(Exception):
    """The base image cannot be had; the message says what to do."""


@dataclass(frozen=True)
class AptSource:
    uri: str
    suite: str
    components: tuple[str, ...]
    keyring: str | None = None


@dataclass(frozen=True)
class Image:
    name: str
    rootfs: Path
    built_at: float
    build_s: float | None
    source: str  # "debootstrap <suite> <mirror>" or the user's path

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "rootfs": str(self.rootfs), "built_at": self.built_at,
                "build_s": self.build_s, "source": self.source}


def cache_dir(state_home: Path, env: dict[str, str] | None = None) -> Path:
    """BOXFORGE_IMAGE_CACHE, else ``<state dir>/images``."""
    env = dict(os.environ if env is None else env)
    return Path(env.get("BOXFORGE_IMAGE_CACHE") or state_home / "images").expanduser()


def _deb822(text: str) -> Iterator[AptSource]:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                yield AptSource(uri, suite, tuple(fields.get("components", "main").split()), fields.get("signed-by"))


def _one_line(text: str) -> Iterator[AptSource]:
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"^deb\s+(?:\[(?P<opts>[^\]]*)\]\s+)?(?P<uri>\S+)\s+(?P<suite>\S+)\s*(?P<comps>.*)$", line)
        if match:
            keyring = re.search(r"signed-by=(\S+)", match["opts"] or "")
            yield AptSource(match["uri"], match["suite"], tuple(match["comps"].split() or ["main"]),
                            keyring.group(1) if keyring else None)


def apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every ``deb`` source this machine's apt uses, in the order apt reads them."""
    found: list[AptSource] = []
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            found.extend(_deb822(text))
        elif path.suffix == ".list" or path.name == "sources.list":
            found.extend(_one_line(text))
    return found


def base_source(etc_apt: Path = Path("/etc/apt")) -> AptSource:
    """The machine's main distribution source (not its security or updates suite)."""
    for source in apt_sources(etc_apt):
        if "security" in source.uri or "-" in source.suite or not source.uri.startswith(("http", "file", "ftp")):
            continue
        return source
    raise ImageError(f"no Debian source found in {etc_apt}/sources.list(.d): debootstrap needs a suite and a "
                     "mirror; add one, or set BOXFORGE_LOCAL_IMAGE to a root filesystem (directory or tarball)")


def _arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def debian_image_name(source: AptSource) -> str:
    digest = hashlib.sha256(json.dumps([IMAGE_FORMAT, source.uri, PACKAGES]).encode()).hexdigest()[:10]
    return f"debian-{source.suite}-{_arch()}-{digest}"


def user_image_name(path: Path) -> str:
    st = path.stat()
    digest = hashlib.sha256(f"{IMAGE_FORMAT}:{path.resolve()}:{st.st_mtime_ns}:{st.st_size}".encode()).hexdigest()
    return f"user-{path.name.split('.')[0] or 'rootfs'}-{digest[:10]}"


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd = os.open(cache / ".build.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(image_dir: Path) -> Image | None:
    try:
        meta = json.loads((image_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if meta.get("format") != IMAGE_FORMAT or not (image_dir / ROOTFS / "bin").exists():
        return None
    return Image(image_dir.name, image_dir / ROOTFS, meta["built_at"], meta.get("build_s"), meta["source"])


def list_images(cache: Path) -> list[Image]:
    try:
        dirs = sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))
    except FileNotFoundError:
        return []
    return [image for d in dirs if (image := _read(d)) is not None]


def _finish_rootfs(rootfs: Path) -> None:
    """Make the tree fit to be a box's root: sshd accepts root by key, apt works as root of a user namespace."""
    shadow = rootfs / "etc" / "shadow"
    if shadow.exists():  # sshd with UsePAM no refuses a locked ('!') account
        lines = [re.sub(r"^root:[^:]*:", "root:*:", line) for line in shadow.read_text().splitlines()]
        shadow.write_text("\n".join(lines) + "\n")
    for key in (rootfs / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()  # every box brings the host key the orchestrator pinned
    (rootfs / "etc" / "boxforge").mkdir(parents=True, exist_ok=True)
    (rootfs / "run" / "sshd").mkdir(parents=True, exist_ok=True)
    for name in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for leftover in (rootfs / name).glob("*.deb"):
            leftover.unlink()


def _commit(tmp: Path, image_dir: Path, source: str, started: float) -> Image:
    _finish_rootfs(tmp / ROOTFS)
    meta = {"format": IMAGE_FORMAT, "built_at": time.time(), "build_s": round(time.time() - started, 1),
            "source": source}
    (tmp / MARKER).write_text(json.dumps(meta, indent=1) + "\n")
    if image_dir.exists():
        shutil.rmtree(image_dir)
    tmp.rename(image_dir)
    image = _read(image_dir)
    assert image is not None
    return image


def _run_debootstrap(source: AptSource, target: Path, progress: Progress) -> None:
    debootstrap = shutil.which("debootstrap") or ("/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists()
                                                  else None)
    if debootstrap is None:
        raise ImageError("debootstrap is not installed: apt-get install debootstrap, or set BOXFORGE_LOCAL_IMAGE "
                         "to a root filesystem (directory or tarball)")
    argv = [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}",
            f"--components={','.join(source.components)}"]
    keyring = source.keyring or (KEYRING if Path(KEYRING).exists() else None)
    if keyring and keyring.startswith("/"):
        argv.append(f"--keyring={keyring}")
    argv += [source.suite, str(target), source.uri]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, errors="replace")
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-15:]
        if line.startswith(("I: ", "W: ", "E: ")):
            progress(line[3:])
    if proc.wait() != 0:
        log = target / "debootstrap" / "debootstrap.log"
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else "\n".join(tail)
        raise ImageError(f"debootstrap {source.suite} from {source.uri} failed (exit {proc.returncode}):\n{detail}")


def build_debian(cache: Path, *, force: bool = False, progress: Progress = lambda _: None,
                 etc_apt: Path = Path("/etc/apt")) -> Image:
    """The cached Debian image, built now when missing (or ``force``). Blocking: about a minute the first time."""
    source = base_source(etc_apt)
    name = debian_image_name(source)
    image_dir = cache / name
    with _locked(cache):
        if not force and (image := _read(image_dir)) is not None:
            return image
        progress(f"building the base image {name} (debootstrap {source.suite} from {source.uri}); once per cache")
        started = time.time()
        tmp = cache / f".build-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / ROOTFS).mkdir(parents=True)
        try:
            _run_debootstrap(source, tmp / ROOTFS, progress)
            image = _commit(tmp, image_dir, f"debootstrap {source.suite} {source.uri}", started)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        progress(f"base image ready in {image.build_s:.0f}s: {image.rootfs}")
        return image


def import_user_image(cache: Path, path: Path, *, progress: Progress = lambda _: None) -> Image:
    """A user's rootfs: a directory is used in place; a tarball is unpacked once into the cache."""
    path = path.expanduser()
    if not path.exists():
        raise ImageError(f"BOXFORGE_LOCAL_IMAGE={path} does not exist: give a root filesystem directory or tarball")
    if path.is_dir():
        if not (path / "bin").exists() or not (path / "usr").is_dir():
            raise ImageError(f"BOXFORGE_LOCAL_IMAGE={path} is not a root filesystem (no /bin or /usr in it)")
        return Image(f"user-{path.name}", path.resolve(), path.stat().st_mtime, None, str(path))
    name = user_image_name(path)
    image_dir = cache / name
    with _locked(cache):
        if (image := _read(image_dir)) is not None:
            return image
        progress(f"unpacking {path} into the image cache")
        started = time.time()
        tmp = cache / f".build-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / ROOTFS).mkdir(parents=True)
        try:
            with tarfile.open(path) as tar:
                tar.extractall(tmp / ROOTFS, filter="fully_trusted")  # the user's own image, kept as given
            image = _commit(tmp, image_dir, str(path), started)
        except (tarfile.TarError, OSError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ImageError(f"cannot unpack BOXFORGE_LOCAL_IMAGE={path}: {exc}") from exc
        return image


def find_image(cache: Path, user_image: str | None = None) -> Image | None:
    """The image boxes would use now, without building anything (None: it must be built first)."""
    if user_image:
        path = Path(user_image).expanduser()
        if path.is_dir():
            return Image(f"user-{path.name}", path.resolve(), path.stat().st_mtime, None, str(path))
        return _read(cache / user_image_name(path)) if path.exists() else None
    try:
        return _read(cache / debian_image_name(base_source()))
    except ImageError:
        return None


def ensure_image(cache: Path, user_image: str | None = None, *, progress: Progress = lambda _: None) -> Image:
    """The image to boot boxes from, built or unpacked now if needed."""
    if user_image:
        return import_user_image(cache, Path(user_image), progress=progress)
    return build_debian(cache, progress=progress)
