"""Pipeline slice: a simulated day through prepare_batch, train and score_batch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from builders import simulated

from alertclf.contracts import FINAL_COLUMNS, INCIDENT_COLUMNS
from alertclf.evaluation import evaluate
from alertclf.features import ALERT_FEATURES
from alertclf.pipeline import (
    GraphContext,
    PipelineState,
    prepare_batch,
    replay_batches,
    score_batch,
    train,
)
from alertclf.regroup import apply_revisions, latest_revisions
from alertclf.settings import Settings

# HDBSCAN is what ``auto`` picks on this scenario; naming it skips the K-Means sweep
# (seconds on 2 cores). ``auto`` itself is covered on blobs in test_clustering.py.
SETTINGS = Settings(algorithm="hdbscan")


@pytest.fixture(scope="module")
def day():
    alerts, truth, g = simulated(seed=3, days=1, scenario="mixed")
    context = GraphContext.build(g, SETTINGS)
    prepared = prepare_batch(alerts, context, SETTINGS)
    model, profiles = train(prepared, SETTINGS)
    result = score_batch(prepared, model.predict_details, profiles, context, SETTINGS)
    return alerts, truth, context, prepared, model, profiles, result


def test_graph_context_is_built_once_from_the_graph(day) -> None:
    _, _, context, _, _, _, _ = day
    assert set(context.features.index) == set(context.graph.nodes)
    assert all(n in context.index for n in context.graph.nodes)
    assert context.fingerprint == GraphContext.build(context.graph, SETTINGS).fingerprint


def test_prepared_features_match_the_alerts(day) -> None:
    alerts, _, context, prepared, _, _, _ = day
    assert prepared.features.index.equals(prepared.alerts.index)
    assert len(prepared.features) == len(alerts)
    assert list(prepared.features.columns) == [*context.features.columns, *ALERT_FEATURES]
    assert (prepared.features.dtypes == np.float64).all()
    assert np.isfinite(prepared.features.to_numpy()).all()


def test_every_input_alert_comes_out_exactly_once_with_contract_columns(day) -> None:
    alerts, _, _, _, _, _, result = day
    out = result.alerts
    assert len(out) == len(alerts)
    assert out["alert_id"].is_unique
    assert set(out["alert_id"]) == set(alerts["alert_id"])
    assert list(out.columns[: len(FINAL_COLUMNS)]) == list(FINAL_COLUMNS)
    required = ["group_id", "cluster_id", "cluster_name", "cluster_rank", "importance_score"]
    assert out[required].notna().all().all()
    assert out["cluster_confidence"].between(0, 1).all()
    assert out["importance_score"].between(0, 100).all()
    assert out["is_duplicate"].dtype == bool and out["is_outlier"].dtype == bool
    originals = set(out.loc[~out["is_duplicate"], "alert_id"])
    assert set(out.loc[out["is_duplicate"], "duplicate_of"]) <= originals


def test_incidents_are_ranked_and_cover_every_group(day) -> None:
    _, _, _, _, _, _, result = day
    incidents = result.incidents
    assert set(INCIDENT_COLUMNS) <= set(incidents.columns)
    assert incidents["rank"].tolist() == list(range(1, len(incidents) + 1))
    assert (np.diff(incidents["importance_score"].to_numpy()) <= 0).all()
    assert set(incidents["group_id"]) == set(result.alerts["group_id"])
    assert incidents["root_cause_confidence"].between(0, 1).all()
    assert all(r.strip() for r in incidents["reasons"])
    clusters = result.clusters
    assert clusters["cluster_rank"].tolist() == list(range(1, len(clusters) + 1))


def test_grouping_agrees_with_the_truth(day) -> None:
    alerts, truth, context, _, _, _, result = day
    scores = evaluate(result.alerts, truth, result.incidents, graph_nodes=set(context.graph.nodes))
    ours = scores["ours"]
    assert ours["alerts_evaluated"] == len(alerts)
    assert ours["ari"] > 0.6
    assert ours["pair_f1"] > 0.6
    # Better than grouping by time alone (which chains overlapping incidents).
    assert ours["pair_f1"] > scores["time_window_only"]["pair_f1"]
    assert ours["dedup_recall"] > 0.8 and ours["dedup_precision"] > 0.8
    assert ours["root_cause_accuracy"] > 0.5


def test_cluster_names_are_unique_and_stable_for_the_same_training_data(day) -> None:
    _, _, _, prepared, model, profiles, _ = day
    names = [p["name"] for p in profiles.values()]
    assert len(set(names)) == len(names)
    again_model, again = train(prepared, SETTINGS)
    assert {k: v["name"] for k, v in again.items()} == {k: v["name"] for k, v in profiles.items()}
    np.testing.assert_array_equal(again_model.predict(prepared.features), model.labels_)


def test_replayed_batches_equal_one_batch(day) -> None:
    alerts, _, context, _, model, profiles, result = day
    batches, state = replay_batches(
        alerts, context, SETTINGS, model.predict_details, profiles, batch_minutes=60
    )
    assert len(batches) > 12
    replayed = pd.concat([b.alerts for b in batches])
    # (with the later batches' moves of alerts earlier ones published: alertclf.regroup)
    replayed["group_id"] = apply_revisions(
        replayed, latest_revisions([b.revisions for b in batches])
    )
    replayed = replayed.set_index("alert_id")
    whole = result.alerts.set_index("alert_id").loc[replayed.index]
    assert len(replayed) == len(alerts) and replayed.index.is_unique
    for column in ("group_id", "is_duplicate", "duplicate_of", "cluster_id"):
        pd.testing.assert_series_equal(replayed[column], whole[column], check_names=False)
    # The state out is what a JSON round trip gives back.
    assert PipelineState.from_json(state.to_json()).to_json() == state.to_json()


def test_state_through_json_between_batches_changes_nothing(day) -> None:
    alerts, _, context, prepared, _, _, _ = day
    ts = pd.to_datetime(alerts["timestamp"], utc=True)
    # Cut on a 15-minute boundary, as replay and the scheduler do (the 5-minute burst
    # feature counts the alerts of its bucket in the batch).
    cut = ts < (ts.min() + (ts.max() - ts.min()) / 2).floor("15min")
    first = prepare_batch(alerts[cut], context, SETTINGS)
    state = PipelineState.from_json(first.state.to_json())
    second = prepare_batch(alerts[~cut], context, SETTINGS, state)
    both = pd.concat([first.alerts, second.alerts]).set_index("alert_id")
    whole = prepared.alerts.set_index("alert_id").loc[both.index]
    for column in ("group_id", "is_duplicate", "duplicate_of"):
        pd.testing.assert_series_equal(both[column], whole[column], check_names=False)
    features = pd.concat([first.features, second.features])
    pd.testing.assert_frame_equal(
        features.set_axis(both.index),
        prepared.features.set_axis(prepared.alerts["alert_id"]).loc[both.index],
        check_names=False,
    )


def test_empty_batch_scores_to_empty_tables(day) -> None:
    alerts, _, context, _, model, profiles, _ = day
    prepared = prepare_batch(alerts.iloc[:0], context, SETTINGS)
    result = score_batch(prepared, model.predict_details, profiles, context, SETTINGS)
    assert result.alerts.empty and result.incidents.empty
    assert set(FINAL_COLUMNS) <= set(result.alerts.columns)


def test_incident_facts_from_a_second_process_change_nothing(day) -> None:
    from alertclf import pipeline

    alerts, _, context, _, model, profiles, result = day
    forked = SETTINGS.model_copy(update={"parallel_min_alerts": 2})
    prepared = prepare_batch(alerts, context, forked, scoring=True)
    if not pipeline.can_fork():
        pytest.skip("needs fork and two cores")
    assert prepared.incident_facts is not None  # the facts are being worked out apart
    # The features the groups do not decide were worked out while the other process
    # grouped: the same matrix as one process builds.
    one_process = prepare_batch(alerts, context, SETTINGS)
    pd.testing.assert_frame_equal(prepared.features, one_process.features)
    other = score_batch(prepared, model.predict_details, profiles, context, forked)
    pd.testing.assert_frame_equal(other.incidents, result.incidents)
    pd.testing.assert_frame_equal(other.alerts, result.alerts)
    # Without scoring=True nothing is started (retrain prepares batches it never scores).
    assert prepare_batch(alerts, context, forked).incident_facts is None
