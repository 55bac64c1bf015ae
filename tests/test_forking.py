"""Forked helpers (alertclf.forking): the result comes back from the child; a child that
fails or dies costs time, never the result."""

from __future__ import annotations

import logging
import os

import pandas as pd
import pytest

from alertclf import forking

pytestmark = pytest.mark.skipif(not forking.can_fork(), reason="needs fork and two cores")
PARENT = os.getpid()


def where_and_what(n: int) -> tuple[int, pd.DataFrame]:
    return os.getpid(), pd.DataFrame({"x": range(n)})


def fails_in_the_child(n: int) -> tuple[int, pd.DataFrame]:
    if os.getpid() != PARENT:
        raise ValueError("injected failure in the child")
    return where_and_what(n)


def dies_in_the_child(n: int) -> tuple[int, pd.DataFrame]:
    if os.getpid() != PARENT:
        os._exit(5)
    return where_and_what(n)


def test_the_result_is_computed_in_a_child_and_comes_back() -> None:
    pid, frame = forking.Forked(where_and_what, 100_000).result()
    assert pid != os.getpid()
    pd.testing.assert_frame_equal(frame, pd.DataFrame({"x": range(100_000)}))


@pytest.mark.parametrize("func", [fails_in_the_child, dies_in_the_child])
def test_a_failed_child_has_the_work_done_here(func, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="alertclf.forking"):
        pid, frame = forking.Forked(func, 10).result()
    assert pid == os.getpid() and len(frame) == 10
    assert f"{func.__name__} failed in a second process" in caplog.text


def test_no_fork_on_one_core_or_in_a_daemon(monkeypatch) -> None:
    monkeypatch.setattr(forking, "_usable_cores", lambda: 1)
    assert not forking.can_fork()
    monkeypatch.setattr(forking, "_usable_cores", lambda: 2)
    assert forking.can_fork()
    monkeypatch.setattr(forking.multiprocessing.current_process(), "_config", {"daemon": True})
    assert not forking.can_fork()


def sleeps(seconds: float) -> int:
    import time

    time.sleep(seconds)
    return 1


def test_a_cancelled_child_is_stopped() -> None:
    job = forking.Forked(sleeps, 60)
    job.cancel()
    assert not job._child.is_alive() and job._child.exitcode is not None
