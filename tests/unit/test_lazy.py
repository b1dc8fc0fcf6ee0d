"""server.lazy: a module imported on first use, safely from several threads at once."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from server.lazy import lazy_import


def test_threads_that_read_a_lazy_module_at_once_all_see_it_whole(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # the module's import takes a while: readers arriving meanwhile must wait for it, not see it half-made
    (tmp_path / "bf_slow_module.py").write_text("import time\ntime.sleep(0.3)\nVALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bf_slow_module", raising=False)
    module = lazy_import("bf_slow_module")
    assert "bf_slow_module" not in sys.modules  # nothing imported before the first read
    seen: list[object] = []
    start = threading.Barrier(8)

    def read() -> None:
        start.wait()
        try:
            seen.append(module.VALUE)
        except AttributeError as exc:
            seen.append(exc)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert seen == [42] * 8


def test_a_missing_module_fails_on_first_use_with_the_import_error() -> None:
    module = lazy_import("bf_no_such_module_anywhere")
    with pytest.raises(ModuleNotFoundError):
        module.anything  # noqa: B018
