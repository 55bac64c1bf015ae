"""The classify charts drawn by helper processes: same bytes, other processes, and every
way a helper can fail ends with the charts drawn here."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pandas as pd
import pytest
from test_plots import clusters, incidents

from alertclf import plots
from alertclf.chartworker import ChartWorker, _shares
from alertclf.plots import CLASSIFY_CHARTS


@pytest.fixture(scope="module")
def drawn_here() -> dict[str, bytes]:
    return plots.classify_chart_pngs(incidents(), clusters())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("helpers", [1, 2])
def test_helpers_draw_the_same_charts_in_other_processes(drawn_here, caplog, helpers) -> None:
    with caplog.at_level(logging.WARNING), ChartWorker(helpers) as worker:
        pids = worker.pids
        charts = worker.submit(incidents(), clusters())()
    assert len(pids) == helpers and os.getpid() not in pids
    assert list(charts) == list(CLASSIFY_CHARTS)  # the report shows them in this order
    assert charts == drawn_here  # byte for byte
    assert not [r for r in caplog.records if r.name.startswith("alertclf")]
    assert not any(alive(pid) for pid in pids)  # ended and reaped


def test_a_helper_that_died_has_its_share_drawn_here(drawn_here, caplog) -> None:
    with caplog.at_level(logging.WARNING), ChartWorker(helpers=2) as worker:
        first = worker._processes[0]
        first.kill()
        first.wait()
        charts = worker.submit(incidents(), clusters())()
    assert charts == drawn_here
    assert "chart helper unavailable" in caplog.text and "incident_timeline" in caplog.text


def test_helpers_that_do_not_answer_in_time_are_stopped(drawn_here, caplog) -> None:
    # They spend longer than a millisecond warming up.
    with caplog.at_level(logging.WARNING), ChartWorker(helpers=2, timeout=0.001) as worker:
        pids = worker.pids
        charts = worker.submit(incidents(), clusters())()
    assert charts == drawn_here
    assert caplog.text.count("no answer in 0.001 s") == 2
    assert not any(alive(pid) for pid in pids)


def test_a_chart_that_fails_in_a_helper_warns_here_and_the_others_come(caplog) -> None:
    broken_clusters = pd.DataFrame({"unexpected": [1, 2]})
    with caplog.at_level(logging.WARNING), ChartWorker(helpers=1) as worker:
        charts = worker.submit(incidents(), broken_clusters)()
    assert list(charts) == ["incident_timeline", "top_incidents"]
    assert "chart top_clusters skipped" in caplog.text
    assert "chart helper unavailable" not in caplog.text  # the helper itself was fine


def test_a_fresh_process_starts_one_helper_a_process_that_has_drawn_none(drawn_here) -> None:
    # A fresh interpreter (an `mlflow run` entry point) has no matplotlib loaded yet.
    fresh = subprocess.run(
        [sys.executable, "-c", "from alertclf.chartworker import ChartWorker\n"
         "with ChartWorker() as worker: print(len(worker.pids))"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert fresh.stdout.strip() == "1"
    # This process drew the charts for the fixture: its matplotlib is warm.
    assert "matplotlib.figure" in sys.modules
    with ChartWorker() as worker:
        assert worker.pids == []


def test_helpers_stop_when_the_run_ends_without_charts() -> None:
    with ChartWorker(helpers=1) as worker:
        pids = worker.pids
        assert all(alive(pid) for pid in pids)
    assert not any(alive(pid) for pid in pids)


def test_no_helpers_means_drawing_here(drawn_here) -> None:
    with ChartWorker(helpers=0) as worker:
        assert worker.pids == []
        assert worker.submit(incidents(), clusters())() == drawn_here


def test_shares_cover_every_chart_once_the_timeline_alone() -> None:
    for helpers in (1, 2, 3):
        shares = _shares(CLASSIFY_CHARTS, helpers)
        assert len(shares) == helpers
        assert [name for share in shares for name in share] == list(CLASSIFY_CHARTS)
    assert _shares(CLASSIFY_CHARTS, 2) == [
        ("incident_timeline",),
        ("top_incidents", "top_clusters"),
    ]
