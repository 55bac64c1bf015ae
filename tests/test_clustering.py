"""Clustering estimators: scikit-learn conformance, recovery of known clusters, predict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.base import clone
from sklearn.cluster import DBSCAN, AgglomerativeClustering, KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from alertclf.clustering import (
    NOISE,
    AlertClusterModel,
    Candidate,
    InductiveClusterer,
    InsufficientDataError,
    KMeansSweep,
    cluster_metrics,
    evaluate_candidate,
    family_agreement,
    sampled_silhouette,
    selection_key,
)

N_BLOBS = 8


# --- scikit-learn conformance ------------------------------------------------------------
# Every check of scikit-learn 1.9.1 passes for these (none needs expected_failed_checks).
@parametrize_with_checks(
    [
        KMeansSweep(k_min=2, k_max=4, random_state=0),
        InductiveClusterer(DBSCAN(eps=0.5, min_samples=3)),
        InductiveClusterer(AgglomerativeClustering(n_clusters=3)),
    ]
)
def test_sklearn_estimator_checks(estimator, check) -> None:
    check(estimator)


# --- data --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def blobs():
    """Eight well-separated blobs in 5 dimensions (eight: in every algorithm's sweep)."""
    X, y = make_blobs(
        n_samples=320,
        centers=N_BLOBS,
        n_features=5,
        cluster_std=0.5,
        center_box=(-20, 20),
        random_state=0,
    )
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(5)]), y


@pytest.fixture(scope="module")
def fitted(blobs):
    """One fitted model per algorithm (fitting once keeps the module fast)."""
    X, _ = blobs
    return {
        algo: AlertClusterModel(algorithm=algo, k_max=10, random_state=0).fit(X)
        for algo in ("kmeans", "dbscan", "agglomerative", "hdbscan", "auto")
    }


ALGORITHMS = ["kmeans", "dbscan", "agglomerative", "hdbscan", "auto"]


# --- AlertClusterModel -------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_model_finds_well_separated_blobs(blobs, fitted, algorithm: str) -> None:
    X, y = blobs
    model = fitted[algorithm]
    if algorithm != "auto":
        assert model.algorithm_ == algorithm
    assert model.n_clusters_ == N_BLOBS
    assert adjusted_rand_score(y, model.labels_) > 0.9
    assert adjusted_rand_score(y, model.predict(X)) > 0.9


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_point_on_a_training_point_gets_its_cluster(blobs, fitted, algorithm: str) -> None:
    # A re-fired alert (same features as its twin) lands in its twin's cluster.
    X, _ = blobs
    model = fitted[algorithm]
    own = np.asarray(model.clusterer_.labels_)
    rng = np.random.default_rng(0)
    rows = rng.choice(len(X), 60, replace=False)
    twins = X.iloc[rows].reset_index(drop=True)
    predicted = model.predict(twins)
    keep = own[rows] != NOISE  # training noise has no cluster to be the twin of
    assert keep.sum() > 30
    np.testing.assert_array_equal(predicted[keep], own[rows][keep])
    # And in the cluster the model reported for the twin at training time.
    np.testing.assert_array_equal(predicted, np.asarray(model.labels_)[rows])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_predict_details_columns_dtypes_and_ranges(blobs, fitted, algorithm: str) -> None:
    X, _ = blobs
    rng = np.random.default_rng(1)
    far = pd.DataFrame(rng.normal(0, 200, size=(40, X.shape[1])), columns=X.columns)
    details = fitted[algorithm].predict_details(pd.concat([X, far], ignore_index=True))
    assert list(details.columns) == ["cluster_id", "cluster_confidence", "is_outlier"]
    assert details.dtypes.to_dict() == {
        "cluster_id": np.dtype(np.int64),
        "cluster_confidence": np.dtype(np.float64),
        "is_outlier": np.dtype(bool),
    }
    assert len(details) == len(X) + len(far)
    conf = details["cluster_confidence"]
    assert conf.between(0.0, 1.0).all()
    # Points far from every blob: outliers, with less confidence than the blob points.
    assert details["is_outlier"].iloc[len(X) :].mean() > 0.9
    assert conf.iloc[len(X) :].mean() < conf.iloc[: len(X)].mean()


@given(
    points=arrays(
        np.float64,
        st.tuples(st.integers(1, 20), st.just(5)),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    )
)
@settings(max_examples=40, deadline=None)
def test_confidence_is_always_in_unit_interval(fitted, points) -> None:
    frame = pd.DataFrame(points, columns=[f"f{i}" for i in range(5)])
    for model in (fitted["kmeans"], fitted["dbscan"], fitted["agglomerative"]):
        details = model.predict_details(frame)
        conf = details["cluster_confidence"].to_numpy()
        assert np.isfinite(conf).all()
        assert ((conf >= 0) & (conf <= 1)).all()
        assert set(details["cluster_id"]) <= set(range(model.n_clusters_))


