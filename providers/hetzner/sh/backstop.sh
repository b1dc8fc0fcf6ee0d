#!/bin/sh
# shellcheck shell=sh
# boxforge backstop: power the box off once its expiry plus a grace period has passed.
# The orchestrator deletes the server at expiry; this only bounds the cost when it cannot.
# Run every minute by boxforge-backstop.timer; its service sets (systemd Environment=):
#   BACKSTOP_FILE     the deadline file, unix seconds (extend_server rewrites it)
#   BACKSTOP_GRACE_S  seconds to wait past the deadline
at=$(cat "$BACKSTOP_FILE" 2>/dev/null) || exit 0
case "$at" in ''|*[!0-9]*) exit 0 ;; esac
case "$BACKSTOP_GRACE_S" in ''|*[!0-9]*) BACKSTOP_GRACE_S=900 ;; esac
if [ "$(date +%s)" -ge $((at + BACKSTOP_GRACE_S)) ]; then
    logger -t boxforge "expired at $at (+${BACKSTOP_GRACE_S}s grace): powering off"
    systemctl poweroff
fi
