"""Every MLflow call of alertclf: stores, runs, logging, the registry and its aliases.

Stores. With ``MLFLOW_TRACKING_URI`` unset, the embedded default is a SQLite store at
``<models>/mlflow.db`` with artifacts under ``<models>/mlruns`` (``--models``, default
``data/models``); relative URIs are made absolute, because MLflow's own default depends
on the current directory. ``MLFLOW_TRACKING_URI`` (a server, another database) wins.
Inside ``mlflow run`` the entry point joins the run that ``mlflow run`` created
(``MLFLOW_RUN_ID``) instead of starting one. MLflow telemetry is switched off.

Registry. One registered model (``alert-clustering``); the aliases ``staging`` and
``production`` are our stages (MLflow 3 deprecated the stage API in favour of aliases,
and its UI shows aliases). Decisions are written on each version as ``decision.*`` tags.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alertclf.errors import AlertclfError

logger = logging.getLogger(__name__)

STAGING = "staging"
PRODUCTION = "production"
DEFAULT_MODELS_DIR = Path("data/models")
MODEL_REQUIREMENTS = (
    "mlflow",
    "scikit-learn",
    "pandas",
    "numpy",
    "scipy",
    "joblib",
    "networkx",
    "PyYAML",
    "pydantic",
    "pyarrow",
)


# MLflow's HTTP client on its own retries 7 times with exponential backoff (about 4 minutes
# per call against a server that is down) and waits up to 120 s for each answer; under our
# own bounded retries a dead tracking server held a classify for over 15 minutes, a whole
# interval. These bound it to well under a minute; variables already set are left alone.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}

# The tracking URI this process exported itself (so a later call with another --models
# is not mistaken for a user's MLFLOW_TRACKING_URI).
_SET_BY_US: dict[str, str] = {}


class TrackingError(AlertclfError):
    """The tracking store or registry could not be used."""


class ModelLoadError(AlertclfError):
    """A registered model version could not be loaded."""


@dataclass(frozen=True)
class Tracking:
    tracking_uri: str
    artifact_root: str | None  # None: the tracking server decides
    models_dir: Path


@dataclass
class LoadedModel:
    name: str
    version: str
    alias: str | None
    pyfunc: Any
    profiles: dict[int, dict]
    metadata: dict

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        return self.pyfunc.predict(features)


# --- stores ------------------------------------------------------------------------------
def configure_tracking(models_dir: str | Path | None = None) -> Tracking:
    """Point MLflow at the right store and return where it is (see module docstring)."""
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    models = Path(models_dir or DEFAULT_MODELS_DIR).expanduser().resolve()
    env_uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env_uri and env_uri == _SET_BY_US.get("uri"):
        # We exported it ourselves earlier in this process: the caller's --models decides.
        env_uri = ""
    if env_uri:
        uri = absolute_uri(env_uri)
        artifact_root = None
        if uri.startswith("sqlite:///"):
            artifact_root = (Path(uri.removeprefix("sqlite:///")).parent / "mlruns").as_uri()
    else:
        models.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{models / 'mlflow.db'}"
        artifact_root = (models / "mlruns").as_uri()
    if not os.environ.get("MLFLOW_TRACKING_URI") or os.environ.get(
        "MLFLOW_TRACKING_URI"
    ) == _SET_BY_US.get("uri"):
        _SET_BY_US["uri"] = uri
    os.environ["MLFLOW_TRACKING_URI"] = uri  # children (mlflow run) use the same store
    if uri.startswith(("http://", "https://")):
        for name, value in HTTP_RETRY_DEFAULTS.items():
            os.environ.setdefault(name, value)  # the operator's own values win
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return Tracking(uri, artifact_root, models)


def absolute_uri(uri: str) -> str:
    """``sqlite:///relative.db`` and bare paths made absolute; other URIs unchanged."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    if "://" not in uri:
        return (
            f"sqlite:///{Path(uri).resolve()}"
            if uri.endswith(".db")
            else Path(uri).resolve().as_uri()
        )
    return uri


