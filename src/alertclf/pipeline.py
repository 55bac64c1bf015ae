"""The pure pipeline: validated alerts in, every result table out. No I/O, no MLflow.

    alerts ──► mapping ──► consolidation ──► dedup ──► features ──► model ──► ranking
               (graph)     (graph, state)    (state)   (graph)      (clusters)  (names,
                                                                                 roots)

Classify and retrain call the same :func:`prepare_batch`, so the model sees the same
features in training as in scoring. State (open incident groups and dedup episodes)
goes in and comes out; the flows decide when it is saved.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from alertclf.consolidate import CallerIndex, ConsolidationState, consolidate
from alertclf.dedup import DedupState, mark_duplicates
from alertclf.features import FEATURE_WEIGHTS, FeatureBlock, finish_features, start_features
from alertclf.forking import Forked, can_fork
from alertclf.gcpause import gc_paused
from alertclf.graph import graph_features, graph_fingerprint
from alertclf.mapping import ServiceMapper, enrich_alerts, mapping_statistics
from alertclf.ranking import (
    cluster_profiles,
    cluster_table,
    group_novelty,
    incident_facts,
    incident_table,
    rank_incidents,
    root_causes,
)
from alertclf.regroup import (
    RegroupState,
    early_end_share,
    empty_revisions,
    regroup,
    splits_early_endings,
    symptom_families,
)
from alertclf.settings import Settings
from alertclf.timing import (
    PropagationLag,
    estimate_timing,
    with_learned_families,
    with_learned_lag,
    with_learned_lateness,
    with_learned_share,
)

logger = logging.getLogger(__name__)

Predictor = Callable[[pd.DataFrame], pd.DataFrame]
BATCH_SILHOUETTE_SAMPLE = 4_000
# Davies-Bouldin and Calinski-Harabasz of a batch are computed on at most this many
# alerts: standardising a million rows of features would hold three copies of the
# matrix (about 1 GB) at the peak of the run, for numbers a sample estimates as well.
BATCH_METRICS_SAMPLE = 50_000
# Rows per call of the model: its predictions are row by row, and the scaled, projected
# and distance matrices of a million rows at once would be the peak of the run.
PREDICT_CHUNK_ROWS = 200_000
# What runs beside a split consolidation (dedup and the features the groups do not
# decide), as a share of grouping the same alerts (1M bench: 1.6 s of dedup and 1.2 s
# of features against 12 s): the grouping the split takes off this process for it.
MEANWHILE_COST = 0.23


@dataclass
class GraphContext:
    """Everything derived from one graph, built once and reused for every batch."""

    graph: nx.DiGraph
    features: pd.DataFrame
    index: CallerIndex
    mapper: ServiceMapper
    fingerprint: str

    @classmethod
    def build(
        cls, graph: nx.DiGraph, settings: Settings, cache_dir: Path | None = None
    ) -> GraphContext:
        """``cache_dir`` keeps topology features on disk by graph fingerprint: a graph
        that does not change is not analysed again every 15 minutes."""
        fingerprint = graph_fingerprint(graph)
        return cls(
            graph=graph,
            features=graph_features(graph, cache_dir=cache_dir, fingerprint=fingerprint),
            index=CallerIndex(graph, settings.group_max_hops),
            mapper=ServiceMapper(graph.nodes, settings.min_match_score),
            fingerprint=fingerprint,
        )


@dataclass
class PipelineState:
    """What one batch hands to the next."""

    consolidation: ConsolidationState = field(default_factory=ConsolidationState)
    dedup: DedupState = field(default_factory=DedupState)
    regroup: RegroupState = field(default_factory=RegroupState)

    def to_json(self) -> str:
        return json.dumps(
            {
                "consolidation": json.loads(self.consolidation.to_json()),
                "dedup": json.loads(self.dedup.to_json()),
                "regroup": json.loads(self.regroup.to_json()),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> PipelineState:
        data = json.loads(text) if text else {}
        return cls(
            ConsolidationState.from_json(json.dumps(data.get("consolidation", {}))),
            DedupState.from_json(json.dumps(data.get("dedup", {}))),
            RegroupState.from_json(json.dumps(data.get("regroup", {}))),
        )


@dataclass
class Prepared:
    alerts: pd.DataFrame  # canonical columns + mapping, group, dedup and as-of columns
    features: pd.DataFrame
    groups: pd.DataFrame
    state: PipelineState
    timings: dict[str, float]
    incident_facts: Forked | None = None  # being worked out by a second process
    # moves of alerts published by earlier batches (alertclf.regroup)
    revisions: pd.DataFrame = field(default_factory=empty_revisions)


@dataclass
class BatchResult:
    alerts: pd.DataFrame  # one row per accepted alert, contract columns first
    incidents: pd.DataFrame
    clusters: pd.DataFrame  # ranked clusters
    cluster_summary: pd.DataFrame
    mapping: pd.DataFrame
    statistics: dict
    state: PipelineState
    timings: dict[str, float]
    revisions: pd.DataFrame = field(default_factory=empty_revisions)


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    """Time one stage (added to its time so far: a stage may run in parts), with the
    cyclic garbage collector paused (see :mod:`alertclf.gcpause`; 6.8 s of a
    million-alert batch)."""
    started = time.perf_counter()
    with gc_paused():
        yield
    timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - started, 4)


def prepare_batch(
    alerts: pd.DataFrame,
    context: GraphContext,
    settings: Settings,
    state: PipelineState | None = None,
    scoring: bool = False,
    end: int | None = None,
) -> Prepared:
    """Mapping, consolidation, regrouping, dedup and features for one batch of validated
    alerts. ``end`` (epoch ns) is the batch's newest alert unless given: a Spark executor
    holds part of the batch and passes the whole batch's.

    ``scoring``: :func:`score_batch` follows. On a large batch a second process then
    works out the incidents' root causes and facts (they need no clusters) while this one
    finishes the features and clusters (1M alerts: ranking 4.6 -> 2 s)."""
    state = state or PipelineState()
    timings: dict[str, float] = {}
    with _timed(timings, "mapping"):
        enriched = enrich_alerts(alerts, context.graph, settings, context.mapper)
    dedup: list = []
    block: list[FeatureBlock] = []

    def meanwhile() -> None:  # what needs the mapping only, not the groups
        with _timed(timings, "dedup"):
            dedup.extend(mark_duplicates(enriched, settings, state.dedup))
        with _timed(timings, "features"):
            block.append(start_features(enriched, context.features))

    timings["consolidation"] = 0.0  # (listed before dedup, as the stages read)
    started = time.perf_counter()
    with gc_paused():
        # On a large batch this runs while a second process groups (alertclf.stitching).
        grouped = consolidate(
            enriched, context.graph, settings, state.consolidation, context.index,
            meanwhile=meanwhile, meanwhile_cost=MEANWHILE_COST,
        )  # fmt: skip
        dups, dedup_state = dedup
        enriched["group_id"] = grouped.group_ids
        enriched["group_reason"] = grouped.reasons
        for column in grouped.as_of.columns:
            enriched[column] = grouped.as_of[column]
        enriched["is_duplicate"] = dups["is_duplicate"]
        enriched["duplicate_of"] = dups["duplicate_of"]
    elapsed = time.perf_counter() - started
    timings["consolidation"] = round(elapsed - timings["dedup"] - timings["features"], 4)
    with _timed(timings, "regroup"):
        times = grouped.times
        newest = end if end is not None else (int(times.max()) if len(times) else 0)
        moved = regroup(
            enriched, times, grouped.keys, grouped.ids, grouped.groups, context.index,
            settings, state.regroup, newest,
        )  # fmt: skip
        enriched["group_id"] = moved.group_ids
        # The groups split off others hold alerts here: the incident table needs them.
        groups = (
            pd.concat([grouped.groups, moved.groups], ignore_index=True)
            if len(moved.groups)
            else grouped.groups
        )
    facts = None
    if scoring and len(enriched) >= settings.parallel_min_alerts and can_fork():
        facts = Forked(_incident_facts, enriched, groups, context, settings)
    with _timed(timings, "features"):
        features = finish_features(block[0], enriched)
    return Prepared(
        alerts=enriched,
        features=features,
        groups=groups,
        state=PipelineState(grouped.state, dedup_state, moved.state),
        timings=timings,
        incident_facts=facts,
        revisions=moved.revisions,
    )


def score_batch(
    prepared: Prepared,
    predict: Predictor,
    profiles: dict[int, dict],
    context: GraphContext,
    settings: Settings,
) -> BatchResult:
    """Clusters (by ``predict``), names, root causes, importance and ranks."""
    timings = dict(prepared.timings)
    # Only new columns are added below, so a shallow copy keeps ``prepared.alerts``
    # intact without a second copy of a million rows.
    alerts = prepared.alerts.copy(deep=False)
    batch_end = _batch_end(alerts)
    # While a second process works out the incident facts, BLAS and OpenMP keep to one
    # thread: their workers spin waiting for the core that process holds (1M alerts:
    # clustering 5.2-5.7 -> 5.0 s). The outlier forest's two threads are kept.
    one_thread = prepared.incident_facts is not None
    with _timed(timings, "clustering"), threadpool_limits(1) if one_thread else nullcontext():
        try:
            details = (
                pd.concat(
                    [
                        predict(prepared.features.iloc[start : start + PREDICT_CHUNK_ROWS])
                        for start in range(0, len(alerts), PREDICT_CHUNK_ROWS)
                    ],
                    ignore_index=True,
                )
                if len(alerts)
                else _empty_details()
            )
        except BaseException:
            if prepared.incident_facts is not None:  # no one will read it: stop it
                prepared.incident_facts.cancel()
            raise
        details.index = alerts.index
        alerts["cluster_id"] = details["cluster_id"].astype(np.int64)
        alerts["cluster_confidence"] = details["cluster_confidence"].astype(np.float64).round(4)
        alerts["is_outlier"] = details["is_outlier"].astype(bool)
    with _timed(timings, "ranking"):
        if len(alerts) == 0:
            incidents = incident_table(alerts, _empty_roots(), context.features, batch_end)
            incident_row = np.zeros(0, dtype=np.int64)
        else:
            known = (
                prepared.incident_facts.result()
                if prepared.incident_facts is not None
                else _incident_facts(prepared.alerts, prepared.groups, context, settings)
            )
            # Each alert's group looked up once (group ids are strings: hashing a million
            # of them is 0.3-0.5 s), for the novelty and, through the ranking's order of
            # the groups, for every incident column below.
            facts_row = pd.Index(known["group_id"]).get_indexer(alerts["group_id"])
            if (facts_row < 0).any():  # -1 would silently read the last row
                raise RuntimeError("an alert's group is missing from the incident table")
            incidents = rank_incidents(known, group_novelty(alerts, facts_row, len(known)))
            incident_row = pd.Index(incidents["group_id"]).get_indexer(known["group_id"])[facts_row]
        clusters = cluster_table(alerts, profiles, context.features, batch_end)
        by_cluster = clusters.set_index("cluster_id")
        alerts["cluster_name"] = alerts["cluster_id"].map(by_cluster["cluster_name"])
        alerts["cluster_rank"] = alerts["cluster_id"].map(by_cluster["cluster_rank"])
        incident_score = incidents["importance_score"].to_numpy(dtype=np.float64)[incident_row]
        cluster_score = alerts["cluster_id"].map(by_cluster["importance_score"])
        # An alert matters as much as the incident it belongs to, and a little for its family.
        alerts["importance_score"] = (0.7 * incident_score + 0.3 * cluster_score).round(2)
        alerts["incident_rank"] = incidents["rank"].to_numpy()[incident_row]
        alerts["root_cause_service"] = incidents["root_cause_service"].to_numpy()[incident_row]
        summary = cluster_summary(alerts, profiles)
    statistics = batch_statistics(prepared.features, alerts, settings)
    return BatchResult(
        alerts=order_columns(alerts),
        incidents=incidents,
        clusters=clusters,
        cluster_summary=summary,
        mapping=mapping_statistics(alerts) if len(alerts) else mapping_statistics(prepared.alerts),
        statistics=statistics,
        state=prepared.state,
        timings=timings,
        revisions=prepared.revisions,
    )


def _incident_facts(
    alerts: pd.DataFrame, groups: pd.DataFrame, context: GraphContext, settings: Settings
) -> pd.DataFrame:
    roots = root_causes(
        groups, context.index, settings.time_window_minutes, settings.cause_lateness_minutes
    )
    return incident_facts(alerts, roots, context.features, _batch_end(alerts), groups)


def _batch_end(alerts: pd.DataFrame) -> pd.Timestamp:
    """The newest alert's time (now for an empty batch): what recency is measured from."""
    if len(alerts) == 0:
        return pd.Timestamp.now("UTC")
    return pd.to_datetime(alerts["timestamp"], utc=True).max()


