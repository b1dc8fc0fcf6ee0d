"""The verbs that bring a box's work home: ``diff`` (review it on the box), ``fetch`` (into the repo it came
from), ``compare`` (boxes side by side, overlapping files named), ``land`` (merge in order) and ``push``."""

from __future__ import annotations

import argparse
import sys

from server.cli.render import dump, err, land_outcome, out, valid, worded
from server.cli.up import names_adapter
from server.service import Fleet


async def cmd_diff(fleet: Fleet, args: argparse.Namespace) -> int:
    result = await fleet.diff(valid(names_adapter, args.name), max_bytes=0 if args.stat else args.max_bytes)
    if args.json:
        dump(result)
        return 0
    err.print(f"{result.server}: {result.branch or '-'} at {(result.head_commit or '-')[:12]}, "
              f"base {result.base_commit[:12]}", style="dim")
    for commit in result.commits:
        err.print(commit, style="yellow")
    out.print(result.stat or "no changes against the base commit")
    if result.diff:
        sys.stdout.write("\n" + result.diff)
    if result.truncated and not args.stat:
        err.print(f"diff cut at {args.max_bytes} of {result.diff_bytes} bytes; raise --max-bytes", style="yellow")
    return 0


async def cmd_fetch(fleet: Fleet, args: argparse.Namespace) -> int:
    got = worded(await fleet.fetch(valid(names_adapter, args.name), include_uncommitted=not args.no_uncommitted,
                                   local_branch=args.branch))
    if args.json:
        dump(got)
        return 0
    new = f"{len(got.new_commits)} new" if got.new_commits else "nothing new"
    out.print(f"{got.server}: {got.ref} at {got.tip[:12]} in {got.repo} ({len(got.commits)} ahead of base, {new})")
    for c in got.commits:
        out.print(f"  {c.id} {c.subject}")
    if got.diffstat:
        out.print(got.diffstat)
    for text in (got.warning, got.hint):
        if text:
            err.print(text, style="dim")
    return 0


async def cmd_compare(fleet: Fleet, args: argparse.Namespace) -> int:
    result = worded(await fleet.compare([valid(names_adapter, n) for n in args.names]))
    if args.json:
        dump(result)
        return 0
    for box in result.boxes:
        if box.error:
            out.print(f"{box.server}: {box.error}")
            continue
        dirty = ", uncommitted changes" if box.uncommitted else ""
        out.print(f"{box.server} ({box.branch or 'detached'}): {box.ahead} ahead{dirty}; {len(box.files)} file(s); "
                  f"last job {box.last_job or '-'}; {box.time_left or '-'} left")
        for name in box.files:
            out.print(f"  {name}")
    for overlap in result.overlaps:
        out.print(f"overlap {' and '.join(overlap.servers)}: {', '.join(overlap.files)}")
    if not result.overlaps:
        out.print("no two boxes touch the same file")
    if result.hint:
        err.print(result.hint, style="dim")
    return 0


async def cmd_land(fleet: Fleet, args: argparse.Namespace) -> int:
    outcome = await fleet.land([valid(names_adapter, n) for n in args.names], into=args.into, repo=args.repo)
    return land_outcome(outcome, args.json)


async def cmd_push(fleet: Fleet, args: argparse.Namespace) -> int:
    result = await fleet.push(valid(names_adapter, args.name), remote=args.remote)
    if args.json:
        dump(result)
    else:
        out.print(result.message)
    return 0
