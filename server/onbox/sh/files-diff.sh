# shellcheck shell=sh
# shellcheck disable=SC2154 # the params (and protocol.sh's constants) are set before this text
# vm_diff: the working tree (untracked files included, .gitignore respected) against base, in
# "@@boxforge <section>" sections; the patch comes last, cut at maxb bytes after its full size.
# Params: project (the checkout), base (a commit or the empty tree), maxb.
cd "$project" 2>/dev/null || exit "$BF_EXIT_NO_PATH"
top=$(git rev-parse --show-toplevel 2>/dev/null) || exit "$BF_EXIT_NOT_GIT"
cd "$top" || exit "$BF_EXIT_NOT_GIT"
git cat-file -e "$base^{tree}" 2>/dev/null || exit "$BF_EXIT_NO_BASE"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/boxforge-diff.XXXXXX") || exit "$BF_EXIT_FAILED"
trap 'rm -rf "$tmp"' EXIT
g() { git -c core.quotePath=false "$@"; }
echo "@@boxforge head $(git rev-parse --verify --quiet HEAD || true) $(git branch --show-current 2>/dev/null || true)"
echo "@@boxforge untracked"
g ls-files --others --exclude-standard | head -n 1000
echo "@@boxforge commits"
if git rev-parse --verify --quiet HEAD >/dev/null; then
  g log --no-decorate --format='%h %s' -n 50 "$base..HEAD" 2>/dev/null || true
fi
idx=$(git rev-parse --git-path index)
if [ -f "$idx" ]; then cp "$idx" "$tmp/index"; fi
# a private index holding the whole working tree: the real index (what the agent staged) is left alone
export GIT_INDEX_FILE="$tmp/index"
git add -A . >/dev/null 2>"$tmp/add-err" || { cat "$tmp/add-err" >&2; exit "$BF_EXIT_GIT_FAILED"; }
echo "@@boxforge numstat"
g diff --cached --no-renames --numstat "$base"
echo "@@boxforge status"
g diff --cached --no-renames --name-status "$base"
echo "@@boxforge stat"
g diff --cached --no-renames --stat=120 "$base"
g diff --cached --no-renames "$base" > "$tmp/patch"
echo "@@boxforge patch $(wc -c < "$tmp/patch")"
head -c "$maxb" "$tmp/patch"
