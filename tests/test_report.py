"""``report.html``: self-contained, escaped, complete; classify writes it with the results
(atomically) and logs it to MLflow; a plotting or report failure never fails classify."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from alertclf import chartworker, plots, report, tracking
from alertclf.contracts import RESULT_FILES
from alertclf.flows import classify
from alertclf.io.results import write_results
from alertclf.report import CHARTS_DIR, REPORT_FILE, render_report
from alertclf.settings import Settings
from alertclf.simulate import SimulationConfig, simulate, write_simulation

# Each test decides its own MLflow store; nothing leaks through the environment.
pytestmark = pytest.mark.usefixtures("isolated_tracking")

EVIL = '<script>alert("x")</script>'
T0 = pd.Timestamp("2026-01-05 10:00:00", tz="UTC")


def tables() -> dict[str, pd.DataFrame]:
    incidents = pd.DataFrame(
        {
            "group_id": ["G1", "G2"],
            "first_seen": [T0, T0 + pd.Timedelta(minutes=20)],
            "last_seen": [T0 + pd.Timedelta(minutes=9), T0 + pd.Timedelta(minutes=21)],
            "n_alerts": [41, 3],
            "n_unique": [7, 2],
            "services": ["orders-db|checkout", "web"],
            "root_cause_service": ["orders-db", "web"],
            "root_cause_confidence": [0.875, 0.5],
            "max_severity": ["critical", "warning"],
            "importance_score": [81.25, 22.0],
            "rank": [1, 2],
            "name": ["Datastore health · orders-db (+1 services)", f"Latency · {EVIL}"],
            "reasons": ["critical severity; 2 services; 41 alerts, 7 after dedup", "3 alerts"],
            "n_services": [2, 1],
            "n_alerts_batch": [41, 3],
            "top_alerts": [f"PostgresqlDown x20|{EVIL} x1", "HighRequestLatency x3"],
        }
    )
    clusters = pd.DataFrame(
        {
            "cluster_rank": [1, 2],
            "cluster_id": [3, 0],
            "cluster_name": ["Datastore health · orders-db", f"{EVIL} family"],
            "importance_score": [77.0, 12.5],
            "reasons": ["critical severity", "2 alerts"],
            "n_alerts": [40, 4],
            "n_unique": [6, 3],
            "n_services": [2, 1],
            "top_alert_names": ["PostgresqlDown x20", "HighRequestLatency x3"],
            "top_services": ["orders-db|checkout", "web"],
        }
    )
    return {
        "alert_consolidation_final.csv": pd.DataFrame(),
        "incident_groups.csv": incidents,
        "ranked_clusters.csv": clusters,
        "rejected_alerts.csv": pd.DataFrame(),
    }


METADATA = {
    "run_id": "20260105_101500",
    "mlflow_run_id": "abc123",
    "model_name": "alert-clustering",
    "model_version": "4",
    "model_alias": "production",
    "rows_read": 1234,
    "rows_accepted": 1200,
    "rows_rejected": 34,
    "rows_new": 1100,
    "watermark_before": None,
    "watermark_after": "2026-01-05T10:21:00+00:00",
    "package_version": "0.1.0",
}


@pytest.fixture
def charts(tmp_path) -> dict:
    figures = plots.classify_figures(
        tables()["incident_groups.csv"], tables()["ranked_clusters.csv"]
    )
    paths = plots.save_figures(figures, tmp_path)
    # One as a file, the others as bytes: both are accepted.
    return {
        name: (path if name == "incident_timeline" else path.read_bytes())
        for name, path in paths.items()
    }


def test_report_is_self_contained(charts):
    page = render_report(tables(), METADATA, charts)
    assert not re.search(r"https?://", page, re.IGNORECASE)
    assert not re.search(r"""(src|href)=["']?//""", page)  # no protocol-relative URLs
    assert "<link" not in page and "@import" not in page and "<script" not in page


def test_report_escapes_alert_text(charts):
    page = render_report(tables(), METADATA, charts)
    assert EVIL not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_report_embeds_every_chart_and_links_the_csvs(charts):
    page = render_report(tables(), METADATA, charts)
    embedded = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)
    assert len(embedded) == len(charts) == 3
    for name in charts:
        assert f'id="chart-{name}"' in page
    links = re.findall(r'<a href="([^"]+)"', page)
    assert set(links) >= {
        "alert_consolidation_final.csv",
        "incident_groups.csv",
        "ranked_clusters.csv",
        "rejected_alerts.csv",
    }
    assert all("/" not in link for link in links)  # relative, same folder


