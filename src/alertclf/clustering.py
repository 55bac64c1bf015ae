"""Clustering estimators that can place *new* alerts in learned clusters, with confidence.

scikit-learn conventions throughout: ``__init__`` only stores parameters, fitted
attributes end in ``_``, ``fit`` returns ``self``.

* :class:`KMeansSweep` -- K-Means with k chosen by a silhouette sweep over a range.
* :class:`InductiveClusterer` -- DBSCAN, agglomerative and HDBSCAN cannot ``predict``;
  this wrapper (as in scikit-learn's ``plot_inductive_clustering`` example) labels new
  points by their nearest clustered training neighbours. Training noise (DBSCAN and
  HDBSCAN's ``-1``) is left out of the families; a new point farther from every family
  than the families' own spread still gets the nearest one, with a confidence that
  falls with the distance.
* :class:`AlertClusterModel` -- the one model object: StandardScaler -> feature
  weights -> IsolationForest outlier flag (flagged, never dropped) -> PCA to a share of
  variance -> the chosen clusterer; ``algorithm="auto"`` tries all four with small
  sweeps and keeps the best silhouette plus family agreement (V-measure, homogeneity
  counted twice, between the labels the model hands out -- noise given its nearest
  family, as new alerts are -- and the alerts' incident families, read from the
  ``a_cause_*`` features: :func:`family_agreement`) among
  candidates that are not one giant cluster, not mostly noise and not too many clusters
  to read. Silhouette alone picked two compact lumps mixing several kinds of fault on
  small estates (worst calm NMI against the fault category over the quality runs 0.21;
  0.89 with the family term).

Large data is sampled, and it is stated: the scaler, outlier detector, PCA and k-means
are fitted on at most ``max_training_samples`` rows; DBSCAN and HDBSCAN on at most
10,000 and agglomerative on at most 5,000 (``FIT_CAPS``: their cost grows faster than
linearly), the rest labelled by nearest neighbours; silhouette uses at most
``silhouette_sample_size`` rows.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from joblib import parallel_config
from sklearn.base import BaseEstimator, ClusterMixin, clone
from sklearn.cluster import DBSCAN, HDBSCAN, AgglomerativeClustering, KMeans
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import (
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
    v_measure_score,
)
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from alertclf.errors import AlertclfError

logger = logging.getLogger(__name__)

ALGORITHMS: tuple[str, ...] = ("kmeans", "dbscan", "agglomerative", "hdbscan")
AGGLOMERATIVE_MAX_SAMPLES = 5_000
# Rows each algorithm is fitted on at most (k-means: all of max_training_samples).
# Density-based and hierarchical clusterers grow faster than linearly with rows (HDBSCAN
# took 36-109 s per candidate on 50,000 rows here, DBSCAN 13-24 s); on 10,000 sampled
# rows they take about a second, and the kNN step labels every other row.
FIT_CAPS: dict[str, int] = {
    "agglomerative": AGGLOMERATIVE_MAX_SAMPLES,
    "dbscan": 10_000,
    "hdbscan": 10_000,
}
NOISE = -1
# Below this many rows thread start-up costs more than the outlier trees save.
PARALLEL_OUTLIER_ROWS = 20_000
# One-hot columns naming each alert's incident family (see alertclf.features).
FAMILY_PREFIX = "a_cause_"
# Weight of completeness against homogeneity in family_agreement (scikit-learn's
# v_measure_score beta): homogeneity counts twice.
FAMILY_AGREEMENT_BETA = 0.5


class InsufficientDataError(AlertclfError):
    """Too few alerts to learn clusters from."""


# --- K-Means with a silhouette sweep ---------------------------------------------------
class KMeansSweep(ClusterMixin, BaseEstimator):
    """K-Means whose k maximises silhouette over ``k_min..k_max`` (on a sample)."""

    def __init__(self, k_min=2, k_max=24, sample_size=5_000, n_init=3, random_state=None):
        self.k_min = k_min
        self.k_max = k_max
        self.sample_size = sample_size
        self.n_init = n_init
        self.random_state = random_state

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float64)
        rng = check_random_state(self.random_state)
        n = X.shape[0]
        sample = X[rng.choice(n, self.sample_size, replace=False)] if n > self.sample_size else X
        distinct = len(np.unique(sample, axis=0))
        k_hi = min(self.k_max, distinct - 1, len(sample) - 1)
        k_lo = min(self.k_min, max(k_hi, 1))
        self.sweep_: dict[int, float] = {}
        best_k = max(1, min(self.k_min, distinct))
        if k_hi >= 2:
            seed = rng.randint(np.iinfo(np.int32).max)
            for k in sweep_values(max(2, k_lo), k_hi):
                # One initialisation per k while sweeping; the chosen k gets n_init.
                labels = KMeans(k, n_init=1, random_state=seed).fit_predict(sample)
                if len(np.unique(labels)) < 2:
                    continue
                self.sweep_[k] = float(silhouette_score(sample, labels))
            if self.sweep_:
                best_k = max(self.sweep_, key=lambda k: (round(self.sweep_[k], 4), -k))
        self.kmeans_ = KMeans(best_k, n_init=self.n_init, random_state=rng.randint(2**31 - 1))
        self.kmeans_.fit(X)
        self.cluster_centers_ = self.kmeans_.cluster_centers_
        self.n_clusters_ = best_k
        self.labels_ = self.kmeans_.labels_
        return self

    def predict(self, X):
        return self.predict_confidence(X)[0]

    def predict_confidence(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Labels, and confidence = margin between the nearest and second centre."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        distances = self.kmeans_.transform(X)
        labels = distances.argmin(axis=1)
        if distances.shape[1] < 2:
            return labels, np.ones(len(labels))
        part = np.partition(distances, 1, axis=1)
        d1, d2 = part[:, 0], part[:, 1]
        confidence = (d2 - d1) / np.maximum(d2 + d1, 1e-12)
        return labels, np.clip(confidence, 0.0, 1.0)


def sweep_values(low: int, high: int) -> list[int]:
    """Every k up to 8, then every other, then every fourth: silhouette changes slowly
    with k, and each fit costs time."""
    values = [k for k in range(low, high + 1) if k <= 8 or (k <= 16 and k % 2 == 0) or k % 4 == 0]
    if high >= low and high not in values:
        values.append(high)
    return values


# --- any clusterer made inductive --------------------------------------------------------
class InductiveClusterer(ClusterMixin, BaseEstimator):
    """Fit ``clusterer`` by ``fit_predict``; label new points by their nearest clustered
    training neighbours (distance-weighted vote), confidence falling with the distance
    beyond the clusters' spread (``noise_radius``, else estimated).

    The neighbours are searched among at most ``max_reference`` clustered training points
    (a seeded sample keeping each cluster's share): labelling the benchmark's 100k batch
    took 1.7 s against all 7,460 points (k-d tree) and 0.4 s against 2,000 (brute force,
    all cores), with the same label for every one of the 100,000 alerts. On one core,
    200,000 alerts of the 1M bench batch took 1.38 s against 2,000 and 0.87 s against
    1,000, again with the same label for every alert (confidence 0.003 apart on average).
    """

    def __init__(
        self,
        clusterer=None,
        n_neighbors=10,
        noise_quantile=0.95,
        noise_radius=None,
        max_reference=1_000,
        random_state=0,
    ):
        self.clusterer = clusterer
        self.n_neighbors = n_neighbors
        self.noise_quantile = noise_quantile
        self.noise_radius = noise_radius
        self.max_reference = max_reference
        self.random_state = random_state

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float64)
        base = clone(self.clusterer) if self.clusterer is not None else DBSCAN()
        labels = np.asarray(base.fit_predict(X))
        self.labels_ = labels
        clustered = labels != NOISE
        self.produces_noise_ = bool((~clustered).any())
        self.classes_ = np.unique(labels[clustered])
        self.n_clusters_ = len(self.classes_)
        if not clustered.any():
            self.neighbors_ = None
            self.radius_ = 0.0
            return self
        kept = self._reference(labels)
        reference = X[kept]
        self.train_labels_ = labels[kept]
        # Brute force: one matrix product on every core; in 10-16 PCA dimensions it
        # beat the k-d tree 4x on the benchmark's alerts.
        self.neighbors_ = NearestNeighbors(
            n_neighbors=min(self.n_neighbors, len(reference)), algorithm="brute"
        ).fit(reference)
        # A cluster's own spread: how far reference points sit from their neighbours.
        # Farther than that from every cluster means noise. DBSCAN states its own
        # radius (eps): a point within eps of a cluster joins it.
        if self.noise_radius is not None:
            self.radius_ = float(self.noise_radius)
        elif len(reference) > 1:
            # The k-th neighbour, not the 1st: alerts repeat, so many points coincide
            # and the nearest-neighbour distance says nothing about a cluster's extent.
            kth = min(self.n_neighbors, len(reference) - 1)
            dist, _ = self.neighbors_.kneighbors(reference, n_neighbors=kth + 1)
            self.radius_ = float(np.quantile(dist[:, kth], self.noise_quantile)) * 1.5
        else:
            self.radius_ = 0.0
        return self

    def _reference(self, labels: np.ndarray) -> np.ndarray:
        """Positions of the clustered points kept for the neighbour search: all of them
        up to ``max_reference``, else a seeded sample with each cluster's share (at
        least ``n_neighbors`` of a cluster, or all it has)."""
        clustered = np.flatnonzero(labels != NOISE)
        if self.max_reference is None or len(clustered) <= self.max_reference:
            return clustered
        rng = check_random_state(self.random_state)
        share = self.max_reference / len(clustered)
        kept = []
        for label in np.unique(labels[clustered]):
            members = clustered[labels[clustered] == label]
            n = min(len(members), max(self.n_neighbors, round(len(members) * share)))
            kept.append(rng.choice(members, n, replace=False))
        return np.sort(np.concatenate(kept))

    def predict(self, X):
        return self.predict_confidence(X)[0]

    def predict_confidence(self, X) -> tuple[np.ndarray, np.ndarray]:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        if self.neighbors_ is None:
            return np.full(len(X), NOISE), np.zeros(len(X))
        dist, idx = self.neighbors_.kneighbors(X)
        weights = 1.0 / np.maximum(dist, 1e-9)
        n_classes = len(self.classes_)
        positions = np.searchsorted(self.classes_, self.train_labels_[idx])
        cells = np.arange(len(X))[:, None] * n_classes + positions
        votes = np.bincount(
            cells.ravel(), weights=weights.ravel(), minlength=len(X) * n_classes
        ).reshape(len(X), n_classes)
        best = votes.argmax(axis=1)
        labels = self.classes_[best]
        share = votes[np.arange(len(X)), best] / votes.sum(axis=1)
        nearest = dist[:, 0]
        # Every alert gets its nearest family; how far it sits outside the family's
        # spread lowers the confidence instead (the outlier flag marks the strangers).
        if self.radius_ > 0:
            beyond = np.maximum(nearest - self.radius_, 0.0) / self.radius_
            closeness = np.exp(-beyond)
        else:
            closeness = np.ones(len(X))
        confidence = np.clip(share * closeness, 0.0, 1.0)
        return labels, confidence


# --- candidates and selection --------------------------------------------------------
@dataclass
class Candidate:
    algorithm: str
    params: dict
    estimator: BaseEstimator
    labels: np.ndarray | None = None
    fitted: bool = False
    silhouette: float = float("nan")
    family_agreement: float = float("nan")  # agreement of clusters with the alerts' families
    n_clusters: int = 0
    noise_share: float = 0.0
    largest_share: float = 0.0
    seconds: float = 0.0
    valid: bool = False
    why_not: str = ""

    def row(self) -> dict:
        # family_agreement only when the features named the alerts' families
        family = (
            {}
            if np.isnan(self.family_agreement)
            else {"family_agreement": round(self.family_agreement, 4)}
        )
        return {
            "algorithm": self.algorithm,
            "params": ", ".join(f"{k}={v}" for k, v in self.params.items()),
            "silhouette": round(self.silhouette, 4),
            **family,
            "n_clusters": self.n_clusters,
            "noise_share": round(self.noise_share, 4),
            "largest_share": round(self.largest_share, 4),
            "seconds": round(self.seconds, 2),
            "valid": self.valid,
            "why_not": self.why_not,
        }


def candidate_estimators(
    algorithm: str, Z: np.ndarray, k_min: int, k_max: int, random_state: int
) -> list[Candidate]:
    """Small parameter sweeps per algorithm (``auto`` = all four)."""
    chosen = ALGORITHMS if algorithm == "auto" else (algorithm,)
    out: list[Candidate] = []
    n = len(Z)
    if "kmeans" in chosen:
        est = KMeansSweep(k_min=k_min, k_max=k_max, random_state=random_state)
        out.append(Candidate("kmeans", {"k": f"{k_min}..{k_max}"}, est))
    if "dbscan" in chosen:
        min_samples = 5
        # eps on the scale of the rows DBSCAN will see: density depends on row count.
        scale = _neighbour_distance(fit_rows(Z, "dbscan", random_state), min_samples, random_state)
        for factor in (0.5, 1.0, 2.0):
            eps = max(scale * factor, 1e-6)
            est = InductiveClusterer(DBSCAN(eps=eps, min_samples=min_samples), noise_radius=eps)
            out.append(Candidate("dbscan", {"eps": round(eps, 4), "min_samples": min_samples}, est))
    if "agglomerative" in chosen:
        for k in sorted({min(max(k_min, 2), max(n - 1, 1)), 8, 12, 16} & set(range(2, max(n, 3)))):
            if k > k_max:
                continue
            est = InductiveClusterer(AgglomerativeClustering(n_clusters=k, linkage="ward"))
            out.append(Candidate("agglomerative", {"n_clusters": k, "linkage": "ward"}, est))
    if "hdbscan" in chosen:
        n = min(n, FIT_CAPS["hdbscan"])
        for size in sorted({max(5, n // 200), max(10, n // 50), max(20, n // 20)}):
            if size >= n:
                continue
            est = InductiveClusterer(HDBSCAN(min_cluster_size=size, copy=True))
            out.append(Candidate("hdbscan", {"min_cluster_size": size}, est))
    return out


def fit_rows(Z: np.ndarray, algorithm: str, random_state: int) -> np.ndarray:
    """The rows an algorithm is fitted on: a seeded sample when it has a cap."""
    return Z[fit_index(len(Z), algorithm, random_state)]


def fit_index(n: int, algorithm: str, random_state: int) -> np.ndarray | slice:
    """Positions of :func:`fit_rows` among ``n`` rows."""
    cap = FIT_CAPS.get(algorithm)
    if cap is None or n <= cap:
        return slice(None)
    rng = check_random_state(random_state)
    return np.sort(rng.choice(n, cap, replace=False))


def _neighbour_distance(Z: np.ndarray, k: int, random_state: int) -> float:
    """Median distance to the k-th neighbour: the natural scale for DBSCAN's eps."""
    rng = check_random_state(random_state)
    sample = Z[rng.choice(len(Z), min(len(Z), 2_000), replace=False)]
    k = min(k, len(sample) - 1)
    if k < 1:
        return 1.0
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(sample).kneighbors(sample)
    return float(np.median(dist[:, k])) or 1.0


