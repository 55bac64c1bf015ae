"""The Spark engine gives what the local engine gives, on Spark ``local[2]``.

One scenario exercises everything the engine splits and merges: two independent service
graphs (two weakly connected components) plus unmapped services (one component each),
three input files (one with rejected rows and an alert id taken by an earlier file), a
classify in two batches (state carried across the boundary) and a replay.

CI runs these tests (``make test`` installs pyspark and Java). Without pyspark they fail,
unless ``ALERTCLF_SPARK_OPTIONAL=1`` says Spark is optional on this machine; without Java
they fail with the message that says what to install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pandas as pd
import pytest

from alertclf import tracking
from alertclf.consolidate import consolidate
from alertclf.contracts import CANONICAL_COLUMNS, RESULT_FILES
from alertclf.flows import classify, load_inputs, replay, retrain
from alertclf.pipeline import prepare_batch, score_batch
from alertclf.settings import Settings
from alertclf.simulate import SimulationConfig, simulate
from alertclf.topology import generate_topology

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("isolated_tracking")]

FAST = {"algorithm": "kmeans", "kmeans_k_min": 4, "kmeans_k_max": 9}
MASTER = "local[2]"


def _require_pyspark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        if os.environ.get("ALERTCLF_SPARK_OPTIONAL") == "1":
            pytest.skip("pyspark is not installed and ALERTCLF_SPARK_OPTIONAL=1")
        pytest.fail(
            "pyspark is not installed: `make test` installs it (pip install -e '.[spark]'); "
            "set ALERTCLF_SPARK_OPTIONAL=1 to skip the Spark tests on a machine without it"
        )


@pytest.fixture(scope="module")
def spark():
    _require_pyspark()
    from alertclf.spark_engine import spark_session

    # No Java fails here, with the message naming the package to install.
    return spark_session(MASTER)


def settings(**extra) -> Settings:
    return Settings(**{**FAST, **extra})


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> dict[str, Path]:
    """Two storms on two unrelated graphs, as three files of one folder."""
    out = tmp_path_factory.mktemp("spark-scenario")
    first = simulate(SimulationConfig(seed=5, days=1, scenario="storm"))
    other = nx.relabel_nodes(generate_topology(40, seed=6), lambda n: f"zone2-{n}")
    second = simulate(SimulationConfig(seed=6, days=1, scenario="storm", n_services=40), other)
    graph = nx.compose(first.graph, second.graph)
    adjacency = {str(n): sorted(str(s) for s in graph.successors(n)) for n in graph.nodes}
    (out / "graph.json").write_text(json.dumps(adjacency), encoding="utf-8")
    alerts = out / "alerts"
    alerts.mkdir()
    first.alerts.to_csv(alerts / "a_first.csv", index=False)
    second.alerts.to_csv(alerts / "b_second.csv", index=False)
    # Rejects of every kind the reader knows, and an id the first file already took.
    taken = first.alerts.iloc[3]
    bad = (
        "alert_id,timestamp,service,alert_name,severity\n"
        f"{taken['alert_id']},{taken['timestamp']},{taken['service']},{taken['alert_name']},high\n"
        "x-1,,checkout-service,HighLatency,high\n"
        "x-2,2026-01-05T10:00:00Z,,HighLatency,high\n"
        "x-3,not a time,checkout-service,HighLatency,high\n"
        "x-4,2026-01-05T10:00:00Z,checkout-service,HighLatency,high,extra\n"
        "x-5,2026-01-05T10:00:01Z,mystery-box,DiskFull,critical\n"
    )
    (alerts / "c_extra.csv").write_text(bad, encoding="utf-8")
    return {"alerts": alerts, "graph": out / "graph.json", "root": out}


@pytest.fixture(scope="module")
def models(scenario, tmp_path_factory) -> Path:
    """A registered production model in a temporary SQLite store."""
    folder = tmp_path_factory.mktemp("spark-models")
    tracking._SET_BY_US.clear()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    retrain(settings(), scenario["alerts"], scenario["graph"], folder)
    tracking._SET_BY_US.clear()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return folder


def _by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("alert_id").sort_index()


def test_spark_batch_equals_local_batch(spark, scenario, models):
    from alertclf.spark_engine import classify_spark

    s = settings()
    tracking.configure_tracking(models)
    model = tracking.load_model(s.model_name, alias=tracking.PRODUCTION)
    batch, context = load_inputs(scenario["alerts"], scenario["graph"], s)
    prepared = prepare_batch(batch.alerts, context, s)
    local = score_batch(prepared, model.predict, model.profiles, context, s)
    # Symptom series of this batch moved in hindsight (the executors must move them too).
    placed = consolidate(prepared.alerts, context.graph, s, None, context.index).group_ids
    assert (placed != prepared.alerts["group_id"]).sum() > 0

    result = classify_spark(s, scenario["alerts"], scenario["graph"], model, None, MASTER)
    got = result.to_pandas()

    # The scenario really is split: two graph components and the unmapped services.
    assert result.components >= 3
    # Validation: the same rejected rows, reasons and counts.
    assert result.input.rows_read == batch.rows_read
    assert result.input.rows_accepted == len(batch.alerts)
    pd.testing.assert_frame_equal(result.input.rejected, batch.rejected)
    assert batch.rejected["reject_reason"].str.contains("duplicate alert_id").any()
    # Groups, clusters, duplicates per alert, and every other column, identical.
    expected = _by_id(local.alerts)
    actual = _by_id(got)
    for column in ("group_id", "cluster_id", "is_duplicate", "duplicate_of"):
        pd.testing.assert_series_equal(actual[column], expected[column])
    pd.testing.assert_frame_equal(got, local.alerts.reset_index(drop=True))
    # The driver-side tables and the carried state.
    pd.testing.assert_frame_equal(result.incidents, local.incidents)
    pd.testing.assert_frame_equal(result.clusters, local.clusters)
    pd.testing.assert_frame_equal(result.cluster_summary, local.cluster_summary)
    pd.testing.assert_frame_equal(result.mapping, local.mapping)
    assert result.statistics == local.statistics
    assert result.state.to_json() == local.state.to_json()


def test_spark_groups_with_a_cause_lateness_as_the_local_engine(spark, scenario, models):
    # Where causes alert late, the executors' consolidation waits as long as the local
    # one for a cause (the lateness reaches them with the settings).
    from alertclf.spark_engine import classify_spark

    late = settings(cause_lateness_minutes=8)
    tracking.configure_tracking(models)
    model = tracking.load_model(late.model_name, alias=tracking.PRODUCTION)
    batch, context = load_inputs(scenario["alerts"], scenario["graph"], late)
    prepared = prepare_batch(batch.alerts, context, late)
    local = score_batch(prepared, model.predict, model.profiles, context, late)
    usual = prepare_batch(batch.alerts, context, settings())
    moved = (
        usual.alerts.set_index("alert_id")["group_id"]
        != prepared.alerts.set_index("alert_id")["group_id"]
    )
    assert moved.sum() > 0  # the lateness changes this scenario's grouping

    got = classify_spark(late, scenario["alerts"], scenario["graph"], model, None, MASTER)
    pd.testing.assert_frame_equal(got.to_pandas(), local.alerts.reset_index(drop=True))
    pd.testing.assert_frame_equal(got.incidents, local.incidents)


def test_large_batches_sample_only_the_cluster_quality_metrics(
    spark, scenario, models, monkeypatch
):
    """Past MAX_DRIVER_FEATURE_ROWS the feature rows stay on the executors: counts and
    shares are still exact, silhouette and friends come from a sample."""
    from alertclf import spark_engine

    s = settings()
    tracking.configure_tracking(models)
    model = tracking.load_model(s.model_name, alias=tracking.PRODUCTION)
    batch, context = load_inputs(scenario["alerts"], scenario["graph"], s)
    local = score_batch(prepare_batch(batch.alerts, context, s), model.predict, model.profiles,
                        context, s)  # fmt: skip
    monkeypatch.setattr(spark_engine, "MAX_DRIVER_FEATURE_ROWS", 500)
    result = spark_engine.classify_spark(s, scenario["alerts"], scenario["graph"], model)
    exact = {k: v for k, v in local.statistics.items() if not k.startswith("batch_")}
    assert {k: result.statistics[k] for k in exact} == exact
    assert 0 < result.statistics["statistics_sample_rows"] < len(batch.alerts)
    assert -1 <= result.statistics["batch_silhouette"] <= 1


def _classify_twice(engine: str, scenario, models: Path, out: Path, growing: Path) -> list[Path]:
    """Two classify runs over a growing export: the state crosses the boundary, and one
    alert from an hour before it arrives only in the second run (late). (Both engines
    read the same folder: the input path is in every result row.)"""
    files = [f for f in sorted(scenario["alerts"].glob("*.csv")) if f.name != "c_extra.csv"]
    frames = {f.name: pd.read_csv(f, dtype=str, keep_default_na=False) for f in files}
    cut = pd.Timestamp("2026-01-05T13:00:00Z")
    first = next(iter(frames.values()))
    stamps = pd.to_datetime(first["timestamp"], utc=True)
    late = first["alert_id"][(stamps < cut - pd.Timedelta(hours=1))].iloc[-1]
    shutil.rmtree(growing, ignore_errors=True)
    growing.mkdir(parents=True)
    extra = scenario["alerts"] / "c_extra.csv"
    (growing / extra.name).write_bytes(extra.read_bytes())
    folders = []
    for upper in (cut, None):
        for name, frame in frames.items():
            if upper is not None:
                frame = frame[pd.to_datetime(frame["timestamp"], utc=True) < upper]
                frame = frame[frame["alert_id"] != late]
            frame.to_csv(growing / name, index=False)
        s = settings(engine=engine, spark_master=MASTER)
        outcome = classify(s, growing, scenario["graph"], out / "results", models)
        folders.append(outcome.results_dir)
    return folders


def test_classify_flow_with_carried_state_writes_identical_results(
    spark, scenario, models, tmp_path
):
    growing = tmp_path / "input"
    local = _classify_twice("local", scenario, models, tmp_path / "local", growing)
    distributed = _classify_twice("spark", scenario, models, tmp_path / "spark", growing)
    for mine, theirs in zip(distributed, local, strict=True):
        names = {p.name for p in mine.iterdir()}
        assert set(RESULT_FILES) <= names
        assert "alert_consolidation_final.parquet" in names
        for name in RESULT_FILES:
            if name.endswith(".csv"):
                assert (mine / name).read_bytes() == (theirs / name).read_bytes(), name
        meta = json.loads((mine / "run_metadata.json").read_text())
        expected = json.loads((theirs / "run_metadata.json").read_text())
        assert meta["engine"] == "spark"
        for key in (
            "rows_read",
            "rows_accepted",
            "rows_rejected",
            "rows_new",
            "rows_already_processed",
            "rows_outside_window",
            "rows_rejected_late",
            "watermark_after",
        ):
            assert meta[key] == expected[key], key
        stats = json.loads((mine / "clustering_statistics.json").read_text())
        assert stats == json.loads((theirs / "clustering_statistics.json").read_text())
        parquet = pd.read_parquet(mine / "alert_consolidation_final.parquet")
        assert len(parquet) == meta["rows_new"]
    # Two batches really happened, and the state saved after them is the same.
    second = json.loads((distributed[1] / "run_metadata.json").read_text())
    assert 0 < second["rows_new"] < second["rows_accepted"]
    state = json.loads((tmp_path / "spark/results/.state/state.json").read_text())
    expected_state = json.loads((tmp_path / "local/results/.state/state.json").read_text())
    assert state["pipeline"] == expected_state["pipeline"]
    assert second["rows_rejected_late"] == 1
    rejected = pd.read_csv(distributed[1] / "rejected_alerts.csv")
    assert rejected["reject_reason"].str.startswith("late: ").sum() == 1
    # Every alert taken, and the late one, is in the ledger.
    ledgers = [
        pd.read_parquet(tmp_path / f"{engine}/results/.state" / saved["ledger"])
        .sort_values("alert_id")
        .reset_index(drop=True)
        for engine, saved in (("spark", state), ("local", expected_state))
    ]
    pd.testing.assert_frame_equal(*ledgers)
    assert len(ledgers[0]) == second["rows_new"] + second["rows_already_processed"] + 1


def test_replay_spark_equals_replay_local(spark, scenario, models, tmp_path):
    local = replay(settings(), scenario["alerts"], scenario["graph"], 15, tmp_path / "l", models)
    mine = replay(
        settings(engine="spark", spark_master=MASTER),
        scenario["alerts"],
        scenario["graph"],
        15,
        tmp_path / "s",
        models,
    )
    assert mine.batches == local.batches > 10
    assert mine.alerts == local.alerts
    for name in RESULT_FILES:
        if name.endswith(".csv"):
            ours = (mine.results_dir / name).read_bytes()
            assert ours == (local.results_dir / name).read_bytes(), name
    stats = json.loads((mine.results_dir / "clustering_statistics.json").read_text())
    expected = json.loads((local.results_dir / "clustering_statistics.json").read_text())
    assert stats == expected
    # Later batches moved alerts earlier ones had placed, and both engines applied them.
    meta, local_meta = (
        json.loads((outcome.results_dir / "run_metadata.json").read_text())
        for outcome in (mine, local)
    )
    assert meta["alerts_regrouped"] == local_meta["alerts_regrouped"] > 0


def test_cli_classify_engine_spark_end_to_end(spark, scenario, models, tmp_path):
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    command = [
        sys.executable, "-m", "alertclf.cli", "classify",
        "--alerts", str(scenario["alerts"]), "--graph", str(scenario["graph"]),
        "--output", str(out), "--models", str(models),
        "--engine", "spark", "--spark-master", MASTER, "--set", "algorithm=kmeans",
        "--log-level", "WARNING",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Classified" in done.stdout
    (folder,) = [p for p in out.iterdir() if p.is_dir() and p.name[:1].isdigit()]
    assert set(RESULT_FILES) <= {p.name for p in folder.iterdir()}
    meta = json.loads((folder / "run_metadata.json").read_text())
    assert meta["engine"] == "spark" and meta["spark_master"] == MASTER
    assert meta["rows_accepted"] + meta["rows_rejected"] == meta["rows_read"]
    final = pd.read_csv(folder / "alert_consolidation_final.csv")
    assert len(final) == meta["rows_new"] == meta["rows_accepted"]


def test_cli_refuses_an_unknown_engine(capsys):
    from alertclf.cli import main

    with pytest.raises(SystemExit):
        main(["classify", "--alerts", "a.csv", "--graph", "g.json", "--engine", "dask"])
    assert "invalid choice 'dask'" in capsys.readouterr().err


def test_blob_input_is_read_on_the_driver_with_the_same_rejects(
    spark, scenario, azurite, monkeypatch
):
    """Spark here has no hadoop-azure jars: blobs come through the Python client."""
    from azure.storage.blob import BlobServiceClient

    from alertclf import spark_engine
    from alertclf.io.alerts import read_alerts
    from alertclf.spark_engine import read_alerts_spark

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite)
    container = BlobServiceClient.from_connection_string(azurite).get_container_client("spark")
    if not container.exists():
        container.create_container()
    for path in sorted(scenario["alerts"].glob("*.csv")):
        container.upload_blob(f"in/{path.name}", path.read_bytes(), overwrite=True)
    s = settings()
    local = read_alerts("azure://spark/in", s)
    data = read_alerts_spark(spark, "azure://spark/in", s)
    assert (data.rows_read, data.rows_accepted) == (local.rows_read, len(local.alerts))
    pd.testing.assert_frame_equal(data.rejected, local.rejected)
    got = spark_engine._to_alerts(data.alerts.toPandas())[list(CANONICAL_COLUMNS)]
    pd.testing.assert_frame_equal(got, local.alerts.reset_index(drop=True))
