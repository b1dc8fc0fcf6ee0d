# shellcheck shell=sh
# Wait for a cloud box's own boot setup (cloud-init) and check that boxforge's part of it finished.
# Params (quoted assignments before this file):
#   FLAG_FILE   written early by boxforge's cloud-config (before sshd has the pinned host key, so it is
#               there whenever we can log in); without it no boxforge cloud-init runs here: nothing to wait for
#   READY_FILE  the marker the last step of boxforge's cloud-config writes
# Exit 0 when ready; 4 when cloud-init ended without writing the marker (its log says why).
[ -e "$FLAG_FILE" ] || exit 0
echo '[boxforge] waiting for cloud-init'
if command -v cloud-init >/dev/null 2>&1; then
    cloud-init status --wait >/dev/null 2>&1 || true
fi
if [ ! -e "$READY_FILE" ]; then
    echo "cloud-init did not finish setting up this box ($READY_FILE is missing): see /var/log/cloud-init-output.log on the box" >&2
    exit 4
fi