def evaluate_candidate(
    cand: Candidate,
    Z: np.ndarray,
    silhouette_size: int,
    max_noise_share: float,
    max_cluster_share: float,
    random_state: int,
    max_clusters: int = 10**6,
    families: np.ndarray | None = None,
) -> Candidate:
    """Fit one candidate and judge it: silhouette, noise, sizes and, given each row's
    alert family (``families``), how well its clusters keep families apart."""
    index = fit_index(len(Z), cand.algorithm, random_state)
    rows = Z[index]
    started = time.perf_counter()
    try:
        cand.estimator.fit(rows)
    except (ValueError, MemoryError) as err:
        cand.why_not = f"failed: {err}"
        cand.seconds = time.perf_counter() - started
        return cand
    cand.seconds = time.perf_counter() - started
    cand.fitted = True
    # Judge the clustering as the algorithm made it, on the rows it was fitted on:
    # its noise stays noise here (and counts against it), even though new alerts are
    # later given their nearest family.
    own = np.asarray(cand.estimator.labels_)
    clustered = own != NOISE
    cand.noise_share = float(1 - clustered.mean())
    cand.n_clusters = len(np.unique(own[clustered]))
    if clustered.any():
        cand.largest_share = float(np.bincount(own[clustered]).max() / len(own))
    cand.silhouette = sampled_silhouette(rows, own, silhouette_size, random_state)
    if families is not None:
        # Family agreement of the labels the model will hand out, noise given its
        # nearest family as every new alert is: kept as a label of its own, a noise set
        # of one kind of fault flattered DBSCAN and HDBSCAN (on the 18 quality runs this
        # choice raised the worst NMI against the fault category from 0.587 to 0.624).
        cand.family_agreement = family_agreement(families[index], cand.estimator.predict(rows))
    problems = []
    if cand.n_clusters < 2:
        problems.append("fewer than 2 clusters")
    if cand.n_clusters > max_clusters:
        problems.append(f"{cand.n_clusters} clusters > {max_clusters}: too many to read")
    if cand.noise_share > max_noise_share:
        problems.append(f"noise share {cand.noise_share:.0%} > {max_noise_share:.0%}")
    if families is not None:
        # One kind of incident may be most of the history (a storm of network faults):
        # a cluster as big as the biggest family is that family, not a lump.
        biggest_family = np.unique(families, return_counts=True)[1].max() / len(families)
        max_cluster_share = max(max_cluster_share, float(biggest_family) + 0.05)
    if cand.largest_share > max_cluster_share:
        problems.append(f"largest cluster {cand.largest_share:.0%} > {max_cluster_share:.0%}")
    if not np.isfinite(cand.silhouette):
        problems.append("no silhouette")
    cand.valid = not problems
    cand.why_not = "; ".join(problems)
    return cand


