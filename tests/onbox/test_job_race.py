"""The status script under real local shells, without SSH: a job that finishes between the
script's reads of its files is never reported ``lost``."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from server import jobs

SHELLS = [s for s in (["/bin/sh"], ["dash"], ["busybox", "sh"]) if shutil.which(s[0])]
JOB = "j-0123456789ab"


def _status_line(shell: list[str], home: Path) -> subprocess.Popen[bytes]:
    call = jobs._script("status", job=JOB, ooff=0, eoff=0, maxb=1024, wait_cs=0).shell_call
    text = "exec 3>&1\n" + call.library + "\n" + call.call + "\n"
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    return subprocess.Popen([*shell, "-c", text], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _open_writer(fifo: Path, deadline_s: float) -> int:
    """Open ``fifo`` for writing once a reader has it open (ENXIO until then)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > end:
                raise
        time.sleep(0.001)


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: " ".join(s))
def test_a_wrapper_that_writes_exit_and_dies_between_the_reads_is_succeeded(tmp_path: Path, shell: list[str]) -> None:
    job_dir = tmp_path / ".boxforge" / "jobs" / JOB
    job_dir.mkdir(parents=True)
    wrapper = subprocess.Popen(["sleep", "60"])
    try:
        (job_dir / "pid").write_text(f"{wrapper.pid}\n")
        (job_dir / "started").write_text(f"{time.time():.3f}\n")
        (job_dir / "out").write_bytes(b"")
        (job_dir / "err").write_bytes(b"")
        # the script reads exit, then pid, then boot (this FIFO): it blocks here until we write
        os.mkfifo(job_dir / "boot")
        status = _status_line(shell, tmp_path)
        fd = _open_writer(job_dir / "boot", 20.0)
        # between the two reads: the wrapper records its exit and dies (reaped, not a zombie)
        (job_dir / "exit.tmp").write_text("0 1700000000.5\n")
        os.replace(job_dir / "exit.tmp", job_dir / "exit")
        wrapper.kill()
        wrapper.wait(timeout=10)
        boot = Path("/proc/sys/kernel/random/boot_id").read_text()
        os.write(fd, boot.encode())
        os.close(fd)
        out, err = status.communicate(timeout=30)
    finally:
        wrapper.kill()
        wrapper.wait(timeout=10)
    assert status.returncode == 0, err
    st = jobs._parse_status(JOB, out)
    assert (st.state, st.exit_code, st.finished_at) == ("succeeded", 0, 1700000000.5)
