"""Charts for reviewers: data in, a matplotlib ``Figure`` out. No I/O but the PNG helpers.

Retrain charts (what a model learned):

* :func:`cluster_sizes` -- training alerts per cluster, named.
* :func:`projection_2d` -- the alerts in the model's space (its PCA output), first two
  principal components, coloured by cluster.
* :func:`silhouette_per_cluster` -- how well each cluster is separated.
* :func:`promotion_comparison` -- candidate vs production on the promotion metric, with
  the bar the candidate had to clear.

Classify charts (what is happening now): :func:`incident_timeline`,
:func:`top_clusters`, :func:`top_incidents`.

Figures are built with :class:`matplotlib.figure.Figure` and an Agg canvas attached
inside each function, never through ``pyplot``: no global figure registry (so nothing
leaks in a long-running scheduler), no GUI backend, and importing this module selects
no backend at all. Big inputs are sampled (:data:`MAX_POINTS`), and the title says so.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

MAX_POINTS = 5_000  # points drawn or scored per chart: enough to see, cheap to compute
NOISE = -1
NOISE_LABEL = "unclustered (noise)"

RETRAIN_CHARTS: tuple[str, ...] = ("cluster_sizes", "projection_2d", "silhouette_per_cluster")
CLASSIFY_CHARTS: tuple[str, ...] = ("incident_timeline", "top_incidents", "top_clusters")


# --- figure plumbing -----------------------------------------------------------------
def new_figure(width: float = 9.0, height: float = 5.0) -> Figure:
    """A figure with an Agg canvas: renders to PNG anywhere, touches no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (no software/URL metadata, so reports stay byte-clean)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def save_figures(figures: Mapping[str, Figure], folder: str | Path) -> dict[str, Path]:
    """Write each figure as ``folder/<name>.png``; return the paths by name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fig in figures.items():
        path = folder / f"{name}.png"
        path.write_bytes(figure_png(fig))
        paths[name] = path
    return paths


def _message(fig: Figure, ax: Any, text: str) -> None:
    """An empty chart still says why it is empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _short(text: Any, width: int = 48) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _cluster_label(cluster: int, names: Mapping[int, str] | None) -> str:
    if cluster == NOISE:
        return NOISE_LABEL
    name = (names or {}).get(int(cluster))
    return f"{cluster}: {_short(name, 40)}" if name else f"cluster {cluster}"


def _sample(n: int, size: int, random_state: int) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(random_state).choice(n, size, replace=False))