def incident_families(X: np.ndarray, names) -> np.ndarray | None:
    """Each row's incident family, read from its one-hot ``a_cause_*`` columns (0 when
    it has none); None when the features (named ``names``) carry no such columns."""
    columns = [i for i, name in enumerate(names) if str(name).startswith(FAMILY_PREFIX)]
    if not columns:
        return None
    onehot = np.asarray(X)[:, columns]
    return np.where(onehot.max(axis=1) > 0, onehot.argmax(axis=1) + 1, 0)


def family_agreement(families: np.ndarray | None, labels: np.ndarray) -> float:
    """How well cluster labels keep the alerts' incident families apart, in [0, 1]; 0
    without families: the V-measure with homogeneity (each cluster holds one kind of
    fault) weighing twice completeness (each kind sits in one cluster),
    ``beta`` = :data:`FAMILY_AGREEMENT_BETA`.

    Why not plain NMI (the same with equal weights): a model is trained on a short
    history that may hold a handful of kinds of fault, and every later alert is given
    its nearest cluster. By NMI three broad clusters that each hold two kinds can beat
    a tidy split of every kind (tests/test_clustering.py has one such case: 0.76 vs
    0.72), and they leave the alerts of kinds the history never showed no tidy cluster
    to join. On the quality scenarios (seeds 1-12) NMI chose such models for two calm
    online-boutique histories (NMI of the replayed rest against the fault category 0.52
    and 0.48); this criterion chose k-means there (0.80) and the same models elsewhere
    or as good ones (storm worst 0.624 / 0.677 / 0.666 / 0.707 for seeds 1-3 / 4-6 /
    7-9 / 10-12 either way).
    """
    if families is None or len(labels) == 0:
        return 0.0
    return float(v_measure_score(families, labels, beta=FAMILY_AGREEMENT_BETA))


