"""Flows: the only place that composes I/O, the pure pipeline and MLflow.

* :func:`classify` -- one 15-minute batch: new alerts since the watermark -> results
  folder + MLflow run; the watermark and open incidents are saved last.
* :func:`retrain` -- history -> candidate model -> registry (``staging``) -> compared
  with ``production`` on the same held-out recent alerts -> promoted or left for review.
* :func:`promote` -- a reviewer's decision on a version.
* :func:`replay` -- a backtest: history as consecutive batches in one process.
* :func:`evaluate_results` -- a results folder against a ground truth file.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alertclf import __version__, tracking
from alertclf.chartworker import ChartWorker
from alertclf.consolidate import to_epoch_ns
from alertclf.contracts import DERIVED_RESULT_FILES, RESULT_FILES
from alertclf.errors import AlertclfError
from alertclf.gcpause import gc_paused
from alertclf.io.alerts import AlertBatch, read_alerts, reject_accepted
from alertclf.io.results import Table, View, new_run_id, remove_stale_temporaries, write_results
from alertclf.io.sources import list_sources, may_be_url
from alertclf.io.state import RunState, StateStore
from alertclf.pipeline import (
    BatchResult,
    GraphContext,
    Prepared,
    learn_endings,
    learn_timing,
    prepare_batch,
    replay_batches,
    score_batch,
    train,
)
from alertclf.regroup import apply_revisions, latest_revisions
from alertclf.report import CHARTS_DIR, REPORT_FILE, chart_tables
from alertclf.settings import Settings
from alertclf.timing import (
    with_learned_families,
    with_learned_lag,
    with_learned_lateness,
    with_learned_share,
)
from alertclf.warmup import import_in_background

logger = logging.getLogger(__name__)

# Imported on a thread while classify reads its input (see alertclf.warmup).
CLASSIFY_LATER_IMPORTS = (
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.pyfunc",
    "alertclf.clustering",
)
WARM_IMPORTS_MIN_BYTES = 32 * 2**20  # about 70,000 alerts
FAULT_ENV = "ALERTCLF_FAULT_POINT"  # test hook: os._exit at a named point (see _fault)
SUPERSEDED_DIR = ".superseded"


class FlowError(AlertclfError):
    """A flow cannot go on; the message says why and what to do."""


# --- inputs -------------------------------------------------------------------------------
def load_inputs(
    alerts: str | Path,
    graph: str | Path,
    settings: Settings,
    history: bool = False,
    cache_dir: Path | None = None,
) -> tuple[AlertBatch, GraphContext]:
    graph_obj = _load_graph(graph)
    with gc_paused():  # a million rows: 4.8 -> 3.3 s (see alertclf.gcpause)
        batch = read_history(alerts, settings) if history else read_alerts(alerts, settings)
    logger.info(
        "read %s: %d rows, %d accepted, %d rejected",
        _safe(alerts),
        batch.rows_read,
        len(batch.alerts),
        len(batch.rejected),
    )
    return batch, GraphContext.build(graph_obj, settings, cache_dir)


def _load_graph(location: str | Path):
    from alertclf.graph import load_graph

    text = str(location)
    if _is_remote(text):
        from alertclf.io import azure

        # Named by its safe form: the name goes into messages and the graph's metadata,
        # and a SAS query string must reach neither.
        return load_graph(_safe(text), data=azure.read_blob_bytes(text))
    return load_graph(location)


def _is_remote(location: str) -> bool:
    if not may_be_url(location):
        return False
    from alertclf.io.azure import is_azure_url

    return is_azure_url(location)


def _safe(location: str | Path) -> str:
    """A location as it may be logged or stored (no keys, no SAS query string)."""
    text = str(location)
    if _is_remote(text):
        from alertclf.io import azure

        return azure.describe_location(text)
    return text


def read_history(location: str | Path, settings: Settings) -> AlertBatch:
    """History for retrain: from Blob only the date partitions of the last
    ``history_days`` are listed and downloaded (one blob at a time)."""
    if _is_remote(str(location)):
        from alertclf.io.azure import list_blob_sources

        sources = list_blob_sources(str(location), history_days=settings.history_days)
        return read_alerts(sources, settings)
    return read_alerts(location, settings)


def _fault(point: str) -> None:
    """Die like ``kill -9`` at a named point when the tests ask for it."""
    if os.environ.get(FAULT_ENV) == point:
        logger.error("fault injected at %s", point)
        os._exit(86)


# --- classify -----------------------------------------------------------------------------
@dataclass
class ClassifyOutcome:
    run_id: str
    results_dir: Path
    rows_read: int
    rows_accepted: int
    rows_rejected: int
    rows_new: int
    model_version: str | None
    mlflow_run_id: str | None
    bootstrapped: bool
    incidents: pd.DataFrame
    clusters: pd.DataFrame
    metadata: dict = field(default_factory=dict)


def classify(
    settings: Settings,
    alerts: str | Path,
    graph: str | Path,
    output: str | Path = "results",
    models: str | Path | None = None,
    since: str | None = None,
    until: str | None = None,
    bootstrap: bool = True,
) -> ClassifyOutcome:
    """Classify the alerts that are new since the last run (all of them the first time)."""
    if settings.engine == "spark":
        # Same flow (watermark, results, MLflow run, state saved last), pipeline on Spark.
        from alertclf.spark_engine import classify_flow

        return classify_flow(settings, alerts, graph, output, models, since, until, bootstrap)
    started = time.perf_counter()
    stage_times: dict[str, float] = {}
    output = Path(output)
    # Needed after the read: the run's store, the model's code (1M alerts: 1.0 s saved).
    # A small input is read too fast to hide them, and the thread then only competes
    # with start-up (1k alerts under `mlflow run`: median 9.4 s with it, 9.0 s without).
    size = _input_bytes(alerts)
    big = size is None or size >= WARM_IMPORTS_MIN_BYTES
    imports = import_in_background(CLASSIFY_LATER_IMPORTS if big else ())
    tracking_cfg, store, state = open_output(output, models)

    t0 = time.perf_counter()
    batch, context = load_inputs(
        alerts, graph, settings, cache_dir=tracking_cfg.models_dir / "cache"
    )
    stage_times["read"] = round(time.perf_counter() - t0, 4)
    ledger = store.read_ledger(state)
    selection = select_new(batch.alerts, state, settings, since, until, ledger)
    late = batch.alerts.iloc[selection.late]
    batch = reject_accepted(batch, selection.late, selection.late_reasons)
    new = selection.new
    logger.info(
        "%d new alerts to classify (%d processed before, %d outside the window, %d late)",
        len(new),
        selection.already_processed,
        selection.outside_window,
        len(late),
    )
    imports.join()  # before consolidation may fork: no import half done in the child

    run_id = new_run_id(output)
    # The charts are drawn by helper processes on the other core (see chartworker).
    with (
        ChartWorker() as chart_worker,
        tracking.start_run(
            settings.classify_experiment, tracking_cfg, run_name=f"classify-{run_id}"
        ) as run,
    ):
        tracking.log_settings(settings)
        loaded, bootstrapped = _production_or_bootstrap(new, context, settings, bootstrap, state)
        settings = with_model_timing(settings, loaded)
        log_timing(settings)
        t0 = time.perf_counter()
        prepared = prepare_batch(new, context, settings, state.pipeline_state(), scoring=True)
        result = score_batch(prepared, loaded.predict, loaded.profiles, context, settings)
        del prepared  # its feature matrix (300 MB a million alerts) is not needed to write
        stage_times["pipeline"] = round(time.perf_counter() - t0, 4)
        stage_times.update(result.timings)
        watermark_after = _new_watermark(state, new, settings)
        metadata = run_metadata(
            run_id=run_id,
            mlflow_run_id=run.info.run_id,
            tracking_cfg=tracking_cfg,
            loaded=loaded,
            bootstrapped=bootstrapped,
            inputs=(alerts, graph),
            files=batch.files,
            rows=(batch.rows_read, len(batch.alerts), len(batch.rejected), len(new)),
            skipped=(selection.already_processed, selection.outside_window, len(late)),
            state=state,
            watermark_after=watermark_after,
            window=(since, until),
            context=context,
            stage_times=stage_times,
            notes=batch.notes,
        )
        statistics = {**result.statistics, **model_facts(loaded)}
        tables = result_tables(result, batch)
        charts = chart_worker.submit(*chart_tables(tables))

        def report_files() -> dict[str, bytes]:
            # Drawn while the result tables are written (see write_results).
            t0 = time.perf_counter()
            files = _report_files(tables, metadata, charts)
            stage_times["report"] = round(time.perf_counter() - t0, 4)
            return files

        t0 = time.perf_counter()
        folder = write_results(
            output,
            run_id,
            tables,
            {
                "clustering_statistics.json": statistics,
                "run_metadata.json": metadata,
            },
            files=report_files,
        )
        stage_times["write"] = round(time.perf_counter() - t0, 4)
        _fault("after_results")
        # The collector paused: a full collection here re-scanned the batch's millions of
        # live objects for nothing (0.27 s at a million alerts).
        with gc_paused():
            _log_classify(result, batch, new, metadata, folder, stage_times, started)
            _fault("after_mlflow")
            save_state(
                store,
                state,
                next_ledger(ledger, [new, late], watermark_after, settings),
                watermark_after,
                result.state,
                run_id,
                loaded,
                context,
            )
    logger.info(
        "classify run_id=%s mlflow_run_id=%s model_version=%s alerts=%d new=%d groups=%d "
        "seconds %s total=%.2f",
        run_id,
        metadata["mlflow_run_id"],
        loaded.version,
        len(batch.alerts),
        len(new),
        len(result.incidents),
        " ".join(f"{k}={stage_times[k]:.2f}" for k in ("read", "pipeline", "report", "write")),
        time.perf_counter() - started,
    )
    return ClassifyOutcome(
        run_id=run_id,
        results_dir=folder,
        rows_read=batch.rows_read,
        rows_accepted=len(batch.alerts),
        rows_rejected=len(batch.rejected),
        rows_new=len(new),
        model_version=loaded.version,
        mlflow_run_id=metadata["mlflow_run_id"],
        bootstrapped=bootstrapped,
        incidents=result.incidents,
        clusters=result.clusters,
        metadata=metadata,
    )


def _input_bytes(location: str | Path) -> int | None:
    """Size of the local input files (those the read will take); None for a remote input
    or one that cannot be listed (reading it will say why)."""
    if may_be_url(location):
        return None
    try:
        return sum(Path(source.name).stat().st_size for source in list_sources(location))
    except (OSError, AlertclfError):
        return None


def open_output(
    output: Path, models: str | Path | None
) -> tuple[tracking.Tracking, StateStore, RunState]:
    """Tracking configured, the results folder ready (leftovers of crashed runs set
    aside) and the state of the last committed run."""
    tracking_cfg = tracking.configure_tracking(models)
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output)
    store = StateStore(output)
    state = store.load()
    _supersede_uncommitted(output, state)
    return tracking_cfg, store, state


def run_metadata(
    *,
    run_id: str,
    mlflow_run_id: str,
    tracking_cfg: tracking.Tracking,
    loaded: tracking.LoadedModel,
    bootstrapped: bool,
    inputs: tuple[str | Path, str | Path],
    files: list,
    rows: tuple[int, int, int, int],
    skipped: tuple[int, int, int],
    state: RunState,
    watermark_after: str | None,
    window: tuple[str | None, str | None],
    context: GraphContext,
    stage_times: dict[str, float],
    notes: list[str],
) -> dict:
    """``run_metadata.json`` (DESIGN §3). ``rows``: read, accepted, rejected and new;
    ``skipped``: already processed, outside the window and late (of the rejected);
    ``window``: since and until."""
    alerts, graph = inputs
    read, accepted, rejected, new = rows
    already, outside, late = skipped
    since, until = window
    return {
        "run_id": run_id,
        "mlflow_run_id": mlflow_run_id,
        "mlflow_tracking_uri": tracking.describe_uri(tracking_cfg.tracking_uri),
        "model_name": loaded.name,
        "model_version": loaded.version,
        "model_alias": loaded.alias,
        "bootstrapped_model": bootstrapped,
        "inputs": {"alerts": _safe(alerts), "graph": _safe(graph)},
        "files": [Path(f).name if not _is_remote(str(f)) else _safe(f) for f in files],
        "rows_read": read,
        "rows_accepted": accepted,
        "rows_rejected": rejected,
        "rows_new": new,
        # accepted = new + already processed + outside the window; late ones are rejected.
        "rows_already_processed": already,
        "rows_outside_window": outside,
        "rows_rejected_late": late,
        "watermark_before": state.watermark,
        "watermark_after": watermark_after,
        "since": since,
        "until": until,
        "graph_fingerprint": context.fingerprint,
        "timings_seconds": stage_times,
        "notes": notes,
        "package_version": __version__,
        "started_at": datetime.now(UTC).isoformat(),
    }


def model_facts(loaded: tracking.LoadedModel) -> dict[str, str | None]:
    """Which model scored a batch, for ``clustering_statistics.json``."""
    return {"model_name": loaded.name, "model_version": loaded.version, "model_alias": loaded.alias}


def save_state(
    store: StateStore,
    state: RunState,
    ledger: pd.DataFrame,
    watermark_after: str | None,
    pipeline_state,
    run_id: str,
    loaded: tracking.LoadedModel,
    context: GraphContext,
) -> None:
    """Commit the run: watermark, ledger and carried groups. Called last, once the results
    and the MLflow run are safe, so a crash before it repeats the batch."""
    store.save(
        RunState(
            watermark=watermark_after,
            ledger=store.write_ledger(ledger) if len(ledger) else None,
            pipeline=pipeline_state.to_json(),
            last_run_id=run_id,
            model_version=loaded.version,
            graph_fingerprint=context.fingerprint,
            runs=state.runs + 1,
        )
    )


def result_tables(result: BatchResult, batch: AlertBatch) -> dict[str, Table]:
    """The CSV files of DESIGN §3 for one batch.

    The two views of the alert table are written from its converted form (``View``),
    not built as two more pandas copies of every alert."""
    final = "alert_consolidation_final.csv"
    return {
        final: result.alerts,
        "cluster_summary.csv": result.cluster_summary,
        "ranked_clusters.csv": result.clusters,
        "incident_groups.csv": result.incidents,
        "group_revisions.csv": result.revisions,
        "deduplicated_alerts.csv": View(final, _not_duplicate_rows),
        "alerts_by_cluster_detailed.csv": View(final, _by_cluster_rows),
        "mapping_statistics.csv": result.mapping,
        "rejected_alerts.csv": batch.rejected,
    }


def _not_duplicate_rows(alerts: pd.DataFrame) -> np.ndarray:
    return np.flatnonzero(~alerts["is_duplicate"].astype(bool).to_numpy())


def _by_cluster_rows(alerts: pd.DataFrame) -> np.ndarray:
    """Positions in cluster rank, then time, then id order (stable)."""
    rank = alerts["cluster_rank"].to_numpy()
    if len(alerts) == 0 or not np.issubdtype(rank.dtype, np.integer):
        keys = alerts[["cluster_rank", "timestamp", "alert_id"]].reset_index(drop=True)
        return keys.sort_values(list(keys.columns), kind="stable").index.to_numpy()
    stamps = to_epoch_ns(alerts["timestamp"])
    ids = alerts["alert_id"].astype(str).to_numpy(dtype=object)
    step = np.diff(stamps)
    ties = np.flatnonzero(step == 0)
    if (step >= 0).all() and (ids[ties] <= ids[ties + 1]).all():
        # Already in time-then-id order (alert exports usually are): a stable sort by
        # rank alone keeps it, without sorting a million id strings (1M alerts: 1.0 s).
        return np.argsort(rank, kind="stable")
    return np.lexsort((pd.factorize(ids, sort=True)[0], stamps, rank))


@dataclass
class Selection:
    """What :func:`select_new` made of a read batch."""

    new: pd.DataFrame  # the alerts to classify now
    late: np.ndarray  # positions (in the read batch) of alerts rejected as late
    late_reasons: list[str]
    already_processed: int  # in the ledger: taken or rejected by an earlier run
    outside_window: int  # before --since / after --until, or older than the ledger


def select_new(
    alerts: pd.DataFrame,
    state: RunState,
    settings: Settings,
    since: str | None = None,
    until: str | None = None,
    ledger: pd.DataFrame | None = None,
) -> Selection:
    """The alerts to classify: those not in the ledger and not older than the watermark
    minus the late-arrival allowance.

    The input is read whole on every run, so most rows were processed before; the
    ledger (``alert_id``s of what earlier runs took or rejected, ``ledger_days`` back
    from the watermark) says which. A row the ledger does not know that is older than the
    allowance arrived too late to join its batch: it is rejected with the reason, not
    skipped -- classifying it now would file it in a group that has closed. Rows older
    than the ledger are taken as processed long ago. The first run over an input takes
    everything (backfill); ``since``/``until`` override the watermark and the ledger.
    """
    none = np.array([], dtype=np.int64)
    if len(alerts) == 0:
        return Selection(alerts, none, [], 0, 0)
    ts = to_epoch_ns(alerts["timestamp"])
    keep = np.ones(len(alerts), dtype=bool)
    seen = np.zeros(len(alerts), dtype=bool)
    late = np.zeros(len(alerts), dtype=bool)
    if since:
        keep &= ts >= _utc(since).value
    elif state.watermark:
        watermark = _utc(state.watermark)
        lower = (watermark - pd.Timedelta(minutes=settings.late_arrival_minutes)).value
        if ledger is not None and len(ledger):
            seen = _known(alerts["alert_id"], ledger["alert_id"])
        old = ts < lower
        late = old & ~seen & (ts >= _ledger_start(watermark, settings))
        keep &= ~old & ~seen
    if until:
        inside = ts < _utc(until).value
        keep &= inside
        late &= inside
    positions = np.flatnonzero(late)
    reasons = late_reasons(ts[positions], state.watermark, settings) if len(positions) else []
    already = int(seen.sum())
    return Selection(
        new=alerts[keep],
        late=positions,
        late_reasons=reasons,
        already_processed=already,
        outside_window=int(len(alerts) - keep.sum() - len(positions) - already),
    )


def _known(ids: pd.Series, ledger_ids: pd.Series) -> np.ndarray:
    """Which ids are in the ledger. Arrow's hash lookup: pandas' ``isin`` on text columns
    took 5.7 s for a million ids against a million (Arrow: 0.3 s)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.is_in(pa.array(ids.astype("str")), value_set=pa.array(ledger_ids.astype("str")))
    return found.to_numpy(zero_copy_only=False)


