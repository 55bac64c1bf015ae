"""Quality metrics against ground truth, and the peer baselines."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alertclf.evaluation import (
    alertmanager_groups,
    dedup_scores,
    evaluate,
    fingerprint_duplicates,
    grouping_scores,
    pairwise_scores,
    ranking_precision,
    root_cause_accuracy,
    time_window_groups,
)

MIN = 60 * 10**9  # one minute in ns


def brute_force_pairs(true, pred) -> dict[str, float]:
    """Pair precision/recall/F1 by enumerating every pair (the definition)."""
    both = same_true = same_pred = 0
    for i, j in combinations(range(len(true)), 2):
        t, p = true[i] == true[j], pred[i] == pred[j]
        same_true += t
        same_pred += p
        both += t and p
    precision = both / same_pred if same_pred else 1.0
    recall = both / same_true if same_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"pair_precision": precision, "pair_recall": recall, "pair_f1": f1}


labelings = st.integers(1, 30).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 5), min_size=n, max_size=n),
        st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f", "g"]), min_size=n, max_size=n),
    )
)


# --- grouping ------------------------------------------------------------------------------
@given(labelings)
@settings(max_examples=200, deadline=None)
def test_pairwise_scores_equal_a_brute_force_pair_count(pair) -> None:
    true, pred = pair
    got = pairwise_scores(np.array(true), np.array(pred, dtype=object))
    want = brute_force_pairs(true, pred)
    assert got == pytest.approx(want)


def test_pairwise_scores_on_a_worked_example() -> None:
    # true {0,1,2} {3,4}; pred {0,1} {2,3,4}: pairs true=4, pred=4, both=2.
    scores = pairwise_scores([1, 1, 1, 2, 2], ["x", "x", "y", "y", "y"])
    assert scores == pytest.approx({"pair_precision": 0.5, "pair_recall": 0.5, "pair_f1": 0.5})


def test_identical_labelings_score_one_whatever_the_names() -> None:
    rng = np.random.default_rng(0)
    true = rng.integers(0, 8, size=200)
    renamed = np.array([f"G{x * 7 + 3}" for x in true])  # same partition, other labels
    scores = grouping_scores(true, renamed)
    assert scores["ari"] == pytest.approx(1.0)
    assert scores["pair_f1"] == pytest.approx(1.0)
    assert scores["n_groups"] == len(np.unique(true))
    assert scores["compression_ratio"] == pytest.approx(200 / len(np.unique(true)))


def test_one_big_group_has_full_recall_and_low_precision() -> None:
    true = np.repeat(np.arange(10), 5)
    scores = grouping_scores(true, np.zeros(50, dtype=int))
    assert scores["pair_recall"] == 1.0
    assert scores["pair_precision"] == pytest.approx((10 * 10) / (50 * 49 / 2))
    assert scores["ari"] == pytest.approx(0.0)
    assert scores["compression_ratio"] == 50


def test_dedup_scores() -> None:
    true = [True, True, False, False, True]
    pred = [True, False, True, False, True]
    assert dedup_scores(true, pred) == pytest.approx(
        {"dedup_precision": 2 / 3, "dedup_recall": 2 / 3}
    )
    assert dedup_scores([False, False], [False, False]) == {
        "dedup_precision": 1.0,
        "dedup_recall": 1.0,
    }


# --- baselines -----------------------------------------------------------------------------
def same(labels, i, j) -> bool:
    return labels[i] == labels[j]


def test_alertmanager_groups_by_service_with_a_five_minute_gap() -> None:
    service = ["api", "API", "api", "api", "web", "api"]
    minutes = [0, 4, 8, 13.5, 1, 18.5]
    labels = alertmanager_groups(service, np.array(minutes) * MIN)
    assert same(labels, 0, 1) and same(labels, 1, 2)  # 4-minute steps chain (case-insensitive)
    assert not same(labels, 2, 3)  # 5.5 minutes of silence: a new group
    assert same(labels, 3, 5)  # exactly 5 minutes later
    assert not same(labels, 0, 4)  # another service
    assert len(set(labels)) == 3
    wider = alertmanager_groups(service, np.array(minutes) * MIN, group_interval_minutes=10)
    assert len(set(wider)) == 2


def test_time_window_groups_are_sessions_of_any_service() -> None:
    minutes = np.array([30, 0, 10, 26, 45, 61])  # unsorted on purpose
    labels = time_window_groups(minutes * MIN, window_minutes=15)
    # 0-10 (gap 16 to 26) | 26-30-45 | 61 (gap 16)
    assert same(labels, 1, 2) and not same(labels, 2, 3)
    assert same(labels, 3, 0) and same(labels, 0, 4)
    assert not same(labels, 4, 5)
    assert len(set(labels)) == 3


def test_fingerprint_duplicates_need_the_same_host() -> None:
    names = ["HighErrorRate"] * 5 + ["HighRequestLatency"]
    services = ["api", "api", "api", "api", "web", "api"]
    hosts = ["h1", "h1", "h2", "h1", "h1", "h1"]
    minutes = np.array([0, 10, 11, 40, 12, 13])
    dup = fingerprint_duplicates(names, services, hosts, minutes * MIN, window_minutes=15)
    assert dup.tolist() == [False, True, False, False, False, False]


# --- whole evaluation ----------------------------------------------------------------------
@pytest.fixture
def perfect():
    """Results that match the truth exactly: two incidents and one noise alert."""
    truth = pd.DataFrame(
        {
            "alert_id": ["a", "b", "c", "d", "e"],
            "incident_id": ["I1", "I1", "I2", "I2", "N1"],
            "category": ["cpu", "cpu", "disk", "disk", "errors"],
            "is_duplicate": [False, True, False, False, False],
            "is_root": [True, False, True, False, False],
            "root_service": ["api", "api", "db", "db", ""],
            "true_service": ["api", "api", "db", "web", "api"],
            "is_noise": [False, False, False, False, True],
        }
    )
    t0 = pd.Timestamp("2026-01-05 10:00", tz="UTC")
    results = pd.DataFrame(
        {
            "alert_id": list("abcde"),
            "timestamp": [t0 + pd.Timedelta(minutes=m) for m in (0, 1, 2, 3, 40)],
            "service": ["api", "api", "db", "web", "api"],
            "alert_name": [
                "HostHighCpuLoad",
                "HostHighCpuLoad",
                "HostOutOfDiskSpace",
                "HighErrorRate",
                "HighErrorRate",
            ],
            "host": ["h1", "h1", "h2", "h3", "h1"],
            "mapped_service": ["api", "api", "db", "web", "api"],
            "group_id": ["G1", "G1", "G2", "G2", "G3"],
            "cluster_id": [0, 0, 1, 1, 2],
            "is_duplicate": [False, True, False, False, False],
        }
    )
    incidents = pd.DataFrame(
        {
            "group_id": ["G1", "G2", "G3"],
            "root_cause_service": ["api", "db", "api"],
            "rank": [2, 1, 3],
        }
    )
    return results, truth, incidents


def test_evaluate_perfect_results(perfect) -> None:
    results, truth, incidents = perfect
    scores = evaluate(results, truth, incidents, graph_nodes={"api", "db", "web"})
    ours = scores["ours"]
    assert ours["ari"] == pytest.approx(1.0)
    assert ours["pair_f1"] == pytest.approx(1.0)
    assert ours["dedup_precision"] == ours["dedup_recall"] == 1.0
    assert ours["cluster_nmi"] == pytest.approx(1.0)
    assert ours["mapping_accuracy"] == 1.0
    assert ours["root_cause_accuracy"] == 1.0
    assert ours["top10_precision"] == 1.0
    assert ours["alerts_evaluated"] == 5
    assert set(scores) == {
        "ours",
        "alertmanager_by_service",
        "time_window_only",
        "fingerprint_dedup",
    }
    # Time-window grouping chains a-d into one group: perfect recall, lower precision.
    assert scores["time_window_only"]["pair_recall"] == 1.0
    assert scores["time_window_only"]["pair_precision"] < 1.0
    assert scores["fingerprint_dedup"]["dedup_recall"] == 1.0


def test_evaluate_refuses_results_without_truth(perfect) -> None:
    results, truth, _ = perfect
    with pytest.raises(ValueError, match="no alert_id"):
        evaluate(results.assign(alert_id=["x1", "x2", "x3", "x4", "x5"]), truth)


def test_root_cause_accuracy_uses_the_group_holding_most_of_the_incident(perfect) -> None:
    results, truth, incidents = perfect
    merged = results.merge(truth, on="alert_id", suffixes=("", "_truth"))
    assert root_cause_accuracy(merged, incidents) == 1.0
    wrong = incidents.assign(root_cause_service=["api", "web", "api"])
    assert root_cause_accuracy(merged, wrong) == 0.5  # I2's group names web, not db


def test_ranking_precision_counts_noise_and_repeats_as_wasted(perfect) -> None:
    results, truth, incidents = perfect
    merged = results.merge(truth, on="alert_id", suffixes=("", "_truth"))
    noise_first = incidents.assign(rank=[2, 3, 1])
    assert ranking_precision(merged, noise_first, k=2) == 0.5  # noise G3, then G1
    # A second group of the same incident is no new information.
    split = merged.assign(group_id=["G1", "G4", "G2", "G2", "G3"])
    table = pd.DataFrame({"group_id": ["G1", "G4", "G2", "G3"], "rank": [1, 2, 3, 4]})
    assert ranking_precision(split, table, k=2) == 0.5
