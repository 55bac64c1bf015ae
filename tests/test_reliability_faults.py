"""Faults, injected: real kills, a broken registry, a locked store, a dead tracking server,
Azurite gone mid-download, a full disk. After each: nothing half-written is visible, the
watermark is unchanged, and the next run processes the batch exactly once.

Nothing is mocked. Processes get SIGKILL; the model artifact is deleted or cut short on
disk; another connection holds ``BEGIN EXCLUSIVE`` on ``mlflow.db``; the tracking URI points
at a closed port, or a real ``mlflow server`` is killed while classify is logging; Azurite
is stopped between two chunks of a download; the results folder is a 4 MiB tmpfs filled to
the brim. The only in-process hooks are where a real fault must strike at an exact point
(a wrapper around ``flows._log_classify`` that takes the lock or kills the server first,
and Azurite's ``on_step`` download hook).
"""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from azure.storage.blob import BlobServiceClient
from azurite import ACCOUNT_KEY, AzuriteServer, free_port
from mlflow_server import MlflowServer

from alertclf import flows, tracking
from alertclf.cli import main
from alertclf.contracts import RESULT_FILES
from alertclf.flows import FAULT_ENV, classify, retrain
from alertclf.io import azure
from alertclf.io.alerts import read_alerts
from alertclf.io.azure import BlobOptions, RetryPolicy
from alertclf.io.results import unescape_cell
from alertclf.io.state import RunState, StateError, StateStore
from alertclf.settings import Settings
from alertclf.simulate import SimulationConfig, simulate, write_simulation

# Each test decides its own MLflow store; nothing leaks through the environment.
pytestmark = pytest.mark.usefixtures("isolated_tracking")

ROOT = Path(__file__).resolve().parents[1]
FAST = {"algorithm": "kmeans", "kmeans_k_min": 4, "kmeans_k_max": 8}
SETTINGS = Settings(**FAST)
MODEL = "alert-clustering"
STATE = Path(".state") / "state.json"
CLEAN_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", FAULT_ENV)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env.pop(FAULT_ENV, None)
    env.update(extra)
    return env