def late_reasons(stamps_ns: np.ndarray, watermark: str, settings: Settings) -> list[str]:
    """The ``reject_reason`` of alerts that arrived too late, and a warning that they did."""
    if len(stamps_ns) == 0:
        return []
    behind = (_utc(watermark).value - np.asarray(stamps_ns, dtype=np.int64)) / 60e9
    logger.warning(
        "%d alerts arrived more than %d minutes behind the watermark: rejected as late",
        len(behind),
        settings.late_arrival_minutes,
    )
    return [
        f"late: {minutes:.1f} min older than the watermark {watermark}, more than "
        f"late_arrival_minutes={settings.late_arrival_minutes}; not classified (raise "
        "late_arrival_minutes, or classify it again with --since)"
        for minutes in behind.tolist()
    ]


def _ledger_start(watermark: pd.Timestamp, settings: Settings) -> int:
    """Epoch ns of the ledger's oldest entry: ``ledger_days`` back, never less than the
    late-arrival allowance."""
    days = pd.Timedelta(days=settings.ledger_days)
    return (watermark - max(days, pd.Timedelta(minutes=settings.late_arrival_minutes))).value


def _utc(text: str) -> pd.Timestamp:
    stamp = pd.Timestamp(text)
    if pd.isna(stamp):  # "NaT" and "nan" parse, to a time no alert is before or after
        raise AlertclfError(f"expected a timestamp, got {text!r}")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _new_watermark(
    state: RunState, new: pd.DataFrame, settings: Settings, now: pd.Timestamp | None = None
) -> str | None:
    """The newest alert taken, held at this machine's clock plus the late-arrival allowance:
    one alert from a device whose clock is hours (or years) ahead must not make every alert
    after it late. (The ledger still knows the alerts it took, so none is taken twice.)"""
    if len(new) == 0:
        return state.watermark
    stamps = pd.to_datetime(new["timestamp"], utc=True)
    newest = max(stamps.max(), _utc(state.watermark)) if state.watermark else stamps.max()
    limit = (now or pd.Timestamp.now(tz="UTC")) + pd.Timedelta(
        minutes=settings.late_arrival_minutes
    )
    if newest > limit:
        logger.warning(
            "%d alerts are timestamped more than %d minutes ahead of this machine's clock "
            "(newest %s): the watermark is held at %s",
            int((stamps > limit).sum()),
            settings.late_arrival_minutes,
            stamps.max().isoformat(),
            limit.isoformat(),
        )
        newest = limit
    return newest.isoformat()


