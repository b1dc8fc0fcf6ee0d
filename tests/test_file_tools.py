"""The file tools through the real MCP client on local boxes: text and binary content, offsets,
globs, grep, transfers to and from this machine, limits, bad paths and secret redaction."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from server.errors import InvalidInput
from server.files import MAX_READ_OUTPUT_BYTES, check_local_path, glob_regex
from tests.support import make_repo, make_settings
from tests.workflow_support import call, call_error, session

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
        assert rest["content"].startswith("line 6 é") and rest["next_offset"] is None
        again = await call(client, "vm_write", server="files", path="deep/er/notes.txt", content="short", mode="755")
        assert again["created"] is False
        shown = await call(client, "vm_bash", server="files",
                           command="stat -c %a deep/er/notes.txt; cat deep/er/notes.txt")
        assert shown["stdout"] == "755\nshort"
        home = await call(client, "vm_read", server="files", path="~/.boxforge/base")
        assert home["path"].endswith("/home/.boxforge/base")


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
