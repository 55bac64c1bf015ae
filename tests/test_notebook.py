"""``notebooks/01-explore-clusters.ipynb`` runs top to bottom against simulated data.

A real store and results folder are prepared in a temporary folder (retrain + classify);
the notebook reads them through its environment-variable parameters and is executed with
nbclient on the ``python3`` kernel of this virtual environment.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from alertclf import tracking
from alertclf.flows import FAULT_ENV, classify, retrain
from alertclf.settings import Settings
from alertclf.simulate import SimulationConfig, simulate, write_simulation

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01-explore-clusters.ipynb"
FAST = {"algorithm": "kmeans", "kmeans_k_min": 4, "kmeans_k_max": 9}

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


@pytest.fixture
def prepared(tmp_path, monkeypatch) -> dict[str, Path]:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", FAULT_ENV):
        monkeypatch.delenv(name, raising=False)
    tracking._SET_BY_US.clear()
    files = write_simulation(
        simulate(SimulationConfig(seed=5, days=1.0, scenario="mixed")), tmp_path / "data"
    )
    settings = Settings(**FAST)
    models, results = tmp_path / "models", tmp_path / "results"
    retrain(settings, files["alerts"], files["graph"], models)
    classify(settings, files["alerts"], files["graph"], results, models)
    # The kernel is another process: it gets the store only through the parameters.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking._SET_BY_US.clear()
    monkeypatch.setenv("ALERTCLF_MODELS", str(models))
    monkeypatch.setenv("ALERTCLF_RESULTS", str(results))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return {"models": models, "results": results}


def test_notebook_runs_top_to_bottom_against_simulated_data(prepared):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Committed without outputs, so diffs stay readable.
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError (with the traceback) on any cell error
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) >= 4  # cluster sizes, top incidents, timeline, top clusters
    text = "\n".join(
        str(out.get("data", {}).get("text/markdown", "")) + str(out.get("text", ""))
        for out in outputs
    )
    assert str(prepared["models"]) in text
    assert "@production" in text and "root cause" in text