def _empty_roots() -> pd.DataFrame:
    return pd.DataFrame(columns=["group_id", "root_cause_service", "root_cause_confidence"])


def _empty_details() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cluster_id": pd.Series([], dtype=np.int64),
            "cluster_confidence": pd.Series([], dtype=np.float64),
            "is_outlier": pd.Series([], dtype=bool),
        }
    )


def order_columns(alerts: pd.DataFrame) -> pd.DataFrame:
    """Contract columns first, in contract order; the rest after."""
    from alertclf.contracts import FINAL_COLUMNS

    first = [c for c in FINAL_COLUMNS if c in alerts.columns]
    rest = [c for c in alerts.columns if c not in first]
    return alerts[first + rest]


def cluster_summary(alerts: pd.DataFrame, profiles: dict[int, dict]) -> pd.DataFrame:
    """Per cluster in this batch: size, top alert names, top services, severity mix."""
    if len(alerts) == 0:
        return pd.DataFrame(
            columns=[
                "cluster_id",
                "cluster_name",
                "size",
                "top_alert_names",
                "top_services",
                "severity_mix",
                "mean_confidence",
                "outlier_share",
                "training_size",
            ]
        )
    rows = []
    # Only the columns read below: grouping sorts every column it carries (2.5 s for
    # the full 40-column frame at a million alerts).
    used = ["cluster_id", "cluster_name", "severity", "alert_name", "mapped_service", "service",
            "cluster_confidence", "is_outlier"]  # fmt: skip
    for cluster, part in alerts[used].groupby("cluster_id", sort=True):
        sev = part["severity"].value_counts(normalize=True)
        rows.append(
            {
                "cluster_id": int(cluster),
                "cluster_name": part["cluster_name"].iloc[0],
                "size": len(part),
                "top_alert_names": "|".join(part["alert_name"].value_counts().head(5).index),
                "top_services": "|".join(
                    part["mapped_service"]
                    .where(part["mapped_service"] != "", part["service"])
                    .value_counts()
                    .head(5)
                    .index
                ),
                "severity_mix": "|".join(f"{k} {v:.0%}" for k, v in sev.items()),
                "mean_confidence": round(float(part["cluster_confidence"].mean()), 4),
                "outlier_share": round(float(part["is_outlier"].mean()), 4),
                "training_size": profiles.get(int(cluster), {}).get("size", 0),
            }
        )
    return pd.DataFrame(rows)


