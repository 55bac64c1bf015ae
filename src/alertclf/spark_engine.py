"""The Spark engine: the same pipeline, spread over a Spark cluster (``--engine spark``).

Where each step runs
--------------------

=====================  ==========================================================  ==========
step                   how                                                         where
=====================  ==========================================================  ==========
read + validate        one task per input file runs :func:`read_alert_source`      executors
                       (the local reader: same rejects, same reasons); ids taken
                       by an earlier file are settled in a second pass over only
                       the files that share ids (none, for date-partitioned exports)
select new alerts      watermark / ``--since`` / ``--until`` filter                executors
map services           the *distinct* service names are mapped once                driver
partition              alert -> weakly connected component of its service in the   executors
                       graph (an unmapped service is its own component)
consolidate, dedup,    ``applyInPandas`` per component runs :func:`prepare_batch`  executors
features               with that component's share of the carried state
cluster                ``mlflow.pyfunc.spark_udf`` on the registered version       executors
root cause, incidents  per component: :func:`root_causes`, :func:`incident_table`  executors
rank incidents         one row per incident, sorted                                driver
rank clusters,         :func:`cluster_table`, :func:`cluster_summary`,             driver
summaries              :func:`mapping_statistics` over ~12 narrow columns
per-alert files        CSV parts written by the executors, joined in order         executors
                       (+ partitioned Parquet)                                     + driver
=====================  ==========================================================  ==========

Why components make the results identical
------------------------------------------
An alert joins a group only through its own service or one of its *direct*
dependencies (the evidence rule), or re-roots groups whose members are its direct
callers; an unmapped service groups only with its own normalised name; dedup episodes
and burst counts are per service. So a group never spans two weakly connected
components of the dependency graph, and every decision for an alert reads only groups,
series and episodes of its own component. Running the unchanged local code once per
component (alerts in the same time order) therefore gives the same groups, duplicates
and features; the carried state is split by component and merged back, then trimmed at
the batch's global end exactly as one local run trims it.

The limit: a component is one task. Most real dependency graphs are one big component
(a gateway calls everything), so the consolidation loop of the mapped alerts runs on
one core however big the cluster (its dedup and features too: they run in the same
task); what scales out is reading, validation, the unmapped services, scoring and
writing. Cutting a component by time would need the state carried from the previous
slice, i.e. sequential processing again.

pandas: Spark 4.3 warns that it "does not yet fully support pandas >= 3.0.0"; what this
module uses (Arrow-backed ``mapInPandas``/``applyInPandas`` and ``spark_udf``) works with
pandas 3.1.1 and gives results identical to the local engine (``tests/test_spark.py``).
``pyspark.pandas`` does not, and is not used. Nothing here imports pyspark at import time.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np
import pandas as pd

from alertclf import contracts
from alertclf.consolidate import (
    AS_OF_COLUMNS,
    BURST_NS,
    NS_PER_MINUTE,
    ConsolidationState,
    Group,
    series_memory_ns,
    service_keys,
    to_epoch_ns,
)
from alertclf.dedup import DedupState
from alertclf.errors import AlertclfError
from alertclf.io.alerts import InputError, as_rejected, concat_rejected
from alertclf.mapping import ENRICHMENT_COLUMNS
from alertclf.pipeline import GraphContext, PipelineState
from alertclf.regroup import RegroupState, apply_revisions, empty_revisions, latest_revisions
from alertclf.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from alertclf.io.alerts import AlertBatch
    from alertclf.io.state import RunState
    from alertclf.tracking import LoadedModel

logger = logging.getLogger(__name__)

PANDAS3_WARNING = "PySpark does not yet fully support pandas"
# Driver-side statistics use every feature row up to this many alerts (exactly the local
# engine's numbers), a sample beyond (57 doubles a row: 200k rows are ~90 MB).
MAX_DRIVER_FEATURE_ROWS = 200_000
MODEL_RESULT_TYPE = "cluster_id long, cluster_confidence double, is_outlier boolean"
STRING_COLUMNS = tuple(
    c for c in contracts.CANONICAL_COLUMNS if c not in ("timestamp", "source_row")
)
# Internal columns: input file number, row kind, component key, pickled side payload.
FILE, KIND, COMPONENT, PAYLOAD, BATCH = "_file", "_kind", "_component", "_payload", "_batch"
# The columns the driver needs per alert for cluster ranking, summaries and statistics.
NARROW_COLUMNS = (
    "alert_id",
    "timestamp",
    "service",
    "alert_name",
    "severity",
    "mapped_service",
    "mapping_method",
    "mapping_confidence",
    "group_id",
    "cluster_id",
    "cluster_confidence",
    "is_outlier",
    "is_duplicate",
)


class EmptyBatch(Exception):
    """No new alerts: the caller runs the local engine on the empty batch instead."""


class SparkUnavailableError(AlertclfError):
    """Spark cannot run here (pyspark or Java missing); the message says what to install."""


# --- the session ----------------------------------------------------------------------------
def spark_session(
    master: str = "local[2]", app_name: str = "alertclf", shuffle_partitions: int | None = None
) -> SparkSession:
    """A Spark session for the pipeline (created once per process, then reused)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as err:
        raise SparkUnavailableError(
            "the Spark engine needs pyspark: pip install 'alertclf[spark]' (make test does)"
        ) from err
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        raise SparkUnavailableError(
            "the Spark engine needs Java 17: apt-get install -y openjdk-17-jre-headless "
            "(or set JAVA_HOME)"
        )
    local = master.startswith("local")
    if local:
        # A local run talks to itself only; the machine's hostname may not resolve.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers run this interpreter (the one with alertclf installed); on a cluster
    # set PYSPARK_PYTHON to the executors' interpreter before starting.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    warnings.filterwarnings("ignore", message=PANDAS3_WARNING, category=FutureWarning)
    # pyspark's own pandas conversions still pass copy=False, which pandas 3 deprecates.
    warnings.filterwarnings("ignore", message="The copy keyword is deprecated", module="pyspark")
    if shuffle_partitions is None:
        # Local runs: a few partitions per core; on a cluster Spark's default (200) or
        # the user's spark-defaults apply, with adaptive execution coalescing them.
        shuffle_partitions = 4 * _local_cores(master) if local else 200
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # Workers inherit the pandas 3 warning filter; each task would print it otherwise.
        .config("spark.executorEnv.PYTHONWARNINGS", f"ignore:{PANDAS3_WARNING}:FutureWarning")
    )
    started = time.perf_counter()
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if spark.sparkContext.master != master:
        logger.warning(
            "a Spark session on %s already runs in this process: using it, not %s",
            spark.sparkContext.master,
            master,
        )
    logger.info(
        "spark session on %s (Spark %s) in %.1f s",
        master,
        spark.version,
        time.perf_counter() - started,
    )
    return spark


def _local_cores(master: str) -> int:
    inside = master[master.find("[") + 1 : master.find("]")] if "[" in master else "1"
    if inside.split(",")[0].strip() == "*":
        return os.cpu_count() or 2
    try:
        return max(int(inside.split(",")[0]), 1)
    except ValueError:
        return 2


# --- reading ---------------------------------------------------------------------------------
@dataclass
class SparkInput:
    """Validated alerts as a Spark DataFrame; the rejects and counts on the driver, exactly
    as :func:`alertclf.io.alerts.read_alerts` gives them."""

    alerts: DataFrame  # canonical columns + _file
    rejected: pd.DataFrame
    rows_read: int
    rows_accepted: int
    files: list[str]
    notes: list[str]


def _for_spark(frame: pd.DataFrame) -> pd.DataFrame:
    """pandas 3 keeps text in Arrow-backed ``str`` columns, which PySpark 4.3 cannot hand
    to Arrow once they hold more than one chunk ("Cannot convert ChunkedArray to
    Array"): give it plain Python strings."""
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.StringDtype):
            frame[column] = frame[column].astype(object)
    return frame


def _spark_schema_ddl(columns: list[tuple[str, str]]) -> str:
    return ", ".join(f"`{name}` {kind}" for name, kind in columns)


