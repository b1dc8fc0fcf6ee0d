#!/bin/sh
# shellcheck shell=sh
# boxforge Docker box init (runs under docker-init as PID 1): start sshd, then stop the box at its expiry.
# The deadline is in /run/boxforge/stop-at, a read-only mount the orchestrator rewrites on extend: the box
# cannot move it. When this script exits, the container stops and every process in it dies.
set -u
schedule=${BOXFORGE_STOP_AT_FILE:-/run/boxforge/stop-at}
sshd_config=${BOXFORGE_SSHD_CONFIG:-/etc/ssh/boxforge/sshd_config}
poll_s=${BOXFORGE_WATCHDOG_POLL_S:-1}
shadow=${BOXFORGE_SHADOW_FILE:-/etc/shadow}

expired() {
  at=$(cat "$schedule" 2>/dev/null) || return 1
  case "$at" in '' | *[!0-9]*) return 1 ;; esac
  [ "$(date +%s)" -ge "$at" ]
}

sshd_bin=$(command -v sshd 2>/dev/null || echo /usr/sbin/sshd)
if [ "${BOXFORGE_NO_SSHD:-}" = 1 ]; then
  sshd_pid=
else
  mkdir -p /run/sshd && chmod 0755 /run/sshd
  # sshd without PAM refuses a locked account: an image's "root:!" becomes "root:*" (no password either way).
  if grep -q '^root:!' "$shadow" 2>/dev/null; then
    sed -i 's/^root:!*/root:*/' "$shadow"
  fi
  "$sshd_bin" -D -e -f "$sshd_config" &
  sshd_pid=$!
fi
while :; do
  if expired; then
    echo "boxforge: expired (deadline $(cat "$schedule")): stopping the box"
    exit 0
  fi
  if [ -n "$sshd_pid" ] && ! kill -0 "$sshd_pid" 2>/dev/null; then
    echo "boxforge: sshd exited: stopping the box"
    exit 1
  fi
  sleep "$poll_s"
done