def selection_key(cand: Candidate) -> tuple[float, float]:
    """Higher is better: silhouette (are the clusters compact and apart?) plus, when the
    alerts' families are known, family agreement (do the clusters keep kinds of incident
    apart?); then less noise. Silhouette alone prefers two well-separated lumps that
    each mix several kinds of fault."""
    silhouette = np.nan_to_num(cand.silhouette, nan=-2.0)
    agreement = 0.0 if np.isnan(cand.family_agreement) else cand.family_agreement
    return (float(silhouette + agreement), -cand.noise_share)


def sampled_silhouette(Z: np.ndarray, labels: np.ndarray, size: int, random_state: int) -> float:
    """Silhouette of the clustered points on a sample of at most ``size`` rows."""
    keep = labels != NOISE
    Zc, lc = Z[keep], labels[keep]
    if len(lc) > size:
        idx = check_random_state(random_state).choice(len(lc), size, replace=False)
        Zc, lc = Zc[idx], lc[idx]
    # Silhouette is defined for 2 .. n-1 distinct labels.
    if not 2 <= len(np.unique(lc)) <= len(lc) - 1:
        return float("nan")
    return float(silhouette_score(Zc, lc))


# --- the model -------------------------------------------------------------------------
class AlertClusterModel(ClusterMixin, BaseEstimator):
    """Scaler -> outlier flag -> PCA -> clusterer, fitted and applied as one object."""

    def __init__(
        self,
        algorithm="auto",
        pca_variance=0.95,
        contamination=0.05,
        k_min=2,
        k_max=24,
        max_training_samples=50_000,
        silhouette_sample_size=10_000,
        max_noise_share=0.3,
        max_cluster_share=0.6,
        min_samples=10,
        feature_weights=None,
        random_state=42,
    ):
        self.algorithm = algorithm
        self.pca_variance = pca_variance
        self.contamination = contamination
        self.k_min = k_min
        self.k_max = k_max
        self.max_training_samples = max_training_samples
        self.silhouette_sample_size = silhouette_sample_size
        self.max_noise_share = max_noise_share
        self.max_cluster_share = max_cluster_share
        self.min_samples = min_samples
        self.feature_weights = feature_weights
        self.random_state = random_state

    def _weights(self, n_features: int) -> np.ndarray:
        """Per-column weights applied after scaling: ``feature_weights`` maps column-name
        prefixes to weights (longest prefix wins); unnamed columns weigh 1."""
        weights = np.ones(n_features)
        names = getattr(self, "feature_names_in_", None)
        if not self.feature_weights or names is None:
            return weights
        prefixes = sorted(self.feature_weights, key=len, reverse=True)
        for i, name in enumerate(names):
            for prefix in prefixes:
                if str(name).startswith(prefix):
                    weights[i] = float(self.feature_weights[prefix])
                    break
        return weights

    def _families(self, X: np.ndarray) -> np.ndarray | None:
        return incident_families(X, getattr(self, "feature_names_in_", ()))

    def _scale(self, X: np.ndarray) -> np.ndarray:
        """``scaler_.transform(X) * weights_``, the same numbers in one new array instead
        of three (200,000 alerts a call: 91 MB each, fresh memory every time)."""
        scaled = np.subtract(X, self.scaler_.mean_, order="C")
        scaled /= self.scaler_.scale_
        scaled *= self.weights_
        return scaled

    def fit(self, X, y=None):
        if self.algorithm not in (*ALGORITHMS, "auto"):
            raise ValueError(
                f"algorithm={self.algorithm!r}; allowed: {', '.join((*ALGORITHMS, 'auto'))}"
            )
        if len(X) < self.min_samples:
            raise InsufficientDataError(
                f"{len(X)} alerts are too few to learn clusters from "
                f"(min_clustering_samples={self.min_samples})"
            )
        started = time.perf_counter()
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        rng = check_random_state(self.random_state)
        n_total = X.shape[0]
        if n_total > self.max_training_samples:
            X = X[np.sort(rng.choice(n_total, self.max_training_samples, replace=False))]
        self.n_training_rows_ = n_total
        self.n_fitted_rows_ = X.shape[0]
        self.scaler_ = StandardScaler().fit(X)
        self.weights_ = self._weights(X.shape[1])
        scaled = self._scale(X)
        self.outlier_detector_ = IsolationForest(
            contamination=self.contamination, random_state=self.random_state, n_estimators=100
        ).fit(scaled)
        n_components = self.pca_variance if self.pca_variance < 1 else None
        self.pca_ = PCA(n_components=n_components, svd_solver="full").fit(scaled)
        Z = self.pca_.transform(scaled)
        families = self._families(X)
        candidates = candidate_estimators(
            self.algorithm, Z, self.k_min, self.k_max, self.random_state
        )
        # Imported here, not at the top: the served model loads this module and its
        # pinned requirements do not include tqdm. disable=None: a bar on a terminal only.
        from tqdm.auto import tqdm

        for cand in tqdm(candidates, desc="retrain candidates", unit="candidate", disable=None):
            evaluate_candidate(
                cand,
                Z,
                self.silhouette_sample_size,
                self.max_noise_share,
                self.max_cluster_share,
                self.random_state,
                max_clusters=self.k_max,
                families=families,
            )
            logger.info("candidate %s %s: %s", cand.algorithm, cand.params, cand.row())
        fitted = [c for c in candidates if c.fitted]
        if not fitted:
            raise InsufficientDataError("no clustering candidate could be fitted on this data")
        valid = [c for c in fitted if c.valid]
        pool = valid or fitted
        best = max(pool, key=selection_key)
        self.candidates_ = pd.DataFrame([c.row() for c in candidates])
        self.selected_ = best.row()
        self.clusterer_ = best.estimator
        self.algorithm_ = best.algorithm
        # Only the chosen clusterer labels every training row (kNN for the inductive
        # ones); the others were judged on their own fitted rows.
        best.labels = best.estimator.predict(Z)
        self.labels_ = best.labels
        self.n_clusters_ = best.n_clusters
        self.training_metrics_ = cluster_metrics(
            Z, best.labels, self.silhouette_sample_size, self.random_state
        )
        self.training_metrics_.update(
            {
                "outlier_share": float((self.outlier_detector_.predict(scaled) == -1).mean()),
                "n_samples": float(n_total),
                "n_fitted_samples": float(len(X)),
                "feature_count": float(X.shape[1]),
                "pca_components": float(self.pca_.n_components_),
                "training_seconds": time.perf_counter() - started,
            }
        )
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.pca_.transform(self._scale(X))

    def predict(self, X) -> np.ndarray:
        return self.predict_details(X)["cluster_id"].to_numpy()

    def predict_details(self, X) -> pd.DataFrame:
        """``cluster_id``, ``cluster_confidence`` in [0, 1] and ``is_outlier`` per row."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        scaled = self._scale(X)
        Z = self.pca_.transform(scaled)
        labels, confidence = self.clusterer_.predict_confidence(Z)
        # 100 trees over 200k rows take ~1 s on one core and the trees release the GIL:
        # threads divide that by the cores (scikit-learn stays sequential unless asked,
        # scikit-learn PR 28622). Same scores, summed under a lock.
        threads = min(4, os.cpu_count() or 1) if len(scaled) >= PARALLEL_OUTLIER_ROWS else 1
        with parallel_config(backend="threading", n_jobs=threads):
            outlier = self.outlier_detector_.predict(scaled) == -1
        return pd.DataFrame(
            {
                "cluster_id": labels.astype(np.int64),
                "cluster_confidence": confidence.astype(np.float64),
                "is_outlier": outlier,
            }
        )


def cluster_metrics(
    Z: np.ndarray, labels: np.ndarray, silhouette_size: int, random_state: int
) -> dict[str, float]:
    """Silhouette (sampled), Davies-Bouldin, Calinski-Harabasz, counts -- noise excluded."""
    keep = labels != NOISE
    n_clusters = len(np.unique(labels[keep]))
    metrics = {
        "n_clusters": float(n_clusters),
        "noise_share": float(1 - keep.mean()) if len(labels) else 0.0,
        "silhouette": sampled_silhouette(Z, labels, silhouette_size, random_state),
        "davies_bouldin": float("nan"),
        "calinski_harabasz": float("nan"),
    }
    if n_clusters >= 2 and keep.sum() > n_clusters:
        Zc, lc = Z[keep], labels[keep]
        if len(lc) > 50_000:
            idx = check_random_state(random_state).choice(len(lc), 50_000, replace=False)
            Zc, lc = Zc[idx], lc[idx]
        if len(np.unique(lc)) >= 2:
            metrics["davies_bouldin"] = float(davies_bouldin_score(Zc, lc))
            metrics["calinski_harabasz"] = float(calinski_harabasz_score(Zc, lc))
    return metrics
