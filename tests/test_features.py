"""Alert features: float64, fixed column order, no NaN, aligned with the alerts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from builders import (
    CPU,
    DB_DOWN,
    ERRORS,
    LATENCY,
    alert,
    frame,
    graph,
    simulated_enriched,
)

from alertclf.catalogue import FAMILIES
from alertclf.consolidate import consolidate
from alertclf.features import ALERT_FEATURES, FEATURE_WEIGHTS, build_features, feature_columns
from alertclf.graph import graph_features
from alertclf.settings import Settings

SETTINGS = Settings()
CHAIN = graph(("web", "api"), ("api", "db"))


def with_as_of(alerts: pd.DataFrame, g) -> pd.DataFrame:
    """The alerts as the pipeline hands them to build_features (consolidation as-of)."""
    result = consolidate(alerts, g, SETTINGS)
    return alerts.join(result.as_of)


@pytest.fixture(scope="module")
def chain_features():
    rows = [
        alert(0, "db", DB_DOWN, severity="critical"),
        alert(1, "api", LATENCY),
        alert(1.5, "api", LATENCY, host="other-pod"),
        alert(2, "legacy-box", ERRORS, severity="unknown"),
        alert(3, "web", CPU, severity="info"),
    ]
    alerts = with_as_of(frame(rows, CHAIN, index=pd.Index([10, 11, 12, 13, 14])), CHAIN)
    gf = graph_features(CHAIN)
    return alerts, gf, build_features(alerts, gf)


def test_columns_are_graph_features_then_alert_features(chain_features) -> None:
    _, gf, features = chain_features
    assert list(features.columns) == [*gf.columns, *ALERT_FEATURES]
    assert list(features.columns) == feature_columns(list(gf.columns))
    assert len(set(features.columns)) == len(features.columns)


def test_every_column_is_float64_without_nan(chain_features) -> None:
    _, _, features = chain_features
    assert (features.dtypes == np.float64).all()
    assert np.isfinite(features.to_numpy()).all()


def test_rows_are_aligned_with_the_alerts(chain_features) -> None:
    alerts, gf, features = chain_features
    assert features.index.equals(alerts.index)
    # A shuffled input gives the same row for the same alert.
    shuffled = alerts.sample(frac=1.0, random_state=0)
    again = build_features(shuffled, gf)
    pd.testing.assert_frame_equal(again.reindex(alerts.index), features)


def test_values_describe_the_alert(chain_features) -> None:
    _, gf, f = chain_features
    # Topology: the mapped node's graph features; zeros for an unmapped service.
    assert f.loc[10, list(gf.columns)].tolist() == gf.loc["db"].tolist()
    assert (f.loc[13, list(gf.columns)] == 0).all()
    # Severity ordinal, mapping, family one-hot (exactly one family per alert).
    assert f["a_severity"].tolist() == [5.0, 3.0, 3.0, 0.0, 1.0]
    assert f["a_is_mapped"].tolist() == [1.0, 1.0, 1.0, 0.0, 1.0]
    fam = f[[f"a_fam_{x}" for x in FAMILIES]]
    assert (fam.sum(axis=1) == 1).all()
    assert f.loc[10, "a_fam_datastore"] == 1 and f.loc[11, "a_fam_latency"] == 1
    assert f.loc[14, "a_fam_cpu"] == 1
    assert f["a_symptom_capable"].tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    # Time of day on the unit circle: 10:00 UTC.
    assert f.loc[10, "a_hour_sin"] == pytest.approx(np.sin(2 * np.pi * 10 / 24))
    assert f.loc[10, "a_hour_cos"] == pytest.approx(np.cos(2 * np.pi * 10 / 24))
    # Group as of the alert: api's symptoms are one hop from db's root.
    assert f.loc[10, "a_is_group_root"] == 1 and f.loc[11, "a_is_group_root"] == 0
    assert f.loc[11, "a_hops_to_root"] == 1
    assert f.loc[12, "a_replicas"] == pytest.approx(np.log1p(2))  # second host of the series
    assert f.loc[12, "a_repeats"] == pytest.approx(np.log1p(2))
    assert f.loc[12, "a_group_size"] == pytest.approx(np.log1p(3))
    # As of each alert: the first api alert sees itself, the second sees both.
    assert f.loc[11, "a_service_burst"] == pytest.approx(np.log1p(1))
    assert f.loc[12, "a_service_burst"] == pytest.approx(np.log1p(2))
    # The cause family is the incident's (datastore), not the latency symptom's.
    cause = f[[f"a_cause_{x}" for x in FAMILIES]]
    assert (cause.sum(axis=1) == 1).all()
    assert f.loc[11, "a_cause_datastore"] == 1


def test_missing_and_odd_values_never_give_nan() -> None:
    alerts = with_as_of(frame([alert(0, "db", DB_DOWN), alert(1, "x", ERRORS)], CHAIN), CHAIN)
    alerts["severity"] = [None, "not-a-severity"]
    alerts["mapping_confidence"] = [None, "n/a"]
    alerts["cause_family"] = [None, "datastore"]
    alerts.loc[alerts.index[0], "hops_to_root"] = np.nan
    gf = graph_features(CHAIN).copy()
    gf.iloc[0, 0] = np.nan  # a graph feature that could not be computed
    features = build_features(alerts, gf)
    assert (features.dtypes == np.float64).all()
    assert not features.isna().any().any()
    assert features["a_severity"].tolist() == [0.0, 0.0]
    assert features["a_cause_other"].iloc[0] == 1.0


def test_integer_graph_features_come_out_float64() -> None:
    alerts = with_as_of(frame([alert(0, "db", DB_DOWN)], CHAIN), CHAIN)
    gf = pd.DataFrame({"g_int": [1, 2, 3]}, index=["web", "api", "db"], dtype=np.int64)
    features = build_features(alerts, gf)
    assert features["g_int"].tolist() == [3.0]
    assert (features.dtypes == np.float64).all()


def test_empty_input_gives_an_empty_frame_with_the_columns(chain_features) -> None:
    alerts, gf, _ = chain_features
    empty = build_features(alerts.iloc[:0], gf)
    assert empty.shape == (0, len(gf.columns) + len(ALERT_FEATURES))
    assert list(empty.columns) == [*gf.columns, *ALERT_FEATURES]
    assert (empty.dtypes == np.float64).all()


def test_simulated_scenario_features_are_finite() -> None:
    alerts, _, g = simulated_enriched(seed=3)
    features = build_features(with_as_of(alerts, g), graph_features(g))
    assert features.shape[0] == len(alerts)
    assert (features.dtypes == np.float64).all()
    assert np.isfinite(features.to_numpy()).all()
    # Unmapped alerts exist in the scenario and carry no topology.
    unmapped = features["a_is_mapped"] == 0
    assert unmapped.any() and (features.loc[unmapped, "g_in_degree"] == 0).all()


def test_feature_weights_cover_every_feature_prefix() -> None:
    # Every alert feature has a weight (the "a_" catch-all) and weights are positive.
    assert all(w > 0 for w in FEATURE_WEIGHTS.values())
    for name in ALERT_FEATURES:
        assert any(name.startswith(prefix) for prefix in FEATURE_WEIGHTS), name


def test_service_burst_does_not_depend_on_where_a_batch_ends() -> None:
    alerts = frame(
        [alert(0, "db", DB_DOWN), alert(1, "db", "RedisDown"), alert(2, "db", CPU)], CHAIN
    )
    gf = graph_features(CHAIN)
    whole = build_features(with_as_of(alerts, CHAIN), gf)
    first = consolidate(alerts.iloc[:1], CHAIN, SETTINGS)
    second = consolidate(alerts.iloc[1:], CHAIN, SETTINGS, first.state)
    parts = pd.concat(
        [
            build_features(alerts.iloc[:1].join(first.as_of), gf),
            build_features(alerts.iloc[1:].join(second.as_of), gf),
        ]
    )
    pd.testing.assert_series_equal(parts["a_service_burst"], whole["a_service_burst"])