def batch_statistics(
    features: pd.DataFrame, alerts: pd.DataFrame, settings: Settings
) -> dict[str, float]:
    """Cluster quality on this batch (standardised feature space; silhouette on a sample,
    the other cluster metrics on at most ``BATCH_METRICS_SAMPLE`` alerts)."""
    from alertclf.clustering import cluster_metrics

    n = len(alerts)
    stats: dict[str, float] = {
        "n_alerts": float(n),
        "n_clusters_seen": float(alerts["cluster_id"].nunique()) if n else 0.0,
        "n_groups": float(alerts["group_id"].nunique()) if n else 0.0,
        "duplicate_share": float(alerts["is_duplicate"].mean()) if n else 0.0,
        "outlier_share": float(alerts["is_outlier"].mean()) if n else 0.0,
        "mapping_rate": float((alerts["mapped_service"] != "").mean()) if n else 0.0,
        "mean_cluster_confidence": float(alerts["cluster_confidence"].mean()) if n else 0.0,
        "compression_ratio": float(n / max(alerts["group_id"].nunique(), 1)) if n else 0.0,
    }
    if n >= 3:
        labels = alerts["cluster_id"].to_numpy()
        if n > BATCH_METRICS_SAMPLE:
            rng = np.random.default_rng(settings.random_state)
            rows = np.sort(rng.choice(n, BATCH_METRICS_SAMPLE, replace=False))
            features, labels = features.iloc[rows], labels[rows]
        values = features.to_numpy(dtype=np.float64)
        scale = values.std(axis=0)
        scale[scale == 0] = 1.0
        standardised = (values - values.mean(axis=0)) / scale
        # Per-batch quality is informational: a few thousand alerts estimate silhouette
        # well enough, and its cost grows with the square of the sample.
        metrics = cluster_metrics(
            standardised,
            labels,
            min(settings.silhouette_sample_size, BATCH_SILHOUETTE_SAMPLE),
            settings.random_state,
        )
        stats.update({f"batch_{k}": v for k, v in metrics.items()})
    return stats


