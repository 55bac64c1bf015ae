"""Quality against ground truth, and the peer baselines measured in the same run.

Metrics (DESIGN.md §6):

* consolidation: adjusted Rand index and pairwise same-incident precision / recall / F1
  of ``group_id`` against ``incident_id``; compression ratio (alerts per group);
* clustering: NMI of ``cluster_id`` against the fault ``category``;
* dedup: precision and recall of ``is_duplicate``;
* mapping: accuracy of ``mapped_service`` for alerts whose true service is in the graph,
  and the share of alerts on unknown services mapped to anything (should be ~0);
* root cause: share of incidents whose group's ``root_cause_service`` is the true root;
* ranking: share of the top 10 ranked groups that are distinct real incidents.

Baselines, computed on the same alerts:

* ``alertmanager``: Alertmanager-style ``group_by: [service]``: alerts of one service
  label form a group until 5 minutes pass without one (group interval);
* ``time_window``: every alert within ``time_window_minutes`` of the previous one joins
  its group (grouping by time only);
* ``fingerprint``: dedup by ``alert_name + service + host`` within the window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

NS_PER_MINUTE = 60 * 10**9


# --- grouping ---------------------------------------------------------------------------
def pairwise_scores(true_labels, pred_labels) -> dict[str, float]:
    """Same-incident pair precision / recall / F1, from the contingency table (no pairs
    are enumerated, so a million alerts cost no more than a sort)."""
    table = contingency_matrix(true_labels, pred_labels, sparse=True)
    cells = np.asarray(table.data, dtype=np.float64)
    both = float((cells * (cells - 1) / 2).sum())
    true_sizes = np.asarray(table.sum(axis=1)).ravel().astype(np.float64)
    pred_sizes = np.asarray(table.sum(axis=0)).ravel().astype(np.float64)
    same_true = float((true_sizes * (true_sizes - 1) / 2).sum())
    same_pred = float((pred_sizes * (pred_sizes - 1) / 2).sum())
    precision = both / same_pred if same_pred else 1.0
    recall = both / same_true if same_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"pair_precision": precision, "pair_recall": recall, "pair_f1": f1}


def grouping_scores(true_labels, pred_labels) -> dict[str, float]:
    true_labels = np.asarray(true_labels)
    pred_labels = np.asarray(pred_labels)
    scores = {"ari": float(adjusted_rand_score(true_labels, pred_labels))}
    scores.update(pairwise_scores(true_labels, pred_labels))
    n_groups = len(pd.unique(pred_labels))
    scores["compression_ratio"] = len(pred_labels) / n_groups if n_groups else 0.0
    scores["n_groups"] = float(n_groups)
    return scores


def dedup_scores(true_dup, pred_dup) -> dict[str, float]:
    true_dup = np.asarray(true_dup, dtype=bool)
    pred_dup = np.asarray(pred_dup, dtype=bool)
    tp = float((true_dup & pred_dup).sum())
    precision = tp / pred_dup.sum() if pred_dup.sum() else 1.0
    recall = tp / true_dup.sum() if true_dup.sum() else 1.0
    return {"dedup_precision": float(precision), "dedup_recall": float(recall)}


# --- baselines --------------------------------------------------------------------------
def _sessions(keys: np.ndarray, times: np.ndarray, gap_ns: int) -> np.ndarray:
    """Label runs of equal key where consecutive alerts are at most ``gap_ns`` apart."""
    order = np.lexsort((times, keys))
    k = keys[order]
    t = times[order]
    new = np.ones(len(k), dtype=bool)
    if len(k) > 1:
        new[1:] = (k[1:] != k[:-1]) | ((t[1:] - t[:-1]) > gap_ns)
    labels = np.empty(len(k), dtype=np.int64)
    labels[order] = np.cumsum(new)
    return labels


def alertmanager_groups(service, times_ns, group_interval_minutes: float = 5) -> np.ndarray:
    keys = np.asarray(pd.Series(service).astype(str).str.lower(), dtype=object)
    return _sessions(keys, np.asarray(times_ns), int(group_interval_minutes * NS_PER_MINUTE))


def time_window_groups(times_ns, window_minutes: float) -> np.ndarray:
    keys = np.zeros(len(times_ns), dtype=np.int64)
    return _sessions(keys, np.asarray(times_ns), int(window_minutes * NS_PER_MINUTE))


def fingerprint_duplicates(alert_name, service, host, times_ns, window_minutes: float):
    keys = (
        pd.Series(alert_name).astype(str)
        + "\x1f"
        + pd.Series(service).astype(str)
        + "\x1f"
        + pd.Series(host).fillna("").astype(str)
    ).to_numpy(dtype=object)
    times = np.asarray(times_ns)
    order = np.lexsort((times, keys))
    k = keys[order]
    t = times[order]
    dup = np.zeros(len(k), dtype=bool)
    if len(k) > 1:
        dup[1:] = (k[1:] == k[:-1]) & ((t[1:] - t[:-1]) <= window_minutes * NS_PER_MINUTE)
    out = np.empty(len(k), dtype=bool)
    out[order] = dup
    return out


# --- whole evaluation -------------------------------------------------------------------
def evaluate(
    results: pd.DataFrame,
    truth: pd.DataFrame,
    incidents: pd.DataFrame | None = None,
    graph_nodes: set[str] | None = None,
    window_minutes: float = 15,
) -> dict[str, dict[str, float]]:
    """Every metric for ``ours`` and each baseline. ``results`` is
    ``alert_consolidation_final.csv`` content; ``incidents`` is ``incident_groups.csv``."""
    from alertclf.consolidate import to_epoch_ns

    merged = results.merge(truth, on="alert_id", how="inner", suffixes=("", "_truth"))
    if merged.empty:
        raise ValueError("no alert_id of the results is in the truth file")
    times = to_epoch_ns(merged["timestamp"])
    true_incident = merged["incident_id"].astype(str).to_numpy()
    out: dict[str, dict[str, float]] = {}

    ours = grouping_scores(true_incident, merged["group_id"].astype(str).to_numpy())
    ours.update(dedup_scores(merged["is_duplicate_truth"], merged["is_duplicate"]))
    if "cluster_id" in merged:
        ours["cluster_nmi"] = float(
            normalized_mutual_info_score(merged["category"].astype(str), merged["cluster_id"])
        )
    ours.update(mapping_scores(merged, graph_nodes))
    if incidents is not None and len(incidents):
        ours["root_cause_accuracy"] = root_cause_accuracy(merged, incidents)
        ours["top10_precision"] = ranking_precision(merged, incidents, 10)
    ours["alerts_evaluated"] = float(len(merged))
    out["ours"] = ours

    am = grouping_scores(true_incident, alertmanager_groups(merged["service"], times))
    tw = grouping_scores(true_incident, time_window_groups(times, window_minutes))
    host = merged["host"] if "host" in merged else pd.Series([""] * len(merged))
    fp = dedup_scores(
        merged["is_duplicate_truth"],
        fingerprint_duplicates(
            merged["alert_name"], merged["service"], host, times, window_minutes
        ),
    )
    out["alertmanager_by_service"] = am
    out["time_window_only"] = tw
    out["fingerprint_dedup"] = fp
    return out


def mapping_scores(merged: pd.DataFrame, graph_nodes: set[str] | None) -> dict[str, float]:
    if "mapped_service" not in merged or "true_service" not in merged:
        return {}
    mapped = merged["mapped_service"].fillna("").astype(str)
    true = merged["true_service"].astype(str)
    if graph_nodes is None:
        # Without the graph, services that anything was mapped to stand in for it.
        graph_nodes = set(mapped[mapped != ""])
    known = true.isin(graph_nodes)
    scores = {}
    if known.any():
        scores["mapping_accuracy"] = float((mapped[known] == true[known]).mean())
    if (~known).any():
        scores["unknown_mapped_share"] = float((mapped[~known] != "").mean())
    return scores


def root_cause_accuracy(merged: pd.DataFrame, incidents: pd.DataFrame) -> float:
    """Per true incident (noise excluded): the group holding most of its alerts names
    the right root service."""
    real = merged[merged["root_service"].fillna("").astype(str) != ""]
    if "is_noise" in real:
        real = real[~real["is_noise"].astype(bool)]
    if real.empty:
        return float("nan")
    main_group = (
        real.groupby(["incident_id", "group_id"])
        .size()
        .rename("n")
        .reset_index()
        .sort_values(["incident_id", "n", "group_id"], ascending=[True, False, True])
        .drop_duplicates("incident_id")
    )
    roots = real.drop_duplicates("incident_id").set_index("incident_id")["root_service"]
    predicted = incidents.set_index("group_id")["root_cause_service"]
    guess = main_group["group_id"].map(predicted).fillna("").astype(str).str.lower()
    want = main_group["incident_id"].map(roots).astype(str).str.lower()
    return float((guess.to_numpy() == want.to_numpy()).mean())


def ranking_precision(merged: pd.DataFrame, incidents: pd.DataFrame, k: int = 10) -> float:
    """Share of the top-``k`` ranked groups that are real incidents, each counted once
    (a group of background noise, or a second group of an incident already listed,
    is a wasted line on the on-call engineer's screen). ``k`` shrinks to the number of
    real incidents when there are fewer, so a calm day can still score 1."""
    noise = (
        merged["is_noise"].astype(bool)
        if "is_noise" in merged
        else merged["incident_id"].astype(str).str.startswith("N")
    )
    k = min(k, int(merged.loc[~noise, "incident_id"].nunique()))
    top = incidents.sort_values("rank").head(k)["group_id"].astype(str).tolist()
    if not top:
        return float("nan")
    owner = (
        merged.assign(_noise=noise)
        .groupby("group_id")
        .agg(
            incident=("incident_id", lambda s: s.value_counts().index[0]), noise=("_noise", "mean")
        )
    )
    seen: set[str] = set()
    hits = 0
    for group in top:
        if group not in owner.index:
            continue
        incident, noise_share = owner.loc[group, "incident"], owner.loc[group, "noise"]
        if noise_share < 0.5 and incident not in seen:
            hits += 1
        seen.add(incident)
    return hits / len(top)


def format_table(scores: dict[str, dict[str, float]]) -> str:
    """Metrics as rows, ours and baselines as columns."""
    frame = pd.DataFrame(scores)
    return frame.to_string(float_format=lambda v: f"{v:.3f}", na_rep="")
