#!/bin/sh
# The stand-in agent of the plan tests (agent: custom): reads the prompt on stdin, one order a line,
#   write PATH TEXT...  writes TEXT to PATH (dirs made)
#   sleep N             sleeps N seconds
#   fail                exits 3
# then commits everything on the box's branch.
set -eu
while IFS= read -r line || [ -n "$line" ]; do
  set -f
  # shellcheck disable=SC2086
  set -- $line
  set +f
  [ $# -gt 0 ] || continue
  case "$1" in
    write) path=$2; shift 2; mkdir -p "$(dirname "$path")"; printf '%s\n' "$*" > "$path"; echo "wrote $path" ;;
    sleep) sleep "$2" ;;
    fail) echo "asked to fail"; exit 3 ;;
    *) echo "ignored: $1" ;;
  esac
done
git add -A
git -c user.name=agent -c user.email=agent@example.invalid commit -qm "agent work" || true
echo "agent done"