def learn_timing(
    alerts: pd.DataFrame, context: GraphContext, settings: Settings
) -> tuple[Settings, PropagationLag]:
    """The settings to group ``alerts`` (history) and later batches with: the estate's
    propagation lag and cause lateness learned from them (:mod:`alertclf.timing`),
    each unless ``settings`` configure it. Returns the propagation lag's estimate too."""
    configured = PropagationLag(settings.propagation_lag_minutes, 0, 0.0)
    learn_lag = settings.propagation_lag_minutes is None
    learn_lateness = settings.cause_lateness_minutes is None
    if not (learn_lag or learn_lateness):
        return settings, configured
    mapped = enrich_alerts(alerts, context.graph, settings, context.mapper)
    lag, lateness = estimate_timing(
        mapped, context.index, settings.time_window_minutes, learn_lag, learn_lateness
    )
    if lag is None:
        lag = configured
    else:
        _log_learned("propagation lag", lag, "onsets with trouble on their path")
        settings = with_learned_lag(settings, lag.minutes)
    if lateness is not None:
        _log_learned("cause lateness", lateness, "fault onsets after their callers' symptoms")
        settings = with_learned_lateness(settings, lateness.minutes)
    return settings, lag


def learn_endings(prepared: Prepared, context: GraphContext, settings: Settings) -> Settings:
    """``settings`` with the early-end share (:func:`alertclf.regroup.early_end_share`)
    and the symptom families (:func:`alertclf.regroup.symptom_families`) of the grouped
    history ``prepared``, unless they configure them."""
    learned = settings
    if settings.early_end_share is None:
        share = early_end_share(prepared.alerts, prepared.groups, context.index, settings)
        learned = with_learned_share(learned, share)
        logger.info(
            "early-end share: %s (series that stop while their root goes on are %s)",
            "none learned" if share is None else f"{share:.3f}",
            "split off" if splits_early_endings(learned) else "kept",
        )
    if settings.symptom_families is None:
        table = symptom_families(prepared.alerts, prepared.groups)
        learned = with_learned_families(learned, table)
        logger.info(
            "symptom families: %s",
            "none learned"
            if table is None
            else f"{sum(n for row in table.values() for n in row.values())} series "
            f"under {len(table)} root families",
        )
    return learned