def describe_uri(uri: str) -> str:
    """The URI without credentials, for logs and metadata."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def ensure_experiment(name: str, tracking: Tracking) -> str:
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = f"{tracking.artifact_root}/{name}" if tracking.artifact_root else None
    return mlflow.create_experiment(name, artifact_location=location)


@contextlib.contextmanager
def start_run(
    experiment: str, tracking: Tracking, run_name: str | None = None, tags: dict | None = None
) -> Iterator[Any]:
    """Join the run of ``mlflow run`` when there is one, else start one in ``experiment``."""
    import mlflow

    if os.environ.get("MLFLOW_RUN_ID"):
        # Under `mlflow run`: calling set_experiment here would break the hand-over.
        run = _store_call(mlflow.start_run, "join the run of `mlflow run`")
        joined_tags = tags
    else:
        experiment_id = _retry(
            lambda: ensure_experiment(experiment, tracking), "open the experiment"
        )
        run = _store_call(
            lambda: mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags),
            "start a run",
        )
        joined_tags = None
    # Not mlflow's own `with` block: when the store is what failed, ending the run as
    # FAILED fails too, and that second error would replace the first one.
    try:
        if joined_tags:
            mlflow.set_tags(joined_tags)
        yield run
    except BaseException as err:
        try:
            mlflow.end_run("FAILED")  # pops the active run first, even if the store is down
        except Exception as end_err:
            logger.warning("could not mark the MLflow run as failed: %s", _first_line(end_err))
        if _is_store_error(err):
            raise TrackingError(
                f"MLflow failed during the {experiment} run (store "
                f"{describe_uri(os.environ.get('MLFLOW_TRACKING_URI', ''))}): "
                f"{type(err).__name__}: {_first_line(err)}"
            ) from err
        raise
    try:
        mlflow.end_run("FINISHED")
    except Exception as err:
        # Everything of the run is logged (and classify has saved its state): only the
        # run's status stays RUNNING. Failing the flow now would report a batch that was
        # processed as lost.
        if not _is_store_error(err):
            raise
        logger.warning("could not mark the MLflow run as finished: %s", _first_line(err))


def _first_line(err: BaseException) -> str:
    """An error's first line: SQLAlchemy and MLflow append SQL, URLs and help paragraphs."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _is_store_error(err: BaseException) -> bool:
    """An error from MLflow or the store behind it (database, HTTP), not from our code."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        return True
    return type(err).__module__.split(".")[0] in ("sqlalchemy", "sqlite3", "requests", "urllib3")


def _store_call(action, what: str):
    """One call to the store; a failure becomes one clear :class:`TrackingError`."""
    try:
        return action()
    except Exception as err:
        if not _is_store_error(err):
            raise
        raise TrackingError(
            f"could not {what} in the MLflow store "
            f"{describe_uri(os.environ.get('MLFLOW_TRACKING_URI', ''))}: {_first_line(err)}"
        ) from err


def _retry(action, what: str, attempts: int = 4, delay: float = 0.5):
    """Bounded retries for a locked SQLite file or a server that blinks, then one error."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as err:  # MLflow raises many types; all end the same way here
            if attempt == attempts:
                raise TrackingError(
                    f"could not {what} in the MLflow store "
                    f"{describe_uri(os.environ.get('MLFLOW_TRACKING_URI', ''))}: "
                    f"{_first_line(err)}"
                ) from err
            logger.warning(
                "could not %s (attempt %d/%d): %s", what, attempt, attempts, _first_line(err)
            )
            time.sleep(delay * 2 ** (attempt - 1))
    return None  # pragma: no cover


# --- logging -----------------------------------------------------------------------------
def log_settings(settings) -> None:
    """Every setting as ``setting.<name>`` (``mlflow run`` already logged the MLproject
    parameters under their bare names, possibly with other spellings of the value)."""
    import mlflow

    mlflow.log_params({f"setting.{k}": v for k, v in settings.as_params().items()})


def log_metrics(metrics: dict[str, float], prefix: str = "") -> None:
    """Finite numbers only (MLflow refuses NaN in some stores); names made safe."""
    import mlflow

    clean = {}
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if np.isfinite(number):
            clean[f"{prefix}{key}".replace(" ", "_")] = number
    if clean:
        mlflow.log_metrics(clean)


def log_json(data: Any, artifact_file: str) -> None:
    import mlflow

    mlflow.log_dict(_jsonable(data), artifact_file)


def log_table(frame: pd.DataFrame, artifact_file: str) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        frame.to_csv(path, index=False)
        folder = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(path), artifact_path=None if folder == "." else folder)


def log_files(paths: list[Path], artifact_path: str | None = None) -> None:
    """Log files as artifacts of the active run. With a local artifact store the files
    are hard-linked when they can be: result files are never modified after they are
    written, and copying the 750 MB alert table of a million alerts took 1.8 s."""
    import mlflow

    folder = _local_artifact_folder(mlflow.get_artifact_uri(artifact_path))
    for path in map(Path, paths):
        if not path.exists():
            continue
        if folder is not None and _hard_link(path, folder / path.name):
            continue
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def _local_artifact_folder(uri: str) -> Path | None:
    """The folder behind a ``file:`` (or plain path) artifact URI; None for anything
    else (a server, a blob store), which only the MLflow client may write."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" and uri.startswith("/"):
        return Path(uri)
    return None


def _hard_link(source: Path, target: Path) -> bool:
    """Link ``source`` as ``target`` (replacing it, as log_artifact would); False when
    the file system refuses (another device, no hard links), so the caller copies."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        os.link(source, target)
    except OSError as err:
        logger.debug("hard link %s -> %s refused (%s); copying", source, target, err)
        return False
    return True