def _canonical_columns() -> list[tuple[str, str]]:
    kinds = {"timestamp": "timestamp", "source_row": "long"}
    return [(c, kinds.get(c, "string")) for c in contracts.CANONICAL_COLUMNS]


READ_SCHEMA = _spark_schema_ddl(
    [*_canonical_columns(), (FILE, "int"), (KIND, "string"), (PAYLOAD, "binary")]
)


def _read_files(
    batches: Iterator[pd.DataFrame], settings: Settings, known: dict[int, dict]
) -> Iterator[pd.DataFrame]:
    """Executor side: read whole files with the local reader. Accepted rows stream out in
    slices; one ``m`` row per file carries its rejects, row count and notes (pickled, so
    the driver rebuilds the exact frames), an ``e`` row an unusable file's message."""
    from alertclf.io.alerts import read_alert_source
    from alertclf.io.sources import Source

    warnings.filterwarnings("ignore", message=PANDAS3_WARNING, category=FutureWarning)
    for chunk in batches:
        for number, name in zip(chunk[FILE].tolist(), chunk["name"].tolist(), strict=True):
            try:
                batch = read_alert_source(
                    Source.from_path(name), settings, known_ids=known.get(int(number))
                )
            except InputError as err:
                yield _side_row(number, "e", str(err).encode("utf-8"))
                continue
            accepted = batch.alerts
            for start in range(0, len(accepted), 100_000):
                part = accepted.iloc[start : start + 100_000].copy()
                part[FILE] = np.int32(number)
                part[KIND] = "a"
                part[PAYLOAD] = None
                yield _for_spark(part)
            payload = pickle.dumps((batch.rejected, batch.rows_read, batch.files, batch.notes))
            yield _side_row(number, "m", payload)


def _side_row(number: int, kind: str, payload: bytes) -> pd.DataFrame:
    row: dict[str, Any] = {c: [None] for c in contracts.CANONICAL_COLUMNS}
    row["timestamp"] = pd.Series([pd.NaT], dtype="datetime64[us, UTC]")
    row["source_row"] = pd.Series([None], dtype="Int64")
    row.update({FILE: [np.int32(number)], KIND: [kind], PAYLOAD: [payload]})
    return pd.DataFrame(row)


def read_alerts_spark(spark: SparkSession, location: str | Path, settings: Settings) -> SparkInput:
    """Read and validate alert files on the executors, one task per file.

    Blob locations are read on the driver with the Python client (Spark here has no
    hadoop-azure jars) and handed to Spark.
    """
    from alertclf.io.azure import is_azure_url
    from alertclf.io.sources import list_sources

    if is_azure_url(str(location)):
        from pyspark.sql import functions as F

        from alertclf.consolidate import to_epoch_ns
        from alertclf.io.alerts import read_alerts

        batch = read_alerts(location, settings)
        # Input order is (file, row): number the files in the order they were read.
        numbers = {name: i for i, name in enumerate(batch.files)}
        file_number = batch.alerts["source_file"].map(numbers).fillna(0).astype(np.int32)
        frame = _for_spark(batch.alerts.assign(**{FILE: file_number}))
        # Timestamps cross as epoch microseconds: pyspark converts datetime columns through
        # a pandas API that pandas 3 deprecates (and then falls back to a slow path).
        frame["timestamp"] = to_epoch_ns(frame["timestamp"]) // 1000
        kinds = [(c, "long" if c == "timestamp" else k) for c, k in _canonical_columns()]
        alerts = spark.createDataFrame(frame, schema=_spark_schema_ddl([*kinds, (FILE, "int")]))
        alerts = alerts.withColumn("timestamp", F.timestamp_micros("timestamp"))
        return SparkInput(
            alerts, batch.rejected, batch.rows_read, len(batch.alerts), batch.files, batch.notes
        )
    sources = list_sources(location)
    names = [s.name for s in sources]
    raw = _read_pass(spark, names, list(range(len(names))), settings, {}).persist()
    if len(names) > 1:
        known = _ids_taken_earlier(raw, names)
        if known:
            # Rare (overlapping exports): read those files again knowing the earlier ids,
            # as the local reader does file after file.
            logger.info("%d files share alert ids with earlier files: re-reading", len(known))
            again = _read_pass(spark, names, sorted(known), settings, known)
            kept = raw.filter(~raw[FILE].isin(sorted(known)))
            raw = kept.unionByName(again).persist()
    side = raw.filter(raw[KIND] != "a").select(FILE, KIND, PAYLOAD).collect()
    errors = sorted((r[FILE], bytes(r[PAYLOAD]).decode("utf-8")) for r in side if r[KIND] == "e")
    if errors:
        raise InputError(errors[0][1])
    per_file = {r[FILE]: pickle.loads(bytes(r[PAYLOAD])) for r in side if r[KIND] == "m"}
    alerts = raw.filter(raw[KIND] == "a").drop(KIND, PAYLOAD)
    batch = _combine_side(per_file, names)
    accepted = alerts.count()
    logger.info(
        "read %d files: %d rows, %d accepted, %d rejected",
        len(names),
        batch.rows_read,
        accepted,
        len(batch.rejected),
    )
    return SparkInput(alerts, batch.rejected, batch.rows_read, accepted, batch.files, batch.notes)


