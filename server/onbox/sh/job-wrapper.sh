# shellcheck shell=sh
# The job wrapper (a job's `run` file), leader of the job's session:
# sh run <job dir> keep|forget <clock_cs> <shell> <rm>, started by bf_start with stdout on a pipe and
# `run` open on fd 9. It locks fd 9 for as long as it lives, records its pid and hands it back on
# stdout (which then becomes the job's `out`), and runs the command in a subshell (without fd 9, so
# nothing the job leaves behind holds the lock) that sources the agent's PATH profile
# (~/.boxforge/profile, from the bootstrap) and the env files first: the box env, then the job's own
# (kept as the 0600 `secrets` so any orchestrator can redact those values, or deleted with `forget`).
# The env files may set any name, PATH included, so nothing of the wrapper lives where they reach:
# the shell and rm arrive resolved, and after sourcing the subshell uses positional parameters only;
# the wrapper itself never sources them. The trap keeps the wrapper alive through TERM/INT sent to
# the group (a handler, not '', so the command keeps the default dispositions) to record the exit
# code; HUP is ignored, as nohup would. <clock_cs> is unix time minus uptime in centiseconds (empty:
# read the clock with date), so the exit time costs no process. The exit record goes into `exit`, or,
# when the disk is full, over the room reserved at the start (`exit.res`, renamed to `exit`).
d=$1
trap : TERM INT
trap '' HUP
if command -v flock >/dev/null 2>&1; then flock -n 9 2>/dev/null || :; fi
printf '%s\n' $$ > "$d/pid"
# room for the exit record, taken while the disk has it: a job that fills the disk is still recorded
printf '%63s\n' '' > "$d/exit.res"
printf '%s\n' $$
exec > "$d/out"
envf=
if [ -e "$d/env" ]; then
  envf=$d/env
  if [ "$2" = keep ]; then mv -f "$d/env" "$d/secrets" && envf=$d/secrets; fi
fi
(
  set -- "$d" "$4" "$envf" "$2" "$5" "$HOME/.boxforge/env" "$HOME/.boxforge/profile"
  # shellcheck disable=SC1090 # the env files are written at run time
  if [ -r "$7" ]; then . "$7"; fi
  # shellcheck disable=SC1090 # the box env too
  if [ -r "$6" ]; then . "$6"; fi
  # shellcheck disable=SC1090 # the job env file too
  if [ -n "$3" ]; then . "$3"; if [ "$4" != keep ]; then "$5" -f "$3"; fi; fi
  exec "$2" "$1/cmd" 9<&-
)
code=$?
if [ -n "$3" ] && { read -r u _ < /proc/uptime; } 2>/dev/null; then
  c=$(($3 + ${u%.*} * 100 + 1${u#*.} - 100))
  t=$((c / 100)).$((c / 10 % 10))$((c % 10))
else
  t=$(date +%s.%N 2>/dev/null); case $t in ""|*[!0-9.]*|*.|.*) t=$(date +%s) ;; esac
fi
{ printf '%s %s\n' "$code" "$t" > "$d/exit"; } 2>/dev/null ||
  { printf '%s %s\n' "$code" "$t" 1<> "$d/exit.res" && mv -f "$d/exit.res" "$d/exit"; }