def _jsonable(data: Any) -> Any:
    if isinstance(data, dict):
        return {str(k): _jsonable(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_jsonable(v) for v in data]
    if isinstance(data, np.integer):
        return int(data)
    if isinstance(data, np.floating):
        return None if not np.isfinite(data) else float(data)
    if isinstance(data, float) and not np.isfinite(data):
        return None
    if isinstance(data, pd.Timestamp):
        return data.isoformat()
    return data


# --- registry ----------------------------------------------------------------------------
def client():
    from mlflow import MlflowClient

    return MlflowClient()


def library_versions() -> dict[str, str]:
    """Installed versions of what the pyfunc needs."""
    versions = {}
    for dist in MODEL_REQUIREMENTS:
        try:
            versions[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def model_requirements() -> list[str]:
    """Exact pins of what the pyfunc needs, from this environment (faster than inference)."""
    versions = library_versions()
    return [f"{d}=={versions[d]}" if d in versions else d for d in MODEL_REQUIREMENTS]


def version_mismatches(recorded: dict[str, str]) -> list[str]:
    """``name trained-version (installed X)`` for every library whose installed version
    differs from the one a model was trained with."""
    installed = library_versions()
    return [
        f"{dist} {version} (installed {installed.get(dist, 'none')})"
        for dist, version in sorted(recorded.items())
        if installed.get(dist) != version
    ]


def log_model_version(
    model, profiles: dict[int, dict], metadata: dict, example: pd.DataFrame, model_name: str
) -> str:
    """Log the pyfunc in the active run, register it, give it alias ``staging``."""
    import mlflow
    from mlflow.models import infer_signature

    from alertclf import serving

    package_dir = Path(serving.__file__).parent
    sample = example.head(5).astype(np.float64)
    output = model.predict_details(sample)
    output["cluster_name"] = serving.cluster_names(output["cluster_id"], profiles)
    with warnings.catch_warnings():
        # cluster_id is an integer by design and never missing; MLflow's hint about
        # integer columns and missing values does not apply.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = infer_signature(sample, output)
    metadata = {**metadata, "library_versions": library_versions()}  # see load_model
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = serving.write_artifacts(model, profiles, metadata, Path(tmp))
        info = _retry(
            lambda: mlflow.pyfunc.log_model(
                name="model",
                python_model=str(package_dir / "model_code.py"),
                artifacts=artifacts,
                code_paths=[str(package_dir)],
                signature=signature,
                input_example=sample,
                pip_requirements=model_requirements(),
                registered_model_name=model_name,
            ),
            "log and register the model",
        )
    version = str(info.registered_model_version)
    set_alias(model_name, STAGING, version)
    return version


def alias_version(model_name: str, alias: str) -> str | None:
    """The version an alias points to, or None (no model, or no such alias)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client().get_model_version_by_alias(model_name, alias).version)
    except MlflowException as err:
        code = getattr(err, "error_code", "")
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise TrackingError(f"could not read alias {alias!r} of {model_name!r}: {err}") from err


def set_alias(model_name: str, alias: str, version: str) -> None:
    _retry(
        lambda: client().set_registered_model_alias(model_name, alias, str(version)),
        f"set alias {alias} on version {version}",
    )


def delete_alias(model_name: str, alias: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):
        client().delete_registered_model_alias(model_name, alias)


def set_version_tags(model_name: str, version: str, tags: dict[str, Any]) -> None:
    mlflow_client = client()
    for key, value in tags.items():
        _retry(
            lambda k=key, v=value: mlflow_client.set_model_version_tag(
                model_name, str(version), k, str(v)
            ),
            f"tag version {version}",
        )


def version_tags(model_name: str, version: str) -> dict[str, str]:
    return dict(client().get_model_version(model_name, str(version)).tags)


def version_exists(model_name: str, version: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client().get_model_version(model_name, str(version))
        return True
    except MlflowException:
        return False


def load_model(
    model_name: str, alias: str | None = None, version: str | None = None
) -> LoadedModel:
    """Load one version from the configured registry (never from a path or URL given
    in data): by alias or by number. A missing or corrupt artifact is a clear error."""
    import mlflow

    ref = f"@{alias}" if alias else f"/{version}"
    uri = f"models:/{model_name}{ref}"
    try:
        resolved = alias_version(model_name, alias) if alias else str(version)
        # MLflow's own requirements check maps every installed module to its
        # distribution (0.6 s of each classify); the versions recorded in the model's
        # metadata give the same warning for the libraries that matter, in milliseconds.
        pyfunc = mlflow.pyfunc.load_model(uri, suppress_warnings=True)
        inner = pyfunc.unwrap_python_model()
        mismatched = version_mismatches(inner.metadata.get("library_versions", {}))
        if mismatched:
            logger.warning(
                "%s version %s was trained with %s; its predictions may differ here",
                model_name,
                resolved,
                ", ".join(mismatched),
            )
        return LoadedModel(model_name, str(resolved), alias, pyfunc, inner.profiles, inner.metadata)
    except AlertclfError:
        raise
    except Exception as err:
        raise ModelLoadError(f"could not load {uri}: {type(err).__name__}: {err}") from err
