"""Realistic alert streams with ground truth, for the demo, the tests and the benchmarks.

What is simulated, and why (each item is a phenomenon real alert storms show):

* **Incidents.** A fault hits a *root* service at ``t0`` and lasts 8-180 minutes
  (log-normal, median 30). The root emits 1-2 alert types of the fault's family
  (``datastore`` faults on a database emit ``PostgresqlTooManyConnections``...).
* **Propagation.** The fault spreads to the root's *dependants* (callers) up the graph,
  one hop at a time, each caller affected with probability ``0.85 * 0.6**(hop-1)``
  (dampening) after a delay of 0.5-3 minutes per hop, firing *symptom* alerts
  (latency, errors, readiness) rather than the root's family: a failing dependency
  slows or fails its callers, it does not make their pods crash.
* **Re-firing.** Every firing alert repeats every 3-8 minutes while the incident lasts:
  these repeats are the duplicates dedup must find.
* **Replicas.** A share of alerts fire from 2-4 replicas at once, each under its own pod
  name and host.
* **Storms.** Several incidents start within ten minutes of each other at roots below
  the same gateway, so their symptoms overlap in time and share upstream services.
* **Names that differ from the graph.** Case, ``_`` vs ``-``, environment prefixes and
  suffixes, Kubernetes FQDNs and pod names; and services that are not in the graph.
* **Background noise.** Unrelated single alerts (some flapping) all over the estate.

Ground truth (``truth.csv``): ``alert_id, incident_id, category, is_duplicate, is_root,
root_service, true_service`` plus ``alert_family`` (the alert's own family) and
``is_noise``. ``category`` is the incident's fault family; a noise alert's category is
its own family and its ``incident_id`` starts with ``N``. ``is_duplicate`` marks every
alert that repeats an earlier alert of the same name on the same true service within
the dedup window (the first of such a run is not a duplicate).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm.auto import tqdm

from alertclf.catalogue import (
    CATALOGUE,
    FAMILIES,
    UNKNOWN_FAMILY,
    AlertType,
    alert_types_for,
    symptom_types_for,
)
from alertclf.topology import infer_kind

logger = logging.getLogger(__name__)

# incidents/day outside storms, storms/day (3-6 overlapping incidents each). The storm
# preset is calibrated so that the peer baselines score as the pipeline issue describes
# storms: time-window-only grouping ARI about 0.3-0.4, Alertmanager by service 0.15-0.25.
SCENARIOS: dict[str, dict[str, float]] = {
    "calm": {"incidents_per_day": 10, "storms_per_day": 0},
    "mixed": {"incidents_per_day": 16, "storms_per_day": 2},
    "storm": {"incidents_per_day": 6, "storms_per_day": 3},
}

# Fault families a node kind can suffer, with weights.
FAULTS_BY_KIND: dict[str, dict[str, float]] = {
    "datastore": {"datastore": 0.4, "disk": 0.2, "memory": 0.15, "cpu": 0.1, "queue": 0.15},
    "service": {"cpu": 0.2, "memory": 0.2, "errors": 0.2, "availability": 0.25, "network": 0.15},
    "worker": {"cpu": 0.2, "memory": 0.2, "queue": 0.2, "errors": 0.2, "availability": 0.2},
    "gateway": {"network": 0.4, "cpu": 0.3, "errors": 0.3},
}
# What callers of a faulty service see, by fault family.
SYMPTOMS_BY_FAULT: dict[str, dict[str, float]] = {
    "cpu": {"latency": 0.8, "errors": 0.2},
    "memory": {"latency": 0.5, "errors": 0.3, "availability": 0.2},
    "disk": {"errors": 0.6, "latency": 0.4},
    "network": {"latency": 0.5, "errors": 0.5},
    "latency": {"latency": 1.0},
    "errors": {"errors": 0.8, "latency": 0.2},
    "availability": {"errors": 0.7, "availability": 0.3},
    "datastore": {"latency": 0.5, "errors": 0.5},
    "queue": {"latency": 0.7, "errors": 0.3},
}
ROOT_KIND_WEIGHTS: dict[str, float] = {
    "datastore": 0.35,
    "service": 0.4,
    "worker": 0.15,
    "gateway": 0.1,
}
UNKNOWN_SERVICES: tuple[str, ...] = (
    "legacy-billing-cron",
    "vpn-gateway-01",
    "backup-agent",
    "node-exporter",
    "ldap-sync",
    "mail-relay",
    "bastion-host",
    "ntp-server",
    "jenkins-agent",
    "sftp-ingest",
    "print-spooler",
    "license-manager-old",
    "etl-nightly",
    "ftp-archive",
    "smtp-outbound",
    "vault-agent",
)
SEVERITY_SPELLINGS: dict[str, tuple[str, ...]] = {
    "critical": ("CRITICAL", "P1", "sev1", "Critical"),
    "high": ("major", "P2", "HIGH", "error"),
    "warning": ("WARN", "P3", "Warning", "warning"),
    "low": ("minor", "P4", "Low"),
    "info": ("INFO", "P5", "informational"),
}
ENV_PREFIXES: tuple[str, ...] = ("prod-", "production-", "prd_")
ENV_SUFFIXES: tuple[str, ...] = ("-prod", ".prod", "_production")


@dataclass
class SimulationConfig:
    """Knobs of one simulated scenario; the same values and seed give the same files."""

    seed: int = 1
    days: float = 1.0
    scenario: str = "mixed"
    n_services: int = 60
    incidents_per_day: float | None = None  # None: the scenario's value
    storms_per_day: float | None = None
    storm_size: tuple[int, int] = (3, 6)
    noise_share: float = 0.15
    replica_share: float = 0.3
    name_variant_share: float = 0.3
    unknown_incident_share: float = 0.05
    unknown_noise_share: float = 0.25
    max_hops: int = 3
    # Minutes from a fault to its root's first alert, and per hop from a service's
    # trouble to its callers' symptom alerts: propagation plus each alert rule's
    # evaluation interval and ``for:`` clause (a caller rule with ``for: 5m`` fires
    # minutes after its dependency's).
    root_delay_minutes: tuple[float, float] = (0.0, 1.5)
    hop_delay_minutes: tuple[float, float] = (0.5, 3.0)
    dedup_window_minutes: float = 15.0
    start: str = "2026-01-05T00:00:00Z"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario {self.scenario!r} is not one of {', '.join(SCENARIOS)}")
        checks = {
            "days": 0 < self.days <= 3650,
            "n_services": 10 <= self.n_services <= 100_000,
            "noise_share": 0 <= self.noise_share < 1,
            "replica_share": 0 <= self.replica_share <= 1,
            "name_variant_share": 0 <= self.name_variant_share <= 1,
            "unknown_incident_share": 0 <= self.unknown_incident_share <= 1,
            "unknown_noise_share": 0 <= self.unknown_noise_share <= 1,
            "max_hops": 0 <= self.max_hops <= 20,
            "root_delay_minutes": 0 <= self.root_delay_minutes[0] <= self.root_delay_minutes[1],
            "hop_delay_minutes": 0 <= self.hop_delay_minutes[0] <= self.hop_delay_minutes[1],
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} is out of range")
        if self.incidents_per_day is not None and self.incidents_per_day < 0:
            raise ValueError("incidents_per_day must be >= 0")
        if self.storms_per_day is not None and self.storms_per_day < 0:
            raise ValueError("storms_per_day must be >= 0")

    @property
    def rates(self) -> tuple[float, float]:
        preset = SCENARIOS[self.scenario]
        incidents = (
            preset["incidents_per_day"]
            if self.incidents_per_day is None
            else self.incidents_per_day
        )
        storms = preset["storms_per_day"] if self.storms_per_day is None else self.storms_per_day
        return float(incidents), float(storms)


@dataclass
class Simulation:
    alerts: pd.DataFrame
    truth: pd.DataFrame
    graph: nx.DiGraph
    config: SimulationConfig
    incidents: pd.DataFrame


# ------------------------------------------------------------------------------------
class _Names:
    """Every rendered service name and host, as tables indexed by small ints, so rows
    carry ints while they are generated and become strings once, at the end."""

    N_VARIANTS = 7
    N_REPLICAS = 4

    def __init__(self, nodes: list[str], kinds: list[str], rng: np.random.Generator) -> None:
        self.names: list[str] = []
        self.hosts: list[str] = []
        self.variant_base = np.zeros(len(nodes), dtype=np.int64)
        self.pod_base = np.zeros(len(nodes), dtype=np.int64)
        self.host_base = np.zeros(len(nodes), dtype=np.int64)
        alphabet = np.array(list("bcdfghjklmnpqrstvwxz2456789"))
        for i, (node, kind) in enumerate(zip(nodes, kinds, strict=True)):
            self.variant_base[i] = len(self.names)
            self.names.extend(_variants(node, rng))
            self.pod_base[i] = len(self.names)
            if kind == "datastore":
                pods = [f"{node}-{r}" for r in range(self.N_REPLICAS)]
            else:
                rs_hash = "".join(rng.choice(alphabet, 10))
                pods = [
                    f"{node}-{rs_hash}-{''.join(rng.choice(alphabet, 5))}"
                    for _ in range(self.N_REPLICAS)
                ]
            self.names.extend(pods)
            self.host_base[i] = len(self.hosts)
            for _ in range(self.N_REPLICAS):
                octets = rng.integers(0, 255, 3)
                self.hosts.append(f"ip-10-{octets[0]}-{octets[1]}-{octets[2]}")
        self.unknown_base = len(self.names)
        self.names.extend(UNKNOWN_SERVICES)
        self.unknown_host_base = len(self.hosts)
        self.hosts.extend(f"vm-{name}" for name in UNKNOWN_SERVICES)


def _variants(node: str, rng: np.random.Generator) -> list[str]:
    """The graph id first, then six ways monitoring tools spell it."""
    words = [w for w in node.replace("_", "-").split("-") if w]
    camel = "".join(w[:1].upper() + w[1:] for w in words)
    prefix = ENV_PREFIXES[int(rng.integers(len(ENV_PREFIXES)))]
    suffix = ENV_SUFFIXES[int(rng.integers(len(ENV_SUFFIXES)))]
    return [
        node,
        camel,
        node.upper(),
        node.replace("-", "_"),
        f"{prefix}{node}",
        f"{node}{suffix}",
        f"{node}.prod.svc.cluster.local",
    ]


class _Rows:
    """Column buffers of int/float arrays, concatenated once at the end."""

    def __init__(self) -> None:
        self.cols: dict[str, list[np.ndarray]] = {
            k: [] for k in ("t", "node", "name", "host", "atype", "incident", "is_root")
        }

    def add(self, t, node, name, host, atype, incident, is_root) -> None:
        n = len(t)
        self.cols["t"].append(np.asarray(t, dtype=np.float64))
        for key, value in (
            ("node", node),
            ("name", name),
            ("host", host),
            ("atype", atype),
            ("incident", incident),
            ("is_root", is_root),
        ):
            arr = np.asarray(value)
            self.cols[key].append(np.full(n, arr) if arr.ndim == 0 else arr)

    def frame(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) if v else np.array([]) for k, v in self.cols.items()}


# ------------------------------------------------------------------------------------
def simulate(config: SimulationConfig, graph: nx.DiGraph | None = None) -> Simulation:
    """Generate one scenario. Pure: no files are read or written."""
    from alertclf.topology import generate_topology

    rng = np.random.default_rng(config.seed)
    if graph is None:
        graph = generate_topology(config.n_services, seed=config.seed)
    nodes = sorted(graph.nodes, key=str)
    if not nodes:
        raise ValueError("the topology has no services")
    node_index = {n: i for i, n in enumerate(nodes)}
    kinds = [infer_kind(str(n), graph.nodes[n]) for n in nodes]
    names = _Names([str(n) for n in nodes], kinds, rng)
    callers = [[node_index[p] for p in sorted(graph.predecessors(n), key=str)] for n in nodes]
    atypes = list(CATALOGUE)
    atype_index = {a.name: i for i, a in enumerate(atypes)}
    # Ancestor sets for storms: roots below one common upstream node.
    span_min = config.days * 24 * 60
    incidents_per_day, storms_per_day = config.rates

    starts: list[tuple[float, int | None]] = []  # (start minute, forced root or None)
    for t in rng.uniform(0, span_min, rng.poisson(incidents_per_day * config.days)):
        starts.append((float(t), None))
    n_storms = rng.poisson(storms_per_day * config.days)
    for storm_t in np.sort(rng.uniform(0, span_min, n_storms)):
        roots = _storm_roots(graph, nodes, kinds, node_index, config.storm_size, rng)
        for root in roots:
            starts.append((float(storm_t + rng.uniform(0, 10)), root))
    starts.sort(key=lambda s: s[0])

    rows = _Rows()
    incident_rows = []
    kind_arr = np.array(kinds)
    root_weights = np.array([ROOT_KIND_WEIGHTS[k] for k in kinds])
    root_weights = root_weights / root_weights.sum()
    # A service already in an incident does not start a second one: its monitoring
    # would show one continuing problem, and no grouping could tell the two apart.
    busy_until: dict[int, float] = {}
    # disable=None: a bar on a terminal, silent in logs, CI and tests.
    progress = tqdm(starts, desc="simulate", unit="incident", disable=None, leave=False)
    for inc, (t0, forced_root) in enumerate(progress):
        duration = float(np.clip(rng.lognormal(np.log(30), 0.6), 8, 180))
        if forced_root is None and rng.random() < config.unknown_incident_share:
            u = int(rng.integers(len(UNKNOWN_SERVICES)))
            if busy_until.get(-1 - u, -1.0) >= t0:
                continue
            busy_until[-1 - u] = t0 + duration + config.dedup_window_minutes
            family = str(rng.choice(["cpu", "memory", "disk", "availability"]))
            _emit_unknown(rows, names, u, family, atypes, atype_index, t0, duration, inc, rng)
            incident_rows.append((inc, t0, duration, UNKNOWN_SERVICES[u], family))
            continue
        root = (
            forced_root if forced_root is not None else int(rng.choice(len(nodes), p=root_weights))
        )
        for _ in range(20):
            if busy_until.get(root, -1.0) < t0:
                break
            root = int(rng.choice(len(nodes), p=root_weights))
        else:
            continue
        busy_until[root] = t0 + duration + config.dedup_window_minutes
        kind = kinds[root]
        family = _pick_weighted(FAULTS_BY_KIND[kind], kind, rng)
        root_types = alert_types_for(kind, family)
        n_types = 1 + int(rng.random() < 0.5 and len(root_types) > 1)
        for a in rng.choice(len(root_types), size=n_types, replace=False):
            first = t0 + rng.uniform(*config.root_delay_minutes)
            _emit_firing(
                rows,
                names,
                root,
                atype_index[root_types[a].name],
                first,
                t0 + duration,
                inc,
                True,
                config.replica_share,
                config.name_variant_share,
                rng,
            )
        # Symptoms spread to callers, hop by hop, with dampening and delay.
        frontier = {root: 0.0}
        seen = {root}
        for hop in range(1, config.max_hops + 1):
            prob = 0.85 * 0.6 ** (hop - 1)
            nxt: dict[int, float] = {}
            for child, delay in sorted(frontier.items()):
                for caller in callers[child]:
                    if caller in seen or rng.random() >= prob:
                        continue
                    seen.add(caller)
                    nxt[caller] = delay + rng.uniform(*config.hop_delay_minutes)
            for caller, delay in sorted(nxt.items()):
                ckind = kinds[caller]
                sym_family = _pick_weighted(SYMPTOMS_BY_FAULT[family], ckind, rng, symptom=True)
                options = symptom_types_for(ckind, sym_family) or symptom_types_for(
                    "service", "latency"
                )
                a = options[int(rng.integers(len(options)))]
                _emit_firing(
                    rows,
                    names,
                    caller,
                    atype_index[a.name],
                    t0 + delay,
                    t0 + duration,
                    inc,
                    False,
                    config.replica_share * 0.5,
                    config.name_variant_share,
                    rng,
                )
            frontier = nxt
            if not frontier:
                break
        incident_rows.append((inc, t0, duration, str(nodes[root]), family))

    n_incident_alerts = sum(len(t) for t in rows.cols["t"])
    n_noise_alerts = round(n_incident_alerts * config.noise_share / (1 - config.noise_share))
    noise_families = [f for f in FAMILIES if f != UNKNOWN_FAMILY]
    _emit_noise(
        rows,
        names,
        kind_arr,
        noise_families,
        atypes,
        n_noise_alerts,
        span_min,
        len(starts),
        config,
        rng,
    )
    cols = rows.frame()
    if len(cols["t"]) == 0:
        raise ValueError("the scenario produced no alerts; raise --days or the incident rate")
    return _assemble(cols, names, nodes, atypes, incident_rows, len(starts), graph, config, rng)


def _pick_weighted(
    weights: dict[str, float], kind: str, rng: np.random.Generator, symptom: bool = False
) -> str:
    """A family from ``weights``, among those with catalogue alerts for this node kind."""
    keys, cum = _weighted_choices(tuple(sorted(weights.items())), kind, symptom)
    return keys[int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))]


@lru_cache(maxsize=256)
def _weighted_choices(weights: tuple[tuple[str, float], ...], kind: str, symptom: bool):
    available = symptom_types_for if symptom else alert_types_for
    keys = [k for k, _ in weights if available(kind, k)]
    if not keys:
        keys = ["latency"] if alert_types_for(kind, "latency") else ["availability"]
        return keys, np.array([1.0])
    lookup = dict(weights)
    return keys, np.cumsum([lookup[k] for k in keys])


def _storm_roots(graph, nodes, kinds, node_index, size, rng) -> list[int]:
    """Roots of one storm: distinct non-gateway nodes below one shared upstream node."""
    k = int(rng.integers(size[0], size[1] + 1))
    uppers = [i for i, kind in enumerate(kinds) if kind == "gateway"] or list(range(len(nodes)))
    upper = nodes[uppers[int(rng.integers(len(uppers)))]]
    below = sorted(
        (node_index[d] for d in nx.descendants(graph, upper) if kinds[node_index[d]] != "gateway"),
    )
    if len(below) < k:
        below = [i for i, kind in enumerate(kinds) if kind != "gateway"] or list(range(len(nodes)))
    picked = rng.choice(below, size=min(k, len(below)), replace=False)
    return [int(x) for x in picked]


def _emit_firing(
    rows, names, node, atype, first, end, incident, is_root, replica_share, variant_share, rng
) -> None:
    """One alert type on one service, re-firing every 3-8 minutes until ``end``."""
    interval = rng.uniform(3, 8)
    times = np.arange(first, max(end, first + 1e-6), interval)
    n_replicas = int(rng.integers(2, names.N_REPLICAS + 1)) if rng.random() < replica_share else 1
    if n_replicas == 1:
        variant = int(rng.integers(1, names.N_VARIANTS)) if rng.random() < variant_share else 0
        name = names.variant_base[node] + variant
        rows.add(times, node, name, names.host_base[node], atype, incident, is_root)
        return
    for r in range(n_replicas):
        jitter = rng.uniform(0, 0.5, len(times))
        rows.add(
            times + jitter,
            node,
            names.pod_base[node] + r,
            names.host_base[node] + r,
            atype,
            incident,
            is_root,
        )


def _emit_unknown(rows, names, u, family, atypes, atype_index, t0, duration, inc, rng) -> None:
    options = alert_types_for("service", family) or alert_types_for("worker", family)
    a = options[int(rng.integers(len(options)))]
    interval = rng.uniform(3, 8)
    times = np.arange(t0, t0 + duration, interval)
    rows.add(
        times,
        -1 - u,
        names.unknown_base + u,
        names.unknown_host_base + u,
        atype_index[a.name],
        inc,
        True,
    )


def _emit_noise(
    rows, names, kind_arr, families, atypes, n_alerts, span_min, first_id, config, rng
) -> None:
    """Unrelated alerts: singles and short flaps, spread over the whole span."""
    made = 0
    event = 0
    n_nodes = len(kind_arr)
    by_kind = {kind: [i for i, a in enumerate(atypes) if kind in a.kinds] for kind in set(kind_arr)}
    while made < n_alerts:
        t = rng.uniform(0, span_min)
        repeats = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
        times = t + np.arange(repeats) * rng.uniform(2, 6)
        inc = first_id + event
        if rng.random() < config.unknown_noise_share:
            u = int(rng.integers(len(UNKNOWN_SERVICES)))
            a = int(rng.integers(len(atypes)))
            rows.add(
                times, -1 - u, names.unknown_base + u, names.unknown_host_base + u, a, inc, False
            )
        else:
            node = int(rng.integers(n_nodes))
            options = by_kind[kind_arr[node]]
            a = options[int(rng.integers(len(options)))]
            variant = (
                int(rng.integers(1, names.N_VARIANTS))
                if rng.random() < config.name_variant_share
                else 0
            )
            rows.add(
                times,
                node,
                names.variant_base[node] + variant,
                names.host_base[node],
                a,
                inc,
                False,
            )
        made += repeats
        event += 1


def _assemble(cols, names, nodes, atypes, incident_rows, n_incidents, graph, config, rng):
    t = cols["t"]
    keep = (t >= 0) & _unmasked(cols, config.dedup_window_minutes)
    order = np.lexsort((cols["name"][keep], cols["atype"][keep], t[keep]))
    sel = {k: v[keep][order] for k, v in cols.items()}
    n = len(sel["t"])
    start = (
        pd.Timestamp(config.start).tz_convert("UTC")
        if pd.Timestamp(config.start).tzinfo
        else pd.Timestamp(config.start, tz="UTC")
    )
    # Millisecond resolution, as monitoring systems stamp alerts.
    ts = start + pd.to_timedelta(np.round(sel["t"] * 60_000).astype(np.int64), unit="ms")
    atype_names = np.array([a.name for a in atypes], dtype=object)
    atype_family = np.array([a.family for a in atypes], dtype=object)
    atype_sev = np.array([a.severity for a in atypes], dtype=object)
    atype_desc = np.array([a.description for a in atypes], dtype=object)
    name_table = np.array(names.names, dtype=object)
    host_table = np.array(names.hosts, dtype=object)
    node_ids = np.array([str(x) for x in nodes] + list(UNKNOWN_SERVICES), dtype=object)
    node_pos = np.where(sel["node"] >= 0, sel["node"], len(nodes) + (-1 - sel["node"]))
    true_service = node_ids[node_pos]
    service = name_table[sel["name"]]
    host = host_table[sel["host"]]
    alert_name = atype_names[sel["atype"]]
    severity = atype_sev[sel["atype"]].copy()
    respell = rng.random(n) < 0.1
    for level, spellings in SEVERITY_SPELLINGS.items():
        hit = respell & (severity == level)
        if hit.any():
            severity[hit] = np.array(spellings, dtype=object)[
                rng.integers(0, len(spellings), hit.sum())
            ]
    incident_id = sel["incident"].astype(np.int64)
    is_noise = incident_id >= n_incidents
    inc_label = np.where(
        is_noise,
        np.char.add("N", np.char.zfill((incident_id - n_incidents).astype(str), 6)),
        np.char.add("I", np.char.zfill(incident_id.astype(str), 5)),
    ).astype(object)
    inc_family = {i: fam for (i, _, _, _, fam) in incident_rows}
    inc_root = {i: root for (i, _, _, root, _) in incident_rows}
    family = atype_family[sel["atype"]]
    category = np.array(
        [inc_family.get(i, f) for i, f in zip(incident_id.tolist(), family, strict=True)],
        dtype=object,
    )
    root_service = np.array([inc_root.get(i, "") for i in incident_id.tolist()], dtype=object)
    alert_ids = np.char.add(f"s{config.seed}-", np.char.zfill(np.arange(n).astype(str), 8))
    team = {str(node): str(graph.nodes[node].get("team", "")) for node in nodes}
    namespace = np.array([team.get(s, "legacy") or "default" for s in true_service], dtype=object)
    pct = rng.integers(80, 100, n).astype(str)
    ms = rng.integers(900, 4000, n).astype(str)
    fields = {"service": service, "host": host, "pct": pct, "ms": ms}
    description = np.empty(n, dtype=object)
    for a_idx in np.unique(sel["atype"]):
        rows_of = np.flatnonzero(sel["atype"] == a_idx)
        description[rows_of] = _render(
            atype_desc[a_idx], {k: v[rows_of] for k, v in fields.items()}
        )
    labels = _render(
        '{"alertname":"{alert}","pod":"{service}","instance":"{host}","namespace":"{ns}"}',
        {"alert": alert_name, "service": service, "host": host, "ns": namespace},
    )
    alerts = pd.DataFrame(
        {
            "alert_id": alert_ids,
            "timestamp": np.datetime_as_string(ts.to_numpy(dtype="datetime64[ms]"), unit="ms"),
            "service": service,
            "alert_name": alert_name,
            "severity": severity,
            "status": "firing",
            "host": host,
            "namespace": namespace,
            "cluster": "prod-eu-west-1",
            "environment": "production",
            "description": description,
            "labels": labels,
        }
    )
    alerts["timestamp"] = alerts["timestamp"] + "Z"
    truth = pd.DataFrame(
        {
            "alert_id": alert_ids,
            "incident_id": inc_label,
            "category": category,
            "is_duplicate": _truth_duplicates(true_service, alert_name, sel["t"], config),
            "is_root": sel["is_root"].astype(bool) & ~is_noise,
            "root_service": root_service,
            "true_service": true_service,
            "alert_family": family,
            "is_noise": is_noise,
        }
    )
    incidents = pd.DataFrame(
        incident_rows,
        columns=[
            "incident",
            "start_minute",
            "duration_minutes",
            "root_service",
            "category",
        ],
    )
    incidents["incident_id"] = [f"I{i:05d}" for i in incidents["incident"]]
    return Simulation(alerts, truth, graph, config, incidents.drop(columns="incident"))


_PLACEHOLDER = re.compile(r"\{(service|host|pct|ms|alert|ns)\}")


def _render(template: str, fields: dict[str, np.ndarray]) -> np.ndarray:
    """Fill ``{name}`` placeholders row-wise with whole-array string concatenation."""
    n = len(next(iter(fields.values())))
    out = np.full(n, "", dtype=object)
    pos = 0
    for match in _PLACEHOLDER.finditer(template):
        out = out + template[pos : match.start()] + fields[match.group(1)].astype(object)
        pos = match.end()
    return out + template[pos:]


def _unmasked(cols: dict[str, np.ndarray], window: float) -> np.ndarray:
    """Drop alerts that a still-firing identical alert of another incident hides.

    One alert rule on one service is one alert instance: while it fires for incident A,
    incident B cannot make it fire again, so B's copies never reach the alert stream
    (and the ground truth stays unambiguous).
    """
    frame = pd.DataFrame(
        {"node": cols["node"], "atype": cols["atype"], "t": cols["t"], "inc": cols["incident"]}
    )
    shared = frame.groupby(["node", "atype"])["inc"].transform("nunique") > 1
    keep = np.ones(len(frame), dtype=bool)
    sub = frame[shared].sort_values(["node", "atype", "t"], kind="stable")
    owner_key, owner, last = None, -1, -np.inf
    for pos, node, atype, t, inc in zip(
        sub.index, sub["node"], sub["atype"], sub["t"], sub["inc"], strict=True
    ):
        if (node, atype) != owner_key:
            owner_key, owner, last = (node, atype), inc, t
            continue
        if inc != owner and t - last <= window:
            keep[pos] = False
            continue
        owner, last = inc, t
    return keep


def _truth_duplicates(true_service, alert_name, minutes, config) -> np.ndarray:
    """Duplicate = same alert on the same true service within the window of the last one."""
    frame = pd.DataFrame({"s": true_service, "a": alert_name, "t": minutes})
    frame = frame.sort_values(["s", "a", "t"], kind="stable")
    same = (frame["s"].shift() == frame["s"]) & (frame["a"].shift() == frame["a"])
    close = (frame["t"] - frame["t"].shift()) <= config.dedup_window_minutes
    dup = (same & close).reindex(range(len(true_service)))
    return dup.to_numpy(dtype=bool)


# ------------------------------------------------------------------------------------
def write_simulation(sim: Simulation, out_dir: str | Path) -> dict[str, Path]:
    """Write ``alert_data.csv``, ``graph_data.json``, ``truth.csv`` (and a scenario note)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "alerts": out / "alert_data.csv",
        "graph": out / "graph_data.json",
        "truth": out / "truth.csv",
        "incidents": out / "incidents.csv",
        "scenario": out / "scenario.json",
    }
    _write_csv(sim.alerts, paths["alerts"])
    _write_csv(sim.truth, paths["truth"])
    _write_csv(sim.incidents, paths["incidents"])
    data = nx.node_link_data(sim.graph, edges="links")
    data["graph"] = {k: v for k, v in sim.graph.graph.items() if isinstance(v, str | int | float)}
    paths["graph"].write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    summary = asdict(sim.config)
    summary["alerts"] = len(sim.alerts)
    summary["incidents"] = int(
        (~sim.truth["is_noise"]).groupby(sim.truth["incident_id"]).any().sum()
    )
    summary["services_in_graph"] = sim.graph.number_of_nodes()
    paths["scenario"].write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n", "utf-8")
    return paths


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    # pyarrow writes a million rows in about a second and byte-identically every time.
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(quoting_style="needed"))


