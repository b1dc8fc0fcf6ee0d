# shellcheck shell=sh
# shellcheck disable=SC2154 # the params (and protocol.sh's constants) are set before this text
# vm_ls: entries under base as NUL-terminated "<type> <size> <mtime> <relative path>" records.
# Params: base (absolute dir), maxdepth (empty: any depth), name (a find -name pattern, or empty),
# pruned (space-separated dir names not to descend into), max_bytes (output cap).
[ -e "$base" ] || exit "$BF_EXIT_NO_PATH"
[ -d "$base" ] || exit "$BF_EXIT_NOT_A_DIR"
cd "$base" || exit "$BF_EXIT_CANNOT_ENTER"
set -f
set -- . -mindepth 1
if [ -n "$maxdepth" ]; then set -- "$@" -maxdepth "$maxdepth"; fi
if [ -n "$pruned" ]; then
  set -- "$@" "("
  _or=
  # shellcheck disable=SC2086 # pruned is a list of plain names: split on purpose (globbing is off)
  for _p in $pruned; do set -- "$@" $_or -name "$_p"; _or=-o; done
  set -- "$@" ")" -prune -o
fi
if [ -n "$name" ]; then set -- "$@" -name "$name"; fi
find "$@" -printf '%y %s %T@ %P\0' 2>/dev/null | head -c "$max_bytes"