def test_too_few_rows_raise_insufficient_data(blobs) -> None:
    X, _ = blobs
    with pytest.raises(InsufficientDataError, match="min_clustering_samples=10"):
        AlertClusterModel(min_samples=10).fit(X.iloc[:9])
    # Exactly min_samples rows is enough.
    AlertClusterModel(algorithm="kmeans", min_samples=10, k_max=3).fit(X.iloc[:10])


def test_unknown_algorithm_is_refused_with_the_allowed_values(blobs) -> None:
    X, _ = blobs
    with pytest.raises(ValueError, match="allowed: kmeans, dbscan"):
        AlertClusterModel(algorithm="spectral").fit(X)


def test_candidates_table_records_invalid_candidates_with_a_reason(blobs) -> None:
    X, _ = blobs
    # Two equal halves of the blobs: one "cluster" of half the data is too big here.
    model = AlertClusterModel(
        algorithm="auto", k_max=10, max_cluster_share=0.1, random_state=0
    ).fit(X)
    table = model.candidates_
    assert set(table.columns) >= {
        "algorithm",
        "params",
        "silhouette",
        "n_clusters",
        "noise_share",
        "largest_share",
        "valid",
        "why_not",
    }
    assert set(table["algorithm"]) == {"kmeans", "dbscan", "agglomerative", "hdbscan"}
    invalid = table[~table["valid"]]
    assert len(invalid) > 0
    assert (invalid["why_not"].str.len() > 0).all()
    assert (table.loc[table["valid"], "why_not"] == "").all()
    assert invalid["why_not"].str.contains(r"largest cluster \d+% > 10%").any()
    # DBSCAN's smallest eps leaves most points unclustered: noise is a reason too.
    assert invalid["why_not"].str.contains(r"noise share \d+% > 30%").any()
    assert model.selected_ in table.to_dict("records")


def test_fit_is_deterministic_for_a_random_state(blobs) -> None:
    X, _ = blobs
    a = AlertClusterModel(algorithm="kmeans", k_max=10, random_state=3).fit(X)
    b = AlertClusterModel(algorithm="kmeans", k_max=10, random_state=3).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    pd.testing.assert_frame_equal(a.predict_details(X), b.predict_details(X))


def test_training_is_sampled_above_max_training_samples(blobs) -> None:
    X, y = blobs
    model = AlertClusterModel(algorithm="hdbscan", max_training_samples=200, random_state=0).fit(X)
    assert model.n_training_rows_ == len(X)
    assert model.n_fitted_rows_ == 200
    assert adjusted_rand_score(y, model.predict(X)) > 0.9


def test_feature_weights_scale_columns_by_longest_prefix(blobs) -> None:
    X, _ = blobs
    X = X.rename(columns={"f0": "a_x", "f1": "a_fam_y", "f2": "g_z"})
    weights = {"a_": 0.5, "a_fam_": 2.0}
    model = AlertClusterModel(algorithm="kmeans", k_max=3, feature_weights=weights).fit(X)
    assert model.weights_.tolist() == [0.5, 2.0, 1.0, 1.0, 1.0]
    # Scaled in one array: exactly the scaler's numbers times the weights, input untouched.
    values = np.asfortranarray(X.to_numpy(dtype=np.float64))
    before = values.copy()
    expected = model.scaler_.transform(values) * model.weights_
    np.testing.assert_array_equal(model._scale(values), expected)
    np.testing.assert_array_equal(values, before)


# --- the parts ---------------------------------------------------------------------------
def test_kmeans_sweep_picks_k_by_silhouette(blobs) -> None:
    X, y = blobs
    sweep = KMeansSweep(k_min=2, k_max=12, random_state=0).fit(X.to_numpy())
    # Every k up to 8, then every other one (sweep_values), always the upper bound.
    assert set(sweep.sweep_) == {2, 3, 4, 5, 6, 7, 8, 10, 12}
    assert sweep.n_clusters_ == max(sweep.sweep_, key=sweep.sweep_.get) == N_BLOBS
    labels, conf = sweep.predict_confidence(X.to_numpy())
    assert adjusted_rand_score(y, labels) > 0.9
    assert ((conf >= 0) & (conf <= 1)).all()


def test_kmeans_sweep_on_identical_points_makes_one_cluster() -> None:
    X = np.ones((12, 3))
    sweep = KMeansSweep(random_state=0).fit(X)
    labels, conf = sweep.predict_confidence(X)
    assert sweep.n_clusters_ == 1
    assert (labels == 0).all() and (conf == 1).all()


