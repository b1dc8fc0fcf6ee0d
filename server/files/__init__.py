"""File tools on a box: read, write, list, grep, upload, download, and the reviewer's diff.

Reads and writes go over SFTP on the box's pooled SSH connection (binary safe, no shell), each
operation within a time limit (``BoxFiles.deadline``); a cancelled or failed write or transfer
removes its temp file. Listing, grep and diff are one shell round trip each, with every argument
shell-quoted, on the pool's long lane (a grep may run for minutes).

Paths on the box: relative paths resolve in the project dir, ``~``/``~/...`` in the box user's
home, absolute paths are used as given, so a tool reaches whatever the box's SSH user can
(on a local box that is this machine's user: local boxes are for agents you trust). Paths
must not contain NUL, CR or LF. Paths on the orchestrator (upload/download) must lie inside
the transfer roots (the working directory unless it is $HOME or above it, the temp dir and
``BOXFORGE_TRANSFER_ROOTS``) and never inside the forbidden paths the caller gives (boxforge's
state and config, SSH and cloud credentials); a download never writes a dotfile directly in $HOME.

Modules: ``box`` (BoxFiles and the shared SFTP pieces), ``read`` (read, write), ``listing`` (ls and its
globs), ``search`` (grep), ``transfer`` (upload, download), ``policy`` (the local paths a transfer may touch),
``review`` (the review diff). The names below are what the service calls.
"""

from server.files.box import BoxFiles, check_box_path
from server.files.listing import check_pattern, glob_regex, list_files
from server.files.policy import check_local_path, transfer_roots
from server.files.read import MAX_READ_OUTPUT_BYTES, decode_content, read_file, write_file
from server.files.review import MAX_DIFF_BYTES, diff
from server.files.search import grep
from server.files.transfer import download, upload

__all__ = ["MAX_DIFF_BYTES", "MAX_READ_OUTPUT_BYTES", "BoxFiles", "check_box_path", "check_local_path",
           "check_pattern", "decode_content", "diff", "download", "glob_regex", "grep", "list_files", "read_file",
           "transfer_roots", "upload", "write_file"]
