"""Load: a 500,000-alert storm in one 15-minute window, and a 200-cycle scheduler soak.

Both run in fresh processes, so their peak memory, open files and temporary folders are
their own and nothing of the test process hides a leak. Marked ``slow`` (the storm takes
about a minute, the soak several); CI runs them with the rest of ``make test``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from alertclf import tracking
from alertclf.flows import FAULT_ENV, retrain
from alertclf.io.results import unescape_cell
from alertclf.settings import Settings
from alertclf.simulate import SimulationConfig, simulate, write_simulation

FAST = {"algorithm": "kmeans", "kmeans_k_min": 4, "kmeans_k_max": 8}
CLEAN_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", FAULT_ENV)
GIB = 2**30
MIB = 2**20

pytestmark = pytest.mark.usefixtures("isolated_tracking")


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.pop(FAULT_ENV, None)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env.update(extra)
    return env


# --- the storm ---------------------------------------------------------------------------------
STORM = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    import pandas as pd
    from alertclf.io.alerts import normalize_alerts, read_alerts
    from alertclf.pipeline import GraphContext, prepare_batch, score_batch, train
    from alertclf.flows import result_tables
    from alertclf.settings import Settings
    from alertclf.simulate import SimulationConfig, simulate

    n, folder = int(sys.argv[1]), Path(sys.argv[2])
    settings = Settings(algorithm="kmeans", kmeans_k_min=4, kmeans_k_max=8)
    sim = simulate(SimulationConfig(
        seed=3, days=40, scenario="storm", n_services=300, incidents_per_day=120,
        storms_per_day=24))
    assert len(sim.alerts) >= n + 20_000, len(sim.alerts)
    storm = sim.alerts.iloc[:n].copy()
    ts = pd.to_datetime(storm["timestamp"], utc=True)
    # The whole storm squashed into one 15-minute window, order kept.
    window = pd.Timedelta(minutes=14, seconds=59)
    storm["timestamp"] = (ts.min() + (ts - ts.min()) / (ts.max() - ts.min()) * window).dt.strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    path = folder / "storm.csv"
    storm.to_csv(path, index=False)
    # A model trained on ordinary history (the alerts after the storm's).
    history, _ = normalize_alerts(sim.alerts.iloc[n:n + 20_000].astype(str), settings, "history")
    context = GraphContext.build(sim.graph, settings)
    model, profiles = train(prepare_batch(history, context, settings), settings)

    seconds = {}
    started = time.perf_counter()
    batch = read_alerts(path, settings)
    seconds["read"] = time.perf_counter() - started
    t0 = time.perf_counter()
    context = GraphContext.build(sim.graph, settings)
    seconds["graph"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepared = prepare_batch(batch.alerts, context, settings)
    seconds["prepare"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = score_batch(prepared, model.predict_details, profiles, context, settings)
    seconds["score"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tables = result_tables(result, batch)
    seconds["tables"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - started
    final = tables["alert_consolidation_final.csv"]
    print("RESULT " + json.dumps({
        "rows_written": len(storm),
        "rows_read": batch.rows_read,
        "accepted": len(batch.alerts),
        "rejected": len(batch.rejected),
        "final_rows": len(final),
        "final_ids_unique": bool(final["alert_id"].is_unique),
        "same_ids": set(final["alert_id"]) == set(batch.alerts["alert_id"]),
        "span_minutes": (final["timestamp"].max() - final["timestamp"].min()).total_seconds() / 60,
        "incidents": len(result.incidents),
        "clusters": len(result.clusters),
        "duplicates": int(final["is_duplicate"].sum()),
        "seconds": seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))
    """
)


