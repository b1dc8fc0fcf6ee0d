# shellcheck shell=sh
# shellcheck disable=SC2154 # the params are quoted assignments set before this file
# What a box's checkout changed since its base, for the fan-in overview: commits ahead, files touched
# (committed, uncommitted and untracked), the diffstat. Reads only; changes nothing.
# Params: project, base. Prints "commit=<id> <subject>", "file=<path>", "dirty=1", then "--stat--" and
# the diffstat.
set -eu
cd "$project" 2>/dev/null || { echo "the project dir $project is gone on the box" >&2; exit 3; }
git rev-parse --verify -q 'HEAD^{commit}' >/dev/null || { echo "the box's repo has no commit on HEAD" >&2; exit 3; }
echo "branch=$(git symbolic-ref -q --short HEAD || true)"
echo "ahead=$(git rev-list --count "$base..HEAD")"
git log --max-count=50 --format='commit=%h %s' "$base..HEAD" --
git diff --name-only "$base" -- | sed 's/^/file=/'
git ls-files --others --exclude-standard | sed 's/^/file=/'
if [ -n "$(git status --porcelain --untracked-files=normal)" ]; then echo "dirty=1"; fi
echo "--stat--"
git diff --stat=100 "$base" --
