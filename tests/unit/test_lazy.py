"""server.lazy: a module loaded on first use is whole for every thread that races to that first use."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from server.lazy import lazy_import


def test_threads_racing_to_the_first_use_all_see_the_whole_module(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # a module whose import takes a while (its body waits for a second thread to start reading it)
    (tmp_path / "bf_slow_module.py").write_text(
        "import builtins\n"
        "builtins.bf_slow_started.set()\nbuiltins.bf_reader_in.wait(5)\nVALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import builtins
    started, reader_in = threading.Event(), threading.Event()
    monkeypatch.setattr(builtins, "bf_slow_started", started, raising=False)
    monkeypatch.setattr(builtins, "bf_reader_in", reader_in, raising=False)
    module = lazy_import("bf_slow_module")
    assert "bf_slow_module" not in sys.modules  # nothing loaded yet
    seen: list[object] = []

    def read() -> None:
        try:
            seen.append(module.VALUE)
        except AttributeError as exc:
            seen.append(exc)

    first = threading.Thread(target=read)
    first.start()
    assert started.wait(10)  # the first reader is inside the module's import
    second = threading.Thread(target=read)
    second.start()
    reader_in.set()
    first.join(10)
    second.join(10)
    monkeypatch.delitem(sys.modules, "bf_slow_module", raising=False)
    assert seen == [42, 42]
    with pytest.raises(ModuleNotFoundError):
        lazy_import("bf_no_such_module_here")