@pytest.mark.bench
@pytest.mark.timeout(1200)
def test_storm_of_500k_alerts_in_one_window(tmp_path, reliability) -> None:
    case = reliability(
        "load.storm_500k",
        "500,000 simulated storm alerts (300 services, 24 storms/day) squashed into one "
        "15-minute window, in a fresh process: read_alerts + GraphContext + prepare_batch + "
        "score_batch with a k-means model trained on ordinary history + the result tables; "
        "seconds and peak RSS; every alert accounted for",
    )
    n = 500_000
    done = subprocess.run(
        [sys.executable, "-c", STORM, str(n), str(tmp_path)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    seconds = result["seconds"]
    assert result["rows_read"] == n == result["accepted"] + result["rejected"]
    assert result["final_rows"] == result["accepted"]
    assert result["final_ids_unique"] and result["same_ids"]
    assert result["span_minutes"] <= 15
    # "Well within the interval": a third of it, on two cores.
    assert seconds["total"] < 300, seconds
    case.figures(
        examples=1,
        alerts_in=n,
        alerts_accounted=result["final_rows"] + result["rejected"],
        seconds=round(seconds["total"], 1),
        read_seconds=round(seconds["read"], 1),
        pipeline_seconds=round(seconds["prepare"] + seconds["score"], 1),
        peak_rss_gib=round(result["peak_rss_bytes"] / GIB, 2),
        incidents=result["incidents"],
        duplicates=result["duplicates"],
        alerts_per_second=round(n / seconds["total"]),
    )


# --- the soak ----------------------------------------------------------------------------------
CYCLES = 200
PER_CYCLE = 20
MEASURE_AT = (20, CYCLES)


def temp_entries(*folders: Path) -> int:
    return sum(len(os.listdir(f)) for f in folders if f.exists())


@pytest.mark.bench
@pytest.mark.timeout(3600)
def test_scheduler_soak_200_cycles_no_growth(tmp_path, reliability) -> None:
    case = reliability(
        "load.scheduler_soak",
        f"`alertclf run --in-process --interval 0.005` (a 0.3 s clock) for {CYCLES} classify "
        f"cycles on a growing export ({PER_CYCLE} new alerts per cycle, the file replaced "
        "atomically after each run); RSS, open file descriptors, threads and temporary "
        f"folders of the scheduler process compared at cycles {MEASURE_AT[0]} and "
        f"{MEASURE_AT[1]}; then every alert fed exactly once across the results folders. "
        "In-process, because 200 `mlflow run` cycles take about 40 minutes here",
    )
    sim = simulate(SimulationConfig(seed=17, days=5.0, scenario="mixed"))
    paths = write_simulation(sim, tmp_path / "scenario")
    alerts = pd.read_csv(paths["alerts"], dtype=str, keep_default_na=False)
    alerts = alerts.sort_values("timestamp", kind="stable").reset_index(drop=True)
    needed = PER_CYCLE * (CYCLES + 5)
    assert len(alerts) >= needed, len(alerts)
    models, output = tmp_path / "models", tmp_path / "results"
    first_history = alerts.iloc[:1000]
    history = tmp_path / "history.csv"
    first_history.to_csv(history, index=False)
    retrain(Settings(**FAST), history, paths["graph"], models)
    tracking._SET_BY_US.clear()
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    feed = tmp_path / "alerts.csv"
    fed = 1000 + PER_CYCLE  # the first run takes the history and one slice

    def publish(rows: int) -> None:
        part = tmp_path / "alerts.csv.part"
        alerts.iloc[:rows].to_csv(part, index=False)
        os.replace(part, feed)  # a reader sees the old file or the new one, never half

    publish(fed)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    log = tmp_path / "scheduler.log"  # a file: a pipe nobody reads would block the loop
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alertclf.cli",
            "run",
            "--in-process",
            "--interval",
            "0.005",
            "--no-retraining",
            "--alerts",
            str(feed),
            "--graph",
            str(paths["graph"]),
            "--output",
            str(output),
            "--models",
            str(models),
            "--log-level",
            "WARNING",
        ],
        env=child_env(TMPDIR=str(tmpdir)),
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
    )
    status_path = output / "scheduler_status.json"
    samples: dict[int, dict[str, float]] = {}
    seen_runs = 0
    started = time.monotonic()
    try:
        watched = psutil.Process(process.pid)
        # One run more than measured: the last one reads the final file, so every alert
        # published has been classified when the loop stops.
        while seen_runs < CYCLES + 1:
            assert process.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() - started < 3300, f"only {seen_runs} cycles"
            try:
                job = json.loads(status_path.read_text())["jobs"]["classify"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.02)
                continue
            runs = int(job["runs"])
            if runs == seen_runs:
                time.sleep(0.02)
                continue
            seen_runs = runs
            assert job["outcome"] == "success", job
            if runs < CYCLES:
                fed += PER_CYCLE
                publish(fed)
            if runs in MEASURE_AT:
                samples[runs] = {
                    "rss": watched.memory_info().rss,
                    "fds": watched.num_fds(),
                    "threads": watched.num_threads(),
                    "temp": temp_entries(tmpdir, output / ".tmp")
                    + len(list(output.glob(".tmp-*"))),
                    "seconds": time.monotonic() - started,
                }
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
    assert process.returncode == 0, log.read_text()[-4000:]
    status = json.loads(status_path.read_text())
    job = status["jobs"]["classify"]
    assert status["scheduler"]["state"] == "stopped"
    assert job["failures"] == 0 and job["runs"] >= CYCLES, job

    early, late = samples[MEASURE_AT[0]], samples[MEASURE_AT[1]]
    rss_growth = late["rss"] - early["rss"]
    assert late["fds"] <= early["fds"] + 2, (early, late)
    assert late["threads"] <= early["threads"] + 2, (early, late)
    assert late["temp"] <= early["temp"], (early, late)
    assert rss_growth <= max(64 * MIB, 0.15 * early["rss"]), (early, late)

    # Every alert the scheduler was given, exactly once across its results.
    folders = [p for p in output.iterdir() if p.is_dir() and p.name[:1].isdigit()]
    ids = pd.concat(
        pd.read_csv(f / "alert_consolidation_final.csv", dtype=str, keep_default_na=False)[
            "alert_id"
        ]
        for f in folders
    ).map(unescape_cell)
    expected = set(alerts.iloc[:fed]["alert_id"])
    assert ids.is_unique, "an alert was classified twice"
    assert set(ids) == expected
    per_cycle = (late["seconds"] - early["seconds"]) / (MEASURE_AT[1] - MEASURE_AT[0])
    case.figures(
        examples=job["runs"],
        alerts_in=len(expected),
        alerts_accounted=len(ids),
        seconds=round(time.monotonic() - started),
        seconds_per_cycle=round(per_cycle, 2),
        rss_mib_at_20=round(early["rss"] / MIB),
        rss_mib_at_200=round(late["rss"] / MIB),
        fds_at_20=early["fds"],
        fds_at_200=late["fds"],
        temp_folders_at_20=early["temp"],
        temp_folders_at_200=late["temp"],
    )
