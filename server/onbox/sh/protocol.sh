# shellcheck shell=sh
# shellcheck disable=SC2034 # constants, used by the scripts that follow this one
# The on-box protocol, mirrored by server/onbox/protocol.py (a test checks that they agree).
# Every library sent to a box starts with these definitions.
BF_EXIT_FAILED=70
BF_EXIT_NO_JOB=44
BF_EXIT_NO_CWD=45
BF_EXIT_CWD_DENIED=46
BF_EXIT_NO_SETSID=47
BF_EXIT_NOT_STARTED=48
BF_EXIT_NO_BOXFILE=3
BF_EXIT_NO_PATH=50
BF_EXIT_NOT_A_DIR=51
BF_EXIT_CANNOT_ENTER=52
BF_EXIT_NOT_GIT=53
BF_EXIT_NO_BASE=54
BF_EXIT_GIT_FAILED=55
BF_STATE="$HOME/.boxforge"
BF_JOBS="$HOME/.boxforge/jobs"
BF_BOX_ENV="$HOME/.boxforge/env"
BF_STATUS_MAGIC=BOXFORGE-STATUS
