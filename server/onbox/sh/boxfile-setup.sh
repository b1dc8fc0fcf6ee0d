# shellcheck shell=sh
# shellcheck disable=SC2154 # the params are quoted assignments set before this text
# The setup job of a .boxforge.yml: run each command in order (bash -c, or sh where bash is missing);
# the first failure ends the job with its exit code. Params: count, then cmd_1 label_1 .. cmd_N label_N.
run_user() { if command -v bash >/dev/null 2>&1; then bash -c "$1"; else sh -c "$1"; fi; }
i=1
while [ "$i" -le "$count" ]; do
  eval "c=\$cmd_$i l=\$label_$i"
  echo "[boxforge] $l"
  run_user "$c" || { code=$?; echo "[boxforge] failed: $l (exit $code)" >&2; exit "$code"; }
  i=$((i + 1))
done
echo '[boxforge] setup done'
