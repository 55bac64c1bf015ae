"""Background imports (alertclf.warmup): done on another thread, failures left to the
importer that needs the module."""

from __future__ import annotations

import sys
import threading

import pytest

from alertclf.warmup import import_in_background


def test_modules_are_imported_on_a_thread_and_a_failure_stops_nothing(tmp_path, monkeypatch):
    (tmp_path / "warm_probe_broken.py").write_text("raise RuntimeError('broken module')\n")
    (tmp_path / "warm_probe_ok.py").write_text(
        "import threading\nIMPORTED_ON = threading.current_thread().name\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("warm_probe_broken", "warm_probe_ok"):
        monkeypatch.delitem(sys.modules, name, raising=False)

    thread = import_in_background(["warm_probe_broken", "warm_probe_ok"])
    thread.join(timeout=30)

    assert not thread.is_alive() and thread.daemon
    assert sys.modules["warm_probe_ok"].IMPORTED_ON == thread.name != threading.main_thread().name
    assert "warm_probe_broken" not in sys.modules  # the job's own import raises it
    with pytest.raises(RuntimeError, match="broken module"):
        __import__("warm_probe_broken")
