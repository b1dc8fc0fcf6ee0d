"""The domain rules, without a box: names, env and paths, durations, states, redaction, output windows, cost."""

from __future__ import annotations

import typing

import pytest

from server.domain import cost, durations, inputs, names, output, states
from server.domain.redaction import Redactor, redacted
from server.errors import InvalidInput
from server.schemas import Signal as SignalParam


@pytest.mark.parametrize("value", ["a", "feat-login", "x" * 63, "0abc9"])
def test_good_box_names_pass(value: str) -> None:
    assert names.check_name(value) == value


@pytest.mark.parametrize("value", ["", "-a", "a-", "A", "a_b", "x" * 64, "a.b"])
def test_bad_box_names_say_what_a_name_is(value: str) -> None:
    with pytest.raises(ValueError, match="lowercase letters, digits and '-'"):
        names.check_name(value)


def test_new_job_ids_have_the_one_job_id_shape() -> None:
    job_id = names.new_job_id()
    assert names.is_job_id(job_id) and names.check_job_id(job_id) == job_id
    assert not names.is_job_id("j-0123") and not names.is_job_id("j-0123456789AB")


def test_branch_names_become_box_names() -> None:
    assert names.name_from_branch("feat/Login_page") == "feat-login-page"
    assert names.name_from_branch("///") == "box"


@pytest.mark.parametrize(("env", "why"), [
    ({"1A": "x"}, "invalid env name"), ({"A-B": "x"}, "invalid env name"), ({"A": "a\x00b"}, "NUL"),
    ({"A": "x" * (64 * 1024 + 1)}, "64 KiB"),
])
def test_bad_env_is_refused_with_the_reason(env: dict[str, str], why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        inputs.check_env(env)


def test_good_env_passes() -> None:
    inputs.check_env({"API_KEY": "secret", "_x1": ""})


@pytest.mark.parametrize("bad", ["a\x00b", "a\nb", "a\rb"])
def test_paths_with_nul_cr_or_lf_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="NUL, CR or LF"):
        inputs.check_path_text(bad)
    with pytest.raises(InvalidInput, match="NUL, CR or LF"):
        inputs.resolve_cwd(bad, project_dir="/p", home="/h")
    assert not inputs.is_one_line(bad)


def test_one_line_text_may_hold_any_other_character() -> None:
    assert inputs.is_one_line("a b\t'\"$(x)`;|&é\x7f")


def test_cwd_resolves_in_the_project_dir_and_home() -> None:
    assert inputs.resolve_cwd(None, project_dir="/h/project", home="/h") == "/h/project"
    assert inputs.resolve_cwd("src/../lib", project_dir="/h/project", home="/h") == "/h/project/lib"
    assert inputs.resolve_cwd("~/x", project_dir="/h/project", home="/h") == "/h/x"
    assert inputs.resolve_cwd("/abs", project_dir="/h/project", home="/h") == "/abs"


@pytest.mark.parametrize("command", ["", "  ", "a\x00b", "x" * (256 * 1024 + 1)])
def test_commands_that_no_shell_can_run_are_refused(command: str) -> None:
    with pytest.raises(InvalidInput):
        inputs.check_command(command)


def test_ttls_parse_and_durations_read_well() -> None:
    assert durations.parse_ttl("90m") == 5400 and durations.parse_ttl(30) == 1800
    assert durations.parse_ttl("1d") == 86400
    with pytest.raises(ValueError, match="minimum is 1m"):
        durations.parse_ttl("30s")
    with pytest.raises(ValueError):
        durations.parse_ttl(True)
    assert durations.format_duration(5400) == "90m" and durations.format_duration(200000) == "2d07h"
    assert durations.iso(0) == "1970-01-01T00:00:00Z" and durations.iso(None) is None


def test_ttl_over_the_maximum_is_refused_with_both_figures() -> None:
    assert durations.check_ttl_within(3600, 7200) is None
    assert durations.check_ttl_within(7201 * 60, 7200) == "ttl 5d00h exceeds the maximum of 2h00m"


def test_expiry_warning_starts_ten_minutes_before() -> None:
    assert durations.expires_soon(1000.0 + durations.WARN_LEFT_S, 1000.0)
    assert not durations.expires_soon(1001.0 + durations.WARN_LEFT_S, 1000.0)


def test_states_and_signals_are_the_documented_values() -> None:
    assert [s.value for s in states.JobState] == ["running", "succeeded", "failed", "killed", "lost"]
    assert states.CREATE_STEPS == ("provision", "ssh", "clone", "agent", "setup", "ready")
    assert set(typing.get_args(SignalParam)) == {s.value for s in states.Signal}
    assert states.BoxStatus.READY.live and not states.BoxStatus.FAILED.live
    assert states.JobState.LOST.finished and not states.JobState.RUNNING.finished


def test_redactor_hides_every_secret_longest_first_in_one_form() -> None:
    redactor = Redactor.of({"SHORT": "abc", "TOKEN": "s3cr3t-value", "INNER": "s3cr3t"}, min_chars=4)
    assert redactor("x s3cr3t-value y s3cr3t abc") == (
        f"x {redacted('TOKEN')} y {redacted('INNER')} abc")
    assert redacted("TOKEN") == "[redacted:TOKEN]"
    assert redactor.hides_any("..s3cr3t..") and not redactor.hides_any("abc")


def test_chunk_cuts_never_show_half_a_secret() -> None:
    redactor = Redactor.of({"TOKEN": "hunter22"}, min_chars=4)
    assert redactor.safe_end(b"log hunt") == len(b"log ")
    assert redactor.safe_end(b"log hunter22") == len(b"log hunter22")
    assert redactor.safe_start(b"er22 rest") == len(b"er22")
    assert redactor.safe_start(b"plain") == 0


def test_utf8_cuts_end_on_whole_characters() -> None:
    data = "aé€".encode()
    assert [output.complete_utf8_prefix(data[:n]) for n in range(len(data) + 1)] == [0, 1, 1, 3, 3, 3, 6]
    assert output.utf8_head(data, 5) == "aé".encode()
    assert output.decode_output(b"\xff") == ("\ufffd", True) and output.decode_output(b"a\x00")[1] is True


def test_clean_end_cuts_both_a_character_and_a_secret() -> None:
    redactor = Redactor.of({"TOKEN": "hunter22"}, min_chars=4)
    assert output.clean_end("é hunt".encode() + "é".encode()[:1], redactor) == "é ".encode()


def test_head_tail_window_marks_the_gap_and_redacts() -> None:
    redactor = Redactor.of({"TOKEN": "hunter22"}, min_chars=4)
    head, tail = b"start hunter22 hun", b"er22 end"
    window = output.head_tail(head, tail, size=1000, redactor=redactor)
    assert window.text.startswith("start [redacted:TOKEN] ") and window.text.endswith(" end")
    assert "hun" not in window.text.replace("[redacted:TOKEN]", "")
    assert window.dropped == 1000 - len(b"start hunter22 ") - len(b" end")
    assert output.DROPPED_MARKER.format(n=window.dropped) in window.text


def test_cost_is_per_started_hour_capped_at_the_month() -> None:
    assert cost.cost_so_far(0.01, 0, 1) == 0.01
    assert cost.cost_so_far(0.01, 0, 3601) == 0.02
    assert cost.cost_so_far(1.0, 0, 3600 * 1000, price_monthly=5.0) == 5.0