def next_ledger(
    ledger: pd.DataFrame, taken: list[pd.DataFrame], watermark: str | None, settings: Settings
) -> pd.DataFrame:
    """The ledger after a run: the old one and the ids this run took or rejected as late,
    less what fell behind the ledger's start."""
    parts = [ledger] + [
        pd.DataFrame(
            {
                "alert_id": frame["alert_id"].astype(str).reset_index(drop=True),
                "timestamp_ns": to_epoch_ns(frame["timestamp"]),
            }
        )
        for frame in taken
        if len(frame)
    ]
    parts = [part for part in parts if len(part)]
    if not parts or not watermark:
        return ledger.iloc[:0]
    combined = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    start = _ledger_start(_utc(watermark), settings)
    combined = combined[combined["timestamp_ns"].to_numpy() >= start]
    if len(parts) > 1:
        # An id classified again (--since) is in the old ledger already.
        combined = combined.drop_duplicates("alert_id", keep="last")
    return combined.reset_index(drop=True)


def _supersede_uncommitted(output: Path, state: RunState) -> None:
    """Result folders newer than the last saved state came from a run that died before
    saving it; their batch is about to be processed again, so move them aside."""
    for folder in sorted(p for p in output.iterdir() if p.is_dir() and p.name[:1].isdigit()):
        if state.last_run_id is None or folder.name > state.last_run_id:
            target = output / SUPERSEDED_DIR / folder.name
            target.parent.mkdir(exist_ok=True)
            logger.warning(
                "results %s were written by a run that did not finish; moved to %s "
                "(its alerts are classified again now)",
                folder.name,
                target,
            )
            shutil.move(str(folder), str(target))