def describe(sim: Simulation) -> dict[str, object]:
    """A few numbers that tell a calm scenario from a storm."""
    truth = sim.truth
    incidents = sim.incidents
    order = np.argsort(incidents["start_minute"].to_numpy(), kind="stable")
    start = incidents["start_minute"].to_numpy()[order]
    end = start + incidents["duration_minutes"].to_numpy()[order]
    # Sorted by start, an interval overlaps another iff an earlier one ends after it
    # starts, or the next one starts before it ends.
    earlier_end = np.concatenate([[-np.inf], np.maximum.accumulate(end)[:-1]])
    next_start = np.concatenate([start[1:], [np.inf]])
    overlapping = int(((earlier_end > start) | (next_start < end)).sum()) if len(start) else 0
    per_hour = pd.to_datetime(sim.alerts["timestamp"]).dt.floor("h").value_counts()
    return {
        "alerts": len(truth),
        "incidents": len(incidents),
        "overlapping_incidents_share": round(overlapping / max(1, len(incidents)), 3),
        "duplicate_share": round(float(truth["is_duplicate"].mean()), 3),
        "noise_share": round(float(truth["is_noise"].mean()), 3),
        "peak_alerts_per_hour": int(per_hour.max()) if len(per_hour) else 0,
        "unknown_service_share": round(
            float((~truth["true_service"].isin(set(map(str, sim.graph.nodes)))).mean()), 3
        ),
    }


__all__ = [
    "SCENARIOS",
    "AlertType",
    "Simulation",
    "SimulationConfig",
    "describe",
    "simulate",
    "write_simulation",
]
