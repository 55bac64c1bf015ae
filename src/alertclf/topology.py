"""Layered microservice dependency graphs for simulation.

Shape, top to bottom: gateways -> edge services -> internal services -> workers ->
datastores (databases, caches, queues). An edge ``a -> b`` means *a calls / depends on
b*, as in the input contract. Many services own a datastore named after them
(``order-service -> order-db``), which gives the sibling names (``order-service``,
``order-worker``, ``order-db``) that make service-name mapping non-trivial in real
estates.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

NODE_KINDS: tuple[str, ...] = ("gateway", "service", "worker", "datastore")

DOMAINS: tuple[str, ...] = (
    "payment",
    "order",
    "cart",
    "user",
    "auth",
    "inventory",
    "shipping",
    "catalog",
    "search",
    "recommendation",
    "notification",
    "email",
    "billing",
    "pricing",
    "review",
    "profile",
    "session",
    "checkout",
    "account",
    "ledger",
    "fraud",
    "analytics",
    "media",
    "upload",
    "report",
    "audit",
    "tax",
    "coupon",
    "loyalty",
    "wishlist",
    "invoice",
    "refund",
    "delivery",
    "warehouse",
    "supplier",
    "contract",
    "identity",
    "consent",
    "geo",
    "currency",
    "quote",
    "booking",
    "ticket",
    "schedule",
    "route",
    "fleet",
    "driver",
    "rating",
    "chat",
    "feed",
    "content",
    "asset",
    "license",
    "subscription",
)
QUALIFIERS: tuple[str, ...] = (
    "core",
    "api",
    "sync",
    "batch",
    "edge",
    "admin",
    "public",
    "partner",
    "mobile",
    "web",
)
DATASTORE_SUFFIXES: tuple[str, ...] = ("db", "cache", "queue", "store", "index")
DATASTORE_TECH: dict[str, str] = {
    "db": "postgres",
    "store": "mysql",
    "cache": "redis",
    "queue": "kafka",
    "index": "elasticsearch",
}
TEAMS: tuple[str, ...] = ("checkout", "identity", "platform", "growth", "logistics", "data")


def generate_topology(n_services: int = 60, seed: int = 0) -> nx.DiGraph:
    """A layered, acyclic dependency graph with about ``n_services`` nodes (>= 10).

    Node attributes: ``type`` (gateway/service/worker/datastore), ``tier`` (0 = entry),
    ``team``, ``criticality`` (1-3) and, on datastores, ``tech``.
    """
    if n_services < 10:
        raise ValueError(f"n_services must be at least 10, got {n_services}")
    rng = np.random.default_rng(seed)
    n_gateways = max(1, round(n_services * 0.04))
    n_datastores = max(2, round(n_services * 0.25))
    n_workers = max(1, round(n_services * 0.15))
    n_services_total = n_services - n_gateways - n_datastores - n_workers
    n_edge = max(1, round(n_services_total * 0.45))
    n_internal = max(1, n_services_total - n_edge)

    names = _domain_names(n_edge + n_internal + n_workers, rng)
    edge_domains = names[:n_edge]
    internal_domains = names[n_edge : n_edge + n_internal]
    worker_domains = names[n_edge + n_internal :]

    graph = nx.DiGraph(name=f"layered-{n_services}")
    gateway_names = ["api-gateway", "web-frontend", "mobile-bff", "partner-gateway", "admin-portal"]
    gateways = [
        gateway_names[i] if i < len(gateway_names) else f"edge-gateway-{i}"
        for i in range(n_gateways)
    ]
    for gw in gateways:
        _add(graph, gw, "gateway", 0, rng, criticality=3)
    edge = [f"{d}-service" for d in edge_domains]
    internal = [f"{d}-service" for d in internal_domains]
    workers = [f"{d}-worker" for d in worker_domains]
    for name in edge:
        _add(graph, name, "service", 1, rng)
    for name in internal:
        _add(graph, name, "service", 2, rng)
    for name in workers:
        _add(graph, name, "worker", 3, rng)

    # Datastores: first one per service/worker domain (the owned store), the rest shared.
    owners = edge + internal + workers
    datastores: list[str] = []
    order = rng.permutation(len(owners))
    for idx in order[:n_datastores]:
        owner = owners[idx]
        domain = owner.rsplit("-", 1)[0]
        suffix = str(rng.choice(DATASTORE_SUFFIXES, p=[0.45, 0.1, 0.25, 0.1, 0.1]))
        store = f"{domain}-{suffix}"
        if store in graph:
            continue
        _add(graph, store, "datastore", 4, rng, tech=DATASTORE_TECH[suffix])
        graph.add_edge(owner, store)
        datastores.append(store)
    if len(datastores) < 2:
        for extra in ("shared-db", "shared-cache"):
            _add(graph, extra, "datastore", 4, rng, tech=DATASTORE_TECH[extra.split("-")[1]])
            datastores.append(extra)

    # Gateways call a subset of edge services; big estates route by domain, so a
    # gateway reaches a share of the edge tier, never all of it.
    for gw in gateways:
        share = 1.0 if len(gateways) == 1 else rng.uniform(0.3, 0.6)
        k = max(1, round(len(edge) * share))
        for target in rng.choice(edge, size=min(k, len(edge)), replace=False):
            graph.add_edge(gw, str(target))
    for name in edge:
        if graph.in_degree(name) == 0:
            graph.add_edge(gateways[int(rng.integers(len(gateways)))], name)

    # Edge services call internal services; internal services call later internal ones
    # (index order keeps the graph acyclic), workers and datastores.
    for name in edge:
        for target in _pick(internal, rng.integers(1, 4), rng):
            graph.add_edge(name, target)
    for i, name in enumerate(internal):
        later = internal[i + 1 :]
        if later and rng.random() < 0.5:
            for target in _pick(later, rng.integers(1, 3), rng):
                graph.add_edge(name, target)
        if rng.random() < 0.4:
            for target in _pick(workers, 1, rng):
                graph.add_edge(name, target)
    for name in internal:
        if graph.in_degree(name) == 0:
            graph.add_edge(edge[int(rng.integers(len(edge)))], name)
    for name in workers:
        if graph.in_degree(name) == 0:
            graph.add_edge(internal[int(rng.integers(len(internal)))], name)

    # Shared datastores and queues: a few extra consumers each.
    callers = edge + internal + workers
    for store in datastores:
        for caller in _pick(callers, rng.integers(0, 3), rng):
            if caller != store:
                graph.add_edge(caller, store)
        if graph.in_degree(store) == 0:
            graph.add_edge(callers[int(rng.integers(len(callers)))], store)
    return graph


def infer_kind(node: str, attrs: dict | None = None) -> str:
    """The node kind from its ``type`` attribute, else from words in its id."""
    attrs = attrs or {}
    declared = str(attrs.get("type", "")).lower()
    if declared in NODE_KINDS:
        return declared
    if declared in {"db", "database", "cache", "queue", "storage"}:
        return "datastore"
    if declared in {"frontend", "ingress", "lb", "loadbalancer"}:
        return "gateway"
    lowered = node.lower()
    datastore_words = (
        "db",
        "redis",
        "mysql",
        "postgres",
        "mongo",
        "cache",
        "kafka",
        "queue",
        "rabbit",
        "elastic",
        "store",
        "index",
        "sql",
    )
    if any(w in lowered for w in datastore_words):
        return "datastore"
    if any(w in lowered for w in ("gateway", "frontend", "ingress", "portal", "bff", "-lb")):
        return "gateway"
    if any(w in lowered for w in ("worker", "consumer", "job", "cron", "scheduler")):
        return "worker"
    return "service"


def _domain_names(count: int, rng: np.random.Generator) -> list[str]:
    """Distinct domain words; beyond the list, qualified names (``order-batch``)."""
    base = list(rng.permutation(DOMAINS))
    names = base[:count]
    i = 0
    while len(names) < count:
        domain = base[i % len(base)]
        qualifier = QUALIFIERS[(i // len(base)) % len(QUALIFIERS)]
        round_no = i // (len(base) * len(QUALIFIERS))
        candidate = f"{domain}-{qualifier}" + (f"{round_no + 1}" if round_no else "")
        names.append(candidate)
        i += 1
    return [str(n) for n in names]


def _add(graph: nx.DiGraph, name: str, kind: str, tier: int, rng: np.random.Generator, **extra):
    attrs = {
        "type": kind,
        "tier": tier,
        "team": TEAMS[int(rng.integers(len(TEAMS)))],
        "criticality": int(extra.pop("criticality", rng.integers(1, 4))),
    }
    attrs.update(extra)
    graph.add_node(name, **attrs)


def _pick(items: list[str], k: int, rng: np.random.Generator) -> list[str]:
    k = int(min(k, len(items)))
    if k <= 0:
        return []
    return [str(x) for x in rng.choice(items, size=k, replace=False)]