def with_model_timing(settings: Settings, loaded: tracking.LoadedModel) -> Settings:
    """The settings to group with under ``loaded``: the propagation lag, cause
    lateness (alertclf.timing), early-end share and symptom families (alertclf.regroup)
    it learned from its history, unless the settings configure them."""
    timed = with_learned_lag(settings, loaded.metadata.get("propagation_lag_minutes"))
    timed = with_learned_lateness(timed, loaded.metadata.get("cause_lateness_minutes"))
    timed = with_learned_share(timed, loaded.metadata.get("early_end_share"))
    timed = with_learned_families(timed, loaded.metadata.get("symptom_families"))
    logger.info(
        "grouping with a propagation lag of %s, cause lateness %s",
        _lag_text(timed),
        _lateness_text(timed),
    )
    return timed


def log_timing(settings: Settings) -> None:
    """The propagation lag and cause lateness (0: none) this run groups with, as metrics
    of the active run."""
    tracking.log_metrics(
        {
            "propagation_lag_minutes": settings.hop_lag_minutes,
            "cause_lateness_minutes": settings.cause_lateness_minutes or 0.0,
        }
    )


def _lag_text(settings: Settings) -> str:
    default = " (default)" if settings.propagation_lag_minutes is None else ""
    return f"{settings.hop_lag_minutes:g} min{default}"


def _lateness_text(settings: Settings) -> str:
    minutes = settings.cause_lateness_minutes
    return "none" if minutes is None else f"{minutes:g} min"


