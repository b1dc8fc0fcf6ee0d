# shellcheck shell=sh
# shellcheck disable=SC2154 # the params are quoted assignments set before this text
# The bootstrap job (server/bootstrap.py sets the params): check out the project, install the agent,
# record the base commit and the ready time. Every step is idempotent (a rerun on the same box skips
# what is done) and announces itself with a BOXFORGE_STEP=<step> line; the last stdout line of a
# success is BOXFORGE_BASE=<commit>. Params:
#   project        the checkout dir
#   checkout       seeded (the orchestrator made it and recorded the base) | empty | clone
#   repo_url       what to clone (checkout=clone): a public URL or a local path, no credentials
#   repo_ssh       1 when repo_url is cloned over SSH
#   branch         the branch to check out or create (may be empty)
#   agent_name     what the log calls the agent
#   agent_package  the npm package to install (may be empty)
#   agent_binary   the command the package provides
#   agent_version, node_condition, node_pkg, npm_pkg, npm_registry: see agent-ensure.sh (its functions come first)
#   agent_install  a shell command that installs the agent instead (may be empty)
#   agent_run_file the content of ~/.boxforge/agent-run (may be empty: no agent)
set -eu
mkdir -p "$HOME/.boxforge"
run_user() { if command -v bash >/dev/null 2>&1; then bash -c "$1"; else sh -c "$1"; fi; }

case $checkout in
  seeded)
    cd "$project"
    read -r base < "$HOME/.boxforge/base" || base=
    ;;
  empty)
    echo BOXFORGE_STEP=clone
    mkdir -p "$project"
    cd "$project"
    base=
    ;;
  clone)
    echo BOXFORGE_STEP=clone
    export GIT_TERMINAL_PROMPT=0
    if [ "$repo_ssh" = 1 ]; then
      # No prompt can be answered in a job: fail instead of asking, and learn the git host's key.
      : "${GIT_SSH_COMMAND:=ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new}"
      export GIT_SSH_COMMAND
    fi
    if [ ! -d "$project/.git" ]; then
      echo "[boxforge] cloning $repo_url"
      git clone --quiet -c credential.helper= -- "$repo_url" "$project"
    else
      echo '[boxforge] already cloned'
    fi
    cd "$project"
    if [ -n "$branch" ]; then
      if [ "$(git branch --show-current 2>/dev/null)" = "$branch" ]; then
        :
      elif git rev-parse --verify --quiet "refs/heads/$branch" >/dev/null; then
        git checkout --quiet "$branch"
      elif git rev-parse --verify --quiet "refs/remotes/origin/$branch" >/dev/null; then
        git checkout --quiet -b "$branch" --track "origin/$branch"
      else
        echo "[boxforge] branch $branch does not exist yet: creating it from the default branch"
        git checkout --quiet -b "$branch"
      fi
    fi
    # The base is recorded once: a rerun must not move it past the agent's own commits.
    if [ -s "$HOME/.boxforge/base" ]; then read -r base < "$HOME/.boxforge/base"; else
      base=$(git rev-parse HEAD 2>/dev/null || true)
    fi
    ;;
  *)
    echo "bootstrap: unknown checkout mode '$checkout'" >&2
    exit 2
    ;;
esac

echo BOXFORGE_STEP=agent
export PATH="$HOME/.local/bin:$PATH"
if [ -n "$agent_package" ]; then
  bf_agent_ensure
elif [ -n "$agent_install" ]; then
  stamp=$(printf '%s' "$agent_install" | cksum)
  if [ -f "$HOME/.boxforge/agent-installed" ] && [ "$(cat "$HOME/.boxforge/agent-installed")" = "$stamp" ]; then
    echo "[boxforge] agent $agent_name: already installed"
  else
    echo "[boxforge] agent $agent_name: running agent_install"
    (cd "$project" && run_user "$agent_install") || { code=$?; echo "[boxforge] agent_install failed (exit $code)" >&2; exit "$code"; }
    printf '%s\n' "$stamp" > "$HOME/.boxforge/agent-installed"
  fi
fi
bf_write_profile
if [ -n "$agent_run_file" ]; then
  printf '%s' "$agent_run_file" > "$HOME/.boxforge/agent-run"
  chmod 700 "$HOME/.boxforge/agent-run"
fi

printf '%s\n' "$base" > "$HOME/.boxforge/base"
date +%s > "$HOME/.boxforge/ready"
echo "BOXFORGE_BASE=$base"
