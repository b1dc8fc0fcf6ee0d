# shellcheck shell=sh
# shellcheck disable=SC2154 # the params are set before this text
# Write stdin to ~/.boxforge/forwarded/$name (a file a forwarded env variable names on the orchestrator,
# a CA bundle say), atomically, readable by the box user only. Params: name (a file name, no slash).
case "$name" in */* | '' | .*) echo "bad file name" >&2; exit 2 ;; esac
dir="$HOME/.boxforge/forwarded"
umask 077
mkdir -p "$dir" && cat >"$dir/.$name.tmp" && mv -f "$dir/.$name.tmp" "$dir/$name"
