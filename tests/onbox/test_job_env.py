"""A job's env reaches the user's command only: no name, PATH included, can steer the wrapper."""

from __future__ import annotations

from pathlib import Path

import pytest

from server import jobs

# the wrapper's own variable names (old and new), PATH, HOME and IFS
HIJACKERS = ["d", "code", "t", "sh_", "envf", "PATH", "HOME", "IFS"]


async def finished(ex: jobs.BoxExec, job_id: str) -> jobs.JobStatus:
    st = await jobs.status(ex, job_id, wait_s=30.0)  # long-poll: answers when the job ends
    assert st.state != "running", "job still running after 30 s"
    return st


@pytest.mark.parametrize("name", HIJACKERS)
async def test_an_env_name_does_not_hijack_the_wrapper(local_ex: jobs.BoxExec, home: Path, name: str) -> None:
    job_id = jobs.new_job_id()
    await jobs.launch(local_ex, job_id, "echo real", cwd="~", env={name: "/nonexistent"})
    st = await finished(local_ex, job_id)
    assert (st.state, st.exit_code, st.stdout, st.stderr) == ("succeeded", 0, b"real\n", b"")
    assert (home / ".boxforge" / "jobs" / job_id / "secrets").exists()


async def test_a_user_path_applies_to_the_users_command(local_ex: jobs.BoxExec) -> None:
    job_id = jobs.new_job_id()
    await jobs.launch(local_ex, job_id, 'printf "%s\\n" "$PATH"; ls', cwd="~", env={"PATH": "/nonexistent"})
    st = await finished(local_ex, job_id)
    assert st.stdout == b"/nonexistent\n"
    assert st.state == "failed" and st.exit_code == 127  # ls is not found on the user's PATH


async def test_a_forgotten_env_file_is_gone_even_with_a_user_path(local_ex: jobs.BoxExec, home: Path) -> None:
    job_id = jobs.new_job_id()
    await jobs.launch(local_ex, job_id, 'echo "$TOKEN"', cwd="~", env={"PATH": "/nonexistent", "TOKEN": "s3cret"},
                      keep_secrets=False)
    st = await finished(local_ex, job_id)
    assert (st.state, st.stdout) == ("succeeded", b"s3cret\n")
    job_dir = home / ".boxforge" / "jobs" / job_id
    assert not (job_dir / "env").exists() and not (job_dir / "secrets").exists()


async def test_a_box_env_path_applies_to_the_command_and_the_job_env_overrides_it(local_ex: jobs.BoxExec) -> None:
    await jobs.write_box_env(local_ex, {"PATH": "/box-only", "d": "/x", "A": "box"})
    job_id = jobs.new_job_id()
    await jobs.launch(local_ex, job_id, 'echo "$PATH $A"', cwd="~", env={"A": "job"})
    st = await finished(local_ex, job_id)
    assert (st.state, st.stdout) == ("succeeded", b"/box-only job\n")


async def test_the_secrets_of_several_jobs_are_read_back_in_one_call(local_ex: jobs.BoxExec) -> None:
    first, second, plain = jobs.new_job_id(), jobs.new_job_id(), jobs.new_job_id()
    await jobs.launch(local_ex, first, "true", cwd="~", env={"TOKEN": "it's\nsecret"})
    await jobs.launch(local_ex, second, "true", cwd="~", env={"A": "1", "B": "two words"})
    await jobs.launch(local_ex, plain, "true", cwd="~")
    for job_id in (first, second, plain):
        await finished(local_ex, job_id)
    assert await jobs.read_many_secrets(local_ex, [first, second, plain]) == {
        first: {"TOKEN": "it's\nsecret"}, second: {"A": "1", "B": "two words"}, plain: {}}
