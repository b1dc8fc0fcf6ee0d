# shellcheck shell=sh
# shellcheck disable=SC2154 # the params are quoted assignments set before this file
# A fork's own branch: start $branch at the checkout's HEAD (uncommitted changes stay as they are, in the
# working tree). Params: project, branch. Prints the commit the branch starts at. Exit 3: no checkout or
# no commit; exit 4: the branch exists already.
set -eu
cd "$project" 2>/dev/null || { echo "the project dir $project is gone on the box" >&2; exit 3; }
head=$(git rev-parse --verify -q 'HEAD^{commit}') || { echo "the box's repo has no commit on HEAD" >&2; exit 3; }
if git show-ref --verify -q "refs/heads/$branch"; then
  echo "branch $branch exists already on the box" >&2
  exit 4
fi
git checkout -q -b "$branch"
echo "$head"
