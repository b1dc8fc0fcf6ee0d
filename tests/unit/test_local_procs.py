"""The rules that decide which processes are a local box's (providers/local/procs.py), on made-up process
tables: pids and pgids from files may have been reused by the time a burn reads them."""

from __future__ import annotations

import os

from providers.local.procs import CLOCK_SLACK_S, Proc, box_processes, descendants, proven_job_groups

BOX_BORN = 1000.0
PID_FILE_WRITTEN = 1010.0  # mtime of the job's pid file


def test_descendants_walk_every_level_below_the_starts_and_nothing_beside() -> None:
    table = {10: Proc("S", 1, 10, 0), 11: Proc("S", 10, 10, 0), 12: Proc("S", 11, 12, 0), 20: Proc("S", 1, 20, 0)}
    assert descendants(table, [10]) == {10, 11, 12}
    assert descendants(table, [12, 20]) == {12, 20}


def test_a_job_group_with_a_member_from_before_its_pid_file_is_the_boxs() -> None:
    table = {50: Proc("S", 1, 50, PID_FILE_WRITTEN - 0.5), 51: Proc("S", 50, 50, PID_FILE_WRITTEN + 30)}
    assert proven_job_groups(table, {50: PID_FILE_WRITTEN}, set(), BOX_BORN) == {50}


def test_a_reused_pgid_whose_members_all_came_later_is_not_the_boxs() -> None:
    late = PID_FILE_WRITTEN + CLOCK_SLACK_S + 5
    table = {50: Proc("S", 1, 50, late), 51: Proc("S", 50, 50, late + 1)}
    assert proven_job_groups(table, {50: PID_FILE_WRITTEN}, set(), BOX_BORN) == set()


def test_a_member_older_than_the_box_proves_nothing() -> None:
    table = {50: Proc("S", 1, 50, BOX_BORN - 100)}
    assert proven_job_groups(table, {50: PID_FILE_WRITTEN}, set(), BOX_BORN) == set()


def test_a_job_group_whose_leader_is_a_root_is_the_boxs_whatever_its_members() -> None:
    table = {50: Proc("S", 1, 50, PID_FILE_WRITTEN + 60)}
    assert proven_job_groups(table, {50: PID_FILE_WRITTEN}, {50}, BOX_BORN) == {50}


def test_box_processes_never_names_the_caller_or_its_ancestors() -> None:
    own = os.getpid()
    found = box_processes("lb-000000000000", {}, {own, os.getppid()}, not_before=0.0)
    assert own not in found and os.getppid() not in found
