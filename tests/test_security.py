"""Secrets stay secret: canary values passed every way a user passes secrets, then looked for
everywhere boxforge writes or shows anything. A canary may appear only in the box's 0600 env
file and the job's process environment."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from tests.support import boxforge_cmd, cli_env, local_boxes_dir, make_repo, make_settings
from tests.workflow_support import token_git_server

CANARIES = {
    "create_env": "canary-create-7f3a9c51",
    "bash_env": "canary-bash-2b8e4d60",
    "hcloud": "canary-hcloud-9d1c7e42",
    "repo_token": "canaryrepotoken5a6b",
}


def hits(data: bytes | str) -> set[str]:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    return {where for where, canary in CANARIES.items() if canary in text}


def scan_tree(root: Path, allowed: set[Path]) -> dict[str, set[str]]:
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path not in allowed:
            try:
                found_here = hits(path.read_bytes())
            except OSError:
                continue
            if found_here:
                found[str(path)] = found_here
    return found


class Witness:
    """Everything a user or another process could see during the run."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.ps_listings: list[str] = []
        self.files_during: dict[str, set[str]] = {}


async def test_secret_canaries_appear_nowhere_but_the_box_env_file(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_repo(tmp_path / "repo")
    env = cli_env(settings)
    # A token is configured; the cloud is out of reach (a closed port), so the reaper's calls fail fast.
    env.update(HCLOUD_TOKEN=CANARIES["hcloud"], HCLOUD_ENDPOINT="http://127.0.0.1:9/v1", BOXFORGE_PROVIDER="local")
    cmd = boxforge_cmd()
    witness = Witness()
    with token_git_server(repo, CANARIES["repo_token"]) as url:  # the repo demands the token
        async with Client(StdioServerParameters(command=cmd[0], args=[*cmd[1:], "mcp"], env=env)) as client:
            await use_secrets_every_way(client, cmd, env, url, settings, witness)

    assert hits("\n".join(witness.shown)) == set(), "a tool result or CLI output shows a secret"
    assert hits("\n".join(witness.ps_listings)) == set(), "a command line shows a secret"
    assert witness.files_during == {}, f"secrets written to disk: {witness.files_during}"
    assert scan_tree(settings.home, allowed=set()) == {}, "secrets left after destroy"


async def use_secrets_every_way(client: Client, cmd: list[str], env: dict[str, str], url: str, settings,
                                witness: Witness) -> None:
    async def call(tool: str, **args: object) -> dict:
        result = await client.call_tool(tool, args)
        witness.shown.append(json.dumps([c.model_dump() for c in result.content]))
        witness.shown.append(json.dumps(result.structured_content))
        assert not result.is_error, result.content
        return result.structured_content

    # A custom agent install records the environment it sees: the repo token must be gone by then.
    await call("create_server", name="vault", repo=url.replace("//", f"//{CANARIES['repo_token']}@", 1),
               env={"API_KEY": CANARIES["create_env"]}, agent="custom",
               agent_install='env > "$HOME/install-env"', agent_command="cat")
    job = await call("vm_bash", server="vault", background=True, env={"DB_PASSWORD": CANARIES["bash_env"]},
                     command='test -n "$API_KEY" && test -n "$DB_PASSWORD" && sleep 2 && echo checked')
    for _ in range(5):  # ps on both sides while the job runs (local boxes share this machine)
        ps = subprocess.run(["ps", "-eww", "-o", "pid=,args="], capture_output=True, text=True)
        witness.ps_listings.append(ps.stdout)
        await anyio.sleep(0.1)
    status = await call("vm_job_status", job_id=job["job_id"], wait_s=20)
    assert status["state"] == "succeeded" and status["stdout"] == "checked\n"
    await call("vm_job_list")
    await call("list_servers")
    for args in (["ls", "--json"], ["jobs", "--json"], ["job", job["job_id"]], ["run", "vault", "env | wc -l"]):
        done = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=60)
        witness.shown.append(done.stdout + done.stderr)
    (box_dir,) = local_boxes_dir(settings).glob("lb-*")
    # an isolated box's files are its overlay's upper dir (root's home inside); an unisolated box's, its home dir
    box_home = box_dir / "fs" / "upper" / "root" if (box_dir / "fs").exists() else box_dir / "home"
    box_env_file = box_home / ".boxforge" / "env"
    assert box_env_file.stat().st_mode & 0o777 == 0o600
    assert CANARIES["create_env"] in box_env_file.read_text(), "the scan looks where the secret is"
    install_env = (box_home / "install-env").read_text()
    assert CANARIES["create_env"] in install_env and CANARIES["repo_token"] not in install_env
    # Per-job secrets stay (0600) where the job ran, for redaction; the bootstrap's repo token does not.
    job_secrets = set((box_home / ".boxforge" / "jobs").glob("*/secrets"))
    assert {oct(p.stat().st_mode & 0o777) for p in job_secrets} == {"0o600"}
    witness.files_during = scan_tree(settings.home,
                                     allowed={box_env_file, box_home / "install-env", *job_secrets})
    assert {w for p in job_secrets for w in hits(p.read_bytes())} == {"bash_env"}
    await call("destroy_server", name="vault")


