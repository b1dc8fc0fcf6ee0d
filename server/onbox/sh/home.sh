# shellcheck shell=sh
# Print the box user's home directory (no newline); the orchestrator checks it is absolute.
printf '%s' "$HOME"