def test_report_shows_counts_model_and_the_top_incidents(charts):
    page = render_report(tables(), METADATA, charts)
    for text in ("1,234", "1,200", "1,100", "alert-clustering v4", "@production"):
        assert text in page, text
    top = re.search(r'<tr class="top" data-rank="1">(.*?)</tr>', page, re.S)
    assert top, "the top incident row is missing"
    row = top.group(1)
    for text in (
        "81.2",
        "Datastore health · orders-db",
        "orders-db (88%)",
        "critical severity; 2 services",
        ">41<",
        ">7<",
        "2026-01-05 10:00:00 UTC",
    ):
        assert text in row, text
    assert page.index('data-rank="1"') < page.index('data-rank="2"')


def test_report_of_an_empty_batch(charts):
    empty = {name: frame.iloc[0:0] for name, frame in tables().items()}
    page = render_report(empty, {**METADATA, "rows_new": 0}, {})
    assert "No incidents in this batch" in page and "No charts" in page


def test_write_results_files_are_optional_and_stay_inside_the_folder(tmp_path):
    plain = write_results(tmp_path, "r1", {"a.csv": pd.DataFrame({"x": [1]})}, {"m.json": {}})
    assert sorted(p.name for p in plain.iterdir()) == ["a.csv", "m.json"]
    source = tmp_path / "source.png"
    source.write_bytes(b"png")
    folder = write_results(
        tmp_path,
        "r2",
        {},
        {},
        files={"report.html": b"<html></html>", "charts/x.png": source},
    )
    assert (folder / "report.html").read_bytes() == b"<html></html>"
    assert (folder / "charts" / "x.png").read_bytes() == b"png"
    for bad in ("../escape.html", "/abs.html", "a/b/c.png"):
        with pytest.raises(ValueError, match="inside the folder"):
            write_results(tmp_path, "r3", {}, {}, files={bad: b""})
    assert not (tmp_path / "r3").exists()


def test_result_tables_write_times_as_utc_iso_text_to_the_microsecond(tmp_path):
    stamps = pd.Series(
        pd.to_datetime(
            ["2026-03-01T10:15:30.250000+02:00", None, "1969-12-31T23:59:59Z"],
            utc=True,
            format="ISO8601",
        )
    )
    folder = write_results(tmp_path, "r1", {"t.csv": pd.DataFrame({"at": stamps})}, {})
    lines = (folder / "t.csv").read_text(encoding="utf-8").splitlines()
    assert lines == [
        '"at"',
        '"2026-03-01T08:15:30.250000Z"',
        "",
        '"1969-12-31T23:59:59.000000Z"',
    ]


def test_views_are_written_a_slice_at_a_time_as_the_whole_table_would_be(tmp_path, monkeypatch):
    from alertclf.io import results

    monkeypatch.setattr(results, "VIEW_SLICE_ROWS", 3)  # 10 rows: four slices
    table = pd.DataFrame({"x": range(10), "text": [f'=v"{i}' for i in range(10)]})
    backwards = results.View("t.csv", lambda frame: np.arange(len(frame))[::-1])
    none = results.View("t.csv", lambda frame: np.zeros(0, dtype=np.int64))
    folder = write_results(
        tmp_path, "r1", {"t.csv": table, "back.csv": backwards, "none.csv": none}, {}
    )
    whole = (folder / "t.csv").read_text(encoding="utf-8").splitlines()
    assert whole[1] == '0,"\'=v""0"'  # escaped and quoted once, in the source
    assert (folder / "back.csv").read_text(encoding="utf-8").splitlines() == [
        whole[0],
        *whole[:0:-1],
    ]
    assert (folder / "none.csv").read_text(encoding="utf-8").splitlines() == [whole[0]]


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise here")
def test_tables_are_handed_to_the_disk_while_written_and_keep_their_bytes(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from alertclf.io import results

    monkeypatch.setattr(results, "VIEW_SLICE_ROWS", 100)
    monkeypatch.setattr(results, "WRITEBACK_BYTES", 2_000)
    handed: list[tuple[int, int]] = []
    real_fadvise = os.posix_fadvise

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        handed.append((offset, length))
        real_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", fadvise)
    table = pa.table({"x": range(1_000), "text": [f'a,"b"\n{i}' for i in range(1_000)]})
    path = results.write_arrow_csv(table, tmp_path / "t.csv")
    expected = pa.BufferOutputStream()
    pacsv.write_csv(table, expected, pacsv.WriteOptions(quoting_style="needed"))
    written = path.read_bytes()
    assert written == expected.getvalue().to_pybytes()
    # Contiguous ranges from the start, each at least WRITEBACK_BYTES, the tail left to
    # the fsync.
    assert len(handed) >= 5 and handed[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(handed))
    assert all(n >= 2_000 for _, n in handed)
    assert sum(n for _, n in handed) <= len(written)


def test_write_results_calls_a_files_function_before_the_documents(tmp_path):
    documents = {"m.json": {"report_seconds": None}}

    def draw() -> dict[str, bytes]:
        documents["m.json"]["report_seconds"] = 1.5  # as classify records its timing
        return {"report.html": b"<html></html>"}

    folder = write_results(tmp_path, "r1", {"a.csv": pd.DataFrame({"x": [1]})}, documents, draw)
    assert (folder / "report.html").read_bytes() == b"<html></html>"
    assert json.loads((folder / "m.json").read_text()) == {"report_seconds": 1.5}
    with pytest.raises(ValueError, match="inside the folder"):
        write_results(tmp_path, "r2", {"a.csv": pd.DataFrame({"x": [1]})}, {},
                      lambda: {"../escape.html": b""})  # fmt: skip
    assert not (tmp_path / "r2").exists() and not (tmp_path / "escape.html").exists()


# --- classify against a real store ----------------------------------------------------
@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    sim = simulate(SimulationConfig(seed=3, days=1.0, scenario="mixed"))
    return write_simulation(sim, tmp_path_factory.mktemp("scenario"))


FAST = Settings(algorithm="kmeans", kmeans_k_min=4, kmeans_k_max=8)


def run_classify(scenario, tmp_path):
    return classify(
        FAST, scenario["alerts"], scenario["graph"], tmp_path / "results", tmp_path / "models"
    )


def logged(run_id: str, path: str) -> set[str]:
    return {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, path)}