def _production_or_bootstrap(
    new: pd.DataFrame, context: GraphContext, settings: Settings, bootstrap: bool, state: RunState
) -> tuple[tracking.LoadedModel, bool]:
    name = settings.model_name
    if tracking.alias_version(name, tracking.PRODUCTION) is not None:
        return tracking.load_model(name, alias=tracking.PRODUCTION), False
    if not bootstrap:
        raise FlowError(
            f"the registry has no '{name}@production' model; run `alertclf retrain` "
            "(or classify with bootstrapping allowed) first"
        )
    if len(new) < settings.min_clustering_samples:
        raise FlowError(
            f"the registry has no '{name}@production' model and this batch has only "
            f"{len(new)} alerts to train a first one (min_clustering_samples="
            f"{settings.min_clustering_samples}); run `alertclf retrain --history ...` first"
        )
    logger.warning("no production model in the registry: training a first one on this batch")
    settings, _ = learn_timing(new, context, settings)
    prepared = prepare_batch(new, context, settings, state.pipeline_state())
    settings = learn_endings(prepared, context, settings)
    version, _ = _train_and_register(prepared, settings, context, source="bootstrap")
    decision = {
        "decision.outcome": "promoted",
        "decision.reason": "bootstrap: no production model existed; trained on the "
        f"{len(new)} alerts of the first classify batch",
        "decision.decided_by": "classify --run-once bootstrap",
        "decision.decided_at": datetime.now(UTC).isoformat(),
    }
    tracking.set_version_tags(name, version, decision)
    tracking.set_alias(name, tracking.PRODUCTION, version)
    return tracking.load_model(name, alias=tracking.PRODUCTION), True


def _log_classify(
    result: BatchResult,
    batch: AlertBatch,
    new: pd.DataFrame,
    metadata: dict,
    folder: Path,
    stage_times: dict[str, float],
    started: float,
) -> None:
    import mlflow

    incidents = result.incidents
    metrics = {
        "rows_read": batch.rows_read,
        "rows_accepted": len(batch.alerts),
        "rows_rejected": len(batch.rejected),
        "rows_new": len(new),
        "rows_rejected_late": metadata["rows_rejected_late"],
        "incident_groups": len(incidents),
        # alerts of earlier runs moved to another group (group_revisions.csv)
        "alerts_regrouped": len(result.revisions),
        "clusters_seen": len(result.clusters),
        **result.statistics,
        **{f"seconds_{k}": v for k, v in stage_times.items()},
        "seconds_total": time.perf_counter() - started,
    }
    tracking.log_metrics(metrics)
    mlflow.set_tags(
        {
            "alertclf.flow": "classify",
            "alertclf.results_dir": str(folder),
            "model.name": metadata["model_name"],
            "model.version": str(metadata["model_version"]),
            "model.alias": str(metadata["model_alias"]),
            "model.bootstrapped": str(metadata["bootstrapped_model"]),
        }
    )
    logged = [folder / name for name in RESULT_FILES if name not in DERIVED_RESULT_FILES]
    tracking.log_files(logged, artifact_path="results")
    tracking.log_files([folder / REPORT_FILE], artifact_path="results")
    tracking.log_files(sorted((folder / CHARTS_DIR).glob("*.png")), artifact_path="results/charts")


def _report_files(
    tables: dict[str, pd.DataFrame],
    metadata: dict,
    charts: Callable[[], dict[str, bytes]] | None = None,
) -> dict[str, bytes]:
    """``report.html`` and its charts (``charts``: a callable that returns them, else they
    are drawn here) for the results folder. A picture is never worth a failed run: any
    error costs the report (with a warning), not the batch."""
    try:
        from alertclf.report import classify_report_files

        return classify_report_files(tables, metadata, charts() if charts else None)
    except Exception as err:
        logger.warning("report.html skipped: %s: %s", type(err).__name__, err)
        return {}


def _log_plots(build: Callable[[], dict[str, Any]], what: str) -> None:
    """Charts as artifacts ``plots/<name>.png`` of the active run; a failure to draw or
    log them is a warning, never the flow's failure."""
    try:
        from alertclf import plots

        figures = build()
        with tempfile.TemporaryDirectory() as tmp:
            paths = plots.save_figures(figures, tmp)
            tracking.log_files(list(paths.values()), artifact_path="plots")
    except Exception as err:
        logger.warning("%s plots skipped: %s: %s", what, type(err).__name__, err)


# --- retrain --------------------------------------------------------------------------
@dataclass
class RetrainOutcome:
    version: str
    promoted: bool
    reason: str
    candidate_score: float
    production_score: float | None
    production_version: str | None
    mlflow_run_id: str
    candidates: pd.DataFrame
    metrics: dict


