"""``report.html``: one classify run for a human, in one self-contained file.

The file opens from the results folder, from an MLflow artifact download or from an
e-mail attachment alike: charts are embedded as base64 ``data:`` URIs, the CSS is inline,
and there is no external URL at all (no fonts, scripts or images from the network --
on-call laptops and air-gapped sites must render it the same). Links to the CSV files
are relative, to the same folder.

Alert names, services and descriptions come from monitoring systems anyone can write
into, so every piece of data is passed through :func:`html.escape` before it reaches the
page: an alert called ``<script>...`` shows as text.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
CHARTS_DIR = "charts"
INCIDENTS_CSV = "incident_groups.csv"
CLUSTERS_CSV = "ranked_clusters.csv"

CHART_TITLES = {
    "incident_timeline": "Incident timeline",
    "top_incidents": "Top incidents",
    "top_clusters": "Top alert clusters",
}
CSV_DESCRIPTIONS = {
    "incident_groups.csv": "incidents, ranked, with root cause and reasons",
    "ranked_clusters.csv": "alert clusters (families) by importance",
    "alert_consolidation_final.csv": "every accepted alert with its group, cluster and rank",
    "alerts_by_cluster_detailed.csv": "alerts sorted by cluster rank, then time",
    "deduplicated_alerts.csv": "alerts that are not duplicates",
    "cluster_summary.csv": "per cluster: size, top alert names, services, severity mix",
    "mapping_statistics.csv": "how alerts were mapped onto the service graph",
    "rejected_alerts.csv": "rows refused at ingestion, with the reason",
}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d1d1f;
 background:#fafafa;line-height:1.4}
h1{font-size:1.5em;margin:0 0 4px}
h2{font-size:1.15em;margin:28px 0 8px;border-bottom:1px solid #ddd}
.sub{color:#666;margin-bottom:16px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #e2e2e2;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:1.4em}.card span{color:#666;font-size:.85em}
table{border-collapse:collapse;background:#fff;font-size:.88em;width:100%}
th,td{border:1px solid #e2e2e2;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f3;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.top td{background:#fff4f4}
.sev-critical{color:#b00020;font-weight:600}.sev-high{color:#d35400;font-weight:600}
figure{background:#fff;border:1px solid #e2e2e2;border-radius:6px;margin:0 0 16px;padding:8px}
figure img{max-width:100%;height:auto;display:block}figcaption{color:#666;font-size:.85em}
.muted{color:#888}code{background:#f0f0f3;padding:0 3px;border-radius:3px}
"""


# --- rendering -------------------------------------------------------------------------
def _e(value: Any) -> str:
    """Any cell as escaped text (missing values as an empty string)."""
    if value is None:
        return ""
    if isinstance(value, float) and not np.isfinite(value):
        return ""
    if value is pd.NaT:
        return ""
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 0) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return _e(value)
    if not np.isfinite(number):
        return ""
    return f"{number:,.{digits}f}"


