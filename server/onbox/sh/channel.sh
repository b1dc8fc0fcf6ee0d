# shellcheck shell=sh
# A control channel: one long-lived session running this loop, which reads framed requests on stdin
# and answers framed responses on stdout (the framing: server/ssh.py). Variables are prefixed __bf so
# that eval'd scripts see none of theirs clobbered; the scratch dir of a loop that died is swept by
# the next loop to start. The hello line "BOXFORGE-CHANNEL 1 <pid>" tells the client it runs.
exec 2>/dev/null
__bfd="$HOME/.boxforge/ch"
__bft="$__bfd/$$"
# shellcheck disable=SC2174 # ~/.boxforge/ch is made 0700 here too (its parent, if new, by umask)
mkdir -p -m 700 "$__bft" || exit 70
for __bfx in "$__bfd"/*; do
  case ${__bfx##*/} in *[!0-9]*) continue ;; esac
  [ "$__bfx" = "$__bft" ] || kill -0 "${__bfx##*/}" || rm -rf "$__bfx"
done
__bfw=$(printf '\303\251')
if [ "${#__bfw}" = 2 ]; then __bfw=1; else __bfw=0; fi
printf 'BOXFORGE-CHANNEL 1 %s\n' "$$"
while IFS=' ' read -r __bfn __bfk __bfs __bfi __bfz; do
  case $__bfn.$__bfs.$__bfi in *[!0-9.]*|.*|*..*|*.) break ;; esac
  case $__bfk in
    L) __bfc=$(head -c "$__bfs"; echo .); eval "${__bfc%.}"; printf '%s 0 0 0 0\n' "$__bfn"; continue ;;
    T)
      # <script_len> lines (private assignments, read with the builtin: no process) and the call line
      __bfc=
      while [ "$__bfs" -gt 0 ]; do
        IFS= read -r __bfv || break 2
        __bfc="$__bfc$__bfv
"
        __bfs=$((__bfs - 1))
      done
      IFS= read -r __bfv || break
      __bfc="$__bfc$__bfv" ;;
    B) __bfc=$(head -c "$__bfs"; echo .); __bfc=${__bfc%.} ;;
    *) break ;;
  esac
  if [ "$__bfk$__bfw" = T1 ]; then
    if [ "$__bfi" -gt 0 ]; then
      __bfo=$(head -c "$__bfi" | {
        (eval "$__bfc") 2>"$__bft/e" 3>"$__bft/b"; __bfr=$?; cat >/dev/null; exit "$__bfr"; }; echo ".$?")
    else
      # one fork: the EXIT trap appends the status (and keeps trailing newlines) however the call ends
      __bfo=$(exec </dev/null 2>"$__bft/e" 3>"$__bft/b"; trap 'echo ".$?"' EXIT; eval "$__bfc")
    fi
    __bfr=${__bfo##*.}; __bfo=${__bfo%.*}; __bfl=${#__bfo}
  else
    if [ "$__bfi" -gt 0 ]; then
      head -c "$__bfi" | { (eval "$__bfc") >"$__bft/b" 2>"$__bft/e" 3>&1; __bfr=$?; cat >/dev/null; exit "$__bfr"; }
    else
      (eval "$__bfc") </dev/null >"$__bft/b" 2>"$__bft/e" 3>&1
    fi
    __bfr=$?; __bfo=; __bfl=0
  fi
  __bfb=0; __bfe=0
  if [ -s "$__bft/b" ] || [ -s "$__bft/e" ]; then
    # shellcheck disable=SC2046 # two sizes, split on purpose
    set -- $(stat -c %s "$__bft/b" "$__bft/e")
    # shellcheck disable=SC2046 # each wc prints one number (with padding on some systems)
    if [ $# -ne 2 ]; then set -- $(wc -c <"$__bft/b") $(wc -c <"$__bft/e"); fi
    __bfb=$1; __bfe=$2
  fi
  __bfc=
  printf '%s %s %s %s %s\n%s' "$__bfn" "$__bfr" "$__bfl" "$__bfb" "$__bfe" "$__bfo"
  [ "$__bfb" = 0 ] || head -c "$__bfb" "$__bft/b"
  [ "$__bfe" = 0 ] || head -c "$__bfe" "$__bft/e"
done
rm -rf "$__bft"