def test_inductive_clusterer_with_only_noise_predicts_noise(blobs) -> None:
    X, _ = blobs
    clf = InductiveClusterer(DBSCAN(eps=1e-9, min_samples=5)).fit(X.to_numpy())
    assert clf.n_clusters_ == 0 and clf.produces_noise_
    labels, conf = clf.predict_confidence(X.to_numpy()[:5])
    assert (labels == NOISE).all() and (conf == 0).all()


def test_inductive_clusterer_confidence_falls_with_distance(blobs) -> None:
    X, _ = blobs
    data = X.to_numpy()
    clf = InductiveClusterer(AgglomerativeClustering(n_clusters=N_BLOBS)).fit(data)
    centre = data[clf.labels_ == 0].mean(axis=0)
    direction = np.eye(data.shape[1])[0]
    steps = np.array([centre + d * direction for d in (0, 5, 10, 20, 40)])
    _, conf = clf.predict_confidence(steps)
    assert conf[0] > 0.9
    assert (np.diff(conf) <= 1e-12).all()
    assert conf[-1] < 0.05


def test_cluster_metrics_and_sampled_silhouette_ignore_noise() -> None:
    Z, labels = make_blobs(n_samples=120, centers=3, n_features=2, random_state=1)
    noisy = labels.copy()
    noisy[:12] = NOISE
    metrics = cluster_metrics(Z, noisy, silhouette_size=1000, random_state=0)
    assert metrics["n_clusters"] == 3
    assert metrics["noise_share"] == pytest.approx(0.1)
    assert metrics["silhouette"] == pytest.approx(sampled_silhouette(Z[12:], labels[12:], 1000, 0))
    assert np.isfinite(metrics["davies_bouldin"]) and metrics["calinski_harabasz"] > 0
    # One cluster: silhouette is undefined, not an exception.
    assert np.isnan(sampled_silhouette(Z, np.zeros(len(Z), dtype=int), 1000, 0))
    single = cluster_metrics(Z, np.zeros(len(Z), dtype=int), 1000, 0)
    assert np.isnan(single["davies_bouldin"])
    # A sample smaller than the data still gives a silhouette close to the full one.
    assert sampled_silhouette(Z, labels, 60, 0) == pytest.approx(
        sampled_silhouette(Z, labels, 1000, 0), abs=0.1
    )


# --- model selection with the alerts' families ---------------------------------------------
def _candidate(silhouette: float, agreement: float, noise: float = 0.0) -> Candidate:
    return Candidate("kmeans", {}, KMeans(), silhouette=silhouette, family_agreement=agreement,
                     noise_share=noise)  # fmt: skip


def test_selection_prefers_clusters_that_keep_families_apart() -> None:
    lumps = _candidate(silhouette=0.70, agreement=0.50)  # two compact lumps, mixed faults
    families = _candidate(silhouette=0.62, agreement=0.95)
    assert max([lumps, families], key=selection_key) is families
    # Without families (features that name none) silhouette decides, then less noise.
    lumps.family_agreement = families.family_agreement = float("nan")
    assert max([families, lumps], key=selection_key) is lumps
    quiet = _candidate(silhouette=0.70, agreement=float("nan"), noise=0.0)
    noisy = _candidate(silhouette=0.70, agreement=float("nan"), noise=0.2)
    assert max([noisy, quiet], key=selection_key) is quiet


def test_family_agreement_is_judged_on_the_labels_the_model_hands_out() -> None:
    # Two tight blobs of two kinds of fault, and a sparse spray of a third kind that
    # DBSCAN leaves as noise. Kept as a label of its own, that noise would be a perfect
    # third family (NMI 1.0); every new alert gets a family, though, so the spray is
    # judged as the model will label it: split between the two blobs.
    rng = np.random.default_rng(0)
    blob_a = rng.normal(0.0, 0.05, (40, 2))
    blob_b = rng.normal(0.0, 0.05, (40, 2)) + np.array([5.0, 0.0])
    spray = np.column_stack([np.linspace(-3, 8, 12), np.full(12, 4.0)])
    Z = np.vstack([blob_a, blob_b, spray])
    families = np.repeat([1, 2, 3], [40, 40, 12])
    cand = Candidate("dbscan", {}, InductiveClusterer(DBSCAN(eps=0.3, min_samples=5)))
    evaluate_candidate(cand, Z, 1000, 0.5, 1.0, 0, families=families)
    labels = cand.estimator.labels_
    assert (labels[80:] == NOISE).all() and (labels[:80] != NOISE).all()
    assert normalized_mutual_info_score(families, labels) == pytest.approx(1.0)
    handed_out = cand.estimator.predict(Z)
    assert (handed_out != NOISE).all()
    assert cand.family_agreement == pytest.approx(family_agreement(families, handed_out))
    assert cand.family_agreement < 0.95


