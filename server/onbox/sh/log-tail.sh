# shellcheck shell=sh
# shellcheck disable=SC2154 # the params are set before this text
# Print the last $max_bytes bytes of the log file $path (one a failed create job's output names, such as
# npm's "A complete log of this run can be found in: ..."), before the burn deletes it. Params: path,
# max_bytes. Exit 3 when it is not a readable regular file.
[ -f "$path" ] && [ -r "$path" ] || exit 3
tail -c "$max_bytes" -- "$path"