def _log_learned(what: str, learned: PropagationLag, samples: str) -> None:
    logger.info(
        "%s: %s (%d %s, %.0f beyond chance)",
        what,
        "none learned" if learned.minutes is None else f"{learned.minutes:g} min",
        learned.samples,
        samples,
        learned.excess,
    )


def train(prepared: Prepared, settings: Settings, algorithm: str | None = None):
    """Fit the clustering model on prepared history; name its clusters."""
    from alertclf.clustering import AlertClusterModel

    model = AlertClusterModel(
        algorithm=algorithm or settings.algorithm,
        pca_variance=settings.pca_variance_threshold,
        contamination=settings.outlier_contamination,
        k_min=settings.kmeans_k_min,
        k_max=settings.kmeans_k_max,
        max_training_samples=settings.max_training_samples,
        silhouette_sample_size=settings.silhouette_sample_size,
        max_noise_share=settings.max_noise_share,
        max_cluster_share=settings.max_cluster_share,
        min_samples=settings.min_clustering_samples,
        feature_weights=FEATURE_WEIGHTS,
        random_state=settings.random_state,
    )
    model.fit(prepared.features)
    labels = model.predict(prepared.features)
    profiles = cluster_profiles(prepared.alerts, labels)
    return model, profiles


def replay_batches(
    alerts: pd.DataFrame,
    context: GraphContext,
    settings: Settings,
    predict: Predictor,
    profiles: dict[int, dict],
    batch_minutes: float = 15,
    state: PipelineState | None = None,
    progress: bool = False,
) -> tuple[list[BatchResult], PipelineState]:
    """The history as consecutive ``batch_minutes`` batches, state carried across."""
    from tqdm.auto import tqdm

    state = state or PipelineState()
    if len(alerts) == 0:
        return [], state
    ts = pd.to_datetime(alerts["timestamp"], utc=True)
    width = pd.Timedelta(minutes=batch_minutes)
    first = ts.min().floor(width)
    batch_of = ((ts - first) // width).to_numpy()
    results = []
    for number in tqdm(np.unique(batch_of), disable=not progress, desc="replay", unit="batch"):
        batch = alerts[batch_of == number]
        prepared = prepare_batch(batch, context, settings, state, scoring=True)
        result = score_batch(prepared, predict, profiles, context, settings)
        state = result.state
        results.append(result)
    return results, state