def test_family_agreement_prefers_tidy_clusters_to_broad_ones_that_merge_kinds() -> None:
    # Six kinds of fault, 24 alerts each. Three broad clusters of two kinds each, or each
    # kind split over four clusters: plain NMI prefers the broad ones (0.76 vs 0.72),
    # though every cluster there mixes two kinds of fault; a new alert of one of them
    # can only join a mixed cluster. Family agreement prefers the tidy split.
    families = np.repeat(np.arange(6), 24)
    broad = families // 2
    tidy = families * 4 + np.tile(np.arange(4), 36)
    assert normalized_mutual_info_score(families, broad) > normalized_mutual_info_score(
        families, tidy
    )
    assert family_agreement(families, tidy) > family_agreement(families, broad)
    assert family_agreement(families, families) == pytest.approx(1.0)
    assert family_agreement(None, tidy) == 0.0


def test_families_are_read_from_the_cause_columns_and_scored(blobs) -> None:
    X, y = blobs
    # Two families made of four blobs each; one more column says nothing.
    onehot = pd.DataFrame(
        {"a_cause_cpu": (y < 4).astype(float), "a_cause_disk": (y >= 4).astype(float)}
    )
    data = pd.concat([X, onehot, pd.Series(0.0, index=X.index, name="a_cause_queue")], axis=1)
    model = AlertClusterModel(algorithm="auto", k_max=10, random_state=0).fit(data)
    families = model._families(data.to_numpy())
    assert set(families) == {1, 2} and ((families == 1) == (y < 4)).all()
    table = model.candidates_
    assert table.loc[table["n_clusters"] >= 2, "family_agreement"].between(0, 1).all()
    # The chosen candidate is the best valid one by silhouette plus family agreement.
    valid = table[table["valid"]]
    best = valid.loc[(valid["silhouette"] + valid["family_agreement"]).idxmax()]
    assert model.selected_["family_agreement"] == best["family_agreement"]
    assert model.selected_["silhouette"] == best["silhouette"]
    # Features without family columns: no family score at all.
    plain = AlertClusterModel(algorithm="kmeans", k_max=10, random_state=0).fit(X)
    assert "family_agreement" not in plain.candidates_


def test_a_cluster_as_big_as_the_biggest_family_is_not_a_lump() -> None:
    rng = np.random.default_rng(0)
    # 70% of the history is one kind of fault: one compact blob, its own family.
    Z = np.vstack([rng.normal(0, 0.1, (700, 2)), rng.normal(5, 0.1, (300, 2))])
    families = np.r_[np.zeros(700, int), np.ones(300, int)]
    cand = _candidate(float("nan"), float("nan"))
    cand.estimator = KMeans(n_clusters=2, n_init=2, random_state=0)
    evaluate_candidate(cand, Z, 500, 0.3, 0.6, 0, families=families)
    assert cand.valid and cand.family_agreement == pytest.approx(1.0)
    blind = _candidate(float("nan"), float("nan"))
    blind.estimator = KMeans(n_clusters=2, n_init=2, random_state=0)
    evaluate_candidate(blind, Z, 500, 0.3, 0.6, 0)
    assert not blind.valid and "largest cluster 70% > 60%" in blind.why_not


def test_neighbour_search_on_a_sample_of_each_cluster_labels_like_all_points() -> None:
    X, _ = make_blobs(n_samples=6_000, centers=[[0, 0], [6, 0], [0, 6], [6, 6]],
                      cluster_std=1.0, random_state=1)  # fmt: skip
    # Uneven clusters: the smallest must keep enough reference points to vote.
    X = np.vstack([X[:5_000], X[5_000:5_040] + 20.0])
    full = InductiveClusterer(KMeans(n_clusters=5, n_init=2, random_state=0), max_reference=None)
    sampled = InductiveClusterer(KMeans(n_clusters=5, n_init=2, random_state=0), max_reference=500)
    full.fit(X)
    sampled.fit(X)
    kept = np.bincount(sampled.train_labels_, minlength=5)
    assert len(sampled.train_labels_) <= 510 and (kept >= 10).all()
    assert len(full.train_labels_) == len(X)
    # New alerts resemble the history: training points moved a little.
    rng = np.random.default_rng(2)
    queries = X[rng.choice(len(X), 3_000)] + rng.normal(0, 0.3, (3_000, 2))
    assert (sampled.predict(queries) == full.predict(queries)).mean() > 0.98
    again = clone(sampled).fit(X)
    assert (again.train_labels_ == sampled.train_labels_).all()
