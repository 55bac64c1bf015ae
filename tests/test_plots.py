"""Charts: every figure has a title and labelled axes, renders to PNG, copes with empty
input and samples big input; retrain logs its charts, and a chart that fails never fails
the retrain."""

from __future__ import annotations

import logging
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from alertclf import plots
from alertclf.flows import retrain
from alertclf.settings import Settings
from alertclf.simulate import SimulationConfig, simulate, write_simulation

# Each test decides its own MLflow store; nothing leaks through the environment.
pytestmark = pytest.mark.usefixtures("isolated_tracking")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = pd.Timestamp("2026-01-05 10:00:00", tz="UTC")


def blobs(n: int = 600, k: int = 4, dims: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    centres = rng.normal(0, 6, (k, dims))
    return centres[labels] + rng.normal(0, 1, (n, dims)), labels


def incidents(n: int = 12) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "group_id": [f"G{i:03d}" for i in range(n)],
            "first_seen": [T0 + pd.Timedelta(minutes=7 * i) for i in range(n)],
            "last_seen": [T0 + pd.Timedelta(minutes=7 * i + 3 * (i % 4)) for i in range(n)],
            "n_alerts": [10 + i for i in range(n)],
            "n_unique": [2 + i % 3 for i in range(n)],
            "importance_score": [90.0 - 5 * i for i in range(n)],
            "rank": list(range(1, n + 1)),
            "name": [f"Datastore health · db-{i} (+{i % 3} services)" for i in range(n)],
        }
    )


def clusters(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cluster_rank": list(range(1, n + 1)),
            "cluster_id": list(range(n)),
            "cluster_name": [f"CPU saturation · svc-{i}" for i in range(n)],
            "importance_score": [70.0 - 6 * i for i in range(n)],
            "n_alerts": [100 - 10 * i for i in range(n)],
        }
    )


def assert_readable(fig) -> None:
    ax = fig.axes[0]
    assert ax.get_title().strip(), "figure without a title"
    assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), "axis without a label"
    assert plots.figure_png(fig).startswith(PNG_MAGIC)


def all_figures() -> dict:
    Z, labels = blobs()
    names = {0: "CPU saturation · api", 1: "Latency · web"}
    return {
        "cluster_sizes": plots.cluster_sizes(labels, names),
        "projection_2d": plots.projection_2d(Z, labels, names),
        "silhouette_per_cluster": plots.silhouette_per_cluster(Z, labels, names),
        "promotion_comparison": plots.promotion_comparison(0.31, 0.28, 0.05, "2", "1"),
        "incident_timeline": plots.incident_timeline(incidents()),
        "top_incidents": plots.top_incidents(incidents()),
        "top_clusters": plots.top_clusters(clusters()),
    }


def test_every_figure_has_a_title_axis_labels_and_renders():
    for fig in all_figures().values():
        assert_readable(fig)


def test_save_figures_writes_one_png_per_figure(tmp_path):
    paths = plots.save_figures(all_figures(), tmp_path / "charts")
    assert sorted(paths) == sorted(all_figures())
    for name, path in paths.items():
        assert path == tmp_path / "charts" / f"{name}.png"
        assert path.read_bytes().startswith(PNG_MAGIC)
        assert path.stat().st_size > 5_000


def test_units_and_scales_are_named():
    Z, labels = blobs()
    assert "variance" in plots.projection_2d(Z, labels).axes[0].get_xlabel()
    assert "count" in plots.cluster_sizes(labels).axes[0].get_xlabel()
    assert "0–100" in plots.top_incidents(incidents()).axes[0].get_xlabel()
    assert "UTC" in plots.incident_timeline(incidents()).axes[0].get_xlabel()
    promotion = plots.promotion_comparison(0.31, 0.28, 0.05, "2", "1", outcome="promoted")
    assert "outcome: promoted" in promotion.axes[0].get_title()
    texts = " ".join(t.get_text() for t in promotion.axes[0].texts)
    assert "+5%" in texts and "0.2940" in texts  # the bar: production × 1.05


