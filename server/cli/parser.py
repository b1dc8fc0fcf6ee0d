"""The CLI's verbs and flags."""

from __future__ import annotations

import argparse

from server import package_version

ENV_HELP = ("pass this variable, its value from boxforge secret set or this environment (kept secret: a 0600 "
            "file on the box); repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="boxforge", description="Forge, drive and burn boxes for coding agents.")
    parser.add_argument("--version", action="version", version=f"boxforge {package_version()}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")

    def add(name: str, help_text: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print one JSON document")
        return p

    p = add("up", "forge boxes, one per branch, in parallel")
    p.add_argument("branches", nargs="*", help="branches to check out (box names derive from them)")
    p.add_argument("--repo", help="git URL or local path; read here with your git credentials and pushed into the "
                                  "boxes (they never get a token)")
    p.add_argument("--repo-via", choices=("orchestrator", "box"), default="orchestrator",
                   help="box: clone a public URL on each box instead (large repos on cloud boxes)")
    p.add_argument("--ttl", help="time to live: 90m, 2h, 1d (default 2h)")
    p.add_argument("--name", help="box name (single box)")
    p.add_argument("--agent", default="none", help="agent to install: none, claude, codex, custom")
    p.add_argument("--agent-version", help="exact release of the claude/codex npm package (default: the latest)")
    p.add_argument("--agent-install", help="shell command that installs the agent (run in the project dir)")
    p.add_argument("--agent-command", help="command that runs the agent with the prompt on stdin (custom agents)")
    p.add_argument("--env", action="append", default=[], metavar="NAME", help=ENV_HELP)
    p.add_argument("--provider", help="local or hetzner")
    p.add_argument("--size", help="small, medium, large, or the provider's own size (a Hetzner server type such "
                                  "as cx33); default: the cheapest that fits")
    p.add_argument("--location", help="where (cloud providers: a Hetzner location such as nbg1)")
    p.add_argument("--image", help="OS image (cloud providers)")
    p.add_argument("--egress", choices=("nat", "none"), help="outbound internet for local boxes (default nat)")

    p = add("run", "run a command on a box: boxforge run NAME 'make test && make lint' (one quoted shell line), "
                   "or its words unquoted (boxforge run NAME make test; after -- when they start with -)")
    p.add_argument("name")
    p.add_argument("command", nargs="+", help="the command: one shell line, or a command's words")
    p.add_argument("--background", action="store_true", help="start it and print the job id")
    p.add_argument("--timeout", type=float, help="seconds to wait before leaving it running as a job (default 50; "
                                                 "then exit 124 with the job id)")
    p.add_argument("--cwd", help="working dir (relative to the project dir)")
    p.add_argument("--kill-on-timeout", action="store_true", help="kill it at --timeout instead (exit 124)")
    p.add_argument("--env", action="append", default=[], metavar="NAME", help=ENV_HELP)

    p = add("jobs", "list jobs")
    p.add_argument("--server")
    p = add("job", "show a job's state and output")
    p.add_argument("job_id")
    p.add_argument("--follow", "-f", action="store_true", help="stream output until the job ends")
    p = add("logs", "a job's output, or a box's create logs (bootstrap, setup) by box name")
    p.add_argument("target", help="job id (j-...) or box name")
    p.add_argument("--follow", "-f", action="store_true", help="stream output until the job ends")
    p = add("ssh", "open a shell on a box (its pinned host key only), or run a command: boxforge ssh NAME -- CMD")
    p.add_argument("name")
    p.add_argument("command", nargs="*", help="command to run instead of a shell, after --")
    p = add("diff", "what changed on a box since its base commit (untracked files included)")
    p.add_argument("name")
    p.add_argument("--stat", action="store_true", help="files and stat only")
    p.add_argument("--max-bytes", type=int, default=256 * 1024, help="cut the diff here (default 256 KiB)")
    p = add("agent", "run a box's agent on a prompt in the background (--follow: stream it to the end)")
    p.add_argument("name")
    p.add_argument("prompt", help="the task, or - to read it from stdin")
    p.add_argument("--arg", action="append", help="extra argument for the agent command; repeatable")
    p.add_argument("--follow", "-f", action="store_true", help="stream the agent's output until it ends")
    p.add_argument("--env", action="append", default=[], metavar="NAME", help=ENV_HELP)
    add("ls", "list live boxes")
    p = add("extend", "set a box to expire TTL from now (90m, 2h, 1d)")
    p.add_argument("name")
    p.add_argument("ttl")
    p.add_argument("--shorten", action="store_true", help="allow a TTL that brings the expiry earlier")
    p = add("burn", "destroy boxes")
    p.add_argument("names", nargs="*")
    p.add_argument("--all", action="store_true", help="every live box of this owner")
    p.add_argument("--yes", action="store_true", help="confirm --all")
    p.add_argument("--no-harvest", action="store_true", help="burn without bringing the boxes' work home first")
    p = add("fetch", "bring a box's branch home into your repo as refs/boxforge/NAME/BRANCH (uncommitted work as "
                     "one extra commit)")
    p.add_argument("name")
    p.add_argument("--no-uncommitted", action="store_true", help="committed work only")
    p.add_argument("--branch", help="also point this local branch at the fetched tip")
    p = add("compare", "per box: commits ahead, files touched, last job; across boxes: files touched by two")
    p.add_argument("names", nargs="+")
    p = add("land", "merge the boxes' fetched branches into a branch of your repo, in order; stops at the first "
                    "conflict with the repo clean; never pushes")
    p.add_argument("names", nargs="+")
    p.add_argument("--into", help="branch to land into (default: the repo's current branch)")
    p.add_argument("--repo", help="the repo to land in (default: the repo the boxes were seeded from)")
    p = add("push", "push a box's committed branch to your remote with your git credentials")
    p.add_argument("name")
    p.add_argument("--remote", default="origin", help="remote name or URL (default origin)")
    p = add("forward", "forward a box's TCP port to this machine (127.0.0.1 unless --bind) until Ctrl-C or the box "
                       "burns; prints the local URL")
    p.add_argument("name")
    p.add_argument("port", type=int)
    p.add_argument("--local-port", type=int, help="local port (default: a free one; 1024-65535)")
    p.add_argument("--bind", default="127.0.0.1", help="local address to listen on (default 127.0.0.1: this machine "
                                                       "only; another address exposes the box's port to its network)")
    p = add("fork", "new boxes that start as a copy of a ready box's files (checkout, installed tools, caches), "
                    "each with its own keys, TTL and branch; the source's running jobs are not copied")
    p.add_argument("source")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--branch", action="append", metavar="BRANCH", dest="branches",
                   help="the fork's branch, started at the source's HEAD; one per NAME, in order (default: "
                        "SOURCE-BRANCH-NAME)")
    p.add_argument("--ttl", help="time to live of each fork: 90m, 2h, 1d (default 2h)")
    p = add("pool", "warm pools ([pool.<profile>] in the config file): status shows each profile's ready boxes; "
                    "fill starts the missing ones now and waits for them (the MCP server keeps them filled)")
    p.add_argument("pool_verb", choices=("status", "fill"))
    p = add("reap", "destroy expired boxes now (--loop: keep doing it, for systemd or cron)")
    p.add_argument("--loop", action="store_true")
    p = add("image", "the base image of local boxes: build it now, or list what is cached")
    p.add_argument("image_verb", choices=("build", "ls"))
    p.add_argument("--force", action="store_true", help="build again even when cached")
    p.add_argument("--provider", help="the provider whose image (default: the default provider)")
    p = add("demo", "forge local boxes, run a job on each, print a table, burn them")
    p.add_argument("--boxes", type=int, default=3, choices=range(1, 11), metavar="N")
    p = add("secret", "the secrets env_from passes to boxes: set NAME (value from the terminal or stdin), ls, rm NAME")
    p.add_argument("action", choices=("set", "ls", "rm"))
    p.add_argument("name", nargs="?", help="an env variable name, e.g. ANTHROPIC_API_KEY")
    p = add("plan", "plans: tasks fanned out over a pool of boxes, with dependencies (docs/plans.md)", json_flag=False)
    plan_sub = p.add_subparsers(dest="plan_verb", required=True, metavar="PLAN_COMMAND")
    pc = plan_sub.add_parser("check", help="validate a plan file and print its tasks, owned paths, dependencies and "
                                           "predicted conflicts, without forging anything",
                             description="validate a plan without forging; exit 1 when it would be refused")
    pc.add_argument("file", help="the plan's YAML file (- for stdin)")
    pc.add_argument("--json", action="store_true", help="print one JSON document")
    pr = plan_sub.add_parser("run", help="run a plan: tasks on a pool of boxes as their dependencies succeed, with a "
                                         "live board; every box is burned at the end (work fetched home first)",
                             description="run a plan to its end; exit 0 when every task succeeded")
    pr.add_argument("file", help="the plan's YAML file (- for stdin); its repo: is relative to the file")
    pr.add_argument("--json", action="store_true", help="print the final board as one JSON document")
    ps = plan_sub.add_parser("status", help="a plan's board: per task its state, box, elapsed time, check, branch",
                             description="show a plan's board")
    ps.add_argument("plan_id")
    ps.add_argument("--wait", type=float, help="seconds to wait for the next change")
    ps.add_argument("--json", action="store_true", help="print one JSON document")
    pl = plan_sub.add_parser("land", help="merge a plan's succeeded tasks' branches in dependency order (stops at "
                                          "the first conflict, repo clean; never pushes)",
                             description="fan-in: land a plan's work")
    pl.add_argument("plan_id")
    pl.add_argument("--into", help="branch to land into (default: the repo's current branch)")
    pl.add_argument("--json", action="store_true", help="print one JSON document")
    px = plan_sub.add_parser("cancel", help="cancel a plan run by this machine's MCP server or plan run",
                             description="cancel a plan")
    px.add_argument("plan_id")
    px.add_argument("--json", action="store_true", help="print one JSON document")
    p = add("board", "a live web page of the fleet, jobs, review queue and plans (prints its URL with a one-time "
                     "login token)", json_flag=False)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8766, help="port (default 8766; 0: a free one)")
    p.add_argument("--no-auth", action="store_true", help="no login token (loopback only): any page or program on "
                                                          "this machine can then use the board")
    p = add("mcp", "serve MCP over stdio (for Claude Code: claude mcp add boxforge -- boxforge mcp), or over "
                   "streamable HTTP with --http", json_flag=False)
    p.add_argument("--http", action="store_true", help="serve streamable HTTP at http://HOST:PORT/mcp")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1); except on 127.0.0.1 "
                                                      "and ::1 a bearer token is required (BOXFORGE_HTTP_TOKEN or "
                                                      "generated)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--no-board", action="store_true", help="do not serve the board at /board")
    return parser
