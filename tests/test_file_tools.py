"""The file tools through the real MCP client (or the fleet) on local boxes: text and binary
content, offsets, globs, grep, transfers to and from this machine, limits, bad paths, secret
redaction, cancelled and stalled transfers, slow greps beside short calls, the local-path policy."""

from __future__ import annotations

import base64
import os
import re
import signal
import tempfile
from functools import partial
from pathlib import Path

import anyio
import pytest
from mcp import Client

from providers.local.procs import supervisor_pid
from server.domain.output import decode_output
from server.errors import BoxUnreachable, InvalidInput
from server.files import MAX_READ_OUTPUT_BYTES, check_local_path, glob_regex, transfer_roots
from server.mcp.app import build_server
from server.service import open_fleet
from tests.boxfiles import BoxFiles
from tests.support import box_pids, call, call_error, eventually, local_boxes_dir, make_repo, make_settings
from tests.workflow_support import session

ALL_BYTES = bytes(range(256)) * 4


async def test_write_then_read_lines_by_offset_in_new_dirs(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with session(settings) as client:
        box = await call(client, "create_server", name="files")
        text = "".join(f"line {i} é\n" for i in range(1, 11))
        wrote = await call(client, "vm_write", server="files", path="deep/er/notes.txt", content=text)
        assert wrote["created"] is True and wrote["bytes_written"] == len(text.encode())
        assert wrote["path"] == box["project_dir"] + "/deep/er/notes.txt"
        part = await call(client, "vm_read", server="files", path="deep/er/notes.txt", offset=2, limit=3)
        assert part["content"] == "line 3 é\nline 4 é\nline 5 é\n"
        assert (part["lines"], part["total_lines"], part["next_offset"]) == (3, 10, 5)
        rest = await call(client, "vm_read", server="files", path=wrote["path"], offset=5)
        assert rest["content"].startswith("line 6 é") and rest.get("next_offset") is None
        again = await call(client, "vm_write", server="files", path="deep/er/notes.txt", content="short", mode="755")
        assert again["created"] is False
        shown = await call(client, "vm_bash", server="files",
                           command="stat -c %a deep/er/notes.txt; cat deep/er/notes.txt")
        assert shown["stdout"] == "755\nshort"
        home = await call(client, "vm_read", server="files", path="~/.boxforge/base")
        assert home["path"] == box["project_dir"].rsplit("/", 1)[0] + "/.boxforge/base"  # the box's home


async def test_binary_content_round_trips_in_base64(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with session(settings) as client:
        await call(client, "create_server", name="bin")
        encoded = base64.b64encode(ALL_BYTES).decode()
        await call(client, "vm_write", server="bin", path="blob.bin", content=encoded, encoding="base64")
        exact = await call(client, "vm_read", server="bin", path="blob.bin", encoding="base64")
        assert base64.b64decode(exact["content"]) == ALL_BYTES and exact["size"] == len(ALL_BYTES)
        as_text = await call(client, "vm_read", server="bin", path="blob.bin")
        assert as_text["binary"] is True and "base64" in as_text["hint"]
        checksum = await call(client, "vm_bash", server="bin", command="od -An -tx1 blob.bin | head -1")
        assert checksum["stdout"].split()[:4] == ["00", "01", "02", "03"]
        bad = await call_error(client, "vm_write", server="bin", path="x", content="not base64!", encoding="base64")
        assert "not valid base64" in bad


async def test_limits_and_bad_paths_get_clear_errors(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with session(settings) as client:
        await call(client, "create_server", name="limits")
        await call(client, "vm_bash", server="limits",
                   command="head -c 1100000 /dev/zero > big.bin; mkdir adir; "
                           "awk 'BEGIN{while(i++<300000) printf \"x\"}' > long.txt")
        assert "over the 1 MiB limit" in await call_error(client, "vm_read", server="limits", path="big.bin",
                                                          encoding="base64")
        huge = base64.b64encode(b"\0" * (4 * 1024 * 1024 + 1)).decode()
        assert "over the 4 MiB limit" in await call_error(client, "vm_write", server="limits", path="h",
                                                          content=huge, encoding="base64")
        assert "does not exist" in await call_error(client, "vm_read", server="limits", path="missing.txt")
        assert "is a directory" in await call_error(client, "vm_read", server="limits", path="adir")
        assert "NUL" in await call_error(client, "vm_read", server="limits", path="a\x00b")
        assert "does not exist on the box" in await call_error(client, "vm_write", server="limits", path="no/dir/f",
                                                               content="x", create_dirs=False)
        cut = await call(client, "vm_read", server="limits", path="long.txt")
        assert cut["truncated"] is True and len(cut["content"]) == MAX_READ_OUTPUT_BYTES
        assert "unknown server" in await call_error(client, "vm_read", server="nobox", path="x")


async def test_ls_matches_globs_and_skips_git_and_node_modules(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    repo = make_repo(tmp_path / "repo")
    async with session(settings) as client:
        await call(client, "create_server", name="ls", repo=str(repo))
        await call(client, "vm_bash", server="ls", command="mkdir -p src/pkg node_modules/dep && touch src/a.py "
                                                              "src/pkg/b.py src/pkg/c.txt node_modules/dep/d.py")
        top = await call(client, "vm_ls", server="ls")
        assert [e["path"] for e in top["entries"]] == ["README.md", "src"]
        assert {e["type"] for e in top["entries"]} == {"file", "dir"}
        deep = await call(client, "vm_ls", server="ls", pattern="**/*.py")
        assert [e["path"] for e in deep["entries"]] == ["src/a.py", "src/pkg/b.py"]
        one_level = await call(client, "vm_ls", server="ls", path="src", pattern="*/*")
        assert [e["path"] for e in one_level["entries"]] == ["pkg/b.py", "pkg/c.txt"]
        capped = await call(client, "vm_ls", server="ls", pattern="**", max_entries=2)
        assert capped["count"] == 2 and capped["truncated"] is True
        assert "relative to path" in await call_error(client, "vm_ls", server="ls", pattern="/etc/*")
        assert "is a file" in await call_error(client, "vm_ls", server="ls", path="README.md")


def test_glob_patterns() -> None:
    assert glob_regex("**/*.py").fullmatch("a.py") and glob_regex("**/*.py").fullmatch("x/y/a.py")
    assert not glob_regex("*.py").fullmatch("x/a.py")
    assert glob_regex("[!a]?.md").fullmatch("bb.md") and not glob_regex("[!a]?.md").fullmatch("ab.md")


async def test_grep_finds_lines_with_file_and_number(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with session(settings) as client:
        await call(client, "create_server", name="grep")
        await call(client, "vm_bash", server="grep", command="mkdir -p src && printf 'a = 1\\nTODO: fix 42\\n' > "
                                                                "src/m.py && printf 'todo 7\\n' > notes.txt")
        found = await call(client, "vm_grep", server="grep", pattern=r"TODO: \w+ \d+")
        assert found["matches"] == [{"path": "src/m.py", "line": 2, "text": "TODO: fix 42"}]
        both = await call(client, "vm_grep", server="grep", pattern="todo", ignore_case=True)
        assert sorted(m["path"] for m in both["matches"]) == ["notes.txt", "src/m.py"]
        only_py = await call(client, "vm_grep", server="grep", pattern="todo", ignore_case=True, glob="*.py")
        assert [m["path"] for m in only_py["matches"]] == ["src/m.py"]
        in_file = await call(client, "vm_grep", server="grep", pattern="a =", path="src/m.py")
        assert in_file["count"] == 1 and in_file["matches"][0]["line"] == 1
        none = await call(client, "vm_grep", server="grep", pattern="nothing-here")
        assert none["count"] == 0 and "no match" in none["hint"]
        assert "refused the pattern" in await call_error(client, "vm_grep", server="grep", pattern="(unclosed")


async def test_upload_and_download_round_trip_inside_the_transfer_roots(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    local = tmp_path / "payload.bin"
    local.write_bytes(ALL_BYTES * 100)
    async with session(settings) as client:
        await call(client, "create_server", name="xfer")
        up = await call(client, "vm_upload", server="xfer", local_path=str(local), remote_path="in/payload.bin")
        assert up["bytes_written"] == len(ALL_BYTES) * 100 and up["created"] is True
        back = tmp_path / "out" / "copy.bin"
        down = await call(client, "vm_download", server="xfer", remote_path="in/payload.bin", local_path=str(back))
        assert back.read_bytes() == local.read_bytes() and down["bytes"] == len(ALL_BYTES) * 100
        assert "already exists" in await call_error(client, "vm_download", server="xfer",
                                                    remote_path="in/payload.bin", local_path=str(back))
        (tmp_path / "dl").mkdir()
        into_dir = await call(client, "vm_download", server="xfer", remote_path="in/payload.bin",
                              local_path=str(tmp_path / "dl"))
        assert into_dir["local_path"] == str(tmp_path / "dl" / "payload.bin")
        state_dir = await call_error(client, "vm_download", server="xfer", remote_path="in/payload.bin",
                                     local_path=str(settings.home / "stolen"))
        assert "state or config dir" in state_dir
        keys = await call_error(client, "vm_upload", server="xfer", local_path=str(settings.db_path),
                                remote_path="db")
        assert "state or config dir" in keys
        outside = await call_error(client, "vm_upload", server="xfer", local_path="/etc/hostname", remote_path="h")
        assert "BOXFORGE_TRANSFER_ROOTS" in outside
        assert "not a file" in await call_error(client, "vm_upload", server="xfer", local_path=str(tmp_path),
                                                remote_path="d")


def test_local_paths_resolve_symlinks_before_the_root_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, secret = tmp_path / "root", tmp_path / "secret"
    root.mkdir()
    secret.mkdir()
    (root / "link").symlink_to(secret)
    with pytest.raises(InvalidInput, match="outside"):
        check_local_path(str(root / "link" / "f"), roots=[root], forbidden=[])
    assert check_local_path(str(root / "f"), roots=[root], forbidden=[]) == root / "f"
    monkeypatch.chdir(root)
    assert check_local_path("rel.txt", roots=[root], forbidden=[]) == root / "rel.txt"


async def test_secret_env_values_never_come_back_from_file_tools(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    secret = "sk-canary-5ecret-value"
    async with session(settings) as client:
        await call(client, "create_server", name="sec", env={"API_KEY": secret})
        await call(client, "vm_write", server="sec", path="config.txt", content=f"key={secret}\nother=1\n")
        read = await call(client, "vm_read", server="sec", path="config.txt")
        assert read["content"] == "key=[redacted:API_KEY]\nother=1\n"
        env_file = await call(client, "vm_read", server="sec", path="~/.boxforge/env")
        assert secret not in env_file["content"] and "API_KEY" in env_file["content"]
        grep = await call(client, "vm_grep", server="sec", pattern="key=")
        assert grep["matches"][0]["text"] == "key=[redacted:API_KEY]"
        refused = await call_error(client, "vm_read", server="sec", path="config.txt", encoding="base64")
        assert "secret" in refused and secret not in refused


# cancelled and stalled transfers

BIG_BYTES = 200 * 1024 * 1024  # long enough on loopback that a poll catches the transfer midway


def write_big_file(path: Path) -> None:
    """Real bytes, not a sparse file: SFTP skips the holes of a sparse one and is done at once."""
    block = bytes(range(1, 256)) * 4112  # ~1 MiB
    with path.open("wb") as f:
        for _ in range(BIG_BYTES // len(block)):
            f.write(block)


async def test_a_cancelled_upload_leaves_no_temp_file_on_the_box(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    big = tmp_path / "big.bin"
    write_big_file(big)
    repo = make_repo(tmp_path / "repo")
    async with open_fleet(settings) as fleet:
        made = await fleet.create_server("cancel-up", repo=str(repo))
        project = BoxFiles.of(settings, "cancel-up").path(made.project_dir)
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(fleet.upload, "cancel-up", str(big), "big.bin"))
            await eventually(lambda: list(project.glob(".big.bin.boxforge-*")), what="the upload's temp file")
            tg.cancel_scope.cancel()
        assert not (project / "big.bin").exists(), "the upload was cancelled midway"
        assert list(project.glob(".big.bin.boxforge-*")) == []
        assert (await fleet.diff("cancel-up")).files == []
        await fleet.destroy_server("cancel-up")


async def test_a_cancelled_download_leaves_no_partial_local_file(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    out = tmp_path / "out"
    out.mkdir()
    async with open_fleet(settings) as fleet:
        made = await fleet.create_server("cancel-down")
        box = BoxFiles.of(settings, "cancel-down")
        write_big_file(box.path(made.project_dir) / "big.bin")
        box.give(box.path(made.project_dir) / "big.bin")
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(fleet.download, "cancel-down", "big.bin", str(out / "big.bin")))
            await eventually(lambda: list(out.glob(".big.bin.boxforge-*")), what="the download's temp file")
            tg.cancel_scope.cancel()
        assert list(out.iterdir()) == []
        await fleet.destroy_server("cancel-down")


async def test_file_operations_on_a_stalled_box_fail_with_a_clear_error(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", local_isolation="none", local_sshd="embedded", sftp_timeout_s=1.0)
    local = tmp_path / "small.txt"
    local.write_text("small\n")
    async with open_fleet(settings) as fleet:
        await fleet.create_server("stalled")
        await fleet.write_file("stalled", "notes.txt", "before\n")
        (box_dir,) = local_boxes_dir(settings).glob("lb-*")
        server_pid = supervisor_pid(box_dir)  # the embedded SSH server lives in the supervisor
        assert server_pid is not None
        os.kill(server_pid, signal.SIGSTOP)
        try:
            with pytest.raises(BoxUnreachable, match=r"reading .*notes\.txt on 'stalled' got no answer"):
                await fleet.read_file("stalled", "notes.txt")
            with pytest.raises(BoxUnreachable, match=r"uploading .* got no answer .*retry"):
                await fleet.upload("stalled", str(local), "small.txt")
        finally:
            os.kill(server_pid, signal.SIGCONT)
        assert (await fleet.read_file("stalled", "notes.txt")).content == "before\n"
        await fleet.destroy_server("stalled")


def grep_pids(box_dir: Path, fifo: Path) -> list[int]:
    """The box's grep processes reading ``fifo`` (blocked until a writer opens it)."""
    found = []
    for pid in box_pids(box_dir.name):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(argv[0].decode()).name == "grep" and str(fifo).encode() in argv:
            found.append(pid)
    return found


async def test_slow_greps_do_not_hold_up_short_calls_to_the_same_box(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", local_isolation="none")
    async with open_fleet(settings) as fleet:
        project = Path((await fleet.create_server("busy")).project_dir)
        (box_dir,) = local_boxes_dir(settings).glob("lb-*")
        fifo = project / "fifo"
        os.mkfifo(fifo)
        results: list[int] = []

        async def slow_grep() -> None:
            results.append((await fleet.grep("busy", "needle", str(fifo))).count)

        async with anyio.create_task_group() as tg:
            for _ in range(3):  # more than the short lane has channels
                tg.start_soon(slow_grep)
            await eventually(lambda: len(grep_pids(box_dir, fifo)) == 3, what="three greps blocked on the fifo")
            with anyio.fail_after(30):  # held up behind the greps, this would wait for them: forever
                ran = await fleet.run("busy", "echo still answering")
                status = await fleet.job_status(ran.job_id)
            assert ran.stdout == "still answering\n" and status.state == "succeeded"
            assert results == [], "the greps were still running"

            def feed_fifo() -> bool:
                """One writer open and close: the greps holding the fifo read a line, then its end."""
                try:
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:  # no grep has it open right now
                    return len(results) == 3
                os.write(fd, b"needle\n")
                os.close(fd)
                return len(results) == 3

            await eventually(feed_fifo, what="the greps to finish")
        assert sum(results) >= 1
        await fleet.destroy_server("busy")


# the local-path policy


@pytest.fixture
def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$HOME in the test's temp dir, holding the credential files the transfers must refuse."""
    home = tmp_path / "home"
    for name in (".ssh/id_ed25519", ".aws/credentials", ".config/hcloud/cli.toml", ".netrc", ".bashrc"):
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text("secret\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return home


@pytest.mark.parametrize("name", [".ssh/id_ed25519", ".aws/credentials", ".config/hcloud/cli.toml", ".netrc"])
async def test_transfers_refuse_ssh_and_cloud_credentials(tmp_path: Path, fake_home: Path, name: str) -> None:
    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as fleet:
        with pytest.raises(InvalidInput, match=r"holds keys and credentials .*refusing to transfer it"):
            await fleet.upload("any", str(fake_home / name), "x")
        with pytest.raises(InvalidInput, match="holds keys and credentials"):
            await fleet.download("any", "x", str(fake_home / name), overwrite=True)
    assert (fake_home / name).read_text() == "secret\n"


async def test_transfers_refuse_the_config_file_in_use_and_its_dir(tmp_path: Path, fake_home: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config_dir = tmp_path / "elsewhere" / "boxforge-conf"
    config_dir.mkdir(parents=True)
    (config_dir / "config.toml").write_text('hcloud_token = "secret"\n')
    (config_dir / "notes.txt").write_text("next to the token\n")
    monkeypatch.setenv("BOXFORGE_CONFIG", str(config_dir / "config.toml"))
    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as fleet:
        with pytest.raises(InvalidInput, match=re.escape(f"is {config_dir / 'config.toml'}, which holds keys")):
            await fleet.upload("any", str(config_dir / "config.toml"), "x")
        with pytest.raises(InvalidInput, match=re.escape(f"is inside {config_dir}, which holds keys")):
            await fleet.upload("any", str(config_dir / "notes.txt"), "x")


async def test_a_working_directory_that_is_home_is_no_transfer_root(tmp_path: Path, fake_home: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # the temp root no longer holds the fake home
    (fake_home / "notes.txt").write_text("private\n")
    (fake_home / "project").mkdir()
    assert transfer_roots("", cwd=fake_home / "project") == [fake_home / "project", scratch]
    assert transfer_roots("", cwd=fake_home) == [scratch]
    assert transfer_roots("", cwd=Path("/")) == [scratch]
    monkeypatch.chdir(fake_home)
    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as fleet:
        with pytest.raises(InvalidInput, match="is your home dir or above it, so it is not a transfer root"):
            await fleet.upload("any", "notes.txt", "x")


async def test_a_download_never_writes_a_dotfile_directly_in_home(tmp_path: Path, fake_home: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with open_fleet(settings) as fleet:
        await fleet.create_server("dots")
        await fleet.write_file("dots", ".profile", "echo pwned\n")
        with pytest.raises(InvalidInput, match="dotfiles directly in your home dir"):
            await fleet.download("dots", ".profile", str(fake_home / ".bashrc"), overwrite=True)
        with pytest.raises(InvalidInput, match="dotfiles directly in your home dir"):
            await fleet.download("dots", ".profile", str(fake_home))
        assert (fake_home / ".bashrc").read_text() == "secret\n" and not (fake_home / ".profile").exists()
        kept = await fleet.download("dots", ".profile", str(fake_home / "dl" / ".profile"))
        assert Path(kept.local_path).read_text() == "echo pwned\n"
        await fleet.destroy_server("dots")


async def test_vm_download_is_marked_destructive(tmp_path: Path) -> None:
    async with Client(build_server(make_settings(tmp_path / "state"))) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert tools["vm_download"].annotations.destructive_hint is True


def test_fleet_and_file_tools_share_one_utf8_decoder() -> None:
    from server.files import read, review

    assert read.decode_output is review.decode_output is decode_output
    assert read.utf8_head is review.utf8_head
    assert read.utf8_head("aé€".encode(), 4) == "aé".encode()