async def test_output_that_prints_a_secret_comes_back_redacted(tmp_path: Path) -> None:
    from server.mcp.app import build_server

    settings = make_settings(tmp_path / "state")
    async with Client(build_server(settings)) as client:
        await client.call_tool("create_server", {"name": "leaky", "env": {"API_KEY": CANARIES["create_env"]}})
        result = await client.call_tool("vm_bash", {
            "server": "leaky", "env": {"DB_PASSWORD": CANARIES["bash_env"]},
            "command": 'echo "key=$API_KEY"; echo "pw=$DB_PASSWORD" >&2'})
        out = result.structured_content
        assert out["stdout"] == "key=[redacted:API_KEY]\n"
        assert out["stderr"] == "pw=[redacted:DB_PASSWORD]\n"
        bg = await client.call_tool("vm_bash", {"server": "leaky", "command": "echo $API_KEY", "background": True})
        polled = await client.call_tool("vm_job_status", {"job_id": bg.structured_content["job_id"], "wait_s": 10})
        assert polled.structured_content["stdout"] == "[redacted:API_KEY]\n"
        await client.call_tool("destroy_server", {"name": "leaky"})
    assert hits(settings.db_path.read_bytes()) == set()


async def test_another_process_redacts_a_jobs_secrets_and_keeps_them_out_of_the_store(tmp_path: Path) -> None:
    from server.service import open_fleet

    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as launcher:
        await launcher.create_server("twoprocs")
        job = await launcher.run("twoprocs", 'echo "pw=$DB_PASSWORD"', background=True,
                                 env={"DB_PASSWORD": CANARIES["bash_env"]})
    async with open_fleet(settings) as other:  # the CLI, or the server after a restart
        status = await other.job_status(job.job_id, wait_s=20)
        assert status.stdout == "pw=[redacted:DB_PASSWORD]\n"
        await other.destroy_server("twoprocs")
    for path in settings.home.glob("state.db*"):
        assert hits(path.read_bytes()) == set(), path


async def test_a_secret_split_across_output_chunks_is_never_shown(tmp_path: Path) -> None:
    from server.service import open_fleet

    settings = make_settings(tmp_path / "state")
    secret = CANARIES["create_env"]
    async with open_fleet(settings) as fleet:
        await fleet.create_server("chunks", env={"API_KEY": secret})
        # The secret starts 10 bytes before the first 64 KiB chunk ends.
        job = await fleet.run("chunks", f'head -c {64 * 1024 - 10} /dev/zero | tr "\\0" a; echo "$API_KEY"; echo end',
                              background=True)
        await fleet.job_status(job.job_id, wait_s=20)
        seen, offset = "", 0
        for _ in range(10):
            status = await fleet.job_status(job.job_id, stdout_offset=offset)
            seen += status.stdout
            offset = status.stdout_offset
            if not status.more:
                break
        assert secret[:10] not in seen and secret[10:] not in seen
        assert seen.endswith("[redacted:API_KEY]\nend\n")
        await fleet.destroy_server("chunks")
