"""The `alertclf` command: clear refusals, validate, simulate -> evaluate."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from alertclf.cli import main
from alertclf.simulate import SimulationConfig, simulate, write_simulation

GRAPH = {
    "directed": True,
    "nodes": [{"id": "api"}, {"id": "db"}],
    "links": [{"source": "api", "target": "db"}],
}

BAD_ROWS_CSV = """timestamp,service,alert_name,severity,alert_id
2026-01-05T10:00:00Z,api,HighErrorRate,critical,a1
,api,HighErrorRate,critical,a2
yesterday-ish,db,PostgresqlDown,P1,a3
2026-01-05T10:01:00Z,,HighErrorRate,warning,a4
2026-01-05T10:02:00Z,db,,warning,a5
1736071380,db,PostgresqlDown,sev1,a6
2026-01-05T10:03:00Z,api,HighErrorRate,critical,a1
1800-01-01T00:00:00Z,db,PostgresqlDown,critical,a8
2026-01-05 10:04:00+02:00,API-service-prod,HighRequestLatency,warn,a9
"""


@pytest.fixture
def inputs(tmp_path):
    alerts = tmp_path / "alerts.csv"
    alerts.write_text(BAD_ROWS_CSV, encoding="utf-8")
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps(GRAPH), encoding="utf-8")
    return alerts, graph


def test_validate_puts_exactly_the_bad_rows_in_rejected_with_reasons(inputs, tmp_path, capsys):
    alerts, graph = inputs
    out = tmp_path / "check"
    assert (
        main(["validate", "--alerts", str(alerts), "--graph", str(graph), "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "rows read 9, accepted 3, rejected 6" in printed
    rejected = pd.read_csv(out / "rejected_alerts.csv", dtype=str, keep_default_na=False)
    reasons = dict(zip(rejected["alert_id"], rejected["reject_reason"], strict=True))
    assert reasons["a2"] == "missing timestamp"
    assert reasons["a3"].startswith("unparseable timestamp 'yesterday-ish'")
    assert reasons["a4"] == "empty service"
    assert reasons["a5"] == "empty alert_name"
    assert reasons["a1"].startswith("duplicate alert_id 'a1' (first at file ")
    assert reasons["a1"].endswith("alerts.csv row 1)")
    assert reasons["a8"].startswith("timestamp out of range")
    assert len(rejected) == 6
    summary = json.loads((out / "validation_summary.json").read_text())
    assert summary["rows_read"] == summary["rows_accepted"] + summary["rows_rejected"]
    stats = pd.read_csv(out / "mapping_statistics.csv")
    assert stats.set_index("mapping_method").loc["total", "alerts"] == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "alerts.csv"),
        (b"time,host\n2026-01-01T00:00:00Z,x\n", "missing required column"),
    ],
)
def test_unusable_alert_files_fail_with_one_line_naming_the_file(
    tmp_path, capsys, content, message
):
    alerts = tmp_path / "alerts.csv"
    alerts.write_bytes(content)
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps(GRAPH))
    assert main(["validate", "--alerts", str(alerts), "--graph", str(graph)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "alerts.csv" in err[0] and message in err[0]
    assert "Traceback" not in err[0]


def test_broken_graph_fails_with_one_line(inputs, tmp_path, capsys):
    alerts, _ = inputs
    graph = tmp_path / "graph.json"
    graph.write_text("{not json")
    assert main(["validate", "--alerts", str(alerts), "--graph", str(graph)]) == 2
    err = capsys.readouterr().err.strip()
    assert "graph.json" in err and "\n" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["classify", "--alerts", "a", "--graph", "g", "--since", "not-a-time"], "--since"),
        # Parse to "not a time", after which no alert is: everything would be skipped.
        (["classify", "--alerts", "a", "--graph", "g", "--since", "NaT"], "--since"),
        (["classify", "--alerts", "a", "--graph", "g", "--until", "nan"], "--until"),
        (
            ["classify", "--alerts", "a", "--graph", "g", "--late-arrival-minutes", "-5"],
            "--late-arrival-minutes",
        ),
        (
            ["retrain", "--history", "a", "--graph", "g", "--promotion-threshold", "lots"],
            "--promotion-threshold",
        ),
        (
            ["retrain", "--history", "a", "--graph", "g", "--holdout-fraction", "1.5"],
            "--holdout-fraction",
        ),
        (["replay", "--alerts", "a", "--graph", "g", "--batch-minutes", "0"], "--batch-minutes"),
        (["simulate", "--out", "x", "--root-delay", "3", "soon"], "--root-delay"),
        (["simulate", "--out", "x", "--hop-delay", "-1", "2"], "--hop-delay"),
        (["promote", "--version", "two"], "--version"),
        (
            ["classify", "--alerts", "a", "--graph", "g", "--colour", "red"],
            "unrecognized arguments",
        ),
    ],
)
def test_ill_typed_and_unknown_options_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_simulate_refuses_a_delay_range_upside_down(tmp_path, capsys):
    out = tmp_path / "late"
    assert main(["simulate", "--out", str(out), "--root-delay", "10", "3"]) != 0
    assert "root_delay_minutes" in capsys.readouterr().err
    assert not out.exists()


def test_replay_then_evaluate_reports_ours_and_baselines(tmp_path, capsys):
    sim = simulate(SimulationConfig(seed=4, days=1, scenario="storm"))
    files = write_simulation(sim, tmp_path / "sim")
    out = tmp_path / "results"
    assert (
        main(
            [
                "replay",
                "--alerts",
                str(files["alerts"]),
                "--graph",
                str(files["graph"]),
                "--output",
                str(out),
                "--no-registry",
                "--set",
                "algorithm=kmeans",
                "--models",
                str(tmp_path / "models"),
            ]
        )
        == 0
    )
    folder = next(p for p in out.iterdir() if p.name[:1].isdigit())
    capsys.readouterr()
    report = tmp_path / "scores.json"
    assert (
        main(
            [
                "evaluate",
                "--results",
                str(folder),
                "--truth",
                str(files["truth"]),
                "--graph",
                str(files["graph"]),
                "--json",
                str(report),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    for column in ("ours", "alertmanager_by_service", "time_window_only", "fingerprint_dedup"):
        assert column in table
    scores = json.loads(report.read_text())
    ours = scores["ours"]
    assert ours["ari"] > scores["time_window_only"]["ari"]
    assert ours["ari"] > scores["alertmanager_by_service"]["ari"]
    assert ours["dedup_precision"] >= 0.99
    assert ours["mapping_accuracy"] >= 0.98
