"""Small builders for the pipeline-stage tests: canonical alert frames and tiny graphs.

Tests import these by name (pytest puts ``tests/`` on ``sys.path``). Every frame built
here looks like the output of ingestion (:data:`alertclf.contracts.CANONICAL_COLUMNS`,
UTC timestamps, normalised severities) plus the mapping columns that consolidation,
dedup and features read (``mapped_service``, ``mapping_method``, ``mapping_confidence``).
"""

from __future__ import annotations

from functools import lru_cache

import networkx as nx
import pandas as pd

from alertclf.contracts import CANONICAL_COLUMNS
from alertclf.io.alerts import normalize_alerts
from alertclf.mapping import enrich_alerts
from alertclf.settings import Settings
from alertclf.simulate import SimulationConfig, simulate

T0 = pd.Timestamp("2026-01-05 10:00:00", tz="UTC")

# Alert names with a known family (see alertclf.catalogue):
CPU = "HostHighCpuLoad"  # cpu: a fault of the service itself, never a symptom
DISK = "HostOutOfDiskSpace"  # disk: never a symptom
DB_DOWN = "PostgresqlDown"  # datastore: a root's own fault
DB_CONN = "PostgresqlTooManyConnections"  # datastore, a second root alert name
LATENCY = "HighRequestLatency"  # latency: may be a symptom
ERRORS = "HighErrorRate"  # errors: may be a symptom
HTTP5XX = "HTTP5xxRateHigh"  # errors: may be a symptom


def graph(*edges: tuple[str, str], nodes: tuple[str, ...] = ()) -> nx.DiGraph:
    """A dependency graph: edge ``a -> b`` means *a calls b* (symptoms appear on a)."""
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    g.add_edges_from(edges)
    return g


def alert(
    minute: float,
    service: str,
    name: str,
    *,
    host: str = "",
    severity: str = "warning",
    mapped: str | None = None,
    alert_id: str | None = None,
) -> dict:
    """One alert ``minute`` minutes after :data:`T0`. ``mapped`` overrides the mapping
    (``""`` = unmapped); by default a service that is a graph node maps to itself."""
    return {
        "minute": minute,
        "service": service,
        "alert_name": name,
        "host": host,
        "severity": severity,
        "mapped": mapped,
        "alert_id": alert_id,
    }


def frame(rows: list[dict], g: nx.DiGraph | None = None, index=None) -> pd.DataFrame:
    """Canonical alert frame (plus mapping columns) from :func:`alert` rows.

    Ids default to ``a000, a001, ...`` in row order, so rows at the same instant are
    taken in the order written (consolidation sorts by ``(timestamp, alert_id)``).
    """
    nodes = set(g.nodes) if g is not None else set()
    records = []
    for i, row in enumerate(rows):
        mapped = row["mapped"]
        if mapped is None:
            mapped = row["service"] if row["service"] in nodes else ""
        records.append(
            {
                "alert_id": row["alert_id"] or f"a{i:03d}",
                "timestamp": T0 + pd.Timedelta(minutes=row["minute"]),
                "service": row["service"],
                "alert_name": row["alert_name"],
                "severity": row["severity"],
                "status": "firing",
                "host": row["host"],
                "namespace": "",
                "cluster": "",
                "environment": "",
                "description": "",
                "labels": "",
                "source_file": "test.csv",
                "source_row": i + 1,
                "mapped_service": mapped,
                "mapping_method": "exact" if mapped else "unmapped",
                "mapping_confidence": 1.0 if mapped else 0.0,
            }
        )
    columns = [*CANONICAL_COLUMNS, "mapped_service", "mapping_method", "mapping_confidence"]
    out = pd.DataFrame.from_records(records, columns=columns)
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
    if index is not None:
        out.index = index
    return out


def split_by_time(alerts: pd.DataFrame, minutes: float) -> list[pd.DataFrame]:
    """Consecutive batches of ``minutes`` (as ``alertclf replay`` cuts them)."""
    ts = pd.to_datetime(alerts["timestamp"], utc=True)
    width = pd.Timedelta(minutes=minutes)
    number = ((ts - ts.min().floor(width)) // width).to_numpy()
    return [alerts[number == k] for k in sorted(set(number))]


@lru_cache(maxsize=8)
def _simulation(seed: int, days: float, scenario: str):
    sim = simulate(SimulationConfig(seed=seed, days=days, scenario=scenario))
    accepted, rejected = normalize_alerts(sim.alerts.astype(str), Settings(), "sim.csv")
    assert rejected.empty, rejected.head()
    return accepted, sim.truth, sim.graph


def simulated(seed: int = 3, days: float = 1, scenario: str = "mixed"):
    """``(canonical alerts, truth, graph)`` of a simulated scenario (fresh copies)."""
    accepted, truth, g = _simulation(seed, days, scenario)
    return accepted.copy(), truth.copy(), g.copy()


def simulated_enriched(seed: int = 3, days: float = 1, scenario: str = "mixed"):
    """Like :func:`simulated`, with the mapping columns added (as the pipeline does)."""
    accepted, truth, g = simulated(seed, days, scenario)
    return enrich_alerts(accepted, g, Settings()), truth, g
