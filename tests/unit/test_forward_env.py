"""forward_env: which of the orchestrator's variables a box gets, which files are copied in, and what is
said about the ones left out (pure: a temp dir, no box)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import load_settings
from server.errors import InvalidInput
from server.forwardenv import DEFAULT_FORWARD_ENV, collect, parse_names


def test_the_default_set_forwards_proxies_and_copies_ca_bundles(tmp_path: Path) -> None:
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    env = {"HTTPS_PROXY": "http://proxy.corp:3128", "no_proxy": ".corp", "NODE_EXTRA_CA_CERTS": str(bundle),
           "HOME": "/root", "ANTHROPIC_API_KEY": "sk-never-forwarded", "HTTP_PROXY": ""}
    got = collect(DEFAULT_FORWARD_ENV, env)
    assert got.env == {"HTTPS_PROXY": "http://proxy.corp:3128", "no_proxy": ".corp"}
    assert got.files == {"NODE_EXTRA_CA_CERTS": bundle.read_bytes()}
    assert got.notes == ()
    assert got.without(["HTTPS_PROXY", "NODE_EXTRA_CA_CERTS"]).names == ["no_proxy"]


def test_a_ca_variable_whose_file_cannot_be_read_is_left_out_with_a_note(tmp_path: Path) -> None:
    got = collect(["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"],
                  {"SSL_CERT_FILE": str(tmp_path / "missing.pem"), "REQUESTS_CA_BUNDLE": str(tmp_path)})
    assert got.env == {} and got.files == {}
    assert len(got.notes) == 2
    assert "SSL_CERT_FILE was not forwarded" in got.notes[0] and "No such file" in got.notes[0]
    assert "not a regular file" in got.notes[1]


def test_another_forwarded_variable_naming_a_file_gets_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "tool.conf"
    conf.write_text("x=1\n")
    got = collect(["MY_TOOL_CONFIG", "MY_TOOL_MODE"], {"MY_TOOL_CONFIG": str(conf), "MY_TOOL_MODE": "/no/such"})
    assert got.files == {"MY_TOOL_CONFIG": b"x=1\n"} and got.env == {"MY_TOOL_MODE": "/no/such"}


def test_a_proxy_on_loopback_is_noted_where_the_box_cannot_reach_it() -> None:
    env = {"HTTPS_PROXY": "http://127.0.0.1:3128", "http_proxy": "localhost:8080", "NO_PROXY": "127.0.0.1"}
    assert collect(DEFAULT_FORWARD_ENV, env).notes == ()
    notes = collect(DEFAULT_FORWARD_ENV, env, loopback_unreachable=True).notes
    assert [n.split()[0] for n in notes] == ["HTTPS_PROXY", "http_proxy"]


def test_forward_env_is_configurable_and_default_extends_it() -> None:
    assert parse_names("") == ()
    assert parse_names("A_ONE, B_TWO A_ONE") == ("A_ONE", "B_TWO")
    assert parse_names(["default", "EXTRA"]) == (*DEFAULT_FORWARD_ENV, "EXTRA")
    settings = load_settings({"BOXFORGE_HOME": "/nonexistent/boxforge-home", "BOXFORGE_OWNER": "o1",
                              "BOXFORGE_CONFIG": "/nonexistent/c.toml", "BOXFORGE_FORWARD_ENV": "HTTPS_PROXY"})
    assert settings.forward_env == ("HTTPS_PROXY",)
    with pytest.raises(InvalidInput, match="forward_env has an invalid value"):
        load_settings({"BOXFORGE_HOME": "/nonexistent/boxforge-home", "BOXFORGE_OWNER": "o1",
                       "BOXFORGE_CONFIG": "/nonexistent/c.toml", "BOXFORGE_FORWARD_ENV": "not-a-name"})