def _cluster_colours(labels: np.ndarray) -> dict[int, Any]:
    """One stable colour per cluster (tab20, cycled); noise grey."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    clusters = [c for c in sorted(set(labels.tolist())) if c != NOISE]
    colours: dict[int, Any] = {c: cmap(i % 20) for i, c in enumerate(clusters)}
    colours[NOISE] = (0.6, 0.6, 0.6, 0.6)
    return colours


# --- retrain -------------------------------------------------------------------------
def cluster_sizes(
    labels: Any, names: Mapping[int, str] | None = None, title: str | None = None
) -> Figure:
    """Alerts per cluster, largest first, one horizontal bar each."""
    labels = np.asarray(labels, dtype=np.int64)
    fig = new_figure(9, max(3.0, 0.32 * len(np.unique(labels)) + 1.5))
    ax = fig.add_subplot()
    ax.set_title(title or f"Cluster sizes ({len(labels):,} training alerts)")
    ax.set_xlabel("alerts (count)")
    ax.set_ylabel("cluster")
    if len(labels) == 0:
        _message(fig, ax, "no alerts")
        return fig
    counts = pd.Series(labels).value_counts().sort_values()
    colours = _cluster_colours(labels)
    ax.barh(
        [_cluster_label(c, names) for c in counts.index],
        counts.to_numpy(),
        color=[colours[c] for c in counts.index],
    )
    for y, value in enumerate(counts.to_numpy()):
        ax.text(value, y, f" {value:,} ({value / len(labels):.0%})", va="center", fontsize=8)
    ax.margins(x=0.15)
    return fig


def projection_2d(
    Z: Any,
    labels: Any,
    names: Mapping[int, str] | None = None,
    max_points: int = MAX_POINTS,
    random_state: int = 42,
) -> Figure:
    """The alerts on the first two principal components of the model's space, coloured
    by cluster (at most ``max_points`` points, sampled)."""
    from sklearn.decomposition import PCA

    Z = np.asarray(Z, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    fig = new_figure(9, 6)
    ax = fig.add_subplot()
    idx = _sample(len(labels), max_points, random_state)
    shown = f"{len(idx):,} of {len(labels):,} alerts" if len(idx) < len(labels) else "all alerts"
    ax.set_title(f"Alerts in the model space, coloured by cluster ({shown})")
    if len(idx) < 3 or Z.ndim != 2 or Z.shape[1] == 0:
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        _message(fig, ax, "too few alerts to project")
        return fig
    Zs, ls = Z[idx], labels[idx]
    n_components = min(2, Zs.shape[1], len(Zs))
    pca = PCA(n_components=n_components, random_state=random_state).fit(Zs)
    xy = pca.transform(Zs)
    if n_components == 1:
        xy = np.column_stack([xy[:, 0], np.zeros(len(xy))])
    share = [*pca.explained_variance_ratio_, 0.0]
    ax.set_xlabel(f"PC 1 ({share[0]:.0%} of variance, model units)")
    ax.set_ylabel(f"PC 2 ({share[1]:.0%} of variance, model units)")
    colours = _cluster_colours(ls)
    clusters = sorted(set(ls.tolist()))
    for cluster in clusters:
        mask = ls == cluster
        ax.scatter(
            xy[mask, 0],
            xy[mask, 1],
            s=6 if cluster != NOISE else 4,
            color=colours[cluster],
            label=_cluster_label(cluster, names),
            alpha=0.8,
            linewidths=0,
        )
    if len(clusters) <= 24:
        ax.legend(
            loc="center left",
            bbox_to_anchor=(1.01, 0.5),
            fontsize=7,
            markerscale=2,
            title="cluster",
            frameon=False,
        )
    return fig


def silhouette_per_cluster(
    Z: Any,
    labels: Any,
    names: Mapping[int, str] | None = None,
    max_points: int = MAX_POINTS,
    random_state: int = 42,
) -> Figure:
    """Mean silhouette per cluster (noise left out) on a sample, with the overall mean."""
    from sklearn.metrics import silhouette_samples

    Z = np.asarray(Z, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    keep = labels != NOISE
    Zc, lc = Z[keep], labels[keep]
    idx = _sample(len(lc), max_points, random_state)
    Zc, lc = Zc[idx], lc[idx]
    n_clusters = len(np.unique(lc))
    fig = new_figure(9, max(3.0, 0.32 * n_clusters + 1.5))
    ax = fig.add_subplot()
    ax.set_title(f"Silhouette per cluster ({len(lc):,} clustered alerts sampled)")
    ax.set_xlabel("mean silhouette coefficient (−1 worst … 1 best, unitless)")
    ax.set_ylabel("cluster")
    if not 2 <= n_clusters <= len(lc) - 1:
        _message(fig, ax, "silhouette needs at least two clusters")
        return fig
    values = silhouette_samples(Zc, lc)
    means = pd.Series(values).groupby(lc).mean().sort_values()
    colours = _cluster_colours(lc)
    ax.barh(
        [_cluster_label(c, names) for c in means.index],
        means.to_numpy(),
        color=[colours[c] for c in means.index],
    )
    overall = float(values.mean())
    ax.axvline(overall, color="black", linestyle="--", linewidth=1)
    ax.text(overall, len(means) - 0.5, f" overall {overall:.3f}", fontsize=8, va="bottom")
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlim(min(-0.1, float(means.min()) - 0.05), 1.0)
    return fig


def promotion_comparison(
    candidate_score: float | None,
    production_score: float | None,
    threshold: float,
    candidate_version: str | None = None,
    production_version: str | None = None,
    metric: str = "held-out silhouette",
    outcome: str | None = None,
) -> Figure:
    """Candidate vs production on the promotion metric, with the bar to clear
    (production × (1 + threshold)) when there is a production model, and the decision."""
    fig = new_figure(7, 4.5)
    ax = fig.add_subplot()
    labels, values, colours = [], [], []
    cand = _finite(candidate_score)
    prod = _finite(production_score)
    labels.append(f"candidate v{candidate_version}" if candidate_version else "candidate")
    values.append(cand if cand is not None else 0.0)
    colours.append("#1f77b4")
    if production_version is not None or prod is not None:
        labels.append(f"production v{production_version}" if production_version else "production")
        values.append(prod if prod is not None else 0.0)
        colours.append("#7f7f7f")
    bars = ax.bar(labels, values, color=colours, width=0.5)
    for bar, value, raw in zip(bars, values, (cand, prod), strict=False):
        # Inside the bar, so the value never collides with the promotion-bar label.
        ax.annotate(
            "n/a" if raw is None else f"{value:.4f}",
            (bar.get_x() + bar.get_width() / 2, value / 2),
            ha="center",
            va="center",
            fontsize=11,
            color="white" if raw is not None and value != 0 else "black",
            fontweight="bold",
        )
    if prod is not None:
        bar_to_clear = prod + threshold * max(abs(prod), 1e-9)
        ax.axhline(bar_to_clear, color="#d62728", linestyle="--", linewidth=1.2)
        ax.annotate(
            f"promotion bar: production +{threshold:.0%} = {bar_to_clear:.4f}",
            (0.99, bar_to_clear),
            xycoords=("axes fraction", "data"),
            xytext=(0, 3),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=8,
            color="#d62728",
        )
    ax.axhline(0, color="black", linewidth=0.6)
    title = f"Promotion decision: candidate vs production ({metric})"
    if outcome:
        title += f"\noutcome: {outcome}"
    ax.set_title(title)
    ax.set_ylabel(f"{metric} (−1 … 1, higher is better)")
    ax.set_xlabel("model version")
    ax.margins(y=0.2)
    return fig


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


# --- classify --------------------------------------------------------------------------
def _utc(values: Any) -> pd.Series:
    return pd.to_datetime(pd.Series(values), utc=True, errors="coerce", format="mixed")


def incident_spans(frame: pd.DataFrame) -> pd.DataFrame:
    """``group_id, first_seen, last_seen, rank, name, n_alerts`` from incidents (as
    classify writes them) or from alerts (``timestamp``, ``group_id``, ``incident_rank``)."""
    if {"first_seen", "last_seen"} <= set(frame.columns):
        spans = pd.DataFrame(
            {
                "group_id": frame["group_id"].astype(str).to_numpy(),
                "first_seen": _utc(frame["first_seen"]).to_numpy(),
                "last_seen": _utc(frame["last_seen"]).to_numpy(),
                "rank": pd.to_numeric(frame.get("rank", pd.Series(range(1, len(frame) + 1))))
                .to_numpy()
                .astype(float),
                "name": frame.get("name", frame["group_id"]).astype(str).to_numpy(),
                "n_alerts": pd.to_numeric(
                    frame["n_alerts"] if "n_alerts" in frame else pd.Series(1, index=frame.index)
                ).to_numpy(),
            }
        )
        return spans.dropna(subset=["first_seen", "last_seen"])
    if len(frame) == 0:
        return pd.DataFrame(columns=["group_id", "first_seen", "last_seen", "rank", "name"])
    alerts = frame.assign(_ts=_utc(frame["timestamp"]).to_numpy())
    grouped = alerts.groupby(alerts["group_id"].astype(str), sort=True)
    spans = pd.DataFrame(
        {
            "first_seen": grouped["_ts"].min(),
            "last_seen": grouped["_ts"].max(),
            "n_alerts": grouped.size(),
        }
    )
    if "incident_rank" in alerts:
        spans["rank"] = grouped["incident_rank"].min().astype(float)
    else:
        spans["rank"] = spans["n_alerts"].rank(ascending=False, method="first")
    spans["name"] = spans.index
    return spans.reset_index(names="group_id")


def incident_timeline(incidents: pd.DataFrame, top_n: int = 10, max_groups: int = 150) -> Figure:
    """One horizontal bar per incident group from its first to its last alert, coloured by
    rank; the ``top_n`` ranked groups are labelled by name. At most ``max_groups`` (the
    best ranked) are drawn."""
    from matplotlib import colormaps
    from matplotlib import dates as mdates
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    spans = incident_spans(incidents)
    total = len(spans)
    spans = spans.sort_values("rank").head(max_groups).sort_values(["first_seen", "rank"])
    fig = new_figure(11, max(3.5, min(10.0, 0.06 * len(spans) + 3)))
    ax = fig.add_subplot()
    drawn = f"top {len(spans)} of {total} groups" if len(spans) < total else f"{total} groups"
    ax.set_title(f"Incident timeline ({drawn}; colour = rank, 1 is most important)")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("incident groups (by start time)")
    if len(spans) == 0:
        _message(fig, ax, "no incidents in this batch")
        return fig
    start = mdates.date2num(spans["first_seen"].dt.tz_localize(None).to_numpy())
    end = mdates.date2num(spans["last_seen"].dt.tz_localize(None).to_numpy())
    span = float(end.max() - start.min()) or 1 / 24
    # A one-alert group has no duration; give it a sliver so it shows.
    width = np.maximum(end - start, span / 400)
    ranks = spans["rank"].to_numpy(dtype=float)
    norm = Normalize(vmin=1, vmax=max(float(np.nanmax(ranks)), 2.0))
    cmap = colormaps["plasma"]
    y = np.arange(len(spans))
    ax.barh(y, width, left=start, height=0.8, color=cmap(norm(ranks)))
    for i, (rank, name) in enumerate(zip(ranks, spans["name"], strict=True)):
        if rank <= top_n:
            ax.text(
                start[i] + width[i],
                y[i],
                f"  #{int(rank)} {_short(name, 60)}",
                va="center",
                fontsize=7,
            )
    ax.set_yticks([])
    ax.set_ylim(-1, len(spans))
    ax.set_xlim(start.min() - span * 0.01, end.max() + span * 0.3)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01)
    bar.set_label("incident rank")
    bar.ax.invert_yaxis()
    return fig


def top_incidents(incidents: pd.DataFrame, n: int = 10) -> Figure:
    """The ``n`` best ranked incidents by importance score, with their alert counts."""
    table = incidents.copy()
    if len(table):
        table["rank"] = pd.to_numeric(table["rank"])
        table = table.sort_values("rank").head(n)
    fig = new_figure(10, max(3.0, 0.42 * len(table) + 1.5))
    ax = fig.add_subplot()
    ax.set_title(f"Top {len(table)} incidents by importance")
    ax.set_xlabel("importance score (0–100)")
    ax.set_ylabel("incident (rank, name)")
    if len(table) == 0:
        _message(fig, ax, "no incidents in this batch")
        return fig
    labels = [
        f"#{int(r)} {_short(name, 46)}"
        for r, name in zip(table["rank"], table["name"], strict=True)
    ]
    scores = pd.to_numeric(table["importance_score"]).to_numpy()
    ax.barh(labels[::-1], scores[::-1], color="#d62728")
    counts = table.get("n_alerts", pd.Series([None] * len(table)))
    unique = table.get("n_unique", pd.Series([None] * len(table)))
    for y, (score, total, dedup) in enumerate(
        zip(scores[::-1], counts.to_numpy()[::-1], unique.to_numpy()[::-1], strict=True)
    ):
        text = f" {score:.1f}"
        if total is not None and pd.notna(total):
            text += f"  ({int(total)} alerts" + (
                f", {int(dedup)} unique)" if dedup is not None and pd.notna(dedup) else ")"
            )
        ax.text(score, y, text, va="center", fontsize=8)
    ax.set_xlim(0, 118)
    return fig


def top_clusters(clusters: pd.DataFrame, n: int = 10) -> Figure:
    """The ``n`` most important alert families in this batch, with their alert counts."""
    table = clusters.copy()
    if len(table):
        table["cluster_rank"] = pd.to_numeric(table["cluster_rank"])
        table = table.sort_values("cluster_rank").head(n)
    fig = new_figure(10, max(3.0, 0.42 * len(table) + 1.5))
    ax = fig.add_subplot()
    ax.set_title(f"Top {len(table)} alert clusters (families) by importance")
    ax.set_xlabel("importance score (0–100)")
    ax.set_ylabel("cluster (rank, name)")
    if len(table) == 0:
        _message(fig, ax, "no clusters in this batch")
        return fig
    labels = [
        f"#{int(r)} {_short(name, 46)}"
        for r, name in zip(table["cluster_rank"], table["cluster_name"], strict=True)
    ]
    scores = pd.to_numeric(table["importance_score"]).to_numpy()
    ax.barh(labels[::-1], scores[::-1], color="#1f77b4")
    for y, (score, count) in enumerate(
        zip(scores[::-1], pd.to_numeric(table["n_alerts"]).to_numpy()[::-1], strict=True)
    ):
        ax.text(score, y, f" {score:.1f}  ({int(count)} alerts)", va="center", fontsize=8)
    ax.set_xlim(0, 118)
    return fig


# --- sets of charts ----------------------------------------------------------------------
def model_space(
    model: Any, features: pd.DataFrame, max_points: int = MAX_POINTS, random_state: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """A sample of the training alerts in the model's space and their clusters:
    ``model.transform`` (scaler -> weights -> PCA) and ``model.predict``."""
    idx = _sample(len(features), max_points, random_state)
    sample = features.iloc[idx]
    return np.asarray(model.transform(sample)), np.asarray(model.predict(sample))


def retrain_figures(
    Z: np.ndarray,
    labels: np.ndarray,
    names: Mapping[int, str] | None = None,
    random_state: int = 42,
    n_total: int | None = None,
) -> dict[str, Figure]:
    """The retrain charts (see :data:`RETRAIN_CHARTS`) from the model space sample
    (``n_total``: how many training alerts it was drawn from)."""
    shown = f"{len(labels):,} training alerts"
    if n_total is not None and n_total > len(labels):
        shown = f"a sample of {len(labels):,} of {n_total:,} training alerts"
    return {
        "cluster_sizes": cluster_sizes(labels, names, title=f"Cluster sizes ({shown})"),
        "projection_2d": projection_2d(Z, labels, names, random_state=random_state),
        "silhouette_per_cluster": silhouette_per_cluster(
            Z, labels, names, random_state=random_state
        ),
    }


def classify_chart_pngs(
    incidents: pd.DataFrame, clusters: pd.DataFrame, names: Collection[str] | None = None
) -> dict[str, bytes]:
    """The classify charts (those in ``names``, default all) as PNG bytes by name; a
    chart that cannot be built or rendered is left out with a warning."""
    pngs: dict[str, bytes] = {}
    for name, fig in classify_figures(incidents, clusters, names).items():
        try:
            pngs[name] = figure_png(fig)
        except Exception as err:  # a chart that cannot render is left out, never fatal
            logger.warning("chart %s skipped: %s: %s", name, type(err).__name__, err)
    return pngs


def warm_up() -> None:
    """Import matplotlib and render one small laid-out figure with text: its fonts and
    layout machinery load now, not when the first real chart is drawn."""
    fig = new_figure(2.0, 1.0)
    ax = fig.add_subplot()
    ax.set_title("warm-up")
    ax.barh([0, 1], [1.0, 2.0])
    figure_png(fig)


def classify_figures(
    incidents: pd.DataFrame, clusters: pd.DataFrame, names: Collection[str] | None = None
) -> dict[str, Figure]:
    """The classify charts (see :data:`CLASSIFY_CHARTS`; those in ``names``, default
    all); a chart that fails is left out with a warning -- a picture is never worth a
    failed run."""
    builders = {
        "incident_timeline": lambda: incident_timeline(incidents),
        "top_incidents": lambda: top_incidents(incidents),
        "top_clusters": lambda: top_clusters(clusters),
    }
    figures = {}
    for name, build in builders.items():
        if names is not None and name not in names:
            continue
        try:
            figures[name] = build()
        except Exception as err:  # any plotting error: skip this chart, keep the run
            logger.warning("chart %s skipped: %s: %s", name, type(err).__name__, err)
    return figures