def retrain(
    settings: Settings,
    history: str | Path,
    graph: str | Path,
    models: str | Path | None = None,
) -> RetrainOutcome:
    """Train a candidate on history, register it (``staging``) and promote it when it
    beats ``production`` by more than ``promotion_threshold`` on held-out recent alerts."""
    started = time.perf_counter()
    tracking_cfg = tracking.configure_tracking(models)
    batch, context = load_inputs(
        history, graph, settings, history=True, cache_dir=tracking_cfg.models_dir / "cache"
    )
    alerts = _history_window(batch.alerts, settings)
    train_alerts, holdout = split_holdout(alerts, settings.holdout_fraction)
    if len(train_alerts) < settings.min_clustering_samples:
        raise FlowError(
            f"{_safe(history)}: {len(train_alerts)} alerts to train on after holding out the "
            f"most recent {settings.holdout_fraction:.0%}; need at least "
            f"{settings.min_clustering_samples} (min_clustering_samples)"
        )
    name = settings.model_name
    with tracking.start_run(settings.retrain_experiment, tracking_cfg, run_name="retrain") as run:
        tracking.log_settings(settings)
        import mlflow

        mlflow.log_params(
            {
                "input.history": _safe(history),
                "input.graph": _safe(graph),
                "input.history_rows_read": batch.rows_read,
                "input.history_rows_used": len(alerts),
            }
        )
        t0 = time.perf_counter()
        settings, lag = learn_timing(train_alerts, context, settings)
        tracking.log_metrics({"propagation_lag_samples": lag.samples})
        prepared = prepare_batch(train_alerts, context, settings)
        settings = learn_endings(prepared, context, settings)
        held = prepare_batch(holdout, context, settings, prepared.state)
        seconds = {"prepare": time.perf_counter() - t0}
        t0 = time.perf_counter()
        version, candidates = _train_and_register(prepared, settings, context, source="retrain")
        seconds["train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        window = _window(train_alerts, holdout)
        decision = decide_promotion(version, held, settings, window)
        seconds["decide"] = time.perf_counter() - t0
        _log_plots(lambda: _promotion_figures(version, decision, settings), "promotion")
        tracking.set_version_tags(name, version, decision.tags)
        if decision.promoted:
            tracking.set_alias(name, tracking.PRODUCTION, version)
        tracking.log_metrics(
            {
                "decision_candidate_score": decision.candidate_score,
                "decision_production_score": decision.production_score or float("nan"),
                "decision_promoted": float(decision.promoted),
                "seconds_total": time.perf_counter() - started,
            }
        )
        mlflow.set_tags(
            {
                "alertclf.flow": "retrain",
                "model.version": version,
                "decision.outcome": decision.tags["decision.outcome"],
            }
        )
        metrics = dict(mlflow.get_run(run.info.run_id).data.metrics)
    logger.info(
        "retrain mlflow_run_id=%s version=%s outcome=%s candidate_score=%s production_score=%s "
        "production_version=%s alerts=%d seconds %s total=%.2f reason=%r",
        run.info.run_id,
        version,
        decision.tags["decision.outcome"],
        decision.tags["decision.candidate_score"],
        decision.tags["decision.production_score"],
        decision.production_version or "none",
        len(alerts),
        " ".join(f"{k}={v:.2f}" for k, v in seconds.items()),
        time.perf_counter() - started,
        decision.reason,
    )
    return RetrainOutcome(
        version=version,
        promoted=decision.promoted,
        reason=decision.reason,
        candidate_score=decision.candidate_score,
        production_score=decision.production_score,
        production_version=decision.production_version,
        mlflow_run_id=run.info.run_id,
        candidates=candidates,
        metrics=metrics,
    )


def _train_and_register(
    prepared: Prepared, settings: Settings, context: GraphContext, source: str
) -> tuple[str, pd.DataFrame]:
    """Fit, log params/metrics/profiles/candidates in the active run, register; return
    the version and the table of candidates tried."""
    import mlflow

    model, profiles = train(prepared, settings)
    metrics = dict(model.training_metrics_)
    tracking.log_metrics(metrics)
    mlflow.log_params(
        {
            "model.selected_algorithm": model.algorithm_,
            "model.selected_params": model.selected_["params"],
            "model.propagation_lag_minutes": _lag_text(settings),
            "model.cause_lateness_minutes": _lateness_text(settings),
            "model.early_end_share": str(settings.early_end_share),
            "model.symptom_families": json.dumps(settings.symptom_families, sort_keys=True),
        }
    )
    tracking.log_table(model.candidates_, "candidates.csv")
    _log_plots(lambda: _retrain_figures(model, prepared.features, profiles, settings), "retrain")
    window = _window(prepared.alerts, prepared.alerts.iloc[0:0])
    metadata = {
        "model_name": settings.model_name,
        "algorithm": model.algorithm_,
        "selected": model.selected_,
        "n_clusters": int(model.n_clusters_),
        "metrics": metrics,
        "feature_names": [str(c) for c in prepared.features.columns],
        "training_rows": len(prepared.alerts),
        "data_window": window,
        "graph_fingerprint": context.fingerprint,
        "source": source,
        # Learned from this history unless configured (alertclf.timing); classify groups
        # with it (with_model_timing).
        "propagation_lag_minutes": settings.propagation_lag_minutes,
        "cause_lateness_minutes": settings.cause_lateness_minutes,
        "early_end_share": settings.early_end_share,
        "symptom_families": settings.symptom_families,
        "trained_at": datetime.now(UTC).isoformat(),
        "package_version": __version__,
        "settings": settings.model_dump(),
    }
    version = tracking.log_model_version(
        model, profiles, metadata, prepared.features, settings.model_name
    )
    metadata["version"] = version
    tracking.log_json(profiles, f"v{version}_profiles.json")
    tracking.log_json(metadata, f"v{version}_metadata.json")
    tracking.set_version_tags(
        settings.model_name,
        version,
        {
            "alertclf.source": source,
            "alertclf.algorithm": model.algorithm_,
            "alertclf.n_clusters": model.n_clusters_,
            "alertclf.training_silhouette": round(
                float(metrics.get("silhouette", float("nan"))), 4
            ),
            "alertclf.data_window": window,
        },
    )
    return version, model.candidates_


def _retrain_figures(
    model: Any, features: pd.DataFrame, profiles: dict[int, dict], settings: Settings
) -> dict[str, Any]:
    from alertclf import plots

    Z, labels = plots.model_space(model, features, random_state=settings.random_state)
    names = {int(c): str(p.get("name", "")) for c, p in profiles.items()}
    return plots.retrain_figures(
        Z, labels, names, random_state=settings.random_state, n_total=len(features)
    )


def _promotion_figures(version: str, decision: Decision, settings: Settings) -> dict[str, Any]:
    from alertclf import plots

    figure = plots.promotion_comparison(
        decision.candidate_score,
        decision.production_score,
        settings.promotion_threshold,
        candidate_version=version,
        production_version=decision.production_version,
        outcome=decision.tags["decision.outcome"],
    )
    return {"promotion_comparison": figure}


def _history_window(alerts: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """The last ``history_days`` of history, counted back from its newest alert."""
    if len(alerts) == 0:
        return alerts
    ts = pd.to_datetime(alerts["timestamp"], utc=True)
    return alerts[ts >= ts.max() - pd.Timedelta(days=settings.history_days)]


def split_holdout(alerts: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Oldest ``1 - fraction`` to train on, the most recent ``fraction`` held out."""
    if len(alerts) == 0:
        return alerts, alerts
    ts = pd.to_datetime(alerts["timestamp"], utc=True)
    cut = ts.sort_values().iloc[int(len(ts) * (1 - fraction))] if len(ts) > 1 else ts.max()
    return alerts[ts < cut], alerts[ts >= cut]


def _window(train_alerts: pd.DataFrame, holdout: pd.DataFrame) -> str:
    def span(frame: pd.DataFrame) -> str:
        if len(frame) == 0:
            return "none"
        ts = pd.to_datetime(frame["timestamp"], utc=True)
        return f"{ts.min().isoformat()} .. {ts.max().isoformat()} ({len(frame)} alerts)"

    text = f"train {span(train_alerts)}"
    if len(holdout):
        text += f"; held out {span(holdout)}"
    return text


@dataclass
class Decision:
    promoted: bool
    reason: str
    candidate_score: float
    production_score: float | None
    production_version: str | None
    tags: dict[str, str]


def holdout_score(features: pd.DataFrame, labels: np.ndarray, settings: Settings) -> float:
    """How well a model's labels describe the held-out alerts, in one space for all
    models: silhouette in the standardised features (sampled the same way for every
    model) plus agreement with the alerts' incident families -- the criterion the model
    was selected by (see :func:`alertclf.clustering.selection_key`)."""
    from alertclf.clustering import family_agreement, incident_families, sampled_silhouette

    values = features.to_numpy(dtype=np.float64)
    scale = values.std(axis=0)
    scale[scale == 0] = 1.0
    standardised = (values - values.mean(axis=0)) / scale
    labels = np.asarray(labels)
    silhouette = sampled_silhouette(
        standardised, labels, settings.silhouette_sample_size, settings.random_state
    )
    return silhouette + family_agreement(incident_families(values, features.columns), labels)


def decide_promotion(version: str, held: Prepared, settings: Settings, window: str) -> Decision:
    name = settings.model_name
    candidate = tracking.load_model(name, version=version)
    production_version = tracking.alias_version(name, tracking.PRODUCTION)
    cand_score = float("nan")
    if len(held.features) >= 3:
        cand_labels = candidate.predict(held.features)["cluster_id"].to_numpy()
        cand_score = holdout_score(held.features, cand_labels, settings)
    prod_score: float | None = None
    if production_version is None:
        promoted, reason = True, "first model: the registry had no production version"
    else:
        try:
            prod = tracking.load_model(name, alias=tracking.PRODUCTION)
            prod_labels = prod.predict(held.features)["cluster_id"].to_numpy()
            prod_score = holdout_score(held.features, prod_labels, settings)
        except Exception as err:  # a broken or incompatible production model
            promoted = True
            reason = f"production v{production_version} cannot score current data ({err})"
        else:
            promoted, reason = _compare(cand_score, prod_score, settings.promotion_threshold)
    tags = {
        "decision.outcome": "promoted" if promoted else "staged",
        "decision.reason": reason,
        "decision.metric": (
            "silhouette (standardised features) + family agreement (V-measure, homogeneity "
            "counted twice, with the alerts' incident families) of held-out alerts"
        ),
        "decision.candidate_score": _fmt(cand_score),
        "decision.production_score": _fmt(prod_score),
        "decision.production_version": production_version or "none",
        "decision.threshold": str(settings.promotion_threshold),
        "decision.data_window": window,
        "decision.decided_by": "retrain",
        "decision.decided_at": datetime.now(UTC).isoformat(),
    }
    return Decision(promoted, reason, cand_score, prod_score, production_version, tags)


def _compare(candidate: float, production: float, threshold: float) -> tuple[bool, str]:
    if not np.isfinite(candidate):
        return False, "held-out data too small or too uniform to score the candidate"
    if not np.isfinite(production):
        return True, "production gives no usable clusters on the held-out data"
    improvement = (candidate - production) / max(abs(production), 1e-9)
    verdict = (
        f"candidate {candidate:.4f} vs production {production:.4f}: "
        f"{improvement:+.1%} (threshold > {threshold:.0%})"
    )
    if improvement > threshold:
        return True, f"better on the same data: {verdict}"
    return False, f"not better enough, left at staging for review: {verdict}"


def _fmt(value: float | None) -> str:
    return "none" if value is None or not np.isfinite(value) else f"{value:.6f}"


# --- promote --------------------------------------------------------------------------
def promote(
    settings: Settings,
    version: str,
    reject: bool = False,
    reason: str | None = None,
    models: str | Path | None = None,
) -> dict[str, Any]:
    """A reviewer promotes a version to ``production``, or rejects it."""
    tracking.configure_tracking(models)
    name = settings.model_name
    version = str(version)
    if not tracking.version_exists(name, version):
        raise FlowError(f"{name} has no version {version}")
    who = _user()
    now = datetime.now(UTC).isoformat()
    if reject:
        if tracking.alias_version(name, tracking.PRODUCTION) == version:
            raise FlowError(
                f"version {version} is in production; promote another version before "
                "rejecting this one"
            )
        if tracking.alias_version(name, tracking.STAGING) == version:
            tracking.delete_alias(name, tracking.STAGING)
        tags = {
            "decision.outcome": "rejected",
            "decision.reason": reason or "rejected by reviewer",
            "decision.decided_by": who,
            "decision.decided_at": now,
        }
    else:
        previous = tracking.alias_version(name, tracking.PRODUCTION)
        tracking.set_alias(name, tracking.PRODUCTION, version)
        if tracking.alias_version(name, tracking.STAGING) == version:
            tracking.delete_alias(name, tracking.STAGING)
        tags = {
            "decision.outcome": "promoted",
            "decision.reason": reason or f"promoted by reviewer (was v{previous})",
            "decision.decided_by": who,
            "decision.decided_at": now,
            "decision.previous_production": previous or "none",
        }
    tracking.set_version_tags(name, version, tags)
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "reviewer"


# --- replay ----------------------------------------------------------------------------
@dataclass
class ReplayOutcome:
    results_dir: Path
    batches: int
    alerts: int
    seconds: float
    trained_in_process: bool


def replay(
    settings: Settings,
    alerts: str | Path,
    graph: str | Path,
    batch_minutes: float = 15,
    output: str | Path = "results",
    models: str | Path | None = None,
    train_fraction: float = 0.25,
    use_registry: bool = True,
) -> ReplayOutcome:
    """Backtest: the production model (or, without one, a model trained in-process on the
    first ``train_fraction`` of the history) scores the rest as consecutive batches."""
    if settings.engine == "spark":
        from alertclf.spark_engine import replay_flow

        return replay_flow(
            settings, alerts, graph, batch_minutes, output, models, train_fraction, use_registry
        )
    started = time.perf_counter()
    batch, context = load_inputs(alerts, graph, settings)
    data = batch.alerts
    model = None
    if use_registry:
        tracking.configure_tracking(models)
        if tracking.alias_version(settings.model_name, tracking.PRODUCTION) is not None:
            model = tracking.load_model(settings.model_name, alias=tracking.PRODUCTION)
    trained = model is None
    if trained:
        train_alerts, data = split_holdout(data, 1 - train_fraction)
        settings, _ = learn_timing(train_alerts, context, settings)
        prepared = prepare_batch(train_alerts, context, settings)
        settings = learn_endings(prepared, context, settings)
        fitted, profiles = train(prepared, settings)
        predict = fitted.predict_details
        state = prepared.state
    else:
        settings = with_model_timing(settings, model)
        predict, profiles, state = model.predict, model.profiles, None
    results, _ = replay_batches(
        data, context, settings, predict, profiles, batch_minutes, state, progress=True
    )
    combined = combine_batches(results, profiles, context, settings)
    run_id = new_run_id(Path(output))
    metadata = {
        "run_id": run_id,
        "mode": "replay",
        "batches": len(results),
        "batch_minutes": batch_minutes,
        "inputs": {"alerts": _safe(alerts), "graph": _safe(graph)},
        "rows_read": batch.rows_read,
        "rows_accepted": len(batch.alerts),
        "rows_rejected": len(batch.rejected),
        "rows_replayed": int(sum(len(r.alerts) for r in results)),
        # alerts a later batch moved after an earlier one had placed them (alertclf.regroup)
        "alerts_regrouped": int(sum(len(r.revisions) for r in results)),
        "model": "trained in-process" if trained else f"{model.name} v{model.version}",
        "train_fraction": train_fraction if trained else None,
        "package_version": __version__,
        "seconds": round(time.perf_counter() - started, 3),
    }
    folder = write_results(
        output,
        run_id,
        {**combined, "rejected_alerts.csv": batch.rejected},
        {
            "run_metadata.json": metadata,
            "clustering_statistics.json": {"batches": [r.statistics for r in results]},
        },
    )
    logger.info(
        "replay run_id=%s batches=%d alerts=%d model=%r seconds total=%.2f",
        run_id,
        len(results),
        metadata["rows_replayed"],
        metadata["model"],
        time.perf_counter() - started,
    )
    return ReplayOutcome(
        folder, len(results), metadata["rows_replayed"], metadata["seconds"], trained
    )


def combine_batches(
    results: list[BatchResult],
    profiles: dict[int, dict],
    context: GraphContext,
    settings: Settings,
) -> dict[str, Table]:
    """One results set from many batches: every alert; each incident as last seen."""
    from alertclf.mapping import mapping_statistics
    from alertclf.pipeline import cluster_summary, order_columns
    from alertclf.ranking import cluster_table

    if not results:
        empty = pd.DataFrame()
        return {name: empty for name in RESULT_FILES if name.endswith(".csv")}
    alerts = order_columns(pd.concat([r.alerts for r in results], ignore_index=True))
    # Later batches moved symptom series earlier ones had placed (alertclf.regroup).
    alerts["group_id"] = apply_revisions(alerts, latest_revisions([r.revisions for r in results]))
    incidents = pd.concat([r.incidents for r in results], ignore_index=True)
    incidents = incidents.drop_duplicates("group_id", keep="last")
    incidents = incidents.sort_values(["importance_score", "group_id"], ascending=[False, True])
    incidents["rank"] = np.arange(1, len(incidents) + 1)
    end = pd.to_datetime(alerts["timestamp"], utc=True).max()
    clusters = cluster_table(alerts, profiles, context.features, end)
    alerts["cluster_rank"] = alerts["cluster_id"].map(
        clusters.set_index("cluster_id")["cluster_rank"]
    )
    fake = BatchResult(
        alerts,
        incidents,
        clusters,
        cluster_summary(alerts, profiles),
        mapping_statistics(alerts),
        {},
        results[-1].state,
        {},
    )
    tables = result_tables(fake, AlertBatch(alerts.iloc[0:0], pd.DataFrame(), 0, [], []))
    tables.pop("rejected_alerts.csv")
    return tables


# --- evaluate ---------------------------------------------------------------------------
def evaluate_results(
    results_dir: str | Path, truth_path: str | Path, graph: str | Path | None = None
) -> dict[str, dict[str, float]]:
    from alertclf.evaluation import evaluate
    from alertclf.io.results import unescape_cell

    folder = Path(results_dir)
    final = folder / "alert_consolidation_final.csv"
    if not final.exists():
        raise FlowError(f"{folder}: no alert_consolidation_final.csv (is this a results folder?)")
    try:
        truth = pd.read_csv(truth_path, dtype={"alert_id": str})
    except (OSError, ValueError) as err:
        raise FlowError(f"{truth_path}: cannot read the truth file ({err})") from None
    missing = {"alert_id", "incident_id"} - set(truth.columns)
    if missing:
        raise FlowError(f"{truth_path}: missing column(s) {sorted(missing)}")
    results = pd.read_csv(
        final,
        dtype={"alert_id": str, "group_id": str, "duplicate_of": str, "mapped_service": str},
        keep_default_na=False,
    )
    for column in ("alert_id", "service", "mapped_service"):
        results[column] = results[column].map(unescape_cell)
    results["is_duplicate"] = results["is_duplicate"].astype(str).str.lower() == "true"
    incidents_path = folder / "incident_groups.csv"
    incidents = (
        pd.read_csv(incidents_path, keep_default_na=False) if incidents_path.exists() else None
    )
    nodes = None
    if graph is not None:
        nodes = {str(n) for n in _load_graph(graph).nodes}
    return evaluate(results, truth, incidents, nodes)
