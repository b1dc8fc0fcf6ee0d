# shellcheck shell=sh
# Install distribution packages on a Debian or Ubuntu box with apt (run as root: the call asks for sudo).
# Params (quoted assignments before this file):
#   PACKAGES  package names separated by spaces (checked by the caller: [a-z0-9][a-z0-9+.-]*)
# Exit 3 when the box has no apt-get.
if ! command -v apt-get >/dev/null 2>&1; then
    echo "this box has no apt-get to install $PACKAGES with" >&2
    exit 3
fi
echo "[boxforge] installing $PACKAGES (apt)"
export DEBIAN_FRONTEND=noninteractive
apt-get -q -o DPkg::Lock::Timeout=300 update
# shellcheck disable=SC2086 # PACKAGES is a checked, space-separated list: split on purpose
apt-get -q -y -o DPkg::Lock::Timeout=300 install $PACKAGES
