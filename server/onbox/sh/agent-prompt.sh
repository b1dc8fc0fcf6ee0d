# shellcheck shell=sh
# shellcheck disable=SC2154 # prompt_id is a quoted assignment set before this text
# Store stdin as the prompt file of run_agent (0600); prompt_id is a checked id.
umask 077
mkdir -p "$HOME/.boxforge/prompts"
cat > "$HOME/.boxforge/prompts/$prompt_id"
