# shellcheck shell=bash
# Sourced by .ci/run: a private Docker daemon for the Docker provider's tests (data root, exec root and
# socket under $BOXFORGE_CI_TMP/docker). Its supervisor's pid goes to dockerd.pid; on SIGTERM it removes
# the containers, stops dockerd and deletes the bridges and iptables chains dockerd added.
docker_dir="$BOXFORGE_CI_TMP/docker"
mkdir -p "$docker_dir"
python -m tests.docker_daemon serve "$docker_dir" >"$docker_dir/serve.log" 2>&1 &
echo $! >"$BOXFORGE_CI_TMP/dockerd.pid"
for _ in $(seq 1 300); do
  grep -q '^unix://' "$docker_dir/serve.log" 2>/dev/null && break
  kill -0 "$(cat "$BOXFORGE_CI_TMP/dockerd.pid")" 2>/dev/null || break
  sleep 0.1
done
if ! grep -q '^unix://' "$docker_dir/serve.log" 2>/dev/null; then
  echo "docker.sh: dockerd did not start:" >&2
  cat "$docker_dir/serve.log" "$docker_dir/dockerd.log" >&2 2>/dev/null || true
fi
export DOCKER_HOST="unix://$docker_dir/docker.sock"
# The Docker tests fail rather than skip when no daemon answers.
export BOXFORGE_REQUIRE_DOCKER=1