def test_empty_inputs_give_a_figure_that_says_so():
    empty = incidents().iloc[0:0]
    for fig in (
        plots.cluster_sizes([]),
        plots.projection_2d(np.empty((0, 3)), []),
        plots.silhouette_per_cluster(np.zeros((5, 2)), [0, 0, 0, 0, 0]),
        plots.incident_timeline(empty),
        plots.top_incidents(empty),
        plots.top_clusters(clusters().iloc[0:0]),
        plots.promotion_comparison(float("nan"), None, 0.05),
    ):
        assert_readable(fig)
    texts = [t.get_text() for t in plots.incident_timeline(empty).axes[0].texts]
    assert any("no incidents" in t for t in texts)


def test_big_inputs_are_sampled():
    Z, labels = blobs(n=12_000)
    fig = plots.projection_2d(Z, labels)
    drawn = sum(len(c.get_offsets()) for c in fig.axes[0].collections)
    assert drawn == plots.MAX_POINTS
    assert "5,000 of 12,000" in fig.axes[0].get_title()
    assert "5,000" in plots.silhouette_per_cluster(Z, labels).axes[0].get_title()


def test_timeline_labels_the_top_groups_and_accepts_alerts():
    fig = plots.incident_timeline(incidents(30), top_n=5)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert len(labels) == 5 and any("#1 Datastore health · db-0" in t for t in labels)
    assert len(fig.axes[0].patches) == 30  # one bar per group
    alerts = pd.DataFrame(
        {
            "timestamp": [T0, T0 + pd.Timedelta(minutes=5), T0 + pd.Timedelta(minutes=9)],
            "group_id": ["G1", "G1", "G2"],
            "incident_rank": [2, 2, 1],
        }
    )
    from_alerts = plots.incident_timeline(alerts)
    assert len(from_alerts.axes[0].patches) == 2
    # As read back from a results CSV: timestamps are text.
    as_csv = incidents().astype({"first_seen": str, "last_seen": str})
    assert len(plots.incident_timeline(as_csv).axes[0].patches) == len(as_csv)


def test_classify_figures_skip_a_failing_chart(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no ink")

    monkeypatch.setattr(plots, "top_clusters", broken)
    with caplog.at_level(logging.WARNING, logger="alertclf.plots"):
        figures = plots.classify_figures(incidents(), clusters())
    assert sorted(figures) == ["incident_timeline", "top_incidents"]
    assert "top_clusters skipped" in caplog.text


def test_importing_plots_selects_no_backend():
    code = (
        "import sys, alertclf.plots; "
        "print('matplotlib.pyplot' in sys.modules, 'matplotlib.backends' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- retrain against a real store ------------------------------------------------------
@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    sim = simulate(SimulationConfig(seed=3, days=1.0, scenario="mixed"))
    return write_simulation(sim, tmp_path_factory.mktemp("scenario"))


FAST = Settings(algorithm="kmeans", kmeans_k_min=4, kmeans_k_max=8)


def plot_artifacts(run_id: str) -> set[str]:
    return {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "plots")}


def test_retrain_logs_its_plots(scenario, tmp_path):
    outcome = retrain(FAST, scenario["alerts"], scenario["graph"], tmp_path / "models")
    assert plot_artifacts(outcome.mlflow_run_id) == {
        "plots/cluster_sizes.png",
        "plots/projection_2d.png",
        "plots/silhouette_per_cluster.png",
        "plots/promotion_comparison.png",
    }


def test_a_failing_plot_does_not_fail_retrain(scenario, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no ink")

    monkeypatch.setattr(plots, "projection_2d", broken)
    monkeypatch.setattr(plots, "promotion_comparison", broken)
    with caplog.at_level(logging.WARNING, logger="alertclf.flows"):
        outcome = retrain(FAST, scenario["alerts"], scenario["graph"], tmp_path / "models")
    assert outcome.version == "1" and outcome.promoted
    assert plot_artifacts(outcome.mlflow_run_id) == set()
    assert "retrain plots skipped: RuntimeError: no ink" in caplog.text
    assert "promotion plots skipped" in caplog.text
