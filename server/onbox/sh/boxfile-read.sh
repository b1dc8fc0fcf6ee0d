# shellcheck shell=sh
# shellcheck disable=SC2154 # the params (and protocol.sh's constants) are set before this text
# Print the project's .boxforge.yml, at most one byte over the limit (so the caller sees it is too
# large). Params: path (the file), max_bytes. Exit BF_EXIT_NO_BOXFILE when there is none.
if [ -f "$path" ]; then head -c "$((max_bytes + 1))" "$path"; else exit "$BF_EXIT_NO_BOXFILE"; fi
