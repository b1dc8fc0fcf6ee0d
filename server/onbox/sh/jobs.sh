# shellcheck shell=sh
# shellcheck disable=SC2154 # each function's parameters are assignments the call line sets first
# The job protocol's library: defined once per control channel (after protocol.sh), then each call
# is one line, e.g. `job=j-0123456789ab ooff=0 eoff=0 maxb=65536 wait_cs=0; bf_status`.
# stdout carries text only; output bytes go to fd 3. The job directory format: server/jobs.py.
# Once per channel (the library is defined in the loop itself; over exec, once per call): the umask
# to give jobs, the shell that runs a command and rm, both found before any env file can change
# PATH, and unix time minus uptime, so that now() reads the clock without starting date.
BF_UMASK=$(umask)
BF_SH=; BF_RM=
_bf_ifs=$IFS; IFS=:; set -f
# shellcheck disable=SC2086 # PATH's directories, split on ':' on purpose (globbing is off)
for _x in $PATH; do
  [ -n "$_x" ] || continue
  [ -n "$BF_SH" ] || { [ -x "$_x/bash" ] && BF_SH=$_x/bash; }
  [ -n "$BF_RM" ] || { [ -x "$_x/rm" ] && BF_RM=$_x/rm; }
done
IFS=$_bf_ifs; set +f
[ -n "$BF_SH" ] || BF_SH=/bin/sh
[ -n "$BF_RM" ] || BF_RM="rm"
# unix time minus uptime in centiseconds (empty where /proc/uptime cannot be read)
BF_CLOCK_CS=
_bf_ns=$(date +%s%N 2>/dev/null)
case $_bf_ns in ""|*[!0-9]*) _bf_ns=$(date +%s)000000000 ;; esac
if { read -r _bf_up _ < /proc/uptime; } 2>/dev/null; then
  case $_bf_up in *[!0-9.]*|*.|.*|*.?) ;; *.??) BF_CLOCK_CS=$((_bf_ns / 10000000 - ${_bf_up%.*} * 100 - 1${_bf_up#*.} + 100)) ;; esac
fi
# unix time with sub-second precision in _t: from /proc/uptime where it can be read, else date
now() {
  if [ -n "$BF_CLOCK_CS" ] && { read -r _u _ < /proc/uptime; } 2>/dev/null; then
    _c=$((BF_CLOCK_CS + ${_u%.*} * 100 + 1${_u#*.} - 100))
    _t=$((_c / 100)).$((_c / 10 % 10))$((_c % 10))
    return 0
  fi
  _t=$(date +%s.%N 2>/dev/null); case $_t in ""|*[!0-9.]*|*.|.*) _t=$(date +%s) ;; esac
}
boot_id() { _boot=; { read -r _boot < /proc/sys/kernel/random/boot_id; } 2>/dev/null || _boot=; }
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  if [ -e /proc/self/stat ]; then
    { read -r _ps < "/proc/$1/stat"; } 2>/dev/null || return 1
    _ps=${_ps##*) }
    case ${_ps%% *} in Z|X|x) return 1 ;; esac
  fi
  return 0
}
job_state() {
  st=lost code='' started='' fin='' pid=''
  [ -d "$1" ] || return 0
  [ -r "$1/started" ] && read -r started _ < "$1/started"
  [ -r "$1/exit" ] && read -r code fin < "$1/exit"
  _up=0
  if [ -s "$1/pid" ]; then
    read -r pid < "$1/pid"
    _jb=; [ -r "$1/boot" ] && read -r _jb < "$1/boot"
    boot_id
    if { [ -z "$_jb" ] || [ "$_jb" = "$_boot" ]; } && alive "$pid"; then _up=1; fi
  elif [ -z "$code" ] && [ -n "$started" ]; then
    now
    [ $(( ${_t%.*} - ${started%.*} )) -lt 30 ] && _up=1
  fi
  # the wrapper may have written exit and died after the first read: read it again
  if [ -z "$code" ] && [ "$_up" = 0 ] && [ -r "$1/exit" ]; then read -r code fin < "$1/exit"; fi
  if [ -e "$1/killed" ] && { [ -n "$code" ] || [ "$_up" = 0 ]; }; then
    st=killed
    [ -n "$fin" ] || read -r _ fin < "$1/killed"
  elif [ -n "$code" ]; then
    if [ "$code" = 0 ]; then st=succeeded; else st=failed; fi
  elif [ "$_up" = 1 ]; then
    st=running
  fi
}

# Start job $job (cmd, cwd, envfile, keep: the call's private assignments): write its files with
# builtins, then start the wrapper in a session of its own with one setsid; returns once the wrapper
# holds its lock and wrote its pid, which it hands back over a pipe (no polling).
bf_start() {
  umask 077
  # shellcheck disable=SC2088 # the literal "~/" the caller sent, not an expansion
  case $cwd in
    "~") cwd=$HOME ;;
    "~/"*) cwd=$HOME/${cwd#"~/"} ;;
    /*) ;;
    *) cwd=$HOME/$cwd ;;
  esac
  [ -d "$cwd" ] || exit "$BF_EXIT_NO_CWD"
  cd "$cwd" 2>/dev/null || exit "$BF_EXIT_CWD_DENIED"
  command -v setsid >/dev/null 2>&1 || exit "$BF_EXIT_NO_SETSID"
  d=$BF_JOBS/$job
  [ -d "$BF_JOBS" ] || mkdir -p "$BF_JOBS" || exit "$BF_EXIT_FAILED"
  if ! mkdir "$d" 2>/dev/null; then
    # the same launch retried after a dropped connection: done once the first attempt's pid exists
    [ -d "$d" ] || exit "$BF_EXIT_FAILED"
    i=0
    while [ ! -s "$d/pid" ] && [ "$i" -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    [ -s "$d/pid" ] || exit "$BF_EXIT_NOT_STARTED"
    return 0
  fi
  fail() { rm -rf "$d"; exit "$BF_EXIT_FAILED"; }
  printf '%s' "$cmd" > "$d/cmd" || fail
  printf '%s\n' "$cwd" > "$d/cwd" || fail
  printf '%s' "$BF_WRAPPER" > "$d/run" || fail
  if [ -n "$envfile" ]; then printf '%s' "$envfile" > "$d/env" || fail; fi
  boot_id
  printf '%s\n' "$_boot" > "$d/boot" || fail
  : > "$d/out" || fail
  : > "$d/err" || fail
  now
  printf '%s\n' "$_t" > "$d/started" || fail
  umask "$BF_UMASK"
  # setsid -f, not &: an asynchronous command would start with SIGINT and SIGQUIT ignored. fd 3
  # (where the caller reads output) must not leak into the job, or the caller waits for it.
  # shellcheck disable=SC2094 # run is only read (by the wrapper and as its lock), never written here
  _p=$(setsid -f /bin/sh "$d/run" "$d" "$keep" "$BF_CLOCK_CS" "$BF_SH" "$BF_RM" < /dev/null 2> "$d/err" 3>&- 9< "$d/run") || fail
  [ -n "$_p" ] || exit "$BF_EXIT_NOT_STARTED"
}

bf_launch() {
  bf_start
  exit 0
}

# launch and the first status in one call: start the job, then wait up to wait_cs for it as bf_status does
bf_run() {
  bf_start
  bf_status
}

bf_status() {
  d=$BF_JOBS/$job
  cs() {
    if { read -r _u _ < /proc/uptime; } 2>/dev/null; then
      _c=$(( ${_u%.*} * 100 + 1${_u#*.} - 100 ))
    else
      _c=$(( ${_c:-0} + 5 ))
    fi
  }
  job_state "$d"
  if [ "$st" = running ] && [ "$wait_cs" -gt 0 ]; then
    cs; t0=$_c; lk=0
    command -v flock >/dev/null 2>&1 && lk=1
    while :; do
      if [ "$lk" = 1 ]; then
        # returns when the wrapper's lock is released (the job ended) or the wait is over
        left=$((wait_cs - (_c - t0)))
        flock -s -w "$((left / 100)).$((left / 10 % 10))$((left % 10))" 8 8< "$d/run" 2>/dev/null
      else
        sleep 0.05
      fi
      job_state "$d"
      [ "$st" = running ] || break
      cs
      [ $((_c - t0)) -ge "$wait_cs" ] && break
      lk=0  # the lock was free (or unusable) while the job runs: poll instead
    done
  fi
  osz=0; esz=0
  if [ -s "$d/out" ] || [ -s "$d/err" ]; then
    # shellcheck disable=SC2046 # two sizes, split on purpose
    set -- $(stat -c %s "$d/out" "$d/err" 2>/dev/null)
    if [ $# -eq 2 ]; then
      osz=$1; esz=$2
    else
      if [ -f "$d/out" ]; then osz=$(wc -c < "$d/out"); set -- "$osz"; osz=${1:-0}; fi
      if [ -f "$d/err" ]; then esz=$(wc -c < "$d/err"); set -- "$esz"; esz=${1:-0}; fi
    fi
  fi
  oo=$ooff; [ "$oo" -gt "$osz" ] && oo=$osz
  eo=$eoff; [ "$eo" -gt "$esz" ] && eo=$esz
  on=$((osz - oo)); [ "$on" -gt "$maxb" ] && on=$maxb
  en=$((esz - eo)); [ "$en" -gt "$maxb" ] && en=$maxb
  printf '%s %s %s %s %s %s %s %s %s %s %s\n' \
    "$BF_STATUS_MAGIC" "$st" "${code:--}" "${started:--}" "${fin:--}" "$osz" "$esz" "$oo" "$on" "$eo" "$en"
  if [ "$on" -gt 0 ]; then tail -c +$((oo + 1)) "$d/out" | head -c "$on" >&3; fi
  if [ "$en" -gt 0 ]; then tail -c +$((eo + 1)) "$d/err" | head -c "$en" >&3; fi
  exit 0
}

bf_read_range() {
  d=$BF_JOBS/$job
  [ -d "$d" ] || exit "$BF_EXIT_NO_JOB"
  [ -f "$d/$stream" ] || exit 0
  tail -c +$((off + 1)) "$d/$stream" | head -c "$length" >&3
}

bf_cancel() {
  d=$BF_JOBS/$job
  [ -d "$d" ] || exit "$BF_EXIT_NO_JOB"
  i=0
  while [ ! -s "$d/pid" ] && [ ! -e "$d/exit" ] && [ "$i" -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
  job_state "$d"
  [ "$st" = running ] || exit 0
  [ -n "$pid" ] || exit "$BF_EXIT_NOT_STARTED"
  now
  printf '%s %s\n' "$sig" "$_t" > "$d/killed.tmp" && mv -f "$d/killed.tmp" "$d/killed" || exit "$BF_EXIT_FAILED"
  kill -s "$sig" -- "-$pid" 2>/dev/null || kill -s "$sig" "$pid" 2>/dev/null
  exit 0
}

bf_list() {
  for d in "$BF_JOBS"/j-*; do
    [ -d "$d" ] || continue
    job_state "$d"
    h=
    if [ -r "$d/cmd" ]; then IFS= read -r h < "$d/cmd" || :; fi
    printf '%s %s %s %s %s %s\n' "${d##*/}" "$st" "${code:--}" "${started:--}" "${fin:--}" "$h"
  done
  exit 0
}

bf_write_box_env() {
  umask 077
  mkdir -p "$HOME/.boxforge" || exit "$BF_EXIT_FAILED"
  t="$HOME/.boxforge/env.tmp.$$"
  if ! { cat > "$t" && chmod 600 "$t" && mv -f "$t" "$BF_BOX_ENV"; }; then rm -f "$t"; exit "$BF_EXIT_FAILED"; fi
}

# the job's secret env (0600, kept for redaction); nothing when it has none
bf_read_secrets() {
  cat "$BF_JOBS/$job/secrets" 2>/dev/null || :
}

# the box-wide env every job sources first; nothing when there is none
bf_read_box_env() {
  cat "$BF_BOX_ENV" 2>/dev/null || :
}

# the secret env of several jobs (jobs: checked ids, space-separated): for each, NUL id NUL file, on fd 3
bf_read_many_secrets() {
  set -f
  # shellcheck disable=SC2086 # job ids are checked words: split on purpose (globbing is off)
  for _j in $jobs; do
    printf '\000%s\000' "$_j" >&3
    cat "$BF_JOBS/$_j/secrets" 2>/dev/null >&3
  done
  :
}
