"""The registered model: a custom MLflow pyfunc around one :class:`AlertClusterModel`.

Artifacts travel with every model version:

* ``model.joblib``  -- the fitted :class:`alertclf.clustering.AlertClusterModel`;
* ``profiles.json`` -- what each cluster looks like on its training alerts, with its
  name (names are fixed per model version, so they stay stable across batches);
* ``metadata.json`` -- algorithm, parameters, metrics, feature names, data window.

Input: the feature frame of :func:`alertclf.features.build_features` (float64 columns).
Output: ``cluster_id``, ``cluster_confidence``, ``is_outlier``, ``cluster_name``.

MLflow loads the model "from code" (:mod:`alertclf.model_code` is the file it executes)
with ``code_paths=[src/alertclf]``, so the same package code that trained the model
scores with it: no pickled copy of the pipeline drifts away from the source.
"""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import pandas as pd
from mlflow.pyfunc import PythonModel

MODEL_FILE = "model.joblib"
PROFILES_FILE = "profiles.json"
METADATA_FILE = "metadata.json"


class AlertClusteringPyfunc(PythonModel):
    """``predict(features) -> cluster_id, cluster_confidence, is_outlier, cluster_name``."""

    def load_context(self, context) -> None:
        self.model = joblib.load(context.artifacts["model"])
        self.profiles = load_profiles(context.artifacts["profiles"])
        self.metadata = json.loads(Path(context.artifacts["metadata"]).read_text("utf-8"))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        details = self.model.predict_details(model_input)
        details["cluster_name"] = cluster_names(details["cluster_id"], self.profiles)
        return details


def cluster_names(cluster_ids: pd.Series, profiles: dict[int, dict]) -> pd.Series:
    """Each alert's cluster name from the model's profiles (``Cluster N`` for a cluster
    without one), looked up once per cluster, not once per row (a million rows: 0.6 s)."""
    names = {c: profiles.get(int(c), {}).get("name", f"Cluster {c}") for c in cluster_ids.unique()}
    return cluster_ids.map(names)


def load_profiles(path: str | Path) -> dict[int, dict]:
    raw = json.loads(Path(path).read_text("utf-8"))
    return {int(k): v for k, v in raw.items()}


def write_artifacts(model, profiles: dict[int, dict], metadata: dict, folder: Path) -> dict:
    """Files for ``log_model(artifacts=...)``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "model": folder / MODEL_FILE,
        "profiles": folder / PROFILES_FILE,
        "metadata": folder / METADATA_FILE,
    }
    joblib.dump(model, paths["model"])
    paths["profiles"].write_text(json.dumps(profiles, indent=1, default=str), "utf-8")
    paths["metadata"].write_text(json.dumps(metadata, indent=1, default=str), "utf-8")
    return {k: str(v) for k, v in paths.items()}