# --- one scenario, one store, one committed first batch (per module) -----------------------------
class World:
    """The inputs, a trained store and a results folder after a first batch (the template
    every test copies): tests run the second batch, which grows the file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        sim = simulate(SimulationConfig(seed=11, days=2.0, scenario="mixed"))
        paths = write_simulation(sim, root / "scenario")
        self.graph = paths["graph"]
        alerts = pd.read_csv(paths["alerts"], dtype=str, keep_default_na=False)
        ts = pd.to_datetime(alerts["timestamp"], utc=True)
        self.first = root / "alerts-first.csv"
        alerts[ts < ts.quantile(0.6)].to_csv(self.first, index=False)
        self.full = root / "alerts-full.csv"
        alerts.to_csv(self.full, index=False)
        batch = read_alerts(self.full, SETTINGS)
        assert len(batch.rejected) == 0
        self.ids = set(batch.alerts["alert_id"])
        self.models = root / "models"
        retrain(SETTINGS, paths["alerts"], self.graph, self.models)
        tracking._SET_BY_US.clear()
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        self.template = root / "template"
        classify(SETTINGS, self.first, self.graph, self.template, self.models)
        tracking._SET_BY_US.clear()
        os.environ.pop("MLFLOW_TRACKING_URI", None)

    def output(self, path: Path) -> Path:
        """A copy of the committed first batch: results folder + state."""
        shutil.copytree(self.template, path)
        return path

    def classify_command(self, output: Path, alerts: Path | None = None) -> list[str]:
        return [
            sys.executable,
            "-m",
            "alertclf.cli",
            "classify",
            "--alerts",
            str(alerts or self.full),
            "--graph",
            str(self.graph),
            "--output",
            str(output),
            "--models",
            str(self.models),
            "--log-level",
            "WARNING",
            "--top",
            "0",
        ]

    def run_classify(self, output: Path, timeout: float = 300, **env: str):
        return subprocess.run(
            self.classify_command(output),
            env=child_env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    for name in CLEAN_ENV:
        os.environ.pop(name, None)
    tracking._SET_BY_US.clear()
    return World(tmp_path_factory.mktemp("faults"))


# --- the invariants ------------------------------------------------------------------------------
def visible(output: Path) -> list[Path]:
    return sorted(p for p in output.iterdir() if p.is_dir() and p.name[:1].isdigit())


def assert_nothing_half_written(output: Path) -> None:
    """Every visible results folder has every contract file."""
    for folder in visible(output):
        missing = set(RESULT_FILES) - {p.name for p in folder.iterdir()}
        assert not missing, f"{folder.name} is visible but lacks {sorted(missing)}"


def state_bytes(output: Path) -> bytes | None:
    path = output / STATE
    return path.read_bytes() if path.exists() else None


def accounted(output: Path) -> collections.Counter:
    """How often each alert id appears across the visible (not superseded) folders."""
    counts: collections.Counter = collections.Counter()
    for folder in visible(output):
        final = pd.read_csv(
            folder / "alert_consolidation_final.csv", dtype=str, keep_default_na=False
        )
        counts.update(final["alert_id"].map(unescape_cell))
    return counts


def classify_again_exactly_once(world, output: Path) -> int:
    """The run after a failure succeeds and leaves every alert classified exactly once;
    returns how many alerts the visible results account for."""
    recovered = world.run_classify(output)
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    return assert_exactly_once(output, world.ids)


def assert_exactly_once(output: Path, ids: set[str]) -> int:
    counts = accounted(output)
    twice = sorted(i for i, n in counts.items() if n > 1)
    assert not twice, f"{len(twice)} alerts classified twice, e.g. {twice[:3]}"
    assert set(counts) == ids, (
        f"{len(ids - set(counts))} alerts lost, {len(set(counts) - ids)} unexpected"
    )
    return sum(counts.values())


def one_error_line(stderr: str, command: str = "classify") -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"alertclf {command}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr[-3000:]
    return errors[0]


# --- kill -9 -------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kill_9_at_random_points_then_exactly_once(world, tmp_path, reliability) -> None:
    case = reliability(
        "faults.kill9",
        "SIGKILL of `alertclf classify` (a real process, real SQLite store, production model) "
        "after 5 seeded delays spread over a measured clean run, plus os._exit at the two "
        "commit points (after the results folder, after the MLflow run); after each: every "
        "visible results folder complete, state byte-identical (or the new complete one), "
        "then a clean re-run and every alert exactly once across the visible folders",
    )
    calibration = world.output(tmp_path / "calibration")
    started = time.monotonic()
    done = world.run_classify(calibration)
    clean_seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(calibration, world.ids)

    rng = random.Random(20261129)
    # Stratified over the run, denser in its second part: the first seconds are the
    # interpreter starting, the rest reads, classifies, writes and logs.
    windows = [(0.15, 0.6, 2), (0.6, 1.0, 3)]
    delays = [
        clean_seconds * rng.uniform(low + i * (high - low) / n, low + (i + 1) * (high - low) / n)
        for low, high, n in windows
        for i in range(n)
    ]
    points: list[tuple[str, float | None]] = [(f"kill after {d:.2f} s", d) for d in delays]
    points += [("exit at after_results", None), ("exit at after_mlflow", None)]
    phases: collections.Counter = collections.Counter()
    accounted_total = 0
    for number, (label, delay) in enumerate(points):
        output = world.output(tmp_path / f"trial-{number}")
        before_state = state_bytes(output)
        before_folders = visible(output)
        env = child_env()
        if delay is None:
            env[FAULT_ENV] = label.rsplit(" ", 1)[1]
        process = subprocess.Popen(
            world.classify_command(output),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if delay is not None:
            time.sleep(delay)
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
        _, stderr = process.communicate(timeout=300)
        if delay is None:
            assert process.returncode == 86, stderr[-2000:]
        killed = process.returncode in (-signal.SIGKILL, 86)

        # Right after the kill: nothing half-written, the old state (or the new, whole one).
        assert_nothing_half_written(output)
        after_state = state_bytes(output)
        new_folders = [f for f in visible(output) if f not in before_folders]
        leftovers = list(output.glob(".tmp-*"))
        if after_state == before_state:
            assert len(new_folders) <= 1
            phase = (
                "after results, before state"
                if new_folders
                else ("while writing results" if leftovers else "before results")
            )
        else:
            state = json.loads(after_state)
            assert [f.name for f in new_folders] == [state["last_run_id"]]
            assert state["watermark"] >= json.loads(before_state)["watermark"], (
                "watermark went back"
            )
            phase = "after the state was saved"
        phases[phase if killed else "finished before the kill"] += 1

        # The next run: the unfinished folder moves aside, the batch is processed once.
        rerun = world.run_classify(output)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert not list(output.glob(".tmp-*")), "stale temporary folders were not swept"
        if after_state == before_state and new_folders:
            assert (output / flows.SUPERSEDED_DIR / new_folders[0].name).is_dir()
        accounted_total += assert_exactly_once(output, world.ids)
    case.figures(
        examples=len(points),
        alerts_in=len(world.ids) * len(points),
        alerts_accounted=accounted_total,
        failures_injected=sum(n for p, n in phases.items() if p != "finished before the kill"),
        failures_recovered=sum(n for p, n in phases.items() if p != "finished before the kill"),
        clean_run_seconds=round(clean_seconds, 1),
        **{f"killed {p}": n for p, n in sorted(phases.items())},
    )


# --- the model artifact --------------------------------------------------------------------------
def production_model_file(models: Path) -> Path:
    """``model.joblib`` of the version the ``production`` alias points to, on disk."""
    tracking.configure_tracking(models)
    client = tracking.client()
    version = client.get_model_version_by_alias(MODEL, tracking.PRODUCTION)
    model_id = str(version.source).removeprefix("models:/")
    location = client.get_logged_model(model_id).artifact_location
    root = Path(location.removeprefix("file://"))
    (path,) = root.rglob("model.joblib")
    tracking._SET_BY_US.clear()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return path


@pytest.fixture
def model_file(world) -> Iterator[Path]:
    """The production artifact, put back whole whatever the test does to it."""
    path = production_model_file(world.models)
    original = path.read_bytes()
    try:
        yield path
    finally:
        path.write_bytes(original)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage"])
def test_missing_or_corrupt_model_fails_clearly_and_leaves_state(
    damage, world, model_file, tmp_path, reliability
) -> None:
    case = reliability(
        f"faults.model_{damage}",
        f"the production version's model.joblib {damage} in the artifact store: `alertclf "
        "classify` and the scheduler (`alertclf run --run-once --in-process`) fail with one "
        "ModelLoadError line; state byte-identical, no results folder; after the artifact is "
        "restored the next run processes the batch exactly once",
    )
    original = model_file.read_bytes()
    if damage == "missing":
        model_file.unlink()
    elif damage == "truncated":
        model_file.write_bytes(original[: len(original) // 3])
    else:
        model_file.write_bytes(random.Random(1).randbytes(len(original)))
    output = world.output(tmp_path / "out")
    before_state, before_folders = state_bytes(output), visible(output)

    done = world.run_classify(output)
    assert done.returncode == 2, done.stderr[-3000:]
    line = one_error_line(done.stderr)
    assert f"could not load models:/{MODEL}@production" in line, line
    assert state_bytes(output) == before_state
    assert visible(output) == before_folders and not list(output.glob(".tmp-*"))

    scheduled = subprocess.run(
        [
            sys.executable,
            "-m",
            "alertclf.cli",
            "run",
            "--run-once",
            "--in-process",
            "--alerts",
            str(world.full),
            "--graph",
            str(world.graph),
            "--output",
            str(output),
            "--models",
            str(world.models),
            "--log-level",
            "WARNING",
        ],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert scheduled.returncode == 1, scheduled.stderr[-3000:]
    assert "Traceback" not in scheduled.stderr
    status = json.loads((output / "scheduler_status.json").read_text())
    job = status["jobs"]["classify"]
    assert job["outcome"] == "failed" and job["failures"] == 1, job
    assert "could not load" in job["error"], job["error"]
    assert state_bytes(output) == before_state
    assert visible(output) == before_folders

    model_file.write_bytes(original)
    n = classify_again_exactly_once(world, output)
    case.figures(
        examples=2,
        alerts_in=len(world.ids),
        alerts_accounted=n,
        failures_injected=2,
        failures_recovered=2,  # both failed runs left the state; the next run caught up
        status_outcome=job["outcome"],
    )


# --- the tracking store --------------------------------------------------------------------------
class ExclusiveLock:
    """``BEGIN EXCLUSIVE`` on the store from another connection: no one else may read or
    write until it is released (optionally by a timer)."""

    def __init__(self, db: Path) -> None:
        self.connection = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self.connection.execute("BEGIN EXCLUSIVE")
        self.held = True

    def release(self) -> None:
        if self.held:
            self.connection.execute("ROLLBACK")
            self.connection.close()
            self.held = False

    def release_after(self, seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, self.release)
        timer.start()
        return timer


@pytest.mark.slow
def test_locked_store_fails_after_bounded_retries(world, tmp_path, reliability) -> None:
    case = reliability(
        "faults.store_locked",
        "`BEGIN EXCLUSIVE` held on mlflow.db by another connection for the whole classify "
        "(a real process): bounded retries (SQLite's 5 s busy wait x 4 attempts) then one "
        "TrackingError line; state byte-identical, no results folder; after the lock is "
        "released the next run processes the batch exactly once",
    )
    output = world.output(tmp_path / "out")
    before_state, before_folders = state_bytes(output), visible(output)
    lock = ExclusiveLock(world.models / "mlflow.db")
    try:
        started = time.monotonic()
        done = world.run_classify(output, timeout=180)
        seconds = time.monotonic() - started
    finally:
        lock.release()
    assert done.returncode == 2, done.stderr[-3000:]
    line = one_error_line(done.stderr)
    assert "database is locked" in line and "MLflow store sqlite:///" in line, line
    retries = done.stderr.count("could not open the experiment (attempt")
    assert retries == 3
    assert seconds < 90, f"a locked store held classify for {seconds:.0f} s"
    assert state_bytes(output) == before_state and visible(output) == before_folders

    n = classify_again_exactly_once(world, output)
    case.figures(
        examples=1,
        alerts_in=len(world.ids),
        alerts_accounted=n,
        failures_injected=1,
        failures_recovered=1,
        retries=retries,
        seconds=round(seconds, 1),
    )


@pytest.mark.slow
def test_store_locked_briefly_is_ridden_out(world, tmp_path, reliability) -> None:
    case = reliability(
        "faults.store_locked_briefly",
        "`BEGIN EXCLUSIVE` on mlflow.db, released 1 s after the first attempt gave up "
        "(SQLite's 5 s busy wait): the next attempt gets through and the run succeeds; every "
        "alert exactly once",
    )
    output = world.output(tmp_path / "out")
    lock = ExclusiveLock(world.models / "mlflow.db")
    process = subprocess.Popen(
        world.classify_command(output),
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        # Released once the first attempt has failed, while the second one waits.
        for line in process.stderr:
            lines.append(line)
            if "could not open the experiment (attempt 1/4)" in line:
                lock.release_after(1.0)
        process.wait(300)
    finally:
        lock.release()
    stderr = "".join(lines)
    assert process.returncode == 0, stderr[-3000:]
    retries = stderr.count("could not open the experiment (attempt")
    assert retries >= 1, "the lock was not felt: the test proves nothing"
    n = assert_exactly_once(output, world.ids)
    case.figures(
        examples=1,
        alerts_in=len(world.ids),
        alerts_accounted=n,
        failures_injected=1,
        failures_recovered=1,
        retries=retries,
    )


@pytest.mark.slow
def test_store_locked_while_logging_then_superseded(
    world, tmp_path, monkeypatch, reliability
) -> None:
    """The lock strikes between the results folder and the MLflow logging: the folder is
    visible, the state is not saved, so the next run supersedes it."""
    case = reliability(
        "faults.store_locked_mid_run",
        "`BEGIN EXCLUSIVE` taken on mlflow.db right after the results folder is renamed into "
        "place, before the MLflow metrics and artifacts (in-process, at that exact point): "
        "one TrackingError (after MLflow's own 20 s SQLite busy wait, for the metrics and "
        "again for marking the run failed), the folder stays visible but the state is not "
        "saved; the next run moves it to .superseded and classifies the batch again, "
        "exactly once",
    )
    output = world.output(tmp_path / "out")
    before_state = state_bytes(output)
    original = flows._log_classify
    locks: list[ExclusiveLock] = []

    def locked_then_log(*args, **kwargs):
        locks.append(ExclusiveLock(world.models / "mlflow.db"))
        return original(*args, **kwargs)

    monkeypatch.setattr(flows, "_log_classify", locked_then_log)
    started = time.monotonic()
    try:
        with pytest.raises(tracking.TrackingError) as caught:
            classify(SETTINGS, world.full, world.graph, output, world.models)
    finally:
        for lock in locks:
            lock.release()
    seconds = time.monotonic() - started
    message = str(caught.value)
    assert "\n" not in message and "database is locked" in message, message
    assert state_bytes(output) == before_state
    assert_nothing_half_written(output)
    (unfinished,) = [f for f in visible(output) if f.name not in os.listdir(world.template)]

    monkeypatch.setattr(flows, "_log_classify", original)
    tracking._SET_BY_US.clear()
    classify(SETTINGS, world.full, world.graph, output, world.models)
    assert (output / flows.SUPERSEDED_DIR / unfinished.name).is_dir()
    n = assert_exactly_once(output, world.ids)
    case.figures(
        examples=1,
        alerts_in=len(world.ids),
        alerts_accounted=n,
        failures_injected=1,
        failures_recovered=1,
        seconds=round(seconds, 1),
    )


@pytest.mark.slow
def test_tracking_server_down_fails_in_bounded_time(world, tmp_path, reliability) -> None:
    case = reliability(
        "faults.mlflow_server_down",
        "MLFLOW_TRACKING_URI=http://127.0.0.1:<closed port> for a real `alertclf classify`: "
        "bounded retries (MLflow HTTP retries capped by alertclf, then 4 attempts) and one "
        "TrackingError line; no results folder, state byte-identical; the next run against the "
        "store processes the batch exactly once",
    )
    output = world.output(tmp_path / "out")
    before_state, before_folders = state_bytes(output), visible(output)
    started = time.monotonic()
    done = subprocess.run(
        world.classify_command(output),
        env=child_env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}"),
        capture_output=True,
        text=True,
        timeout=240,
    )
    seconds = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-3000:]
    line = one_error_line(done.stderr)
    assert "could not open the experiment in the MLflow store http://127.0.0.1:" in line, line
    assert "Connection refused" in line
    assert seconds < 60, f"a dead tracking server held classify for {seconds:.0f} s"
    retries = done.stderr.count("Retrying (Retry(") + done.stderr.count("(attempt ")
    assert state_bytes(output) == before_state and visible(output) == before_folders

    n = classify_again_exactly_once(world, output)
    case.figures(
        examples=1,
        alerts_in=len(world.ids),
        alerts_accounted=n,
        failures_injected=1,
        failures_recovered=1,
        retries=retries,
        seconds=round(seconds, 1),
    )


@pytest.mark.slow
def test_tracking_server_killed_while_logging(world, tmp_path, monkeypatch, reliability) -> None:
    case = reliability(
        "faults.mlflow_server_killed_mid_run",
        "a real `mlflow server` over the store is SIGKILLed right after the results folder is "
        "in place, before the metrics and artifacts are logged over HTTP (in-process, at that "
        "exact point): bounded retries, one TrackingError, the state not saved; the next run "
        "(store reachable again) supersedes the folder and classifies every alert exactly once",
    )
    server = MlflowServer(world.models, tmp_path / "server.log")
    output = world.output(tmp_path / "out")
    before_state = state_bytes(output)
    original = flows._log_classify

    def server_dies_then_log(*args, **kwargs):
        server.kill()
        return original(*args, **kwargs)

    monkeypatch.setattr(flows, "_log_classify", server_dies_then_log)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    try:
        started = time.monotonic()
        with pytest.raises(tracking.TrackingError) as caught:
            classify(SETTINGS, world.full, world.graph, output, world.models)
        seconds = time.monotonic() - started
    finally:
        server.kill()
    message = str(caught.value)
    assert "\n" not in message and "MLflow failed during the alertclf-classify run" in message
    assert state_bytes(output) == before_state
    assert_nothing_half_written(output)

    monkeypatch.setattr(flows, "_log_classify", original)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    tracking._SET_BY_US.clear()
    classify(SETTINGS, world.full, world.graph, output, world.models)
    assert len(list((output / flows.SUPERSEDED_DIR).iterdir())) == 1
    n = assert_exactly_once(output, world.ids)
    case.figures(
        examples=1,
        alerts_in=len(world.ids),
        alerts_accounted=n,
        failures_injected=1,
        failures_recovered=1,
        seconds=round(seconds, 1),
    )


# --- Azurite stopped mid-download ----------------------------------------------------------------
class StopAt:
    """``on_step`` hook: stop Azurite after the second chunk of the first blob that has one,
    once ``blobs`` blobs are complete; optionally start it again ``restart_after`` s later."""

    def __init__(self, server: AzuriteServer, blobs: int, restart_after: float | None):
        self.server, self.blobs = server, blobs
        self.restart_after = restart_after
        self.blobs_done = 0
        self.cut = False
        self.restarter: threading.Thread | None = None

    def __call__(self, kind: str, name: str, index: int) -> None:
        if kind == "blob":
            self.blobs_done += 1
        elif kind == "chunk" and not self.cut and self.blobs_done >= self.blobs and index == 1:
            self.cut = True
            self.server.stop()
            if self.restart_after is not None:
                self.restarter = self.server.restart_later(self.restart_after)


def upload_history(server: AzuriteServer, alerts: pd.DataFrame) -> int:
    """Alerts as date partitions ``history/YYYY/MM/DD/alerts.csv``; returns the blob count."""
    service = BlobServiceClient.from_connection_string(server.connection_string)
    container = service.get_container_client("alerts")
    if not container.exists():
        container.create_container()
    ts = pd.to_datetime(alerts["timestamp"], utc=True)
    blobs = 0
    for day, rows in alerts.groupby(ts.dt.strftime("%Y/%m/%d")):
        data = rows.to_csv(index=False).encode()
        container.upload_blob(f"history/{day}/alerts.csv", data, overwrite=True)
        blobs += 1
    return blobs


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_azurite_stopped_mid_download_trains_nothing_on_partial_history(
    fresh_azurite, tmp_path, monkeypatch, capsys, reliability
) -> None:
    case = reliability(
        "faults.azurite_mid_download",
        "`alertclf retrain --history azure://alerts/history` (date partitions, 64 KiB chunks): "
        "Azurite stopped between two chunks of a blob after the first and kept down -> "
        "retries, one BlobError line, no model registered; stopped the same way but back "
        "0.5 s later -> the download restarts from byte 0 and the model is trained on the "
        "whole history",
    )
    start = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    sim = simulate(SimulationConfig(seed=4, days=2.5, scenario="mixed", start=start))
    paths = write_simulation(sim, tmp_path / "scenario")
    alerts = pd.read_csv(paths["alerts"], dtype=str, keep_default_na=False)
    blobs = upload_history(fresh_azurite, alerts)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", fresh_azurite.connection_string)
    models = tmp_path / "models"
    argv = [
        "retrain",
        "--history",
        "azure://alerts/history",
        "--graph",
        str(paths["graph"]),
        "--models",
        str(models),
        "--algorithm",
        "kmeans",
        "--set",
        "kmeans_k_max=8",
    ]

    def options(stop: StopAt, attempts: int) -> BlobOptions:
        return BlobOptions(
            retry=RetryPolicy(attempts=attempts, base_delay=0.2, max_delay=1.0),
            chunk_size=64 * 1024,
            connection_timeout=2,
            read_timeout=5,
            on_step=stop,
        )

    # 1. Down for good: bounded retries, one line, nothing registered.
    gone = StopAt(fresh_azurite, blobs=1, restart_after=None)
    monkeypatch.setattr(azure.BlobOptions, "from_env", lambda: options(gone, attempts=3))
    started = time.monotonic()
    code = main(argv)
    seconds = time.monotonic() - started
    err = capsys.readouterr().err
    assert gone.cut, "the outage never happened: the blobs are too small"
    assert code == 2, err
    line = one_error_line(err, "retrain")
    assert "downloading failed after 3 attempt(s)" in line, line
    assert ACCOUNT_KEY not in err
    assert seconds < 60
    tracking.configure_tracking(models)
    assert tracking.client().search_registered_models() == []
    tracking._SET_BY_US.clear()
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    # 2. Back within the retries: the whole history, one registered version.
    fresh_azurite.start()
    blink = StopAt(fresh_azurite, blobs=1, restart_after=0.5)
    monkeypatch.setattr(azure.BlobOptions, "from_env", lambda: options(blink, attempts=12))
    code = main(argv)
    captured = capsys.readouterr()
    if blink.restarter is not None:
        blink.restarter.join(30)
    assert blink.cut and code == 0, captured.err[-3000:]
    tracking.configure_tracking(models)
    client = tracking.client()
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert [str(v.version) for v in versions] == ["1"]
    run = client.get_run(versions[0].run_id)
    rows_read = int(run.data.params["input.history_rows_read"])
    assert rows_read == len(alerts), "the model was trained on partial history"
    case.figures(
        examples=2,
        alerts_in=len(alerts),
        alerts_accounted=rows_read,
        failures_injected=2,
        failures_recovered=2,  # the outage outlived: the next retrain read everything
        blobs=blobs,
        seconds=round(seconds, 1),
    )


# --- disk full -----------------------------------------------------------------------------------
# --- late and out-of-order arrivals --------------------------------------------------------------
@pytest.mark.slow
def test_late_and_out_of_order_arrivals_are_taken_or_rejected_never_lost(
    world, tmp_path, reliability
) -> None:
    case = reliability(
        "faults.late_arrivals",
        "the export grows every 2 hours of alert time; 15% of the alerts reach it late (seeded "
        "delays of 0-4 h, written out of order) and a late alert appears again in every later "
        "read; oracle per alert: rejected once with a `late:` reason when it arrived more than "
        "late_arrival_minutes behind that run's watermark_before, else classified once",
    )
    output = world.output(tmp_path / "late")
    alerts = pd.read_csv(world.full, dtype=str, keep_default_na=False)
    ts = pd.to_datetime(alerts["timestamp"], utc=True, format="ISO8601")
    first = set(pd.read_csv(world.first, dtype=str, keep_default_na=False)["alert_id"])
    rng = random.Random(20261201)
    delays = [
        pd.Timedelta(minutes=rng.uniform(0, 240) if rng.random() < 0.15 else 0)
        for _ in range(len(alerts))
    ]
    arrival = ts + pd.Series(delays, index=alerts.index)
    arrival[alerts["alert_id"].isin(first)] = ts.min()  # already in the committed first batch
    export = tmp_path / "export.csv"
    runs = []
    at = ts[~alerts["alert_id"].isin(first)].min()
    while at <= arrival.max() + pd.Timedelta(hours=2):
        at += pd.Timedelta(hours=2)
        arrived = alerts[arrival <= at].sample(frac=1, random_state=len(runs))  # any order
        arrived.to_csv(export, index=False)
        outcome = classify(SETTINGS, export, world.graph, output, world.models)
        tracking._SET_BY_US.clear()
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        runs.append((set(arrived["alert_id"]), outcome.results_dir))
    seen = set(first)
    late_rejected = late_taken = 0
    placed: collections.Counter = collections.Counter()
    for folder in visible(output):
        placed.update(pd.read_csv(folder / "alert_consolidation_final.csv", dtype=str)["alert_id"])
    for ids, folder in runs:
        meta = json.loads((folder / "run_metadata.json").read_text())
        assert meta["rows_read"] == meta["rows_accepted"] + meta["rows_rejected"]
        lower = pd.Timestamp(meta["watermark_before"]) - pd.Timedelta(minutes=30)
        fresh = alerts[alerts["alert_id"].isin(ids - seen)]
        stamps = pd.to_datetime(fresh["timestamp"], utc=True, format="ISO8601")
        want_late = set(fresh["alert_id"][stamps < lower])
        rejected = pd.read_csv(folder / "rejected_alerts.csv", dtype=str, keep_default_na=False)
        assert set(rejected["alert_id"]) == want_late, folder.name
        assert rejected["reject_reason"].str.startswith("late: ").all()
        taken = set(pd.read_csv(folder / "alert_consolidation_final.csv", dtype=str)["alert_id"])
        assert taken == set(fresh["alert_id"]) - want_late, folder.name
        placed.update(rejected["alert_id"])
        late = set(alerts["alert_id"][arrival > ts + pd.Timedelta(minutes=1)])
        late_rejected += len(want_late)
        late_taken += len(late & taken)
        seen |= ids
    assert set(placed) == world.ids and max(placed.values()) == 1
    assert late_rejected > 0 and late_taken > 0  # both sides of the allowance were tried
    case.figures(
        runs=len(runs),
        alerts_in=len(world.ids),
        alerts_accounted=sum(placed.values()),
        late_rejected=late_rejected,
        late_taken=late_taken,
    )


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 4 MiB tmpfs (we are root in CI); skipped with the reason where mounting is not
    allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path, leave: int) -> Path:
    """A ballast file that leaves ``leave`` bytes free."""
    stats = os.statvfs(mount)
    free = stats.f_bavail * stats.f_frsize
    ballast = mount / "ballast"
    with open(ballast, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return ballast


@pytest.mark.slow
def test_disk_full_while_writing_results(world, small_disk, tmp_path, reliability) -> None:
    case = reliability(
        "faults.disk_full",
        "the results folder is a 4 MiB tmpfs with 64 KiB left: `alertclf classify` fails with "
        "one ResultsError line (No space left on device), no visible or temporary folder left, "
        "state byte-identical; with space again the next run processes the batch exactly once",
    )
    output = small_disk / "results"
    output.mkdir()
    shutil.copytree(world.template / ".state", output / ".state")
    before_state = state_bytes(output)
    ballast = fill(small_disk, leave=64 * 1024)

    done = world.run_classify(output)
    assert done.returncode == 2, done.stderr[-3000:]
    line = one_error_line(done.stderr)
    assert "No space left on device" in line and "cannot write the results folder" in line, line
    assert visible(output) == [] and not list(output.glob(".tmp-*"))
    assert state_bytes(output) == before_state

    ballast.unlink()
    recovered = world.run_classify(output)
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    first = accounted(world.template)
    now = accounted(output)
    assert not set(first) & set(now), "the committed first batch was classified again"
    assert collections.Counter({**first, **now}) == collections.Counter(dict.fromkeys(world.ids, 1))
    case.figures(
        examples=1,
        alerts_in=len(world.ids),
        alerts_accounted=sum(first.values()) + sum(now.values()),
        failures_injected=1,
        failures_recovered=1,
    )


def test_disk_full_while_saving_state_keeps_the_old_state(small_disk, reliability) -> None:
    case = reliability(
        "faults.disk_full_state",
        "the state folder on a full tmpfs: writing the ledger of 200,000 processed ids, and "
        "saving the new watermark, each fail with one StateError line, the previous state.json "
        "stays byte-identical and no temporary or partial ledger file is left",
    )
    store = StateStore(small_disk)
    store.save(RunState(watermark="2026-01-05T00:00:00+00:00", last_run_id="20260105_000000"))
    before = (small_disk / STATE).read_bytes()
    fill(small_disk, leave=0)
    big = RunState(
        watermark="2026-01-06T00:00:00+00:00",
        recent_ids={f"id-{i}": "2026-01-06T00:00:00+00:00" for i in range(20_000)},
    )
    ledger = pd.DataFrame(
        {
            "alert_id": [f"id-{i:07d}" for i in range(200_000)],
            "timestamp_ns": pd.Series(range(200_000), dtype="int64") + 1_767_571_200 * 10**9,
        }
    )
    for write in (lambda: store.write_ledger(ledger), lambda: store.save(big)):
        with pytest.raises(StateError) as caught:
            write()
        assert "\n" not in str(caught.value) and "No space left on device" in str(caught.value)
        assert (small_disk / STATE).read_bytes() == before
        assert not list((small_disk / ".state").glob("*.tmp-*"))
        assert not list((small_disk / ".state").glob("ledger-*"))
    case.figures(examples=2, failures_injected=2, failures_recovered=2)