def _read_pass(
    spark: SparkSession,
    names: list[str],
    numbers: list[int],
    settings: Settings,
    known: dict[int, dict],
) -> DataFrame:
    # A token per read: the files change between runs while their names do not, and Spark
    # would otherwise answer a new read from the cache of an identical earlier plan.
    files = spark.createDataFrame(
        pd.DataFrame(
            {
                FILE: np.asarray(numbers, dtype=np.int32),
                "name": [names[i] for i in numbers],
                "read": uuid.uuid4().hex,
            }
        )
    )
    # One file per partition: files are the unit of parallel reading.
    files = files.repartitionByRange(max(len(numbers), 1), FILE)

    def reader(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return _read_files(batches, settings, known)

    return files.mapInPandas(reader, READ_SCHEMA)


def _ids_taken_earlier(raw: DataFrame, names: list[str]) -> dict[int, dict[str, tuple[str, int]]]:
    """Per file, the ids it shares with an earlier file, mapped to where they were first
    accepted (what :func:`read_alerts` passes as ``known_ids``)."""
    from pyspark.sql import functions as F

    accepted = raw.filter(raw[KIND] == "a")
    shared = (
        accepted.groupBy("alert_id")
        .agg(
            F.min(F.struct(FILE, "source_row")).alias("first"),
            F.collect_set(FILE).alias("files"),
        )
        .filter(F.size("files") > 1)
        .collect()
    )
    known: dict[int, dict[str, tuple[str, int]]] = {}
    for row in shared:
        first_file, first_row = row["first"][FILE], int(row["first"]["source_row"])
        for number in row["files"]:
            if number != first_file:
                known.setdefault(int(number), {})[row["alert_id"]] = (
                    names[first_file],
                    first_row,
                )
    return known


def _combine_side(per_file: dict[int, tuple], names: list[str]) -> AlertBatch:
    """Rejects, counts and notes of every file, combined as :func:`read_alerts` does."""
    from alertclf.io.alerts import AlertBatch, _combine, _empty_alerts

    batches = []
    for number in range(len(names)):
        rejected, rows_read, files, notes = per_file[number]
        batches.append(AlertBatch(_empty_alerts(), rejected, rows_read, files, notes))
    return _combine(batches)


# --- selecting the new alerts ----------------------------------------------------------------
def select_new_spark(
    alerts: DataFrame,
    state: RunState | None,
    settings: Settings,
    since: str | None = None,
    until: str | None = None,
    ledger_ids: DataFrame | None = None,
) -> tuple[DataFrame, DataFrame]:
    """:func:`alertclf.flows.select_new` as Spark filters: the new alerts, and the late
    ones (to be rejected); ``ledger_ids``: :func:`ledger_ids` of the run state's ledger."""
    from pyspark.sql import functions as F

    from alertclf.flows import _ledger_start, _utc

    ts = F.col("timestamp")
    new, late = alerts, alerts.limit(0)
    if since:
        new = alerts.filter(ts >= F.lit(_utc(since).to_pydatetime()))
    elif state is not None and state.watermark:
        watermark = _utc(state.watermark)
        lower = watermark - pd.Timedelta(minutes=settings.late_arrival_minutes)
        start = pd.Timestamp(_ledger_start(watermark, settings), tz="UTC")
        unseen = alerts
        if ledger_ids is not None:
            unseen = alerts.join(F.broadcast(ledger_ids), "alert_id", "left_anti")
        new = unseen.filter(ts >= F.lit(lower.to_pydatetime()))
        late = unseen.filter(
            (ts < F.lit(lower.to_pydatetime())) & (ts >= F.lit(start.to_pydatetime()))
        )
    if until:
        new = new.filter(ts < F.lit(_utc(until).to_pydatetime()))
        late = late.filter(ts < F.lit(_utc(until).to_pydatetime()))
    return new, late


def _count_in_ledger(alerts: DataFrame, ledger_ids: DataFrame | None) -> int:
    """How many of the read alerts an earlier run took or rejected."""
    from pyspark.sql import functions as F

    if ledger_ids is None:
        return 0
    return alerts.join(F.broadcast(ledger_ids), "alert_id", "left_semi").count()


def ledger_ids(spark: SparkSession, ledger: pd.DataFrame) -> DataFrame | None:
    """The ledger's ids as a Spark frame to broadcast (ids only: a million in ~50 MB),
    None for an empty ledger. Built once a run: the selection and the count of alerts
    seen before both join it, and each conversion of a million ids costs seconds."""
    if not len(ledger):
        return None
    return spark.createDataFrame(_for_spark(ledger[["alert_id"]].copy()))


# --- components ------------------------------------------------------------------------------
def component_labels(graph: nx.DiGraph, state: PipelineState | None = None) -> dict[str, str]:
    """Service key -> its partition: the weakly connected component of the graph (named
    after its smallest node). Components that one carried group spans are joined: that
    happens only when the graph changed while an incident was open, and the group must
    stay in one task."""
    labels: dict[str, str] = {}
    for nodes in nx.weakly_connected_components(graph):
        name = "c:" + min(str(n) for n in nodes)
        labels.update({str(n): name for n in nodes})
    parent: dict[str, str] = {}

    def find(label: str) -> str:
        while parent.get(label, label) != label:
            label = parent[label]
        return label

    spanned: set[str] = set()
    for group in state.consolidation.groups if state is not None else ():
        keys = {group.root, *group.members}
        spanned |= keys
        found = sorted({find(labels.get(k, k)) for k in keys})
        for other in found[1:]:
            parent[other] = found[0]
    if not parent:
        return labels
    return {key: find(labels.get(key, key)) for key in {*labels, *spanned}}


def component_of_key(key: str, labels: dict[str, str]) -> str:
    """A service key's component; an unmapped key (``?name``) is a component of its own."""
    return labels.get(key, key)


def service_components(
    services: pd.Series, context: GraphContext, settings: Settings, labels: dict[str, str]
) -> pd.DataFrame:
    """``service -> component`` for distinct service names, mapped as the pipeline maps."""
    from alertclf.mapping import enrich_alerts

    frame = pd.DataFrame({"service": services.astype("str").to_numpy()})
    enriched = enrich_alerts(frame, context.graph, settings, context.mapper)
    keys = service_keys(enriched)
    return pd.DataFrame(
        {"service": frame["service"], COMPONENT: [component_of_key(k, labels) for k in keys]}
    )


def split_state(state: PipelineState, labels: dict[str, str]) -> dict[str, PipelineState]:
    """The carried state, one share per component."""
    shares: dict[str, PipelineState] = {}

    def share(key: str) -> PipelineState:
        return shares.setdefault(component_of_key(key, labels), PipelineState())

    for group in state.consolidation.groups:
        share(group.root).consolidation.groups.append(group)
    for entry in state.consolidation.series:
        share(entry[0]).consolidation.series.append(entry)
    for key, times in state.consolidation.recent.items():
        share(key).consolidation.recent[key] = list(times)
    for episode in state.dedup.episodes:
        share(str(episode[0]).partition("\x1f")[0]).dedup.episodes.append(episode)
    # A series' candidate groups have roots below it: in its component.
    for gid, root in state.regroup.roots.items():
        share(root[0]).regroup.roots[gid] = root
    for entry in state.regroup.pending:
        share(entry[0]).regroup.pending.append(entry)
    for gid, record in state.regroup.splits.items():  # its members share a component
        share(next(iter(record[6]))).regroup.splits[gid] = record
    return shares


@dataclass(frozen=True)
class StateEnds:
    """The instants at which one local run trims its state (epoch ns): consolidation at
    the newest alert of the batch, bursts and dedup also counting carried times."""

    groups: int | None
    recent: int
    episodes: int


def state_ends(state: PipelineState, newest: int | None) -> StateEnds:
    carried_recent = [t for v in state.consolidation.recent.values() for t in v]
    carried_ends = [int(e[3]) for e in state.dedup.episodes]
    return StateEnds(
        groups=newest,
        recent=max([*carried_recent, *([newest] if newest is not None else [])], default=0),
        episodes=max([*carried_ends, *([newest] if newest is not None else [])], default=0),
    )


def merge_states(parts: list[PipelineState], ends: StateEnds, settings: Settings) -> PipelineState:
    """Per-component states merged and trimmed at the batch's global ends, exactly as one
    local run over the whole batch leaves it (each component only saw its own newest
    alert, so it kept a superset)."""
    window = settings.time_window_minutes * NS_PER_MINUTE
    span = settings.group_max_span_minutes * NS_PER_MINUTE
    groups: list[Group] = []
    series: list[list] = []
    recent: dict[str, list[int]] = {}
    episodes: list[list] = []
    roots: dict[str, list] = {}
    pending: list[list] = []
    splits: dict[str, list] = {}
    for part in parts:
        groups += part.consolidation.groups
        series += part.consolidation.series
        recent.update(part.consolidation.recent)
        episodes += part.dedup.episodes
        roots.update(part.regroup.roots)
        pending += part.regroup.pending
        splits.update(part.regroup.splits)
    regrouping = RegroupState(roots, sorted(pending), splits)
    end = ends.groups
    if end is not None:
        groups = [g for g in groups if end - g.last_seen <= window and end - g.start <= span]
        memory = series_memory_ns(settings)
        series = [s for s in series if end - int(s[3]) <= memory]
        regrouping = regrouping.trimmed(end, settings)
    trimmed = {k: sorted(t for t in v if ends.recent - t < BURST_NS) for k, v in recent.items()}
    episodes = [e for e in episodes if ends.episodes - int(e[3]) <= window]
    groups.sort(key=lambda g: (g.start, g.group_id))
    return PipelineState(
        ConsolidationState(groups, sorted(series), {k: v for k, v in trimmed.items() if v}),
        DedupState(sorted(episodes)),
        regrouping,
    )


# --- per component: the local pipeline -----------------------------------------------------
def _alert_columns(feature_names: list[str]) -> list[tuple[str, str]]:
    """Columns of the prepared alerts (as :func:`prepare_batch` leaves them) + features."""
    enrichment = [
        (c, "double" if c == "mapping_confidence" else "string") for c in ENRICHMENT_COLUMNS
    ]
    grouping = [("group_id", "string"), ("group_reason", "string")]
    as_of = [(c, "double") for c in AS_OF_COLUMNS] + [("cause_family", "string")]
    dedup = [("is_duplicate", "boolean"), ("duplicate_of", "string")]
    features = [(c, "double") for c in feature_names]
    return [*_canonical_columns(), *enrichment, *grouping, *as_of, *dedup, *features]


def _to_alerts(pdf: pd.DataFrame, sort: bool = True) -> pd.DataFrame:
    """Rows from Spark as the local engine holds alerts: in input order (batch, file,
    row), timestamps in UTC."""
    if sort:
        order = [c for c in (BATCH, FILE, "source_row") if c in pdf.columns]
        pdf = pdf.sort_values(order, kind="stable")
    pdf = pdf.reset_index(drop=True)
    stamps = pd.to_datetime(pdf["timestamp"])
    pdf["timestamp"] = (
        stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")
    ).astype("datetime64[us, UTC]")
    pdf["source_row"] = pdf["source_row"].astype("int64")
    return pdf


def _prepare_component(
    key: tuple,
    pdf: pd.DataFrame,
    context_bc: Any,
    settings: Settings,
    states_bc: Any,
    schema_names: list[str],
    batch_ends: dict[int, StateEnds] | None,
    batch_end_ns: dict[int, int],
) -> pd.DataFrame:
    """Executor side, one component: consolidation, dedup and features by the local code
    (:func:`prepare_batch`), batch after batch for a replay. Alert rows, then one ``g``
    row per batch with its groups and the state it leaves (pickled)."""
    from alertclf.pipeline import prepare_batch

    warnings.filterwarnings("ignore", message=PANDAS3_WARNING, category=FutureWarning)
    context: GraphContext = context_bc.value
    component = str(key[0])
    state = states_bc.value.get(component) or PipelineState()
    frame = _to_alerts(pdf)
    numbers = frame[BATCH].to_numpy() if BATCH in frame else np.zeros(len(frame), dtype=np.int64)
    out: list[pd.DataFrame] = []
    sides: list[dict[str, Any]] = []
    for number in np.unique(numbers):
        part = frame[numbers == number]
        alerts = part[list(contracts.CANONICAL_COLUMNS)].reset_index(drop=True)
        # The whole batch's newest alert: regrouping decides at it, as one local run does.
        prepared = prepare_batch(alerts, context, settings, state, end=batch_end_ns[int(number)])
        state = prepared.state
        if batch_ends is not None:
            # Trim as the local replay does after every batch (at the global batch end).
            state = merge_states([state], batch_ends[int(number)], settings)
        rows = pd.concat([prepared.alerts, prepared.features], axis=1)
        rows[FILE] = part[FILE].to_numpy()
        rows[BATCH] = int(number)
        out.append(rows)
        sides.append(
            {
                "batch": int(number),
                "groups": prepared.groups,
                "timings": prepared.timings,
                "revisions": prepared.revisions,
            }
        )
    result = pd.concat(out, ignore_index=True) if out else pd.DataFrame()
    side = _side_frame(component, pickle.dumps((sides, state)))
    result[COMPONENT] = component
    result[KIND] = "a"
    result[PAYLOAD] = None
    rows = pd.concat([_for_spark(result.reindex(columns=schema_names)), side], ignore_index=True)
    return rows[schema_names]


def _side_frame(component: str, payload: bytes) -> pd.DataFrame:
    return pd.DataFrame({COMPONENT: [component], KIND: ["g"], PAYLOAD: [payload]})


def _incidents_component(
    key: tuple,
    alerts: pd.DataFrame,
    side: pd.DataFrame,
    context_bc: Any,
    settings: Settings,
    batch_end_ns: dict[int, int],
) -> pd.DataFrame:
    """Executor side, one component: root causes and incident rows per batch (the
    ranking is global and happens on the driver)."""
    from alertclf.ranking import incident_table, root_causes

    warnings.filterwarnings("ignore", message=PANDAS3_WARNING, category=FutureWarning)
    context: GraphContext = context_bc.value
    sides, _ = pickle.loads(bytes(side[PAYLOAD].iloc[0]))
    alerts = _to_alerts(alerts)
    numbers = alerts[BATCH].to_numpy()
    tables = []
    for entry in sides:
        part = alerts[numbers == entry["batch"]].reset_index(drop=True)
        part["cluster_id"] = part["cluster_id"].astype(np.int64)
        part["is_outlier"] = part["is_outlier"].astype(bool)
        roots = root_causes(
            entry["groups"],
            context.index,
            settings.time_window_minutes,
            settings.cause_lateness_minutes,
        )
        end = pd.Timestamp(batch_end_ns[entry["batch"]], unit="ns", tz="UTC")
        table = incident_table(part, roots, context.features, end, entry["groups"])
        tables.append((entry["batch"], table))
    return pd.DataFrame({COMPONENT: [str(key[0])], PAYLOAD: [pickle.dumps(tables)]})


def _finish_alerts(
    batches: Iterator[pd.DataFrame],
    tables_bc: Any,
    columns: list[str],
) -> Iterator[pd.DataFrame]:
    """Executor side: cluster names and ranks, importance, incident rank and root cause
    per alert, with the same pandas code as :func:`score_batch` (and, for a replay,
    the cluster rank of the combined table as :func:`combine_batches` sets it)."""
    warnings.filterwarnings("ignore", message=PANDAS3_WARNING, category=FutureWarning)
    lookups = tables_bc.value
    incidents, clusters = lookups["incidents"], lookups["clusters"]
    for pdf in batches:
        alerts = _to_alerts(pdf)
        batch = alerts[BATCH].astype(str) + "|"
        group_key = batch + alerts["group_id"].astype(str)
        alerts["cluster_id"] = alerts["cluster_id"].astype(np.int64)
        cluster_key = batch + alerts["cluster_id"].astype(str)
        alerts["cluster_confidence"] = alerts["cluster_confidence"].astype(np.float64).round(4)
        alerts["is_outlier"] = alerts["is_outlier"].astype(bool)
        alerts["is_duplicate"] = alerts["is_duplicate"].astype(bool)
        alerts["cluster_name"] = cluster_key.map(clusters["cluster_name"])
        alerts["cluster_rank"] = cluster_key.map(clusters["cluster_rank"])
        incident_score = group_key.map(incidents["importance_score"])
        cluster_score = cluster_key.map(clusters["importance_score"])
        # An alert matters as much as the incident it belongs to, and a little for its family.
        alerts["importance_score"] = (0.7 * incident_score + 0.3 * cluster_score).round(2)
        alerts["incident_rank"] = group_key.map(incidents["rank"])
        alerts["root_cause_service"] = group_key.map(incidents["root_cause_service"])
        if lookups["combined_rank"] is not None:
            alerts["cluster_rank"] = alerts["cluster_id"].map(lookups["combined_rank"])
        if lookups["revised"] is not None:
            alerts["group_id"] = apply_revisions(alerts, lookups["revised"])
        yield _for_spark(alerts[columns])


def _write_parts(
    batches: Iterator[pd.DataFrame], folder: str, columns: list[str]
) -> Iterator[pd.DataFrame]:
    """Executor side: this partition as one CSV part, written by
    :func:`alertclf.io.results.write_csv` itself (so escaping, dates and line endings are
    exactly those of the local engine's files)."""
    from pyspark import TaskContext

    from alertclf.io.results import write_csv

    warnings.filterwarnings("ignore", message=PANDAS3_WARNING, category=FutureWarning)
    partition = TaskContext.get().partitionId()
    frames = [_to_alerts(pdf, sort=False)[columns] for pdf in batches]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    path = write_csv(frame, Path(folder) / f"part-{partition:06d}.csv")
    yield pd.DataFrame({"partition": [partition], "rows": [len(frame)], "path": [str(path)]})


# --- the batch -------------------------------------------------------------------------------
@dataclass
class SparkBatchResult:
    """What :func:`alertclf.pipeline.score_batch` gives, with the per-alert table left in
    Spark (``alerts``) and the small tables on the driver."""

    alerts: DataFrame  # final per-alert rows (+ _file, _batch) in Spark
    columns: list[str]  # the per-alert columns in result order
    narrow: pd.DataFrame  # NARROW_COLUMNS + cluster_name, in input order
    incidents: pd.DataFrame
    clusters: pd.DataFrame
    cluster_summary: pd.DataFrame
    mapping: pd.DataFrame
    statistics: dict
    batch_statistics: list[dict]
    state: PipelineState
    timings: dict[str, float]
    input: SparkInput
    rows_new: int
    components: int
    model_uri: str
    # classify: moves of alerts published by earlier runs (alertclf.regroup)
    revisions: pd.DataFrame = field(default_factory=empty_revisions)
    regrouped: int = 0  # alerts moved after an earlier batch published them

    def to_pandas(self) -> pd.DataFrame:
        """The per-alert table on the driver, as the local engine has it (small inputs)."""
        frame = _to_alerts(self.alerts.toPandas())
        return frame[self.columns].reset_index(drop=True)


def _model_uri(model: LoadedModel | str) -> tuple[str, dict[int, dict]]:
    if isinstance(model, str):
        from alertclf import tracking

        ref = model.removeprefix("models:/")
        name, _, rest = ref.partition("@") if "@" in ref else ref.partition("/")
        loaded = (
            tracking.load_model(name, alias=rest)
            if "@" in ref
            else tracking.load_model(name, version=rest)
        )
        return model, loaded.profiles
    # The resolved version, not the alias: a promotion during the run cannot mix models.
    return f"models:/{model.name}/{model.version}", model.profiles


def run_pipeline_spark(
    spark: SparkSession,
    settings: Settings,
    data: SparkInput,
    new: DataFrame,
    context: GraphContext,
    model: LoadedModel | str,
    state: PipelineState | None = None,
    batch_minutes: float | None = None,
) -> SparkBatchResult:
    """Mapping -> components -> prepare (per component) -> spark_udf -> incidents (per
    component) -> ranking (driver) -> final per-alert rows. ``batch_minutes`` replays
    the alerts as consecutive batches (state carried inside each component)."""
    import mlflow
    from pyspark.sql import functions as F

    from alertclf.features import feature_columns
    from alertclf.mapping import mapping_statistics
    from alertclf.pipeline import cluster_summary, order_columns
    from alertclf.ranking import cluster_table

    timings: dict[str, float] = {}
    state = state or PipelineState()
    uri, profiles = _model_uri(model)
    sc = spark.sparkContext
    t0 = time.perf_counter()
    new = new.persist()
    micros = F.unix_micros(F.col("timestamp"))
    span = new.agg(F.count("*").alias("n"), F.min(micros).alias("lo")).collect()[0]
    rows_new = int(span["n"])
    if rows_new == 0:
        raise EmptyBatch
    labels = component_labels(context.graph, state)

    # Mapping: each distinct service name once, on the driver; the result is broadcast.
    services = new.select("service").distinct().toPandas()["service"]
    mapping = service_components(services, context, settings, labels)
    timings["spark_mapping"] = round(time.perf_counter() - t0, 4)

    # Batches (replay) on the local engine's grid; every alert of a classify is batch 0.
    if batch_minutes:
        width = pd.Timedelta(minutes=batch_minutes)
        first = pd.Timestamp(int(span["lo"]), unit="us", tz="UTC").floor(width)
        first_us, width_us = first.value // 1000, max(width.value // 1000, 1)
        # Integer division of non-negative offsets: the floor, as pandas computes it.
        batch_col = F.expr(f"(unix_micros(timestamp) - {first_us}) div {width_us}")
    else:
        batch_col = F.lit(0)
    keyed = new.join(F.broadcast(spark.createDataFrame(mapping)), on="service", how="left")
    keyed = keyed.withColumn(BATCH, batch_col.cast("long"))
    ends = keyed.groupBy(BATCH).agg(F.max(micros).alias("end")).collect()
    batch_end_ns = {int(r[BATCH]): int(r["end"]) * 1000 for r in ends}
    per_batch_ends: dict[int, StateEnds] | None = None
    if batch_minutes:
        # Carried times never pass a replay batch's end (batches follow in time order).
        per_batch_ends = {b: StateEnds(end, end, end) for b, end in batch_end_ns.items()}

    # Consolidation, dedup, features: the local code, once per component.
    t0 = time.perf_counter()
    features = feature_columns(list(context.features.columns))
    prepared_columns = _alert_columns(features)
    schema = [
        *prepared_columns,
        (FILE, "int"),
        (BATCH, "long"),
        (COMPONENT, "string"),
        (KIND, "string"),
        (PAYLOAD, "binary"),
    ]
    names = [c for c, _ in schema]
    shares = split_state(state, labels)
    context_bc = sc.broadcast(context)
    states_bc = sc.broadcast(shares)

    def prepare(key: tuple, pdf: pd.DataFrame) -> pd.DataFrame:
        return _prepare_component(
            key, pdf, context_bc, settings, states_bc, names, per_batch_ends, batch_end_ns
        )

    prepared = keyed.groupBy(COMPONENT).applyInPandas(prepare, _spark_schema_ddl(schema))
    prepared = prepared.persist()
    side_rows = prepared.filter(F.col(KIND) == "g").select(COMPONENT, PAYLOAD).collect()
    per_component = {r[COMPONENT]: pickle.loads(bytes(r[PAYLOAD])) for r in side_rows}
    # The groups go back to the executors for the incidents, as a frame of their own (a
    # cogroup of two children of one DataFrame is an ambiguous self-join to Spark).
    sides = spark.createDataFrame(
        pd.DataFrame(
            {COMPONENT: [r[COMPONENT] for r in side_rows], PAYLOAD: [r[PAYLOAD] for r in side_rows]}
        ),
        schema=f"{COMPONENT} string, {PAYLOAD} binary",
    )
    timings["spark_prepare"] = round(time.perf_counter() - t0, 4)
    # Moves of alerts published by earlier batches, in batch order (a replay applies
    # them to its own earlier rows, a classify writes them out).
    revision_parts = sorted(
        ((entry["batch"], component, entry["revisions"])
         for component, (entries, _) in per_component.items() for entry in entries),
        key=lambda part: part[:2],
    )  # fmt: skip
    revisions = pd.concat(
        [empty_revisions(), *[r for *_, r in revision_parts if len(r)]], ignore_index=True
    )
    for entries, _ in per_component.values():
        for entry in entries:
            for stage, seconds in entry["timings"].items():
                timings[f"executor_{stage}"] = round(
                    timings.get(f"executor_{stage}", 0.0) + seconds, 4
                )

    # The carried state: every component's share, and those without alerts, trimmed at
    # the batch's global ends.
    newest = max(batch_end_ns.values())
    untouched = [s for c, s in shares.items() if c not in per_component]
    final_ends = (
        per_batch_ends[max(per_batch_ends)] if per_batch_ends else state_ends(state, newest)
    )
    new_state = merge_states(
        [s for _, s in per_component.values()] + untouched, final_ends, settings
    )

    # Clusters: the registered model as a Spark UDF, on the executors.
    t0 = time.perf_counter()
    alerts = prepared.filter(F.col(KIND) == "a").drop(KIND, PAYLOAD)
    udf = mlflow.pyfunc.spark_udf(spark, uri, env_manager="local", result_type=MODEL_RESULT_TYPE)
    scored = alerts.withColumn("_scores", udf(F.struct(*[F.col(f"`{c}`") for c in features])))
    scored = scored.select(
        *[F.col(f"`{c}`") for c in alerts.columns],
        F.col("_scores.cluster_id").alias("cluster_id"),
        F.col("_scores.cluster_confidence").alias("cluster_confidence"),
        F.col("_scores.is_outlier").alias("is_outlier"),
    ).persist()
    scored.count()
    timings["spark_clustering"] = round(time.perf_counter() - t0, 4)

    # Incidents: root causes and incident rows per component; ranked on the driver.
    t0 = time.perf_counter()
    incident_columns = [
        "alert_id", "timestamp", "service", "alert_name", "severity", "mapped_service",
        "group_id", "is_duplicate", "is_outlier", "cluster_id", FILE, "source_row", BATCH,
        COMPONENT,
    ]  # fmt: skip

    def incidents_fn(key: tuple, alerts: pd.DataFrame, side: pd.DataFrame) -> pd.DataFrame:
        return _incidents_component(key, alerts, side, context_bc, settings, batch_end_ns)

    pieces = (
        scored.select(*incident_columns)
        .groupBy(COMPONENT)
        .cogroup(sides.groupBy(COMPONENT))
        .applyInPandas(incidents_fn, f"{COMPONENT} string, {PAYLOAD} binary")
        .collect()
    )
    by_batch: dict[int, list[pd.DataFrame]] = {}
    for row in pieces:
        for number, table in pickle.loads(bytes(row[PAYLOAD])):
            by_batch.setdefault(number, []).append(table)
    batch_incidents = {b: _rank_incidents(t) for b, t in sorted(by_batch.items())}
    incidents = (
        _combine_incidents(list(batch_incidents.values()))
        if batch_minutes
        else batch_incidents.get(0, _rank_incidents([]))
    )
    timings["spark_incidents"] = round(time.perf_counter() - t0, 4)

    # Clusters ranked and summarised on the driver, over narrow columns in input order.
    t0 = time.perf_counter()
    narrow = (
        scored.select(*NARROW_COLUMNS, FILE, BATCH, "source_row")
        .orderBy(BATCH, FILE, "source_row")
        .toPandas()
    )
    narrow = _to_alerts(narrow, sort=False)
    narrow["cluster_id"] = narrow["cluster_id"].astype(np.int64)
    narrow["cluster_confidence"] = narrow["cluster_confidence"].astype(np.float64).round(4)
    narrow["is_outlier"] = narrow["is_outlier"].astype(bool)
    narrow["is_duplicate"] = narrow["is_duplicate"].astype(bool)
    numbers = narrow[BATCH].to_numpy()
    batch_clusters = {
        int(b): cluster_table(
            narrow[numbers == b],
            profiles,
            context.features,
            pd.Timestamp(batch_end_ns[int(b)], unit="ns", tz="UTC"),
        )
        for b in np.unique(numbers)
    }
    if batch_minutes:
        end = pd.Timestamp(newest, unit="ns", tz="UTC")
        clusters = cluster_table(narrow, profiles, context.features, end)
    else:
        clusters = batch_clusters[0]
    narrow["cluster_name"] = narrow["cluster_id"].map(
        clusters.set_index("cluster_id")["cluster_name"]
    )
    summary = cluster_summary(narrow, profiles)
    mapping_table = mapping_statistics(narrow)
    timings["spark_ranking"] = round(time.perf_counter() - t0, 4)

    # Final per-alert rows (still in Spark), with the contract's column order.
    local_order = [c for c, _ in prepared_columns] + [
        "cluster_id", "cluster_confidence", "is_outlier", "cluster_name", "cluster_rank",
        "importance_score", "incident_rank", "root_cause_service",
    ]  # fmt: skip
    columns = list(order_columns(pd.DataFrame(columns=local_order)).columns)
    columns = [c for c in columns if c not in features]
    lookups = _lookups(batch_incidents, batch_clusters, clusters if batch_minutes else None)
    # A replay's rows take the moves later batches made (as combine_batches does).
    lookups["revised"] = latest_revisions([revisions]) if batch_minutes else None
    tables_bc = sc.broadcast(lookups)
    kinds = dict(prepared_columns) | {
        "cluster_id": "long",
        "cluster_confidence": "double",
        "is_outlier": "boolean",
        "cluster_name": "string",
        "cluster_rank": "long",
        "importance_score": "double",
        "incident_rank": "long",
        "root_cause_service": "string",
    }
    out_schema = [(c, kinds[c]) for c in columns] + [(FILE, "int"), (BATCH, "long")]
    out_names = [c for c, _ in out_schema]

    def finish(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return _finish_alerts(batches, tables_bc, out_names)

    final = scored.drop(*features, COMPONENT).mapInPandas(finish, _spark_schema_ddl(out_schema))

    statistics, per_batch = _statistics(scored, narrow, features, settings, bool(batch_minutes))
    return SparkBatchResult(
        alerts=final,
        columns=columns,
        narrow=narrow,
        incidents=incidents,
        clusters=clusters,
        cluster_summary=summary,
        mapping=mapping_table,
        statistics=statistics,
        batch_statistics=per_batch,
        state=new_state,
        timings=timings,
        input=data,
        revisions=revisions if not batch_minutes else empty_revisions(),
        regrouped=len(revisions),
        rows_new=rows_new,
        components=len(per_component),
        model_uri=uri,
    )


def _rank_incidents(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One batch's incident table from its per-component pieces, ranked as
    :func:`incident_table` ranks a whole batch."""
    from alertclf.ranking import _INCIDENT_OUTPUT

    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=_INCIDENT_OUTPUT)
    table = pd.concat(frames, ignore_index=True).sort_values(
        ["importance_score", "last_seen", "group_id"],
        ascending=[False, False, True],
        kind="stable",
    )
    table["rank"] = np.arange(1, len(table) + 1)
    return table.reset_index(drop=True)


def _combine_incidents(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Batches' incident tables as :func:`alertclf.flows.combine_batches` combines them:
    each incident as last seen, ranked again."""
    frames = [t for t in tables if len(t)]
    if not frames:
        return _rank_incidents([])
    incidents = pd.concat(frames, ignore_index=True)
    incidents = incidents.drop_duplicates("group_id", keep="last")
    incidents = incidents.sort_values(["importance_score", "group_id"], ascending=[False, True])
    incidents["rank"] = np.arange(1, len(incidents) + 1)
    return incidents


def _lookups(
    incidents: dict[int, pd.DataFrame],
    clusters: dict[int, pd.DataFrame],
    combined_clusters: pd.DataFrame | None,
) -> dict[str, Any]:
    """What each alert takes from its batch's incident and cluster tables (and, for a
    replay, the cluster rank of the combined table), keyed by ``batch|id``."""

    def keyed(tables: dict[int, pd.DataFrame], key: str, columns: list[str]) -> pd.DataFrame:
        frames = [
            t.assign(_key=str(b) + "|" + t[key].astype(str))[["_key", *columns]]
            for b, t in tables.items()
            if len(t)
        ]
        if not frames:
            return pd.DataFrame(columns=["_key", *columns]).set_index("_key")
        return pd.concat(frames, ignore_index=True).set_index("_key")

    return {
        "incidents": keyed(
            incidents, "group_id", ["importance_score", "rank", "root_cause_service"]
        ),
        "clusters": keyed(
            clusters, "cluster_id", ["cluster_name", "cluster_rank", "importance_score"]
        ),
        "combined_rank": (
            None
            if combined_clusters is None
            else combined_clusters.set_index("cluster_id")["cluster_rank"]
        ),
    }


def _statistics(
    scored: DataFrame,
    narrow: pd.DataFrame,
    features: list[str],
    settings: Settings,
    replay: bool,
) -> tuple[dict, list[dict]]:
    """:func:`batch_statistics` for the batch (and per replayed batch). Up to
    ``MAX_DRIVER_FEATURE_ROWS`` alerts the feature rows come to the driver and the numbers
    are the local engine's; beyond, the cluster-quality metrics (``batch_*``) use a
    sample of that size and the counts and shares stay exact."""
    from alertclf.pipeline import batch_statistics

    n = len(narrow)
    if n <= MAX_DRIVER_FEATURE_ROWS:
        values = (
            scored.select(*[f"`{c}`" for c in features], BATCH, FILE, "source_row")
            .orderBy(BATCH, FILE, "source_row")  # the order of ``narrow``
            .toPandas()[features]
        )
        sample, sample_alerts = values.reset_index(drop=True), narrow.reset_index(drop=True)
    else:
        fraction = MAX_DRIVER_FEATURE_ROWS / n
        picked = (
            scored.sample(fraction=fraction, seed=settings.random_state)
            .select(*[f"`{c}`" for c in features], "alert_id")
            .toPandas()
        )
        sample = picked[features]
        sample_alerts = (
            narrow.set_index("alert_id").loc[picked["alert_id"]].reset_index()
            if len(picked)
            else narrow.iloc[:0]
        )
    stats = batch_statistics(sample, sample_alerts, settings)
    if n > MAX_DRIVER_FEATURE_ROWS:
        flat = pd.DataFrame({"_": np.zeros(n)})
        exact = batch_statistics(flat, narrow.reset_index(drop=True), settings)
        stats.update({k: v for k, v in exact.items() if not k.startswith("batch_")})
        stats["statistics_sample_rows"] = float(len(sample))
    per_batch: list[dict] = []
    if replay and n <= MAX_DRIVER_FEATURE_ROWS:
        numbers = narrow[BATCH].to_numpy()
        for number in np.unique(numbers):
            rows = numbers == number
            per_batch.append(
                batch_statistics(
                    sample[rows].reset_index(drop=True),
                    narrow[rows].reset_index(drop=True),
                    settings,
                )
            )
    return stats, per_batch


# --- the public entry points ----------------------------------------------------------------
def classify_spark(
    settings: Settings,
    alerts_location: str | Path,
    graph_location: str | Path,
    model: LoadedModel | str,
    state: PipelineState | None = None,
    master: str | None = None,
    *,
    run_state: RunState | None = None,
    since: str | None = None,
    until: str | None = None,
    context: GraphContext | None = None,
) -> SparkBatchResult:
    """Read, select, prepare, score and rank one batch with Spark: the local engine's
    :func:`prepare_batch` + :func:`score_batch`, with the same results."""
    from alertclf.graph import load_graph

    spark = spark_session(master or settings.spark_master)
    if context is None:
        context = GraphContext.build(load_graph(graph_location), settings)
    t0 = time.perf_counter()
    data = read_alerts_spark(spark, alerts_location, settings)
    read_seconds = time.perf_counter() - t0
    new, _ = select_new_spark(data.alerts, run_state, settings, since, until)
    if state is None and run_state is not None:
        state = run_state.pipeline_state()
    result = run_pipeline_spark(spark, settings, data, new, context, model, state)
    result.timings["spark_read"] = round(read_seconds, 4)
    return result


def replay_spark(
    settings: Settings,
    alerts_location: str | Path,
    graph_location: str | Path,
    model: LoadedModel | str,
    batch_minutes: float = 15,
    master: str | None = None,
    *,
    context: GraphContext | None = None,
) -> SparkBatchResult:
    """The history as consecutive ``batch_minutes`` batches, as :func:`replay_batches`
    plus :func:`combine_batches`: the batch loop runs inside each component's task (the
    state a batch hands to the next never leaves its component), scoring is one pass."""
    from alertclf.graph import load_graph

    spark = spark_session(master or settings.spark_master)
    if context is None:
        context = GraphContext.build(load_graph(graph_location), settings)
    data = read_alerts_spark(spark, alerts_location, settings)
    return run_pipeline_spark(
        spark, settings, data, data.alerts, context, model, None, batch_minutes=batch_minutes
    )


# --- results folder --------------------------------------------------------------------------
PER_ALERT_FILES = (
    "alert_consolidation_final.csv",
    "deduplicated_alerts.csv",
    "alerts_by_cluster_detailed.csv",
)
PARQUET_DIR = "alert_consolidation_final.parquet"


def write_results_spark(
    root: str | Path,
    run_id: str,
    result: SparkBatchResult,
    tables: dict[str, pd.DataFrame],
    documents: dict[str, Any],
    files: dict[str, bytes] | None = None,
) -> Path:
    """The results folder, complete or absent, as :func:`alertclf.io.results.write_results`
    writes it: everything goes into a temporary folder that is renamed in one step. The
    per-alert CSVs are written by the executors in parts (then joined in order, so each
    is one contract file, byte for byte what the local engine writes); the alerts are
    also written as Parquet partitioned by UTC date (``alert_consolidation_final.parquet``)
    for Spark readers. On a cluster ``root`` must be a filesystem the executors and the
    driver share."""
    from pyspark.sql import functions as F

    from alertclf.io.results import atomic_results_folder, write_bytes, write_csv, write_json

    root = Path(root).resolve()
    with atomic_results_folder(root, run_id) as tmp:
        alerts = result.alerts.persist()
        ordered = alerts.orderBy(BATCH, FILE, "source_row")
        outputs = {
            "alert_consolidation_final.csv": ordered,
            "deduplicated_alerts.csv": ordered.filter(~F.col("is_duplicate")),
            "alerts_by_cluster_detailed.csv": alerts.orderBy(
                "cluster_rank", "timestamp", "alert_id"
            ),
        }
        for name, frame in outputs.items():
            _write_csv_parts(frame, tmp / name, result.columns)
        (
            alerts.select(*result.columns)
            .withColumn("alert_date", F.to_date("timestamp"))
            .write.partitionBy("alert_date")
            .parquet(str(tmp / PARQUET_DIR))
        )
        for name, frame in tables.items():
            if name not in PER_ALERT_FILES:
                write_csv(frame, tmp / name)
        for name, data in documents.items():
            write_json(data, tmp / name)
        for name, content in (files or {}).items():
            write_bytes(content, tmp / name)
    alerts.unpersist()
    return root / run_id


def _write_csv_parts(frame: DataFrame, target: Path, columns: list[str]) -> None:
    """Executors write one part per partition; the driver joins them in partition order,
    keeping the first part's header only (a stream copy: nothing is held in memory)."""
    from alertclf.io.results import write_csv

    parts = target.with_name(target.name + ".parts")
    parts.mkdir()
    folder = str(parts)

    def writer(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return _write_parts(batches, folder, columns)

    written = frame.mapInPandas(writer, "partition int, rows long, path string").collect()
    if not written:
        write_csv(pd.DataFrame(columns=columns), target)
    else:
        with open(target, "wb") as handle:
            for number, row in enumerate(sorted(written, key=lambda r: r["partition"])):
                with open(row["path"], "rb") as part:
                    if number:
                        part.readline()  # the header (column names hold no line breaks)
                    shutil.copyfileobj(part, handle, 1 << 20)
            handle.flush()
            os.fsync(handle.fileno())
    shutil.rmtree(parts)


# --- the flows with the Spark engine ---------------------------------------------------------
@dataclass
class _Counted:
    """Stands in for a frame where the flows only count rows."""

    n: int

    def __len__(self) -> int:
        return self.n


def classify_flow(
    settings: Settings,
    alerts: str | Path,
    graph: str | Path,
    output: str | Path = "results",
    models: str | Path | None = None,
    since: str | None = None,
    until: str | None = None,
    bootstrap: bool = True,
):
    """:func:`alertclf.flows.classify` with the pipeline on Spark: the same watermark,
    results folder, MLflow run and state, in the same order (state saved last)."""
    from alertclf import flows as f
    from alertclf import tracking
    from alertclf.io.results import new_run_id

    started = time.perf_counter()
    stage_times: dict[str, float] = {}
    output = Path(output)
    tracking_cfg, store, state = f.open_output(output, models)

    t0 = time.perf_counter()
    spark = spark_session(settings.spark_master)
    context = GraphContext.build(f._load_graph(graph), settings)
    data = read_alerts_spark(spark, alerts, settings)
    stage_times["read"] = round(time.perf_counter() - t0, 4)
    ledger = store.read_ledger(state)
    # The ledger decides only what an incremental run (no --since) takes.
    incremental = bool(state.watermark) and not since
    seen_ids = ledger_ids(spark, ledger) if incremental else None
    new, late = select_new_spark(data.alerts, state, settings, since, until, seen_ids)
    new = new.persist()
    rows_new = new.count()
    if rows_new == 0:
        spark.catalog.clearCache()
        return _classify_empty(settings, alerts, graph, output, models, since, until, bootstrap)

    # Late alerts are few (they arrived after their batch): rejected on the driver.
    late = _to_alerts(late.toPandas())[list(contracts.CANONICAL_COLUMNS)]
    reasons = f.late_reasons(to_epoch_ns(late["timestamp"]), state.watermark, settings)
    already = _count_in_ledger(data.alerts, seen_ids)
    skipped = (already, data.rows_accepted - rows_new - len(late) - already, len(late))
    data = replace(
        data,
        rejected=concat_rejected([data.rejected, as_rejected(late, reasons)]),
        rows_accepted=data.rows_accepted - len(late),
    )
    logger.info(
        "%d new alerts to classify (%d processed before, %d outside the window, %d late)",
        rows_new,
        *skipped,
    )
    run_id = new_run_id(output)
    model_name = settings.model_name
    with tracking.start_run(
        settings.classify_experiment, tracking_cfg, run_name=f"classify-{run_id}"
    ) as run:
        tracking.log_settings(settings)
        if tracking.alias_version(model_name, tracking.PRODUCTION) is not None:
            loaded, bootstrapped = tracking.load_model(model_name, alias=tracking.PRODUCTION), False
        else:
            # A first model is trained on the driver (scikit-learn), as the local engine does.
            first = _driver_frame(new)
            loaded, bootstrapped = f._production_or_bootstrap(
                first, context, settings, bootstrap, state
            )
        settings = f.with_model_timing(settings, loaded)
        f.log_timing(settings)
        t0 = time.perf_counter()
        result = run_pipeline_spark(
            spark, settings, data, new, context, loaded, state.pipeline_state()
        )
        stage_times["pipeline"] = round(time.perf_counter() - t0, 4)
        stage_times.update(result.timings)
        watermark_after = f._new_watermark(state, result.narrow, settings)
        metadata = f.run_metadata(
            run_id=run_id,
            mlflow_run_id=run.info.run_id,
            tracking_cfg=tracking_cfg,
            loaded=loaded,
            bootstrapped=bootstrapped,
            inputs=(alerts, graph),
            files=data.files,
            rows=(data.rows_read, data.rows_accepted, len(data.rejected), result.rows_new),
            skipped=skipped,
            state=state,
            watermark_after=watermark_after,
            window=(since, until),
            context=context,
            stage_times=stage_times,
            notes=data.notes,
        )
        metadata.update(
            {
                "engine": "spark",
                "spark_master": settings.spark_master,
                "spark_components": result.components,
                "model_uri": result.model_uri,
            }
        )
        statistics = {**result.statistics, **f.model_facts(loaded)}
        tables = summary_tables(result)
        t0 = time.perf_counter()
        report_files = f._report_files(tables, metadata)
        stage_times["report"] = round(time.perf_counter() - t0, 4)
        t0 = time.perf_counter()
        folder = write_results_spark(
            output,
            run_id,
            result,
            tables,
            {"clustering_statistics.json": statistics, "run_metadata.json": metadata},
            files=report_files,
        )
        stage_times["write"] = round(time.perf_counter() - t0, 4)
        f._fault("after_results")
        counts = _BatchCounts(data.rows_read, _Counted(data.rows_accepted), data.rejected)
        f._log_classify(result, counts, result.narrow, metadata, folder, stage_times, started)
        f._fault("after_mlflow")
        f.save_state(
            store,
            state,
            f.next_ledger(ledger, [result.narrow, late], watermark_after, settings),
            watermark_after,
            result.state,
            run_id,
            loaded,
            context,
        )
    # Everything this run cached (inputs, prepared and scored alerts) is let go.
    spark.catalog.clearCache()
    logger.info(
        "classify (spark %s) run_id=%s mlflow_run_id=%s model_version=%s alerts=%d new=%d "
        "groups=%d components=%d seconds %s total=%.2f",
        settings.spark_master,
        run_id,
        metadata["mlflow_run_id"],
        loaded.version,
        data.rows_accepted,
        result.rows_new,
        len(result.incidents),
        result.components,
        " ".join(f"{k}={stage_times[k]:.2f}" for k in ("read", "pipeline", "report", "write")),
        time.perf_counter() - started,
    )
    return f.ClassifyOutcome(
        run_id=run_id,
        results_dir=folder,
        rows_read=data.rows_read,
        rows_accepted=data.rows_accepted,
        rows_rejected=len(data.rejected),
        rows_new=result.rows_new,
        model_version=loaded.version,
        mlflow_run_id=metadata["mlflow_run_id"],
        bootstrapped=bootstrapped,
        incidents=result.incidents,
        clusters=result.clusters,
        metadata=metadata,
    )


@dataclass
class _BatchCounts:
    """The parts of an :class:`AlertBatch` the MLflow logging reads."""

    rows_read: int
    alerts: _Counted
    rejected: pd.DataFrame


def _driver_frame(frame: DataFrame) -> pd.DataFrame:
    """Canonical alerts on the driver (only to train a first model)."""
    return _to_alerts(frame.toPandas())[list(contracts.CANONICAL_COLUMNS)]


def _classify_empty(settings: Settings, *args: Any):
    """No new alerts: the local flow writes the (empty) batch's folder and keeps the
    state as it is; there is nothing for Spark to do."""
    from alertclf import flows

    logger.info("no new alerts: the empty batch runs on the local engine")
    return flows.classify(settings.model_copy(update={"engine": "local"}), *args)


def summary_tables(result: SparkBatchResult) -> dict[str, pd.DataFrame]:
    """The driver-side tables of the results folder; the per-alert files are written by
    the executors (:func:`write_results_spark`), here they are empty frames with their
    columns (the report only names them)."""
    empty = pd.DataFrame(columns=result.columns)
    return {
        "alert_consolidation_final.csv": empty,
        "cluster_summary.csv": result.cluster_summary,
        "ranked_clusters.csv": result.clusters,
        "incident_groups.csv": result.incidents,
        "group_revisions.csv": result.revisions,
        "deduplicated_alerts.csv": empty,
        "alerts_by_cluster_detailed.csv": empty,
        "mapping_statistics.csv": result.mapping,
        "rejected_alerts.csv": result.input.rejected,
    }


def replay_flow(
    settings: Settings,
    alerts: str | Path,
    graph: str | Path,
    batch_minutes: float = 15,
    output: str | Path = "results",
    models: str | Path | None = None,
    train_fraction: float = 0.25,
    use_registry: bool = True,
):
    """:func:`alertclf.flows.replay` with the pipeline on Spark. It scores with the
    registered production model (a model trained in-process is not a registry URI that
    ``spark_udf`` can load): without one, it says so."""
    from alertclf import __version__, tracking
    from alertclf import flows as f
    from alertclf.io.results import new_run_id

    started = time.perf_counter()
    model = None
    if use_registry:
        tracking.configure_tracking(models)
        if tracking.alias_version(settings.model_name, tracking.PRODUCTION) is not None:
            model = tracking.load_model(settings.model_name, alias=tracking.PRODUCTION)
    if model is None:
        raise f.FlowError(
            f"replay --engine spark scores with '{settings.model_name}@production' and the "
            "registry has none (or --no-registry was given): run `alertclf retrain` first, "
            "or replay with --engine local (which trains in-process)"
        )
    settings = f.with_model_timing(settings, model)
    spark = spark_session(settings.spark_master)
    context = GraphContext.build(f._load_graph(graph), settings)
    data = read_alerts_spark(spark, alerts, settings)
    try:
        result = run_pipeline_spark(
            spark, settings, data, data.alerts, context, model, None, batch_minutes=batch_minutes
        )
    except EmptyBatch:
        result = None
    output = Path(output)
    run_id = new_run_id(output)
    n_batches = len(result.batch_statistics) if result is not None else 0
    if result is not None and not result.batch_statistics:
        n_batches = int(result.narrow[BATCH].nunique())
    metadata = {
        "run_id": run_id,
        "mode": "replay",
        "batches": n_batches,
        "batch_minutes": batch_minutes,
        "inputs": {"alerts": f._safe(alerts), "graph": f._safe(graph)},
        "rows_read": data.rows_read,
        "rows_accepted": data.rows_accepted,
        "rows_rejected": len(data.rejected),
        "rows_replayed": result.rows_new if result is not None else 0,
        "alerts_regrouped": result.regrouped if result is not None else 0,
        "model": f"{model.name} v{model.version}",
        "train_fraction": None,
        "package_version": __version__,
        "engine": "spark",
        "spark_master": settings.spark_master,
        "seconds": round(time.perf_counter() - started, 3),
    }
    statistics = {"batches": result.batch_statistics if result is not None else []}
    if result is None:
        from alertclf.io.results import write_results

        empty = pd.DataFrame()
        tables = {n: empty for n in contracts.RESULT_FILES if n.endswith(".csv")}
        tables["rejected_alerts.csv"] = data.rejected
        folder = write_results(
            output,
            run_id,
            tables,
            {"run_metadata.json": metadata, "clustering_statistics.json": statistics},
        )
    else:
        folder = write_results_spark(
            output,
            run_id,
            result,
            summary_tables(result),
            {"run_metadata.json": metadata, "clustering_statistics.json": statistics},
        )
    spark.catalog.clearCache()
    logger.info(
        "replay (spark %s) run_id=%s batches=%d alerts=%d model=%r seconds total=%.2f",
        settings.spark_master,
        run_id,
        n_batches,
        metadata["rows_replayed"],
        metadata["model"],
        time.perf_counter() - started,
    )
    return f.ReplayOutcome(folder, n_batches, metadata["rows_replayed"], metadata["seconds"], False)
