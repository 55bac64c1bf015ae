"""The seed's Python API, ``AlertWorkflowScheduler``, against a real MLflow store and real
``mlflow run`` jobs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from alertclf.scheduler import LOCK_FILE, SchedulerError, SchedulerLockedError
from alertclf.settings import Settings
from alertclf.simulate import SimulationConfig, simulate, write_simulation

# Each test decides its own MLflow store; nothing leaks through the environment.
pytestmark = pytest.mark.usefixtures("isolated_tracking")

FAST = {"algorithm": "kmeans", "kmeans_k_min": 4, "kmeans_k_max": 9}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("scenario")
    return write_simulation(simulate(SimulationConfig(seed=6, days=0.5)), out)


def test_importing_alertclf_is_cheap_and_the_scheduler_class_loads_on_first_use():
    code = (
        "import sys, alertclf\n"
        "heavy = [m for m in ('alertclf.api', 'alertclf.scheduler', 'mlflow', 'schedule', "
        "'pandas') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from alertclf import AlertWorkflowScheduler\n"
        "assert AlertWorkflowScheduler.__module__ == 'alertclf.api'\n"
        "assert 'AlertWorkflowScheduler' in dir(alertclf)\n"
        "try:\n"
        "    alertclf.NoSuchThing\n"
        "except AttributeError as err:\n"
        "    assert 'NoSuchThing' in str(err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_run_once_then_start_status_and_stop(tmp_path, scenario):
    from alertclf import AlertWorkflowScheduler

    out, models = tmp_path / "results", tmp_path / "models"
    scheduler = AlertWorkflowScheduler(
        alerts_csv_path=scenario["alerts"],
        graph_json_path=scenario["graph"],
        output_dir=out,
        model_dir=models,
        settings=Settings(**FAST),
        scheduler_options={"poll_seconds": 0.05},
    )
    assert scheduler.status()["scheduler"]["state"] == "not started"

    # run_once(): one classify in this process; bootstraps the first model.
    result = scheduler.run_once()
    assert result["outcome"] == "success", result["error"]
    folder = Path(result["results_dir"])
    assert folder.parent == out.resolve() and (folder / "alert_consolidation_final.csv").exists()
    summary = result["summary"]
    assert summary["bootstrapped"] is True and summary["model_version"] == "1"
    assert summary["rows_new"] == len(pd.read_csv(scenario["alerts"]))
    assert summary["incidents"] >= 1 and summary["top_incidents"][0]["rank"] == 1
    assert not (out / LOCK_FILE).exists()
    assert scheduler.status()["jobs"]["classify"]["outcome"] == "success"  # from the file

    # start(): returns at once; the loop runs in the background (in-process jobs here:
    # test_scheduler.py runs the loop's `mlflow run` jobs).
    scheduler.in_process = True
    began = time.monotonic()
    scheduler.start(workflow_interval_minutes=1 / 60, enable_retraining=True)
    try:
        assert time.monotonic() - began < 10  # the store is opened, no job waited for
        assert scheduler.running
        status = scheduler.status()
        assert status["scheduler"]["state"] == "running"
        assert status["scheduler"]["interval_minutes"] == pytest.approx(1 / 60)
        assert status["scheduler"]["retrain"] == "retrain weekly on Monday at 07:00 (local time)"
        assert status["jobs"]["retrain"]["next_run"] is not None
        # One scheduler per output folder, in this process too.
        other = AlertWorkflowScheduler(scenario["alerts"], scenario["graph"], out, models)
        with pytest.raises(SchedulerLockedError, match="another scheduler"):
            other.start()
        with pytest.raises(SchedulerError, match="stop"):
            scheduler.run_once()
        deadline = time.monotonic() + 120
        while scheduler.status()["jobs"]["classify"]["runs"] < 1:
            assert time.monotonic() < deadline, scheduler.status()
            time.sleep(0.2)
    finally:
        scheduler.stop()
    assert not scheduler.running
    status = scheduler.status()
    assert status["scheduler"]["state"] == "stopped"
    classify = status["jobs"]["classify"]
    assert classify["runs"] >= 1 and classify["failures"] == 0, classify
    assert classify["summary"]["model_version"] == "1"  # the model run_once bootstrapped
    assert classify["summary"]["bootstrapped"] is False
    assert not (out / LOCK_FILE).exists()
    assert len([p for p in out.iterdir() if p.name[:1].isdigit()]) == 1 + classify["successes"]
