# shellcheck shell=sh
# shellcheck disable=SC2154 # the params are quoted assignments set before this file
# Seed the project checkout from a git bundle read on stdin (sent by the orchestrator, which read the
# source with its own credentials: the box never sees a token).
# Params: project (checkout dir), branch (to check out), start (commit it starts at), origin (URL shown
# as the origin remote, without credentials; may be empty).
set -eu
mkdir -p "$HOME/.boxforge"
bundle="$HOME/.boxforge/seed.bundle"
trap 'rm -f "$bundle"' EXIT
cat > "$bundle"
if [ -d "$project/.git" ]; then
  echo "[boxforge] already seeded"
else
  tmp="$project.seeding"
  rm -rf "$tmp"
  git -c init.defaultBranch=boxforge-unborn init -q "$tmp"
  cd "$tmp"
  git fetch -q --no-tags "$bundle" "+refs/heads/*:refs/remotes/origin/*"
  git checkout -q -b "$branch" "$start"
  if [ -n "$origin" ]; then git remote add origin "$origin"; fi
  if git rev-parse --verify -q "refs/remotes/origin/$branch" >/dev/null; then
    git config "branch.$branch.remote" origin
    git config "branch.$branch.merge" "refs/heads/$branch"
  fi
  cd /
  # a warm pool's box has an empty project dir already (it was made without a repo): the checkout takes its place
  if [ -d "$project" ]; then
    rmdir "$project" 2>/dev/null || { echo "the project dir $project is not empty; it cannot be seeded" >&2; exit 3; }
  fi
  mv "$tmp" "$project"
  echo "[boxforge] seeded $branch at $start"
fi
# The base is recorded once: a rerun must not move it past the agent's own commits.
if [ ! -s "$HOME/.boxforge/base" ]; then printf '%s\n' "$start" > "$HOME/.boxforge/base"; fi
