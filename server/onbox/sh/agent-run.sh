# shellcheck shell=sh
# shellcheck disable=SC2154 # run is a quoted assignment boxforge writes above this text
# ~/.boxforge/agent-run, written by the bootstrap: runs the agent of this box non-interactively,
# the prompt on stdin. run is the agent's command line; extra args follow it.
# shellcheck disable=SC1091 # written by the bootstrap
[ -r "$HOME/.boxforge/profile" ] && . "$HOME/.boxforge/profile"
eval "$run"' "$@"'
