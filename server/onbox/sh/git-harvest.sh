# shellcheck shell=sh
# shellcheck disable=SC2154 # the params are quoted assignments set before this file
# Bundle what the box's checkout holds beyond what the orchestrator already has, for it to fetch.
# Uncommitted and untracked changes become one extra commit on top (made with a private index: the
# working tree, the index and the branch are left as they are). Files over max_file_bytes are left
# out of that commit and listed.
# Params: project, known (commits the orchestrator has, space-separated), include_uncommitted (1|0),
# max_file_bytes, box (named in the extra commit's message).
# Prints key=value lines, then a line "--bundle--" and the bundle, or "--none--" when nothing is new.
set -eu
cd "$project" 2>/dev/null || { echo "the project dir $project is gone on the box" >&2; exit 3; }
top=$(git rev-parse --show-toplevel 2>/dev/null) || top=
if [ "$top" != "$(pwd -P)" ]; then echo "$project is no longer a git repository on the box" >&2; exit 3; fi
head=$(git rev-parse --verify -q 'HEAD^{commit}') || { echo "the box's repo has no commit on HEAD" >&2; exit 3; }
branch=$(git symbolic-ref -q --short HEAD) || branch=
tip=$head
wip=
tmpref="refs/boxforge/harvest-$$"
idx="$HOME/.boxforge/harvest-index.$$"
mkdir -p "$HOME/.boxforge"
trap 'rm -f "$idx" "$idx.lock"; git update-ref -d "$tmpref" 2>/dev/null || true' EXIT
echo "head=$head"
echo "branch=$branch"
if [ "$include_uncommitted" = 1 ]; then
  GIT_INDEX_FILE=$idx git read-tree "$head"
  GIT_INDEX_FILE=$idx git update-index -q --refresh >/dev/null 2>&1 || true
  set --
  # Split on newlines only: one path per line of ls-files.
  IFS='
'
  for f in $(GIT_INDEX_FILE=$idx git ls-files --others --modified --exclude-standard); do
    if [ -f "$f" ] && [ ! -L "$f" ]; then
      size=$(wc -c < "$f" | tr -d ' ')
      if [ "$size" -gt "$max_file_bytes" ]; then
        echo "skipped=$size $f"
        set -- "$@" ":(exclude,literal)$f"
      fi
    fi
  done
  unset IFS
  GIT_INDEX_FILE=$idx git add -A -- . "$@"
  tree=$(GIT_INDEX_FILE=$idx git write-tree)
  if [ "$tree" != "$(git rev-parse "$head^{tree}")" ]; then
    # The extra commit takes its dates from HEAD: the same changes give the same commit on a retry.
    when=$(git log -1 --format='%ct %cz' "$head")
    wip=$(GIT_AUTHOR_NAME=boxforge GIT_AUTHOR_EMAIL=boxforge@localhost GIT_COMMITTER_NAME=boxforge \
          GIT_COMMITTER_EMAIL=boxforge@localhost GIT_AUTHOR_DATE="$when" GIT_COMMITTER_DATE="$when" \
          git commit-tree "$tree" -p "$head" -m "boxforge: uncommitted changes on $box" \
          -m "Captured by boxforge from the box's working tree (not committed on the box).")
    tip=$wip
  fi
fi
echo "tip=$tip"
echo "wip=$wip"
set --
for k in $known; do  # split on spaces: commit ids
  if git cat-file -e "$k^{commit}" 2>/dev/null; then
    if git merge-base --is-ancestor "$tip" "$k"; then echo "--none--"; exit 0; fi
    set -- "$@" "^$k"
  fi
done
git update-ref "$tmpref" "$tip"
echo "ref=$tmpref"
echo "--bundle--"
git bundle create --quiet - "$tmpref" "$@"
