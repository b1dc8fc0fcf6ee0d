"""The pure pieces: TTLs, names, env names, UTF-8 chunking, repo credentials, branch-derived names."""

from __future__ import annotations

import pytest

from server import jobs
from server.bootstrap import parse_repo
from server.domain.inputs import check_env
from server.domain.names import name_from_branch
from server.domain.output import complete_utf8_prefix, decode_output
from server.errors import InvalidInput
from server.schemas import check_name, format_duration, parse_ttl
from server.ssh import ExecResult


@pytest.mark.parametrize(("text", "seconds"), [
    ("90m", 5400), ("2h", 7200), ("1d", 86400), ("45", 2700), (30, 1800), ("120s", 120), (" 3h ", 10800),
])
def test_ttl_forms(text: str | int, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["-5", "abc", "", "1w", "2 hours", "0", "30s", True, 1.5, None, "1e3"])
def test_bad_ttls_are_refused_with_the_accepted_forms(text: object) -> None:
    with pytest.raises(ValueError, match="ttl"):
        parse_ttl(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["a", "feat-a", "x" * 63, "0box", "b0x-1"])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "-a", "a-", "a_b", "a.b", "a b", "x" * 64, "a;ls", "$(id)", "é", "a\n"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid server name"):
        check_name(name)


async def no_box(script: str, stdin: bytes | None, timeout: float | None) -> ExecResult:
    raise AssertionError("the input should have been refused before reaching a box")


@pytest.mark.parametrize("name", ["A" * 129, "1A", "BAD-NAME", "A\n", ""])
async def test_the_job_protocol_refuses_the_env_names_create_server_refuses(name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid env name"):
        check_env({name: "v"})
    with pytest.raises(InvalidInput, match="invalid env name"):
        await jobs.write_box_env(no_box, {name: "v"})


def test_utf8_prefix_never_splits_a_character() -> None:
    text = "aé€😀".encode()
    for cut in range(len(text) + 1):
        chunk = text[:cut]
        keep = complete_utf8_prefix(chunk)
        chunk[:keep].decode("utf-8")  # must not raise
        assert cut - keep <= 3


def test_decode_flags_binary() -> None:
    assert decode_output(b"plain\n") == ("plain\n", False)
    assert decode_output(b"a\x00b")[1] is True
    text, binary = decode_output(b"\xff\xfeok")
    assert binary and text.endswith("ok") and "\ufffd" in text


def test_repo_token_is_split_off_the_url() -> None:
    source = parse_repo("https://ghp_secret@github.com/org/repo.git")
    assert source.url == "https://github.com/org/repo.git"
    assert source.secret_env == {"BOXFORGE_GIT_USER": "x-access-token", "BOXFORGE_GIT_PASSWORD": "ghp_secret"}
    source = parse_repo("https://user:pw@example.com:8443/r.git")
    assert source.url == "https://example.com:8443/r.git"
    assert source.secret_env["BOXFORGE_GIT_PASSWORD"] == "pw"
    assert parse_repo("ssh://git@example.com/r.git").url == "ssh://git@example.com/r.git"
    assert parse_repo("git@example.com:org/r.git").url == "git@example.com:org/r.git"


def test_repo_refusals() -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        parse_repo("/no/such/repo")
    with pytest.raises(InvalidInput, match="scheme"):
        parse_repo("ftp://example.com/r.git")


@pytest.mark.parametrize(("branch", "name"), [
    ("feat/a", "feat-a"), ("Feature/Login_Page", "feature-login-page"), ("fix//x", "fix-x"), ("main", "main"),
])
def test_names_derive_from_branches(branch: str, name: str) -> None:
    assert name_from_branch(branch) == name


def test_durations_read_well() -> None:
    assert [format_duration(s) for s in (5, 600, 7200, 90000, 200000)] == ["5s", "10m", "2h00m", "25h00m", "2d07h"]