def _time(value: Any) -> str:
    stamp = pd.to_datetime(value, utc=True, errors="coerce")
    if stamp is None or pd.isna(stamp):
        return _e(value)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def _png(chart: bytes | str | Path) -> bytes:
    return chart if isinstance(chart, bytes) else Path(chart).read_bytes()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _frames(tables: Any) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Incidents, clusters and the CSV names from a ``{file name: frame}`` mapping (as
    the results folder holds them) or from a :class:`alertclf.pipeline.BatchResult`."""
    if isinstance(tables, Mapping):
        incidents = tables.get(INCIDENTS_CSV, pd.DataFrame())
        clusters = tables.get(CLUSTERS_CSV, pd.DataFrame())
        names = [str(n) for n in tables if str(n).endswith(".csv")]
        return incidents, clusters, names
    return tables.incidents, tables.clusters, [INCIDENTS_CSV, CLUSTERS_CSV]


def _summary(metadata: Mapping[str, Any], incidents: pd.DataFrame, clusters: pd.DataFrame) -> str:
    cards = [
        ("rows read", metadata.get("rows_read")),
        ("accepted", metadata.get("rows_accepted")),
        ("rejected", metadata.get("rows_rejected")),
        ("new this run", metadata.get("rows_new")),
        ("incidents", len(incidents)),
        ("clusters seen", len(clusters)),
    ]
    if metadata.get("rows_rejected_late"):  # alerts that missed their batch: say so
        cards.insert(3, ("rejected as late", metadata["rows_rejected_late"]))
    items = "".join(
        f'<div class="card"><b>{_num(v) if v is not None else "–"}</b><span>{_e(k)}</span></div>'
        for k, v in cards
    )
    return f'<div class="cards">{items}</div>'


def _model_line(metadata: Mapping[str, Any]) -> str:
    name = metadata.get("model_name") or "model"
    version = metadata.get("model_version")
    alias = metadata.get("model_alias")
    text = f"{_e(name)} v{_e(version)}" if version is not None else _e(name)
    if alias:
        text += f" (@{_e(alias)})"
    if metadata.get("bootstrapped_model"):
        text += " — bootstrapped on this batch"
    return text


def _incident_rows(incidents: pd.DataFrame, top_n: int) -> str:
    if len(incidents) == 0:
        return '<p class="muted">No incidents in this batch.</p>'
    table = incidents.copy()
    table["rank"] = pd.to_numeric(table["rank"], errors="coerce")
    table = table.sort_values("rank").head(top_n)
    head = (
        "<tr><th>rank</th><th>score</th><th>incident</th><th>root cause (confidence)</th>"
        "<th>why this rank</th><th>alerts</th><th>unique</th><th>services</th>"
        "<th>max severity</th><th>first seen</th><th>last seen</th><th>top alerts</th></tr>"
    )
    rows = []
    for i, (_, row) in enumerate(table.iterrows()):
        severity = str(row.get("max_severity", ""))
        confidence = pd.to_numeric(row.get("root_cause_confidence"), errors="coerce")
        conf = f" ({confidence:.0%})" if pd.notna(confidence) else ""
        top_alerts = "<br>".join(_e(a) for a in str(row.get("top_alerts", "")).split("|") if a)
        rows.append(
            f'<tr class="{"top" if i == 0 else ""}" data-rank="{_num(row["rank"])}">'
            f'<td class="num">{_num(row["rank"])}</td>'
            f'<td class="num">{_num(row.get("importance_score"), 1)}</td>'
            f"<td>{_e(row.get('name'))}<br>"
            f"<span class='muted'>{_e(row.get('group_id'))}</span></td>"
            f"<td>{_e(row.get('root_cause_service'))}{conf}</td>"
            f"<td>{_e(row.get('reasons'))}</td>"
            f'<td class="num">{_num(row.get("n_alerts"))}</td>'
            f'<td class="num">{_num(row.get("n_unique"))}</td>'
            f'<td class="num">{_num(row.get("n_services"))}</td>'
            f'<td class="sev-{_e(severity)}">{_e(severity)}</td>'
            f"<td>{_time(row.get('first_seen'))}</td>"
            f"<td>{_time(row.get('last_seen'))}</td>"
            f"<td>{top_alerts}</td></tr>"
        )
    more = (
        f'<p class="muted">{len(table)} of {len(incidents)} incidents shown; all are in '
        f'<a href="{INCIDENTS_CSV}">{INCIDENTS_CSV}</a>.</p>'
    )
    return f'<table id="incidents">{head}{"".join(rows)}</table>{more}'


def _cluster_rows(clusters: pd.DataFrame, top_n: int) -> str:
    if len(clusters) == 0:
        return '<p class="muted">No clusters in this batch.</p>'
    table = clusters.copy()
    table["cluster_rank"] = pd.to_numeric(table["cluster_rank"], errors="coerce")
    table = table.sort_values("cluster_rank").head(top_n)
    head = (
        "<tr><th>rank</th><th>cluster</th><th>score</th><th>why this rank</th><th>alerts</th>"
        "<th>unique</th><th>services</th><th>top alert names</th><th>top services</th></tr>"
    )
    rows = [
        f'<tr><td class="num">{_num(row["cluster_rank"])}</td>'
        f"<td>{_e(row.get('cluster_name'))} "
        f"<span class='muted'>#{_e(row.get('cluster_id'))}</span></td>"
        f'<td class="num">{_num(row.get("importance_score"), 1)}</td>'
        f"<td>{_e(row.get('reasons'))}</td>"
        f'<td class="num">{_num(row.get("n_alerts"))}</td>'
        f'<td class="num">{_num(row.get("n_unique"))}</td>'
        f'<td class="num">{_num(row.get("n_services"))}</td>'
        f"<td>{_e(str(row.get('top_alert_names', '')).replace('|', ', '))}</td>"
        f"<td>{_e(str(row.get('top_services', '')).replace('|', ', '))}</td></tr>"
        for _, row in table.iterrows()
    ]
    return f'<table id="clusters">{head}{"".join(rows)}</table>'


def _chart_blocks(charts: Mapping[str, bytes | str | Path]) -> str:
    if not charts:
        return '<p class="muted">No charts (see the run log).</p>'
    blocks = []
    for name, chart in charts.items():
        title = CHART_TITLES.get(name, name.replace("_", " ").capitalize())
        blocks.append(
            f'<figure id="chart-{_e(name)}"><img src="{_data_uri(_png(chart))}" '
            f'alt="{_e(title)}"><figcaption>{_e(title)}</figcaption></figure>'
        )
    return "".join(blocks)


def _file_links(csv_files: list[str]) -> str:
    items = "".join(
        f'<li><a href="{html.escape(quote(name), quote=True)}">{_e(name)}</a>'
        f' <span class="muted">{_e(CSV_DESCRIPTIONS.get(name, ""))}</span></li>'
        for name in csv_files
    )
    return f'<ul id="files">{items}</ul>'


def render_report(
    tables: Any,
    metadata: Mapping[str, Any],
    charts: Mapping[str, bytes | str | Path],
    csv_files: list[str] | None = None,
    top_n: int = 20,
) -> str:
    """The HTML of one classify run.

    ``tables`` is ``{file name: frame}`` (as written to the results folder) or a
    ``BatchResult``; ``metadata`` is ``run_metadata.json``; ``charts`` maps a chart name
    to PNG bytes or a PNG file; ``csv_files`` are linked relatively (default: the CSV
    names in ``tables``).
    """
    incidents, clusters, names = _frames(tables)
    csv_files = list(csv_files if csv_files is not None else names)
    run_id = metadata.get("run_id", "")
    watermark = ""
    if metadata.get("watermark_after"):
        watermark = (
            f" · alerts up to {_time(metadata['watermark_after'])}"
            f" (previous run: {_time(metadata['watermark_before']) or 'none'})"
            if metadata.get("watermark_before")
            else f" · alerts up to {_time(metadata['watermark_after'])} (first run)"
        )
    mlflow_run = metadata.get("mlflow_run_id")
    timings = metadata.get("timings_seconds") or {}
    timing_text = ", ".join(
        f"{_e(k)} {_num(v, 2)} s" for k, v in timings.items() if k in ("read", "pipeline")
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>alertclf report {_e(run_id)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Alert incidents — run {_e(run_id)}</h1>"
        f'<div class="sub">model {_model_line(metadata)}{watermark}'
        + (f" · MLflow run <code>{_e(mlflow_run)}</code>" if mlflow_run else "")
        + (f" · {timing_text}" if timing_text else "")
        + "</div>"
        + _summary(metadata, incidents, clusters)
        + f"<h2>Top incidents</h2>{_incident_rows(incidents, top_n)}"
        + f'<h2>Charts</h2><div id="charts">{_chart_blocks(charts)}</div>'
        + f"<h2>Alert clusters</h2>{_cluster_rows(clusters, top_n)}"
        + f"<h2>Files</h2>{_file_links(csv_files)}"
        + f'<p class="muted">alertclf {_e(metadata.get("package_version", ""))} · '
        f"{_e(metadata.get('started_at', ''))}</p>"
        "</body></html>\n"
    )


# --- the files classify writes -------------------------------------------------------------
def chart_tables(tables: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The incident and cluster tables the classify charts are drawn from."""
    incidents, clusters, _ = _frames(tables)
    return incidents, clusters


def classify_report_files(
    tables: Mapping[str, pd.DataFrame],
    metadata: Mapping[str, Any],
    charts: Mapping[str, bytes] | None = None,
) -> dict[str, bytes]:
    """``charts/<name>.png`` and ``report.html`` for a results folder, as bytes (the
    results writer puts them in place atomically with the CSVs). ``charts``: PNGs already
    drawn (by :class:`alertclf.chartworker.ChartWorker`), else they are drawn here."""
    if charts is None:
        from alertclf import plots

        charts = plots.classify_chart_pngs(*chart_tables(tables))
    files = {f"{CHARTS_DIR}/{name}.png": png for name, png in charts.items()}
    files[REPORT_FILE] = render_report(tables, metadata, charts).encode("utf-8")
    return files