def test_classify_writes_the_report_with_the_results_and_logs_it(scenario, tmp_path):
    outcome = run_classify(scenario, tmp_path)
    folder = outcome.results_dir
    page = (folder / REPORT_FILE).read_text(encoding="utf-8")
    charts = sorted(p.name for p in (folder / CHARTS_DIR).iterdir())
    assert charts == ["incident_timeline.png", "top_clusters.png", "top_incidents.png"]
    assert page.count("data:image/png;base64,") == 3
    assert not re.search(r"https?://", page)
    top = outcome.incidents.sort_values("rank").iloc[0]
    assert str(top["root_cause_service"]) in page
    for name in RESULT_FILES:
        if name.endswith(".csv"):
            assert f'href="{name}"' in page and (folder / name).exists()
    meta = json.loads((folder / "run_metadata.json").read_text())
    assert "report" in meta["timings_seconds"]
    assert f"results/{REPORT_FILE}" in logged(outcome.mlflow_run_id, "results")
    assert logged(outcome.mlflow_run_id, "results/charts") == {
        f"results/charts/{name}" for name in charts
    }
    artifact = mlflow.artifacts.download_artifacts(
        run_id=outcome.mlflow_run_id,
        artifact_path="results/alert_consolidation_final.csv",
        dst_path=str(tmp_path / "download"),
    )
    table = folder / "alert_consolidation_final.csv"
    assert Path(artifact).read_bytes() == table.read_bytes()


def test_logged_files_are_copied_when_they_cannot_be_hard_linked(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(18, "Invalid cross-device link")

    source = tmp_path / "table.csv"
    source.write_text("x\n1\n")
    monkeypatch.setattr(os, "link", refuse)
    with mlflow.start_run() as run:
        tracking.log_files([source], artifact_path="results")
    assert logged(run.info.run_id, "results") == {"results/table.csv"}
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="results/table.csv", dst_path=str(tmp_path / "d")
    )
    assert Path(local).read_text() == "x\n1\n"


def test_a_failing_chart_does_not_fail_classify(scenario, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no ink")

    monkeypatch.setattr(plots, "incident_timeline", broken)
    # Drawn in this process, where the broken chart is (helpers: tests/test_chartworker.py).
    monkeypatch.setattr(chartworker, "HELPERS", 0)
    with caplog.at_level(logging.WARNING):
        outcome = run_classify(scenario, tmp_path)
    folder = outcome.results_dir
    assert "chart incident_timeline skipped: RuntimeError: no ink" in caplog.text
    assert not (folder / CHARTS_DIR / "incident_timeline.png").exists()
    page = (folder / REPORT_FILE).read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2


def test_a_failing_report_does_not_fail_classify(scenario, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("template on fire")

    monkeypatch.setattr(report, "render_report", broken)
    with caplog.at_level(logging.WARNING, logger="alertclf.flows"):
        outcome = run_classify(scenario, tmp_path)
    folder = outcome.results_dir
    assert "report.html skipped: RuntimeError: template on fire" in caplog.text
    assert not (folder / REPORT_FILE).exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(RESULT_FILES)
    assert outcome.rows_new > 0 and len(outcome.incidents) > 0
