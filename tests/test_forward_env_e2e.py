"""On a real (isolated) local box: the orchestrator's proxy and CA bundle variables reach the box by default,
the CA files copied in (one copy for several variables naming the same bundle), explicit env winning, an
unreadable bundle named in the box's warnings; and a create that fails keeps, in its error, the tail of
the log file its output pointed at, which the burn deletes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from server.errors import ProvisionFailed
from server.service import open_fleet
from tests.support import make_settings
from tests.workflow_support import make_agent_repo

PEM = "-----BEGIN CERTIFICATE-----\nMIIBforwardedtestcertificate\n-----END CERTIFICATE-----\n"
PROXY = "http://proxyuser:proxy-secret-81@10.233.0.1:3128"  # never contacted: only its value travels


async def test_proxy_and_ca_variables_reach_the_box_with_the_ca_file_copied_in(tmp_path: Path) -> None:
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_text(PEM)
    settings = make_settings(tmp_path / "state", extra_env={
        "HTTPS_PROXY": PROXY, "NO_PROXY": "orchestrator-value", "NODE_EXTRA_CA_CERTS": str(bundle),
        "SSL_CERT_FILE": str(bundle), "REQUESTS_CA_BUNDLE": str(tmp_path / "missing.pem"),
        "UNLISTED_VAR": "not-forwarded"})
    async with open_fleet(settings) as fleet:
        info = await fleet.create_server("fwd", ttl_s=600, env={"NO_PROXY": "explicit-value"})
        try:
            assert any("REQUESTS_CA_BUNDLE was not forwarded" in w for w in info.warnings or [])
            ran = await fleet.run("fwd", 'printf "%s\\n" "${UNLISTED_VAR-unset}" "${REQUESTS_CA_BUNDLE-unset}";'
                                         ' [ "$NODE_EXTRA_CA_CERTS" = "$SSL_CERT_FILE" ] && echo one-copy;'
                                         ' case "$NODE_EXTRA_CA_CERTS" in "$HOME"/.boxforge/forwarded/*)'
                                         ' echo in-the-box;; esac; cat "$NODE_EXTRA_CA_CERTS";'
                                         ' stat -c %a "$NODE_EXTRA_CA_CERTS"; echo "NO_PROXY=$NO_PROXY";'
                                         ' printf %s "$HTTPS_PROXY" | sha256sum | cut -c1-64')
            assert ran.exit_code == 0, ran.stderr
            assert ran.stdout.splitlines() == [
                "unset", "unset", "one-copy", "in-the-box", *PEM.splitlines(), "600", "NO_PROXY=[redacted:NO_PROXY]",
                hashlib.sha256(PROXY.encode()).hexdigest()]
            whole = await fleet.run("fwd", 'printf "%s" "$HTTPS_PROXY"')
            assert whole.stdout == "[redacted:HTTPS_PROXY]"  # a proxy URL may hold a password: never shown
        finally:
            await fleet.destroy_server("fwd", harvest=False)


async def test_a_failed_create_keeps_the_tail_of_the_log_its_output_named(tmp_path: Path) -> None:
    repo = make_agent_repo(tmp_path / "repo", boxfile=(
        "setup:\n"
        "  - mkdir -p /tmp/npm-logs && seq 1 400 | sed 's/^/line /' > /tmp/npm-logs/debug-0.log\n"
        "  - |\n"
        "    echo 'npm error A complete log of this run can be found in: /tmp/npm-logs/debug-0.log' >&2; exit 3\n"))
    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as fleet:
        with pytest.raises(ProvisionFailed) as failed:
            await fleet.create_server("logtail", ttl_s=600, repo=str(repo))
        said = str(failed.value)
        assert "failed (exit 3)" in said and "can be found in: /tmp/npm-logs/debug-0.log" in said
        assert "--- the end of /tmp/npm-logs/debug-0.log (on the box, burned with it) ---" in said
        assert said.rstrip().endswith("line 400") and "line 1\n" not in said
        assert (await fleet.list_servers()).count == 0
