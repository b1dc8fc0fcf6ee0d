"""The on-box protocol, once: exit codes of the box-side scripts and the layout of ``~/.boxforge``.

``sh/protocol.sh`` states the same values for the scripts (a test checks that the two match);
every library sent to a box starts with it."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """Exit codes the box-side scripts answer with (beyond 0), one meaning each."""

    FAILED = 70  #: the script could not do its work (disk full, a file not writable); stderr says why
    NO_JOB = 44  #: the job directory does not exist
    NO_CWD = 45  #: the working directory given for a launch does not exist
    CWD_DENIED = 46  #: the working directory exists but cannot be entered
    NO_SETSID = 47  #: the box lacks setsid (util-linux), which detached jobs need
    NOT_STARTED = 48  #: the job's wrapper did not record its pid in time
    NO_BOXFILE = 3  #: the project has no .boxforge.yml
    NO_PATH = 50  #: the path a file tool was given does not exist
    NOT_A_DIR = 51  #: the path is a file where a directory is needed
    CANNOT_ENTER = 52  #: the directory cannot be entered
    NOT_GIT = 53  #: the project dir is not a git checkout
    NO_BASE = 54  #: the base commit is not in the repository
    GIT_FAILED = 55  #: git refused the working tree (stderr says why)


# Paths relative to the box user's home; the scripts build them from $HOME the same way.
STATE_DIR = ".boxforge"  #: everything boxforge keeps on a box
JOBS_DIR = ".boxforge/jobs"  #: one directory per job: cmd, cwd, pid, boot, out, err, exit, killed, run, secrets
BOX_ENV_FILE = ".boxforge/env"  #: the box-wide env (0600), sourced by every job before its own
CHANNEL_DIR = ".boxforge/ch"  #: the control channels' scratch dirs, one per loop pid
AGENT_RUN_FILE = ".boxforge/agent-run"  #: the box's agent, run non-interactively with the prompt on stdin
PROMPTS_DIR = ".boxforge/prompts"  #: prompts for run_agent, 0600
ASKPASS_FILE = ".boxforge/askpass"  #: git's askpass helper during the bootstrap's clone
BASE_FILE = ".boxforge/base"  #: the base commit recorded at the first bootstrap
READY_FILE = ".boxforge/ready"  #: unix time the bootstrap finished
AGENT_STAMP_FILE = ".boxforge/agent-installed"  #: checksum of the agent_install command that ran

STATUS_MAGIC = "BOXFORGE-STATUS"  #: first word of a status answer's header line

# name in sh/protocol.sh -> value, for the test that the two agree
SHELL_NAMES: dict[str, str] = {
    **{f"BF_EXIT_{code.name}": str(int(code)) for code in Exit},
    "BF_STATE": f"$HOME/{STATE_DIR}",
    "BF_JOBS": f"$HOME/{JOBS_DIR}",
    "BF_BOX_ENV": f"$HOME/{BOX_ENV_FILE}",
    "BF_STATUS_MAGIC": STATUS_MAGIC,
}
