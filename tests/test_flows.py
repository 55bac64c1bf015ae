"""classify / retrain / promote against a real MLflow SQLite store and registry.

No MLflow object is mocked: every test gets its own store in a temporary folder.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import sklearn

from alertclf import tracking
from alertclf.consolidate import to_epoch_ns
from alertclf.contracts import DERIVED_RESULT_FILES, FINAL_COLUMNS, INCIDENT_COLUMNS, RESULT_FILES
from alertclf.flows import FAULT_ENV, FlowError, classify, promote, retrain
from alertclf.settings import Settings
from alertclf.simulate import SimulationConfig, simulate, write_simulation

# Each test decides its own MLflow store; nothing leaks through the environment.
pytestmark = pytest.mark.usefixtures("isolated_tracking")

# Small, quick models: k-means over a short range.
FAST = {"algorithm": "kmeans", "kmeans_k_min": 4, "kmeans_k_max": 9}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("scenario")
    sim = simulate(SimulationConfig(seed=11, days=1.5, scenario="mixed"))
    return write_simulation(sim, out)


def settings(**extra) -> Settings:
    return Settings(**{**FAST, **extra})


def aliases(models: Path, name: str = "alert-clustering") -> dict[str, str]:
    tracking.configure_tracking(models)
    return {k: str(v) for k, v in tracking.client().get_registered_model(name).aliases.items()}


def test_first_retrain_registers_version_1_in_production(scenario, tmp_path, monkeypatch, caplog):
    models = tmp_path / "models"
    outcome = retrain(settings(), scenario["alerts"], scenario["graph"], models)
    assert outcome.version == "1" and outcome.promoted
    assert aliases(models) == {"staging": "1", "production": "1"}
    tags = tracking.version_tags("alert-clustering", "1")
    assert tags["decision.outcome"] == "promoted"
    assert "first model" in tags["decision.reason"]
    assert (models / "mlflow.db").exists()
    run = mlflow.get_run(outcome.mlflow_run_id)
    assert run.data.params["setting.time_window_minutes"] == "15"
    for metric in (
        "silhouette",
        "davies_bouldin",
        "calinski_harabasz",
        "n_clusters",
        "noise_share",
        "outlier_share",
        "n_samples",
        "feature_count",
        "pca_components",
        "training_seconds",
    ):
        assert metric in run.data.metrics, metric
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"v1_profiles.json", "v1_metadata.json", "candidates.csv"} <= artifacts
    # Artifacts live under the models folder, not the current directory.
    assert str(models) in run.info.artifact_uri
    # The registered pyfunc names each alert's cluster as the profiles do.
    loaded = tracking.load_model("alert-clustering", alias=tracking.PRODUCTION)
    columns = loaded.pyfunc.metadata.get_input_schema().input_names()
    rng = np.random.default_rng(0)
    features = pd.DataFrame(rng.normal(size=(300, len(columns))), columns=columns)
    predicted = loaded.predict(features)
    assert predicted["cluster_id"].nunique() > 1
    expected = [
        loaded.profiles.get(int(c), {}).get("name", f"Cluster {c}") for c in predicted["cluster_id"]
    ]
    assert predicted["cluster_name"].tolist() == expected
    # It records the library versions it was trained with, checked on every load.
    recorded = loaded.metadata["library_versions"]
    assert recorded["scikit-learn"] == sklearn.__version__
    assert tracking.version_mismatches(recorded) == []
    old = {**recorded, "scikit-learn": "0.0.1"}
    assert tracking.version_mismatches(old) == [
        f"scikit-learn 0.0.1 (installed {sklearn.__version__})"
    ]
    elsewhere = {**recorded, "scikit-learn": "9.9.9"}  # as if loaded in another environment
    monkeypatch.setattr(tracking, "library_versions", lambda: elsewhere)
    with caplog.at_level(logging.WARNING, logger="alertclf.tracking"):
        tracking.load_model("alert-clustering", alias=tracking.PRODUCTION)
    assert f"trained with scikit-learn {sklearn.__version__} (installed 9.9.9)" in caplog.text


def test_an_estate_whose_causes_alert_late_teaches_retrain_and_classify_to_wait(tmp_path):
    # `alertclf simulate --root-delay 3 10`: every fault's own alert comes 3-10 minutes
    # after the fault (a resource rule with `for: 5m`), its callers' 0.5-3 minutes after.
    from alertclf.cli import main

    out = tmp_path / "late"
    argv = ["simulate", "--out", str(out), "--scenario", "calm", "--days", "2", "--seed", "3"]
    assert main([*argv, "--root-delay", "3", "10"]) == 0
    models = tmp_path / "models"
    trained = retrain(settings(), out / "alert_data.csv", out / "graph_data.json", models)
    learned = tracking.load_model("alert-clustering", version="1").metadata
    assert 7.0 <= learned["cause_lateness_minutes"] <= 10.0
    params = mlflow.get_run(trained.mlflow_run_id).data.params
    assert params["model.cause_lateness_minutes"] == f"{learned['cause_lateness_minutes']:g} min"
    # The simulator's symptoms end with their cause: few stop early, so classify splits
    # those off (alertclf.regroup).
    assert 0.0 <= learned["early_end_share"] < 0.05
    assert params["model.early_end_share"] == str(learned["early_end_share"])
    # and which alert families its symptoms show under each family of root
    families = learned["symptom_families"]
    under_cpu = families["cpu"]  # the simulator's CPU faults slow or fail their callers
    assert under_cpu.get("latency", 0) + under_cpu.get("errors", 0) >= 0.9 * sum(under_cpu.values())
    assert json.loads(params["model.symptom_families"]) == families
    # classify groups with what the production model learned
    outcome = classify(
        settings(), out / "alert_data.csv", out / "graph_data.json", tmp_path / "r", models
    )
    metrics = mlflow.get_run(outcome.mlflow_run_id).data.metrics
    assert metrics["cause_lateness_minutes"] == learned["cause_lateness_minutes"]


def test_retrain_that_is_not_better_stays_at_staging_with_decision_tags(scenario, tmp_path):
    models = tmp_path / "models"
    retrain(settings(), scenario["alerts"], scenario["graph"], models)
    second = retrain(settings(), scenario["alerts"], scenario["graph"], models)
    assert second.version == "2" and not second.promoted
    assert aliases(models) == {"staging": "2", "production": "1"}
    tags = tracking.version_tags("alert-clustering", "2")
    assert tags["decision.outcome"] == "staged"
    assert tags["decision.production_version"] == "1"
    assert tags["decision.threshold"] == "0.05"
    for key in (
        "decision.candidate_score",
        "decision.production_score",
        "decision.data_window",
        "decision.reason",
    ):
        assert tags[key] not in ("", "none"), key
    # Same data, same settings: the same score, so no promotion.
    assert float(tags["decision.candidate_score"]) == pytest.approx(
        float(tags["decision.production_score"]), abs=1e-6
    )


def test_clearly_better_candidate_is_promoted(scenario, tmp_path):
    models = tmp_path / "models"
    weak = retrain(
        settings(kmeans_k_min=2, kmeans_k_max=2), scenario["alerts"], scenario["graph"], models
    )
    assert weak.promoted
    strong = retrain(settings(), scenario["alerts"], scenario["graph"], models)
    assert strong.promoted, strong.reason
    assert strong.candidate_score > strong.production_score * 1.05
    assert aliases(models)["production"] == "2"
    assert (
        "better on the same data"
        in tracking.version_tags("alert-clustering", "2")["decision.reason"]
    )


def test_reviewer_promotes_and_rejects(scenario, tmp_path):
    models = tmp_path / "models"
    retrain(settings(), scenario["alerts"], scenario["graph"], models)
    retrain(settings(), scenario["alerts"], scenario["graph"], models)  # v2 at staging
    with pytest.raises(FlowError, match="is in production"):
        promote(settings(), "1", reject=True, models=models)
    promote(settings(), "2", models=models, reason="looks right")
    assert aliases(models) == {"production": "2"}
    assert tracking.version_tags("alert-clustering", "2")["decision.reason"] == "looks right"
    rejected = promote(settings(), "1", reject=True, models=models)
    assert rejected["decision.outcome"] == "rejected"
    with pytest.raises(FlowError, match="no version 9"):
        promote(settings(), "9", models=models)


def test_classify_uses_production_and_records_it(scenario, tmp_path):
    models, out = tmp_path / "models", tmp_path / "results"
    retrain(settings(), scenario["alerts"], scenario["graph"], models)
    retrain(settings(), scenario["alerts"], scenario["graph"], models)  # staging only
    outcome = classify(settings(), scenario["alerts"], scenario["graph"], out, models)
    assert outcome.model_version == "1" and not outcome.bootstrapped
    folder = outcome.results_dir
    # The contract files, plus the human-readable report and its charts.
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*RESULT_FILES, "charts", "report.html"]
    )
    meta = json.loads((folder / "run_metadata.json").read_text())
    assert meta["model_version"] == "1" and meta["model_alias"] == "production"
    assert meta["rows_accepted"] + meta["rows_rejected"] == meta["rows_read"]
    final = pd.read_csv(folder / "alert_consolidation_final.csv")
    assert list(final.columns[: len(FINAL_COLUMNS)]) == list(FINAL_COLUMNS)
    assert len(final) == meta["rows_new"] == meta["rows_accepted"]
    incidents = pd.read_csv(folder / "incident_groups.csv")
    assert set(INCIDENT_COLUMNS) <= set(incidents.columns)
    run = mlflow.get_run(outcome.mlflow_run_id)
    assert run.data.tags["model.version"] == "1"
    assert run.data.metrics["rows_new"] == len(final)
    # Grouped with the propagation lag the model learned from its history (the
    # simulator's faults take 0.5-3 minutes a hop).
    learned = tracking.load_model("alert-clustering", version="1").metadata
    assert 1.0 <= learned["propagation_lag_minutes"] <= 3.5
    assert learned["settings"]["propagation_lag_minutes"] == learned["propagation_lag_minutes"]
    assert run.data.metrics["propagation_lag_minutes"] == learned["propagation_lag_minutes"]
    # Its faults alert before their callers: no cause lateness learned (metric 0: none).
    assert "cause_lateness_minutes" in learned and learned["cause_lateness_minutes"] is None
    assert run.data.metrics["cause_lateness_minutes"] == 0.0
    client = mlflow.MlflowClient()
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "results")}
    assert {"results/incident_groups.csv", "results/alert_consolidation_final.csv"} <= logged
    # the two views of the final table stay in the results folder only
    assert not {f"results/{name}" for name in DERIVED_RESULT_FILES} & logged


def test_classify_bootstraps_a_first_model_when_the_registry_is_empty(scenario, tmp_path):
    models = tmp_path / "models"
    outcome = classify(settings(), scenario["alerts"], scenario["graph"], tmp_path / "r", models)
    assert outcome.bootstrapped and outcome.model_version == "1"
    assert aliases(models)["production"] == "1"
    assert "bootstrap" in tracking.version_tags("alert-clustering", "1")["decision.reason"]
    with pytest.raises(FlowError, match="no 'alert-clustering@production'"):
        classify(
            settings(),
            scenario["alerts"],
            scenario["graph"],
            tmp_path / "r2",
            tmp_path / "empty-models",
            bootstrap=False,
        )


def test_three_batches_process_every_alert_once_and_carry_open_groups(scenario, tmp_path):
    models, out = tmp_path / "models", tmp_path / "results"
    retrain(settings(), scenario["alerts"], scenario["graph"], models)
    alerts = pd.read_csv(scenario["alerts"])
    ts = pd.to_datetime(alerts["timestamp"], utc=True)
    cuts = [ts.quantile(0.4), ts.quantile(0.7)]
    # A growing file, as a monitoring export is: each run sees everything so far.
    growing = tmp_path / "alerts.csv"
    seen: list[pd.DataFrame] = []
    revised: list[pd.DataFrame] = []
    for upper in [*cuts, None]:
        part = alerts if upper is None else alerts[ts < upper]
        part.to_csv(growing, index=False)
        outcome = classify(settings(), growing, scenario["graph"], out, models)
        seen.append(pd.read_csv(outcome.results_dir / "alert_consolidation_final.csv"))
        revised.append(pd.read_csv(outcome.results_dir / "group_revisions.csv", dtype=str))
        metrics = mlflow.get_run(outcome.mlflow_run_id).data.metrics
        assert metrics["alerts_regrouped"] == len(revised[-1])
    ids = pd.concat([s["alert_id"] for s in seen])
    assert ids.is_unique
    assert set(ids) == set(alerts["alert_id"])
    first, second = set(seen[0]["group_id"]), set(seen[1]["group_id"])
    assert first & second, "an incident open at the boundary keeps its group_id"
    # Symptom series that ended after a cut moved in hindsight: each revision names an
    # alert an earlier run published, in the group it was published with.
    assert revised[0].empty and len(revised[1]) + len(revised[2]) > 0
    for run, revisions in enumerate(revised[1:], start=1):
        earlier = pd.concat(seen[:run]).astype({"alert_id": str}).set_index("alert_id")
        assert set(revisions["alert_id"]) <= set(earlier.index)
        published = earlier.loc[revisions["alert_id"], "group_id"].to_numpy()
        assert (revisions["group_id"].to_numpy() == published).all()
        assert (revisions["revised_group_id"] != revisions["group_id"]).all()


def test_crash_after_results_before_state_leads_to_a_clean_rerun(scenario, tmp_path):
    models, out = tmp_path / "models", tmp_path / "results"
    retrain(settings(), scenario["alerts"], scenario["graph"], models)
    command = [
        sys.executable,
        "-m",
        "alertclf.cli",
        "classify",
        "--alerts",
        str(scenario["alerts"]),
        "--graph",
        str(scenario["graph"]),
        "--output",
        str(out),
        "--models",
        str(models),
        "--set",
        "algorithm=kmeans",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    crashed = subprocess.run(
        command,
        env={**env, FAULT_ENV: "after_results"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert crashed.returncode == 86, crashed.stderr[-2000:]
    written = [p for p in out.iterdir() if p.name[:1].isdigit()]
    assert len(written) == 1, "the results were complete before the crash"
    assert not (out / ".state" / "state.json").exists(), "the watermark was not saved"
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    visible = [p for p in out.iterdir() if p.name[:1].isdigit()]
    assert len(visible) == 1 and visible[0] != written[0]
    assert (out / ".superseded" / written[0].name).exists()
    final = pd.read_csv(visible[0] / "alert_consolidation_final.csv")
    assert final["alert_id"].is_unique
    assert len(final) == len(pd.read_csv(scenario["alerts"]))
    state = json.loads((out / ".state" / "state.json").read_text())
    assert state["last_run_id"] == visible[0].name
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert "Classified 0 new alerts" in again.stdout


def _mlflow_run(entry: str, params: dict[str, str], store: Path, experiment: str):
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
    command = [
        str(venv_bin / "mlflow"),
        "run",
        str(Path(__file__).parents[1]),
        "-e",
        entry,
        "--env-manager",
        "local",
        "--experiment-name",
        experiment,
    ]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_mlflow_run_entry_points_work_and_reject_bad_parameters(scenario, tmp_path):
    store = tmp_path / "models"
    store.mkdir()
    common = {"graph": str(scenario["graph"]), "models": str(store)}
    done = _mlflow_run(
        "retrain",
        {"history": str(scenario["alerts"]), **common, "algorithm": "kmeans"},
        store,
        "alertclf-retrain",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PROMOTED to production" in done.stdout
    out = tmp_path / "results"
    done = _mlflow_run(
        "classify",
        {"alerts": str(scenario["alerts"]), **common, "output": str(out)},
        store,
        "alertclf-classify",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Top" in done.stdout and "incidents" in done.stdout
    assert len([p for p in out.iterdir() if p.name[:1].isdigit()]) == 1
    bad = _mlflow_run(
        "retrain",
        {"history": str(scenario["alerts"]), **common, "algorithm": "fastest"},
        store,
        "alertclf-retrain",
    )
    assert bad.returncode != 0
    assert "--algorithm: invalid choice 'fastest'" in bad.stderr
    unknown = _mlflow_run(
        "classify",
        {"alerts": str(scenario["alerts"]), **common, "speed": "9"},
        store,
        "alertclf-classify",
    )
    assert unknown.returncode != 0
    assert "unrecognized arguments: --speed 9" in unknown.stderr


@pytest.mark.parametrize("shuffled", [False, True])
def test_alerts_by_cluster_rows_follow_rank_then_time_then_id(shuffled) -> None:
    from alertclf.flows import _by_cluster_rows

    rng = np.random.default_rng(4)
    n = 3_000
    stamps = pd.Timestamp("2026-01-05", tz="UTC") + pd.to_timedelta(
        np.sort(rng.integers(0, 600, n)), unit="s"
    )  # many alerts share a second
    alerts = pd.DataFrame(
        {
            "cluster_rank": rng.integers(1, 6, n),
            "timestamp": stamps,
            "alert_id": [f"a{i:05d}" for i in rng.permutation(n)],
        }
    )
    if not shuffled:  # time then id order, as most exports come
        alerts = alerts.sort_values(["timestamp", "alert_id"]).reset_index(drop=True)
    else:
        alerts = alerts.sample(frac=1, random_state=1).set_axis(range(100, 100 + n))
    keys = alerts.reset_index(drop=True)
    expected = keys.sort_values(["cluster_rank", "timestamp", "alert_id"], kind="stable").index
    np.testing.assert_array_equal(_by_cluster_rows(alerts), expected.to_numpy())


def _alerts(rows: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "alert_id": pd.Series(list(rows), dtype="str"),
            "timestamp": pd.to_datetime(list(rows.values()), utc=True).astype(
                "datetime64[us, UTC]"
            ),
        }
    )


def _ledger(rows: dict[str, str]) -> pd.DataFrame:
    frame = _alerts(rows)
    return pd.DataFrame(
        {"alert_id": frame["alert_id"], "timestamp_ns": to_epoch_ns(frame["timestamp"])}
    )


def test_select_new_takes_unseen_rejects_late_and_counts_the_rest() -> None:
    from alertclf.flows import select_new
    from alertclf.io.state import RunState

    state = RunState(watermark="2026-01-05T12:00:00+00:00")  # allowance: 30 minutes
    ledger = _ledger({"seen-old": "2026-01-05T11:00:00Z", "seen-new": "2026-01-05T11:50:00Z"})
    alerts = _alerts(
        {
            "seen-old": "2026-01-05T11:00:00Z",  # read again: processed before
            "seen-new": "2026-01-05T11:50:00Z",  # read again, inside the allowance
            "late": "2026-01-05T11:00:00Z",  # never seen, an hour behind: rejected
            "fresh": "2026-01-05T11:50:00Z",  # never seen, inside the allowance: taken
            "ahead": "2026-01-05T12:10:00Z",
            "ancient": "2025-12-01T00:00:00Z",  # older than the ledger (7 days)
        }
    )
    picked = select_new(alerts, state, Settings(), ledger=ledger)
    assert picked.new["alert_id"].tolist() == ["fresh", "ahead"]
    assert alerts["alert_id"].iloc[picked.late].tolist() == ["late"]
    (reason,) = picked.late_reasons
    assert reason.startswith("late: 60.0 min older than the watermark 2026-01-05T12:00:00+00:00")
    assert "late_arrival_minutes=30" in reason
    assert (picked.already_processed, picked.outside_window) == (2, 1)
    # A longer allowance takes it; a longer ledger remembers the ancient one as late.
    assert (
        "late"
        in select_new(alerts, state, Settings(late_arrival_minutes=90), ledger=ledger)
        .new["alert_id"]
        .tolist()
    )
    longer = select_new(alerts, state, Settings(ledger_days=60), ledger=ledger)
    assert alerts["alert_id"].iloc[longer.late].tolist() == ["late", "ancient"]
    # --since/--until override the watermark and the ledger; late is inside --until only.
    window = select_new(alerts, state, Settings(), since="2026-01-05T11:30:00Z", ledger=ledger)
    assert window.new["alert_id"].tolist() == ["seen-new", "fresh", "ahead"]
    assert len(window.late) == 0 and window.outside_window == 3
    until = select_new(alerts, state, Settings(), until="2026-01-05T10:00:00Z", ledger=ledger)
    assert len(until.new) == 0 and len(until.late) == 0
    # The first run over an input takes everything.
    assert len(select_new(alerts, RunState(), Settings()).new) == len(alerts)


def test_next_ledger_adds_this_runs_alerts_and_forgets_what_fell_behind() -> None:
    from alertclf.flows import next_ledger

    old = _ledger(
        {
            "gone": "2025-12-20T00:00:00Z",
            "kept": "2026-01-04T00:00:00Z",
            "again": "2026-01-05T10:00:00Z",
        }
    )
    taken = _alerts({"again": "2026-01-05T10:00:00Z", "fresh": "2026-01-05T11:55:00Z"})
    late = _alerts({"late": "2026-01-05T09:00:00Z"})
    ledger = next_ledger(old, [taken, late], "2026-01-05T12:00:00+00:00", Settings())
    assert sorted(ledger["alert_id"]) == ["again", "fresh", "kept", "late"]
    assert ledger["alert_id"].is_unique
    assert next_ledger(old.iloc[:0], [], None, Settings()).empty


def test_an_alert_from_a_clock_years_ahead_does_not_make_the_next_ones_late(caplog) -> None:
    from alertclf.flows import _new_watermark, select_new
    from alertclf.io.state import RunState

    now = pd.Timestamp("2026-01-05T12:00:00Z")
    batch = _alerts({"a": "2026-01-05T11:58:00Z", "skewed": "2099-01-01T00:00:00Z"})
    with caplog.at_level(logging.WARNING, logger="alertclf.flows"):
        watermark = _new_watermark(RunState(), batch, Settings(), now=now)
    assert watermark == "2026-01-05T12:30:00+00:00"  # the clock plus the allowance
    assert "1 alerts are timestamped more than 30 minutes ahead" in caplog.text
    # The next batch, a quarter of an hour on, is taken, not rejected as late.
    ledger = _ledger({"a": "2026-01-05T11:58:00Z", "skewed": "2099-01-01T00:00:00Z"})
    following = _alerts({"b": "2026-01-05T12:10:00Z", "skewed": "2099-01-01T00:00:00Z"})
    picked = select_new(following, RunState(watermark=watermark), Settings(), ledger=ledger)
    assert picked.new["alert_id"].tolist() == ["b"] and len(picked.late) == 0
    # A watermark a skewed alert left before the hold is brought back to the clock.
    poisoned = RunState(watermark="2099-01-01T00:00:00+00:00")
    assert _new_watermark(poisoned, following, Settings(), now=now) == watermark
    assert _new_watermark(RunState(), batch.iloc[:1], Settings(), now=now) == (
        "2026-01-05T11:58:00+00:00"
    )


def test_a_state_saved_before_the_ledger_still_skips_its_recent_ids(tmp_path) -> None:
    from alertclf.flows import select_new
    from alertclf.io.state import RunState, StateStore

    (tmp_path / ".state").mkdir()
    (tmp_path / ".state" / "state.json").write_text(
        json.dumps(
            {
                "watermark": "2026-01-05T12:00:00+00:00",
                "recent_ids": {"kept": "2026-01-05T11:50:00+00:00"},
                "pipeline": "",
                "last_run_id": "20260105_120000",
                "model_version": "1",
                "graph_fingerprint": None,
                "runs": 3,
            }
        )
    )
    store = StateStore(tmp_path)
    state = store.load()
    assert state.ledger is None
    alerts = _alerts({"kept": "2026-01-05T11:50:00Z", "fresh": "2026-01-05T11:51:00Z"})
    picked = select_new(alerts, state, Settings(), ledger=store.read_ledger(state))
    assert picked.new["alert_id"].tolist() == ["fresh"] and picked.already_processed == 1
    assert RunState(ledger="x").recent_ids == {}


def test_a_ledger_written_by_a_run_that_died_before_its_state_is_ignored(tmp_path) -> None:
    from alertclf.io.state import RunState, StateError, StateStore

    store = StateStore(tmp_path)
    committed = _ledger({"a": "2026-01-05T11:00:00Z"})
    store.save(
        RunState(watermark="2026-01-05T12:00:00+00:00", ledger=store.write_ledger(committed))
    )
    orphan = store.write_ledger(_ledger({"b": "2026-01-05T11:30:00Z"}))  # then the run died
    state = store.load()
    assert state.ledger != orphan
    pd.testing.assert_frame_equal(store.read_ledger(state), committed)
    store.save(RunState(watermark=state.watermark, ledger=state.ledger))
    assert [p.name for p in store.folder.glob("ledger-*")] == [state.ledger]
    (store.folder / state.ledger).write_bytes(b"not parquet")
    with pytest.raises(StateError, match="ledger of processed alerts is unreadable"):
        store.read_ledger(state)


def test_a_late_alert_is_rejected_once_and_every_alert_is_accounted_for(scenario, tmp_path):
    """An alert that reaches the export after its batch ran, more than the allowance
    behind, lands in rejected_alerts.csv with the reason (before the ledger it was
    skipped as 'already processed' and found nowhere)."""
    models, out = tmp_path / "models", tmp_path / "results"
    retrain(settings(), scenario["alerts"], scenario["graph"], models)
    alerts = pd.read_csv(scenario["alerts"], dtype=str, keep_default_na=False)
    ts = pd.to_datetime(alerts["timestamp"], utc=True, format="ISO8601")
    cut = ts.quantile(0.6)
    late_id = alerts["alert_id"][ts < cut - pd.Timedelta(hours=2)].iloc[-1]
    export = tmp_path / "alerts.csv"
    runs = []
    for part in (
        alerts[(ts < cut) & (alerts["alert_id"] != late_id)],  # the late alert is missing
        alerts,  # ... and arrives here, two hours behind
        alerts,  # the same export read again
    ):
        part.to_csv(export, index=False)
        outcome = classify(settings(), export, scenario["graph"], out, models)
        folder = outcome.results_dir
        runs.append(
            (
                json.loads((folder / "run_metadata.json").read_text()),
                pd.read_csv(folder / "alert_consolidation_final.csv", dtype=str),
                pd.read_csv(folder / "rejected_alerts.csv", dtype=str, keep_default_na=False),
                (folder / "report.html").read_text("utf-8"),
            )
        )
    for meta, final, rejected, _ in runs:
        assert meta["rows_accepted"] + meta["rows_rejected"] == meta["rows_read"]
        assert meta["rows_new"] == len(final) and meta["rows_rejected"] == len(rejected)
        assert meta["rows_accepted"] == (
            meta["rows_new"] + meta["rows_already_processed"] + meta["rows_outside_window"]
        )
    (_, _, none, _), (meta, _, rejected, report), (again, final, _, _) = runs
    assert len(none) == 0 and meta["rows_rejected_late"] == 1 and len(rejected) == 1
    assert "rejected as late" in report
    assert mlflow.get_run(meta["mlflow_run_id"]).data.metrics["rows_rejected_late"] == 1
    row = rejected.iloc[0]
    assert row["alert_id"] == late_id and row["reject_reason"].startswith("late: ")
    assert row["source_file"] == str(export)
    assert (
        int(row["source_row"]) == int(alerts.index[alerts["alert_id"] == late_id][0]) + 1
    )  # 1 = first data row
    # Read again, it is known: neither rejected twice nor classified.
    assert again["rows_rejected"] == 0 and again["rows_new"] == 0
    assert again["rows_already_processed"] == len(alerts)
    # Every alert of the export is in exactly one run's results or rejected file.
    placed = pd.concat([r[1]["alert_id"] for r in runs] + [r[2]["alert_id"] for r in runs])
    assert placed.is_unique and set(placed) == set(alerts["alert_id"])
    # One ledger on disk, the one the state names.
    state = json.loads((out / ".state" / "state.json").read_text())
    assert [p.name for p in (out / ".state").glob("ledger-*")] == [state["ledger"]]
    assert state["recent_ids"] == {}
