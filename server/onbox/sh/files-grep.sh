# shellcheck shell=sh
# shellcheck disable=SC2154 # the params (and protocol.sh's constants) are set before this text
# vm_grep: a first line "flavor -P|-E" (Perl regexes where this grep has them), then grep -rnHIsZ
# matches. Params: target (a dir or a file), pattern, ignore_case (0/1), include (a --include glob,
# or empty), pruned (space-separated dir names to skip), max_bytes (output cap).
[ -e "$target" ] || exit "$BF_EXIT_NO_PATH"
if [ -d "$target" ]; then cd "$target" || exit "$BF_EXIT_CANNOT_ENTER"; where=.; else where=$target; fi
grep -P -e x /dev/null >/dev/null 2>&1
if [ $? -eq 1 ]; then flavor=-P; else flavor=-E; fi
echo "flavor $flavor"
set -f
set -- -rnHIs -Z
# shellcheck disable=SC2086 # pruned is a list of plain names: split on purpose (globbing is off)
for _p in $pruned; do set -- "$@" "--exclude-dir=$_p"; done
if [ "$ignore_case" = 1 ]; then set -- "$@" -i; fi
if [ -n "$include" ]; then set -- "$@" "--include=$include"; fi
grep "$@" "$flavor" -e "$pattern" -- "$where" | head -c "$max_bytes"
