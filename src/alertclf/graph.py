"""Service dependency graph: loading, content fingerprint, topology features, neighbourhoods.

An edge ``a -> b`` means **a calls / depends on b**: a failure of ``b`` shows up as symptoms
on ``a`` and on everything that (transitively) calls ``a``. "Callers" (ancestors) are the
blast radius of a node; "dependencies" (descendants) are where its own root cause may lie.

Topology features (one row per node, every column float64, computed once per graph and
cached by content fingerprint):

| feature | meaning | why it helps classify alerts |
|---|---|---|
| `g_in_degree` | number of direct callers | widely called services raise alerts that echo upstream |
| `g_out_degree` | number of direct dependencies | many dependencies make a service a frequent symptom, not a root |
| `g_n_ancestors` | number of transitive callers | size of the blast radius when this node fails |
| `g_n_descendants` | number of transitive dependencies | how many places a root cause below this node could hide |
| `g_blast_radius_share` | transitive callers / number of nodes | blast radius comparable across graphs of different size |
| `g_pagerank` | PageRank along the call direction | what many things depend on ranks high: likely root causes |
| `g_betweenness` | normalised betweenness (sampled pivots on large graphs) | chokepoints relay failures between parts of the system |
| `g_harmonic` | mean of 1/hops from every (sampled) node that reaches it | how quickly a failure here reaches the rest of the system |
| `g_hub` | HITS hub score | orchestrators that call many important services |
| `g_authority` | HITS authority score | shared back-ends called by many orchestrators |
| `g_core_number` | k-core number (in + out degree) | members of the dense core fail together |
| `g_clustering` | clustering coefficient of the undirected graph | tightly knit neighbourhoods produce correlated alerts |
| `g_depth` | hops from the nearest entry point (unreachable: max + 1) | edge services alert on user symptoms, deep ones on causes |
| `g_height` | longest call chain below the node, cycles collapsed | leaves (height 0) are where resource alerts originate |
| `g_is_entry_point` | 1 if nothing calls it | entry points see user-facing symptoms (latency, 5xx) |
| `g_is_leaf` | 1 if it calls nothing | datastores and leaves see saturation and capacity alerts |
| `g_scc_size` | size of its strongly connected component | cycles spread failures back and forth |
| `g_community_size` | size of its community (Louvain; label propagation > 2,000 nodes) | alerts within one community tend to be one incident |
| `g_wcc_share` | share of nodes in its weakly connected component | isolated islands cannot be part of a larger cascade |
| `g_node_type` | 0 gateway/frontend, 1 service, 2 worker, 3 datastore, -1 unknown | resource and error alert families differ by tier |
| `g_criticality` | criticality attribute (1 low .. 4 critical, numbers kept), 0 unknown | business impact of the alerting service |

Large graphs: betweenness and harmonic centrality use a seeded sample of pivot nodes once
the graph has more than ``EXACT_CENTRALITY_MAX_NODES`` nodes; everything else is exact.
Features are computed on a canonical copy of the graph (sorted nodes and edges), so they
depend only on the graph's content, never on the order the file listed it in.
"""  # noqa: E501  (the Markdown table rows cannot be wrapped)

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse import csgraph

from alertclf.errors import AlertclfError

logger = logging.getLogger(__name__)

NOTES_KEY = "alertclf_notes"
SOURCE_KEY = "alertclf_source"

# Bump when a feature's definition changes: it is part of every cache key, so stale
# parquet files from older code are never read back.
FEATURES_VERSION = 1
SEED = 42
EXACT_CENTRALITY_MAX_NODES = 500
CENTRALITY_PIVOTS = 256
LOUVAIN_MAX_NODES = 2000
_FEATURE_LRU_SIZE = 8
_CALLERS_LRU_SIZE = 50_000

GRAPH_FEATURE_DOCS: list[tuple[str, str, str]] = [
    (
        "g_in_degree",
        "number of direct callers",
        "widely called services raise alerts that echo upstream",
    ),
    (
        "g_out_degree",
        "number of direct dependencies",
        "many dependencies make a service a frequent symptom, not a root",
    ),
    (
        "g_n_ancestors",
        "number of transitive callers",
        "size of the blast radius when this node fails",
    ),
    (
        "g_n_descendants",
        "number of transitive dependencies",
        "how many places a root cause below this node could hide",
    ),
    (
        "g_blast_radius_share",
        "transitive callers / number of nodes",
        "blast radius comparable across graphs of different size",
    ),
    (
        "g_pagerank",
        "PageRank along the call direction",
        "what many things depend on ranks high: likely root causes",
    ),
    (
        "g_betweenness",
        "normalised betweenness (sampled pivots on large graphs)",
        "chokepoints relay failures between parts of the system",
    ),
    (
        "g_harmonic",
        "mean of 1/hops from every (sampled) node that reaches it",
        "how quickly a failure here reaches the rest of the system",
    ),
    ("g_hub", "HITS hub score", "orchestrators that call many important services"),
    ("g_authority", "HITS authority score", "shared back-ends called by many orchestrators"),
    (
        "g_core_number",
        "k-core number (in + out degree)",
        "members of the dense core fail together",
    ),
    (
        "g_clustering",
        "clustering coefficient of the undirected graph",
        "tightly knit neighbourhoods produce correlated alerts",
    ),
    (
        "g_depth",
        "hops from the nearest entry point (unreachable: max + 1)",
        "edge services alert on user symptoms, deep ones on causes",
    ),
    (
        "g_height",
        "longest call chain below the node, cycles collapsed",
        "leaves (height 0) are where resource alerts originate",
    ),
    (
        "g_is_entry_point",
        "1 if nothing calls it",
        "entry points see user-facing symptoms (latency, 5xx)",
    ),
    (
        "g_is_leaf",
        "1 if it calls nothing",
        "datastores and leaves see saturation and capacity alerts",
    ),
    (
        "g_scc_size",
        "size of its strongly connected component",
        "cycles spread failures back and forth",
    ),
    (
        "g_community_size",
        "size of its community (Louvain; label propagation > 2,000 nodes)",
        "alerts within one community tend to be one incident",
    ),
    (
        "g_wcc_share",
        "share of nodes in its weakly connected component",
        "isolated islands cannot be part of a larger cascade",
    ),
    (
        "g_node_type",
        "0 gateway/frontend, 1 service, 2 worker, 3 datastore, -1 unknown",
        "resource and error alert families differ by tier",
    ),
    (
        "g_criticality",
        "criticality attribute (1 low .. 4 critical, numbers kept), 0 unknown",
        "business impact of the alerting service",
    ),
]
FEATURE_COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in GRAPH_FEATURE_DOCS)


class GraphError(AlertclfError):
    """The graph file cannot be used; the message names the file and the problem."""


# --------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------
def load_graph(location: str | Path, *, data: bytes | str | None = None) -> nx.DiGraph:
    """Read a service graph (node-link or adjacency JSON) into a ``DiGraph`` of ``str`` ids.

    ``data`` carries the file's bytes when they come from elsewhere (a blob reader);
    ``location`` then only names the source in messages. Repairs that change the graph
    (unknown edge endpoints added, self-loops dropped, undirected input doubled) are
    logged as warnings and kept in ``G.graph["alertclf_notes"]``.
    """
    name = str(location)
    if data is None:
        try:
            # A pipe is read too (``--graph <(curl ...)``); one that never ends is what
            # the scheduler's job timeout is for.
            data = Path(location).read_bytes()
        except OSError as err:
            raise GraphError(f"{name}: cannot read graph file ({err.strerror or err})") from None
    if isinstance(data, str):
        data = data.encode("utf-8")
    doc = _decode_json(name, bytes(data))
    notes: list[str] = []
    node_link = isinstance(doc, dict) and _is_node_link(doc)
    if node_link:
        nodes, edges, graph_attrs, directed = _parse_node_link(doc, name, notes)
    elif isinstance(doc, dict):
        nodes, edges = _parse_adjacency(doc, name)
        graph_attrs, directed = {}, True
    else:
        raise GraphError(
            f"{name}: expected a JSON object (node-link with 'nodes'/'links', or adjacency "
            f"{{service: [dependencies]}}), got a JSON {_json_kind(doc)}"
        )
    G = _build_graph(name, nodes, edges, directed, adjacency=not node_link, notes=notes)
    if G.number_of_nodes() == 0:
        raise GraphError(f"{name}: the graph has no nodes")
    G.graph.update(graph_attrs)
    G.graph[SOURCE_KEY] = name
    G.graph[NOTES_KEY] = notes
    for note in notes:
        logger.warning("%s: %s", name, note)
    logger.info(
        "loaded graph %s: %d nodes, %d edges", name, G.number_of_nodes(), G.number_of_edges()
    )
    return G


def _decode_json(name: str, data: bytes) -> Any:
    if not data.strip():
        raise GraphError(f"{name}: the graph file is empty")
    if b"\x00" in data[:4096]:
        raise GraphError(f"{name}: not a JSON graph (binary content)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise GraphError(
            f"{name}: not a JSON graph (not UTF-8 text, bad byte at offset {err.start})"
        ) from None
    try:
        return json.loads(
            text, parse_constant=_no_constant, parse_float=_finite, object_pairs_hook=_unique_keys
        )
    except _StrictJSONError as err:
        raise GraphError(f"{name}: not valid JSON ({err})") from None
    except json.JSONDecodeError as err:
        raise GraphError(
            f"{name}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    except RecursionError:
        raise GraphError(f"{name}: not a usable JSON graph (nested too deeply)") from None


class _StrictJSONError(ValueError):
    """What Python's JSON reader accepts and JSON does not."""


def _no_constant(literal: str) -> Any:
    # NaN and Infinity are not JSON: as node ids they would become "nan" and "inf".
    raise _StrictJSONError(f"{literal} is not a JSON value")


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # 1e999
        raise _StrictJSONError(f"{literal} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # With a key twice, the last one silently wins: a second "links" would drop the first.
    doc = dict(pairs)
    if len(doc) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _StrictJSONError(f"key {key!r} appears twice in one object")
            seen.add(key)
    return doc


def _json_kind(value: Any) -> str:
    return {
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _is_node_link(doc: dict[str, Any]) -> bool:
    # An adjacency object could in principle have a service called "nodes"; only treat the
    # document as node-link when it carries node-link structure, not just the key.
    if any(key in doc for key in ("directed", "multigraph", "graph", "links", "edges")):
        return True
    nodes = doc.get("nodes")
    return isinstance(nodes, list) and any(isinstance(item, dict) for item in nodes)


def _node_id(value: Any, name: str, what: str) -> str:
    if type(value) is str and value and not value[0].isspace() and not value[-1].isspace():
        return value  # the common case, kept cheap: this runs for every edge endpoint
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise GraphError(f"{name}: {what} must be a string or number, got {_json_kind(value)}")
    if isinstance(value, float) and value.is_integer():
        # 3.0 and 3 name the same node; str() would tell them apart.
        value = int(value)
    text = str(value).strip()
    if not text:
        raise GraphError(f"{name}: {what} is empty")
    return text


def _parse_node_link(
    doc: dict[str, Any], name: str, notes: list[str]
) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, str, dict[str, Any]]], dict, bool]:
    raw_nodes = doc.get("nodes", [])
    if not isinstance(raw_nodes, list):
        raise GraphError(f"{name}: 'nodes' must be an array, got {_json_kind(raw_nodes)}")
    nodes: list[tuple[str, dict[str, Any]]] = []
    for i, item in enumerate(raw_nodes):
        if isinstance(item, dict):
            if "id" not in item:
                raise GraphError(f"{name}: node #{i} has no 'id'")
            attrs = {k: v for k, v in item.items() if k != "id"}
            nodes.append((_node_id(item["id"], name, f"node #{i} id"), attrs))
        else:
            nodes.append((_node_id(item, name, f"node #{i}"), {}))

    edge_keys = [key for key in ("links", "edges") if key in doc]
    if len(edge_keys) == 2:
        notes.append("both 'links' and 'edges' given; using the union of the two")
    edges: list[tuple[str, str, dict[str, Any]]] = []
    for key in edge_keys:
        raw_edges = doc[key]
        if raw_edges is None:
            continue
        if not isinstance(raw_edges, list):
            raise GraphError(f"{name}: '{key}' must be an array, got {_json_kind(raw_edges)}")
        for i, item in enumerate(raw_edges):
            if isinstance(item, dict):
                if "source" not in item or "target" not in item:
                    raise GraphError(f"{name}: {key} #{i} needs both 'source' and 'target'")
                src, dst = item["source"], item["target"]
                attrs = (
                    {k: v for k, v in item.items() if k not in ("source", "target", "key")}
                    if len(item) > 2
                    else {}
                )
            elif isinstance(item, (list, tuple)) and len(item) >= 2:
                src, dst, attrs = item[0], item[1], {}
            else:
                raise GraphError(
                    f"{name}: {key} #{i} must be an object with 'source' and 'target', "
                    f"got {_json_kind(item)}"
                )
            edges.append(
                (
                    _node_id(src, name, f"{key} #{i} source"),
                    _node_id(dst, name, f"{key} #{i} target"),
                    attrs,
                )
            )

    graph_attrs = doc.get("graph") if isinstance(doc.get("graph"), dict) else {}
    directed = doc.get("directed", True)
    if not isinstance(directed, bool):  # "no", 0, "false": which was meant is a guess
        raise GraphError(f"{name}: 'directed' must be true or false, got {directed!r}")
    if directed is False:
        notes.append(
            "graph is marked undirected ('directed': false): each link was added in both "
            "directions, so callers and dependencies cannot be told apart"
        )
    return nodes, edges, dict(graph_attrs), directed is not False


def _parse_adjacency(
    doc: dict[str, Any], name: str
) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, str, dict[str, Any]]]]:
    nodes: list[tuple[str, dict[str, Any]]] = []
    edges: list[tuple[str, str, dict[str, Any]]] = []
    for key, value in doc.items():
        src = _node_id(key, name, "adjacency key")
        nodes.append((src, {}))
        if value is None:
            continue
        if isinstance(value, dict):
            # networkx dict-of-dicts adjacency: {a: {b: {edge attrs}}}
            for dep, attrs in value.items():
                edge_attrs = dict(attrs) if isinstance(attrs, dict) else {}
                edges.append((src, _node_id(dep, name, f"dependency of {src!r}"), edge_attrs))
        elif isinstance(value, list):
            for dep in value:
                edges.append((src, _node_id(dep, name, f"dependency of {src!r}"), {}))
        else:
            raise GraphError(
                f"{name}: dependencies of {src!r} must be an array of service names, "
                f"got {_json_kind(value)}"
            )
    return nodes, edges


def _build_graph(
    name: str,
    nodes: list[tuple[str, dict[str, Any]]],
    edges: list[tuple[str, str, dict[str, Any]]],
    directed: bool,
    *,
    adjacency: bool,
    notes: list[str],
) -> nx.DiGraph:
    G = nx.DiGraph()
    G.add_nodes_from(nodes)
    duplicates = len(nodes) - G.number_of_nodes()
    if duplicates:
        logger.info("%s: %d duplicate node entries merged", name, duplicates)

    known = G._node  # plain dict lookups: this loop runs once per edge of 50k-node graphs
    unknown: set[str] = set()
    self_loops = 0
    kept: list[tuple[str, str, dict[str, Any]]] = []
    for src, dst, attrs in edges:
        if src not in known:
            unknown.add(src)
        if dst not in known:
            unknown.add(dst)
        if src == dst:
            self_loops += 1
            continue
        kept.append((src, dst, attrs))
        if not directed:
            kept.append((dst, src, attrs))
    if unknown:
        if adjacency:
            # In adjacency form leaves are routinely listed only as dependencies.
            logger.info("%s: %d dependencies not listed as keys added as nodes", name, len(unknown))
        else:
            notes.append(f"{len(unknown)} node(s) referenced by links but not listed were added")
    if self_loops:
        notes.append(f"{self_loops} self-loop(s) dropped")
    G.add_nodes_from(sorted(unknown))  # also those seen only on a dropped self-loop
    G.add_edges_from(kept)
    return G


def graph_notes(G: nx.DiGraph) -> list[str]:
    """Warnings recorded while loading ``G`` (empty for graphs built in code)."""
    return list(G.graph.get(NOTES_KEY, []))


# --------------------------------------------------------------------------------------
# fingerprint
# --------------------------------------------------------------------------------------
def graph_fingerprint(G: nx.Graph) -> str:
    """SHA-256 of the graph's content: sorted nodes with attributes, sorted edges with attributes.

    Independent of insertion order and of ``G.graph`` metadata (source path, notes), so the
    same topology read from another path or blob has the same fingerprint.
    """

    def fallback(value: Any) -> Any:
        # Sets (from graphs built in code) would otherwise hash in PYTHONHASHSEED order.
        if isinstance(value, (set, frozenset)):
            return sorted(map(str, value))
        return str(value)

    def canon(attrs: dict[str, Any]) -> str:
        return json.dumps(attrs, sort_keys=True, default=fallback, separators=(",", ":"))

    edges: Iterable[tuple[Any, Any, dict[str, Any]]] = G.edges(data=True)
    if not G.is_directed():
        # Undirected edges have no orientation: give each its canonical one.
        edges = ((*sorted((str(u), str(v))), d) for u, v, d in edges)
    payload = {
        "directed": G.is_directed(),
        "nodes": sorted((str(n), canon(d)) for n, d in G.nodes(data=True)),
        "edges": sorted((str(u), str(v), canon(d)) for u, v, d in edges),
    }
    blob = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------
# neighbourhood helpers
# --------------------------------------------------------------------------------------
def dependants(G: nx.DiGraph, node: str) -> list[str]:
    """Direct callers of ``node`` (sorted); empty if the node is not in the graph."""
    if node not in G:
        return []
    return sorted(map(str, G.predecessors(node)))


def dependencies(G: nx.DiGraph, node: str) -> list[str]:
    """Direct dependencies (callees) of ``node`` (sorted); empty if the node is not in the graph."""
    if node not in G:
        return []
    return sorted(map(str, G.successors(node)))


# Per-graph LRU of callers_within results. Keyed weakly so a dropped graph frees its cache;
# graphs are treated as immutable once loaded (call clear_graph_caches after mutating one).
_CALLERS_CACHE: weakref.WeakKeyDictionary[nx.DiGraph, OrderedDict[tuple[str, int], dict]] = (
    weakref.WeakKeyDictionary()
)
_CALLERS_LOCK = threading.Lock()


def callers_within(G: nx.DiGraph, node: str, max_hops: int) -> dict[str, int]:
    """Transitive callers of ``node`` at most ``max_hops`` away, with their hop distance.

    The node itself is not included; an unknown node has no callers. Results are cached
    per graph (consolidation asks the same question for every alert on a service).
    """
    if max_hops < 0:
        raise ValueError(f"max_hops must be >= 0, got {max_hops}")
    key = (node, int(max_hops))
    with _CALLERS_LOCK:
        cache = _CALLERS_CACHE.get(G)
        if cache is None:
            cache = _CALLERS_CACHE[G] = OrderedDict()
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return dict(hit)
    result = _bfs_callers(G, node, max_hops)
    with _CALLERS_LOCK:
        cache[key] = result
        if len(cache) > _CALLERS_LRU_SIZE:
            cache.popitem(last=False)
    return dict(result)


def _bfs_callers(G: nx.DiGraph, node: str, max_hops: int) -> dict[str, int]:
    if node not in G or max_hops == 0:
        return {}
    pred = G._pred
    seen = {node: 0}
    queue = deque([node])
    while queue:
        current = queue.popleft()
        hops = seen[current] + 1
        if hops > max_hops:
            continue
        for caller in pred[current]:
            if caller not in seen:
                seen[caller] = hops
                queue.append(caller)
    del seen[node]
    return seen


def clear_graph_caches() -> None:
    """Forget cached features and neighbourhoods (after mutating a graph in place)."""
    with _CALLERS_LOCK:
        _CALLERS_CACHE.clear()
    with _FEATURE_LOCK:
        _FEATURE_CACHE.clear()


# --------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------
_FEATURE_CACHE: OrderedDict[str, pd.DataFrame] = OrderedDict()
_FEATURE_LOCK = threading.Lock()


def graph_features(
    G: nx.Graph, cache_dir: Path | None = None, fingerprint: str | None = None
) -> pd.DataFrame:
    """Topology features, one row per node (index ``service``), columns ``FEATURE_COLUMNS``.

    Cached by content fingerprint in-process and, when ``cache_dir`` is given, as a parquet
    file there. Cache I/O problems are logged and never fail the call.
    """
    fingerprint = fingerprint or graph_fingerprint(G)  # the caller may have it already
    key = f"v{FEATURES_VERSION}-{fingerprint}"
    with _FEATURE_LOCK:
        cached = _FEATURE_CACHE.get(key)
        if cached is not None:
            _FEATURE_CACHE.move_to_end(key)
            return cached.copy(deep=False)

    path = Path(cache_dir) / f"graph_features-{key[:40]}.parquet" if cache_dir else None
    frame = _read_cached(path) if path is not None else None
    if frame is None:
        started = time.perf_counter()
        frame = compute_graph_features(G)
        logger.info(
            "graph features: %d nodes, %d edges in %.2fs",
            G.number_of_nodes(),
            G.number_of_edges(),
            time.perf_counter() - started,
        )
        if path is not None:
            _write_cached(path, frame)

    with _FEATURE_LOCK:
        _FEATURE_CACHE[key] = frame
        while len(_FEATURE_CACHE) > _FEATURE_LRU_SIZE:
            _FEATURE_CACHE.popitem(last=False)
    return frame.copy(deep=False)


def _read_cached(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # a corrupt cache file must never fail a run
        logger.warning("ignoring unreadable graph feature cache %s: %s", path, err)
        return None
    if tuple(frame.columns) != FEATURE_COLUMNS or frame.index.name != "service":
        logger.warning("ignoring graph feature cache %s: unexpected columns", path)
        return None
    logger.debug("graph features read from cache %s", path)
    return frame.astype("float64")


def _write_cached(path: Path, frame: pd.DataFrame) -> None:
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent reader never sees half a file.
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=path.parent)
        os.close(fd)
        frame.to_parquet(tmp_name)
        os.replace(tmp_name, path)
    except Exception as err:
        logger.warning("could not write graph feature cache %s: %s", path, err)
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def compute_graph_features(G: nx.Graph) -> pd.DataFrame:
    """Compute the feature table without any caching (see ``graph_features``)."""
    nodes = sorted({str(n) for n in G})
    n = len(nodes)
    if n == 0:
        empty = pd.DataFrame(
            {c: pd.Series(dtype="float64") for c in FEATURE_COLUMNS},
            index=pd.Index([], dtype="str", name="service"),
        )
        return empty
    index = {name: i for i, name in enumerate(nodes)}
    pairs = {(index[str(u)], index[str(v)]) for u, v in G.edges() if str(u) != str(v)}
    if not G.is_directed():
        pairs |= {(v, u) for u, v in pairs}
    edge_array = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    src, dst = edge_array[:, 0], edge_array[:, 1]
    A = sparse.csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    m = A.nnz

    in_deg = np.asarray(A.sum(axis=0)).ravel()
    out_deg = np.asarray(A.sum(axis=1)).ravel()

    n_scc, scc_label = csgraph.connected_components(A, directed=True, connection="strong")
    scc_size = np.bincount(scc_label, minlength=n_scc)[scc_label]
    _, wcc_label = csgraph.connected_components(A, directed=True, connection="weak")
    wcc_size = np.bincount(wcc_label)[wcc_label]

    n_desc, n_anc, height = _reachability(n, src, dst, scc_label, n_scc)
    entry = in_deg == 0
    leaf = out_deg == 0

    betweenness, harmonic = _sampled_centralities(A, src, dst, n)
    hub, authority = _hits(A)
    attrs = {str(k): v for k, v in G.nodes(data=True)}

    columns = {
        "g_in_degree": in_deg,
        "g_out_degree": out_deg,
        "g_n_ancestors": n_anc,
        "g_n_descendants": n_desc,
        "g_blast_radius_share": n_anc / n,
        "g_pagerank": _pagerank(A, out_deg),
        "g_betweenness": betweenness,
        "g_harmonic": harmonic,
        "g_hub": hub,
        "g_authority": authority,
        "g_core_number": _core_number(n, src, dst),
        "g_clustering": _clustering(A),
        "g_depth": _depth_from_entries(A, entry),
        "g_height": height,
        "g_is_entry_point": entry,
        "g_is_leaf": leaf,
        "g_scc_size": scc_size,
        "g_community_size": _community_sizes(A, n),
        "g_wcc_share": wcc_size / n,
        "g_node_type": [node_type_ordinal(name, attrs.get(name, {})) for name in nodes],
        "g_criticality": [_criticality(attrs.get(name, {})) for name in nodes],
    }
    frame = pd.DataFrame(
        {name: np.asarray(columns[name], dtype="float64") for name in FEATURE_COLUMNS},
        index=pd.Index(nodes, dtype="str", name="service"),
    )
    logger.debug("graph features computed: %d nodes, %d edges", n, m)
    return frame


def _reachability(
    n: int, src: np.ndarray, dst: np.ndarray, label: np.ndarray, n_comp: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transitive descendant/ancestor counts and height, via the condensation DAG.

    Reachable sets are Python-int bitsets over the original nodes, merged in topological
    order: O(m * n / 64) word operations instead of one BFS per node. A component's set is
    freed as soon as its last user has consumed it, which bounds memory by the DAG's width.
    """
    members: list[list[int]] = [[] for _ in range(n_comp)]
    for node, comp in enumerate(label.tolist()):
        members[comp].append(node)
    succ: list[set[int]] = [set() for _ in range(n_comp)]
    pred: list[set[int]] = [set() for _ in range(n_comp)]
    for a, b in zip(label[src].tolist(), label[dst].tolist(), strict=True):
        if a != b:
            succ[a].add(b)
            pred[b].add(a)
    order = _topological_order(n_comp, succ, pred)

    def reach_counts(forward: list[set[int]], backward: list[set[int]], seq: list[int]):
        reach: dict[int, int] = {}
        users_left = [len(backward[c]) for c in range(n_comp)]
        counts = np.zeros(n_comp, dtype=np.int64)
        for comp in seq:
            bits = 0
            for node in members[comp]:
                bits |= 1 << node
            for nxt in forward[comp]:
                bits |= reach[nxt]
                users_left[nxt] -= 1
                if users_left[nxt] == 0:
                    del reach[nxt]
            counts[comp] = bits.bit_count()
            if users_left[comp]:
                reach[comp] = bits
        return counts

    # Descendants: process sinks first (reverse topological order).
    desc = reach_counts(succ, pred, order[::-1])
    anc = reach_counts(pred, succ, order)

    comp_height = np.zeros(n_comp, dtype=np.int64)
    for comp in reversed(order):
        if succ[comp]:
            comp_height[comp] = 1 + max(comp_height[c] for c in succ[comp])
    # A node reaches its own component (itself included): subtract itself.
    return desc[label] - 1, anc[label] - 1, comp_height[label]


def _topological_order(n_comp: int, succ: list[set[int]], pred: list[set[int]]) -> list[int]:
    indegree = [len(p) for p in pred]
    queue = deque(c for c in range(n_comp) if indegree[c] == 0)
    order: list[int] = []
    while queue:
        comp = queue.popleft()
        order.append(comp)
        for nxt in sorted(succ[comp]):
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                queue.append(nxt)
    return order


def _pagerank(A: sparse.csr_matrix, out_deg: np.ndarray, alpha: float = 0.85) -> np.ndarray:
    """PageRank along call edges (rank flows from caller to dependency); dangling mass spread."""
    n = A.shape[0]
    inv = np.divide(1.0, out_deg, out=np.zeros(n), where=out_deg > 0)
    PT = (sparse.diags(inv) @ A).T.tocsr()
    dangling = out_deg == 0
    x = np.full(n, 1.0 / n)
    for _ in range(500):
        new = alpha * (PT @ x + x[dangling].sum() / n) + (1.0 - alpha) / n
        done = np.abs(new - x).sum() < 1e-12 * n
        x = new
        if done:
            break
    return x / x.sum()


def _hits(A: sparse.csr_matrix, max_iter: int = 300, tol: float = 1e-10) -> tuple:
    """HITS by deterministic power iteration (networkx's ARPACK version starts at random).

    Stops at ``max_iter`` without raising: on near-degenerate spectra the last iterate is
    still a sensible hub/authority ranking.
    """
    n = A.shape[0]
    if A.nnz == 0:
        return np.zeros(n), np.zeros(n)
    AT = A.T.tocsr()
    hub = np.full(n, 1.0 / n)
    authority = hub
    delta = math.inf
    for _ in range(max_iter):
        authority = AT @ hub
        authority /= authority.max()
        new_hub = A @ authority
        new_hub /= new_hub.max()
        delta = float(np.abs(new_hub - hub).sum())
        hub = new_hub
        if delta < tol:
            break
    if delta >= tol:
        logger.debug("HITS stopped after %d iterations (delta %.2e)", max_iter, delta)
    return hub / hub.sum(), authority / authority.sum()


def _sampled_centralities(
    A: sparse.csr_matrix, src: np.ndarray, dst: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Betweenness (Brandes) and harmonic centrality from a seeded sample of pivots.

    Exact (every node a pivot) up to ``EXACT_CENTRALITY_MAX_NODES`` nodes. Distances come
    from scipy's compiled BFS; path counts and dependencies are accumulated level by level
    with numpy over the shortest-path DAG edges of a batch of pivots at once.
    """
    if n <= EXACT_CENTRALITY_MAX_NODES:
        pivots = np.arange(n)
    else:
        rng = np.random.default_rng(SEED)
        pivots = np.sort(rng.choice(n, size=min(n, CENTRALITY_PIVOTS), replace=False))
    k = len(pivots)
    betweenness = np.zeros(n)
    harmonic_sum = np.zeros(n)
    reached_by = np.zeros(n)  # pivots other than the node itself (harmonic mean denominator)
    m = len(src)
    batch = max(1, min(k, 4_000_000 // max(m + n, 1)))
    for start in range(0, k, batch):
        sources = pivots[start : start + batch]
        dist = csgraph.shortest_path(A, method="D", unweighted=True, indices=sources)
        finite = np.isfinite(dist)
        rows = np.arange(len(sources))
        with np.errstate(divide="ignore"):
            inv = np.where(finite & (dist > 0), 1.0 / dist, 0.0)
        harmonic_sum += inv.sum(axis=0)
        reached_by += len(sources)
        reached_by[sources] -= 1
        if m:
            level = np.where(finite, dist, -1).astype(np.int64)
            betweenness += _brandes_batch(level, rows, sources, src, dst, n)
    harmonic = np.divide(harmonic_sum, reached_by, out=np.zeros(n), where=reached_by > 0)
    if n > 2:
        betweenness *= (n / k) / ((n - 1) * (n - 2))
    else:
        betweenness[:] = 0.0
    return betweenness, harmonic


def _brandes_batch(
    level: np.ndarray,
    rows: np.ndarray,
    sources: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    n: int,
) -> np.ndarray:
    lu = level[:, src]
    on_dag = (lu >= 0) & (level[:, dst] == lu + 1)
    b_idx, e_idx = np.nonzero(on_dag)
    if len(b_idx) == 0:
        return np.zeros(n)
    edge_level = lu[b_idx, e_idx]
    order = np.argsort(edge_level, kind="stable")
    b_idx, e_idx, edge_level = b_idx[order], e_idx[order], edge_level[order]
    u_flat = b_idx * n + src[e_idx]
    v_flat = b_idx * n + dst[e_idx]
    bounds = np.flatnonzero(np.diff(edge_level)) + 1
    groups = list(zip(np.r_[0, bounds], np.r_[bounds, len(edge_level)], strict=True))

    sigma = np.zeros(len(rows) * n)
    sigma[rows * n + sources] = 1.0
    for lo, hi in groups:  # increasing distance: a node's path count is final before use
        np.add.at(sigma, v_flat[lo:hi], sigma[u_flat[lo:hi]])
    delta = np.zeros(len(rows) * n)
    for lo, hi in reversed(groups):  # decreasing distance: dependencies flow back
        u, v = u_flat[lo:hi], v_flat[lo:hi]
        np.add.at(delta, u, sigma[u] / sigma[v] * (1.0 + delta[v]))
    delta[rows * n + sources] = 0.0  # a pivot is not "between" paths that start at it
    return delta.reshape(len(rows), n).sum(axis=0)


def _core_number(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    H = nx.DiGraph()
    H.add_nodes_from(range(n))
    H.add_edges_from(zip(src.tolist(), dst.tolist(), strict=True))
    core = nx.core_number(H)
    return np.array([core[i] for i in range(n)], dtype="float64")


def _undirected(A: sparse.csr_matrix) -> sparse.csr_matrix:
    S = ((A + A.T) > 0).astype(np.float64).tocsr()
    S.setdiag(0)
    S.eliminate_zeros()
    return S


def _clustering(A: sparse.csr_matrix) -> np.ndarray:
    """Undirected clustering coefficient: closed triangle paths / possible pairs of neighbours."""
    S = _undirected(A)
    deg = np.asarray(S.sum(axis=1)).ravel()
    closed = np.asarray((S @ S).multiply(S).sum(axis=1)).ravel()  # = 2 * triangles
    pairs = deg * (deg - 1)
    return np.divide(closed, pairs, out=np.zeros_like(closed), where=pairs > 0)


def _depth_from_entries(A: sparse.csr_matrix, entry: np.ndarray) -> np.ndarray:
    n = A.shape[0]
    entries = np.flatnonzero(entry)
    if len(entries) == 0:
        return np.ones(n)  # no entry point at all: everything is "unreachable" (0 + 1)
    # One BFS from a virtual root wired to every entry point.
    nz_rows, nz_cols = A.nonzero()
    rows = np.r_[nz_rows, np.full(len(entries), n)]
    cols = np.r_[nz_cols, entries]
    B = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n + 1, n + 1))
    dist = csgraph.shortest_path(B, method="D", unweighted=True, indices=n)[:n] - 1.0
    finite = np.isfinite(dist)
    fill = (dist[finite].max() if finite.any() else 0.0) + 1.0
    return np.where(finite, dist, fill)


def _community_sizes(A: sparse.csr_matrix, n: int, max_iter: int = 100) -> np.ndarray:
    """Community sizes on the undirected graph: seeded Louvain, or label propagation if large.

    Louvain gives balanced communities but took ~4 s on 5,000 nodes here (0.4 s on 2,000);
    beyond ``LOUVAIN_MAX_NODES`` a seeded asynchronous label propagation with bounded
    iterations takes a fraction of that. Both are deterministic for a given graph content
    (canonical node order + fixed seed).
    """
    S = _undirected(A)
    if n <= LOUVAIN_MAX_NODES:
        U = nx.Graph()
        U.add_nodes_from(range(n))
        rows, cols = sparse.triu(S).nonzero()
        U.add_edges_from(zip(rows.tolist(), cols.tolist(), strict=True))
        sizes = np.zeros(n)
        for community in nx.community.louvain_communities(U, seed=SEED):
            sizes[list(community)] = len(community)
        return sizes
    neighbour_lists = [S.indices[S.indptr[i] : S.indptr[i + 1]].tolist() for i in range(n)]
    labels = list(range(n))
    rng = np.random.default_rng(SEED)
    order = np.arange(n)
    for _ in range(max_iter):
        rng.shuffle(order)
        changed = False
        for node in order.tolist():
            neighbours = neighbour_lists[node]
            if not neighbours:
                continue
            counts: dict[int, int] = {}
            for nb in neighbours:
                lab = labels[nb]
                counts[lab] = counts.get(lab, 0) + 1
            best = max(counts.values())
            candidates = sorted(lab for lab, c in counts.items() if c == best)
            if labels[node] not in candidates:
                labels[node] = candidates[int(rng.integers(len(candidates)))]
                changed = True
        if not changed:
            break
    label_array = np.asarray(labels)
    _, inverse, sizes = np.unique(label_array, return_inverse=True, return_counts=True)
    return sizes[inverse].astype("float64")


# --- node type and criticality ---------------------------------------------------------
_TYPE_WORDS: dict[int, tuple[str, ...]] = {
    0: ("gateway", "frontend", "ingress", "lb", "loadbalancer", "proxy", "edge", "gw", "ui",
        "web", "bff", "portal", "nginx", "envoy"),
    1: ("service", "svc", "api", "server", "app", "backend", "application", "microservice"),
    2: ("worker", "consumer", "job", "cron", "cronjob", "scheduler", "batch", "processor",
        "daemon", "poller", "listener"),
    3: ("db", "database", "datastore", "storage", "cache", "queue", "redis", "mysql",
        "postgres", "postgresql", "mongo", "mongodb", "kafka", "rabbitmq", "memcached", "sql",
        "cassandra", "elasticsearch", "etcd", "zookeeper", "s3", "bucket", "broker", "mq",
        "dynamodb", "mariadb"),
}  # fmt: skip
_TYPE_OF_WORD = {word: ordinal for ordinal, words in _TYPE_WORDS.items() for word in words}
# Substrings that identify a kind even inside compound ids such as "rediscart".
_TYPE_SUBSTRINGS: tuple[tuple[str, int], ...] = (
    ("gateway", 0), ("frontend", 0), ("ingress", 0),
    ("worker", 2), ("consumer", 2), ("cron", 2),
    ("redis", 3), ("mysql", 3), ("postgres", 3), ("mongo", 3), ("kafka", 3), ("rabbitmq", 3),
    ("memcache", 3), ("cassandra", 3), ("elastic", 3), ("database", 3), ("cache", 3),
    ("queue", 3),
    ("service", 1),
)  # fmt: skip
_TOKEN_SPLIT = re.compile(r"[^0-9a-z]+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def node_type_ordinal(node_id: str, attrs: dict[str, Any] | None = None) -> int:
    """0 gateway/frontend, 1 service, 2 worker, 3 datastore, -1 unknown.

    A specific ``type``/``kind``/``tier`` attribute wins; the generic "service" (which some
    graphs put on every node, datastores included) defers to what the id says.
    """
    attrs = attrs or {}
    declared = None
    for key in ("type", "kind", "tier", "role"):
        value = attrs.get(key)
        if isinstance(value, str) and value.strip():
            declared = _type_from_text(value)
            if declared is not None and declared != 1:
                return declared
    inferred = _type_from_text(node_id)
    if inferred is not None:
        return inferred
    return declared if declared is not None else -1


def _type_from_text(text: str) -> int | None:
    tokens = [t for t in _TOKEN_SPLIT.split(_CAMEL.sub("-", text).lower()) if t]
    found: list[int] = []
    # Whole words first, then fragments of compound ids ("rediscart", "cartservice").
    for token in reversed(tokens):
        if token in _TYPE_OF_WORD:
            found.append(_TYPE_OF_WORD[token])
        elif token.endswith("db") and len(token) > 3:
            found.append(3)
    if not found:
        for token in reversed(tokens):
            found.extend(ordinal for fragment, ordinal in _TYPE_SUBSTRINGS if fragment in token)
    # "service" is what everything is called ("ts-gateway-service", "order-db-service"):
    # any more specific kind wins; among those, the last word does ("kafka-consumer").
    specific = [ordinal for ordinal in found if ordinal != 1]
    if specific:
        return specific[0]
    return 1 if found else None


_CRITICALITY_LEVELS = {
    "low": 1.0, "minor": 1.0, "medium": 2.0, "med": 2.0, "moderate": 2.0, "normal": 2.0,
    "high": 3.0, "major": 3.0, "critical": 4.0, "crit": 4.0, "mission-critical": 4.0,
}  # fmt: skip


def _criticality(attrs: dict[str, Any]) -> float:
    value = attrs.get("criticality")
    if isinstance(value, bool) or value is None:
        return 0.0
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else 0.0
    text = str(value).strip().lower()
    if text in _CRITICALITY_LEVELS:
        return _CRITICALITY_LEVELS[text]
    try:
        number = float(text)
    except ValueError:
        return 0.0
    return number if math.isfinite(number) else 0.0


# --------------------------------------------------------------------------------------
# synthetic graphs for tests, benchmarks and demos
# --------------------------------------------------------------------------------------
_DOMAINS = (
    "order", "cart", "payment", "user", "catalog", "inventory", "shipping", "checkout",
    "search", "review", "pricing", "billing", "account", "auth", "session", "profile",
    "recommendation", "notification", "email", "sms", "coupon", "loyalty", "wishlist",
    "media", "image", "video", "ledger", "invoice", "tax", "fraud", "risk", "report",
    "analytics", "audit", "config", "feature", "ranking", "delivery", "warehouse",
    "supplier", "vendor", "refund", "subscription", "quote", "booking", "ticket",
    "seat", "route", "station", "train", "travel", "food", "hotel", "flight", "insurance",
    "document", "upload", "export", "import", "tenant",
)  # fmt: skip


def synthetic_layered_graph(
    n_nodes: int, *, avg_out_degree: float = 4.0, seed: int = 0
) -> nx.DiGraph:
    """A realistic layered call graph with sibling names (``order-service``, ``order-db``, ...).

    Layers: gateways/frontends -> services -> workers -> datastores (``*-db``,
    ``redis-*``, ``*-cache``, ``*-queue``). Calls go down one layer mostly, sometimes skip
    layers; a few services call each other, so the graph has some shared dependencies but
    stays close to a DAG. Deterministic for a given ``seed``; for tests and benchmarks.
    """
    rng = np.random.default_rng(seed)
    domains: list[str] = list(_DOMAINS)
    if n_nodes > 4 * len(domains):
        # Two-word domains ("order-ledger") once single words run out.
        domains += [f"{a}-{b}" for a in _DOMAINS for b in _DOMAINS if a != b]
    n_entry = max(1, n_nodes // 40)
    n_service = max(1, int(n_nodes * 0.45))
    n_worker = max(0, int(n_nodes * 0.2))
    n_store = max(0, n_nodes - n_entry - n_service - n_worker)
    entry_kinds = ("{d}-gateway", "{d}-frontend", "{d}-bff", "web-{d}")
    store_kinds = ("{d}-db", "redis-{d}", "{d}-cache", "{d}-queue", "{d}-mysql")
    layers: list[list[str]] = []
    used: set[str] = set()

    def make(count: int, kinds: tuple[str, ...]) -> list[str]:
        # Cycle kinds within a domain first, so siblings (order-db, redis-order, ...) exist.
        names: list[str] = []
        i = 0
        while len(names) < count:
            kind = kinds[i % len(kinds)]
            domain = domains[(i // len(kinds)) % len(domains)]
            name = kind.format(d=domain)
            round_ = i // (len(kinds) * len(domains))
            if round_:
                name = f"{name}-r{round_}"
            if name not in used:
                used.add(name)
                names.append(name)
            i += 1
        return names

    layers.append(make(n_entry, entry_kinds))
    layers.append(make(n_service, ("{d}-service", "{d}-api")))
    layers.append(make(n_worker, ("{d}-worker", "{d}-consumer")))
    layers.append(make(n_store, store_kinds))
    layers = [layer for layer in layers if layer]
    G = nx.DiGraph()
    for depth, layer in enumerate(layers):
        kind = ("gateway", "service", "worker", "datastore")[min(depth, 3)]
        G.add_nodes_from((name, {"type": kind}) for name in layer)
    callers = sum(len(layer) for layer in layers[:-1])
    # Spread avg_out_degree * n edges over the nodes that call anything (not datastores).
    per_caller = avg_out_degree * n_nodes / max(callers, 1)
    for depth, layer in enumerate(layers[:-1]):
        for name in layer:
            for _ in range(max(1, int(rng.poisson(per_caller)))):
                jump = 1 if rng.random() < 0.75 else int(rng.integers(1, len(layers) - depth))
                target_layer = layers[depth + jump]
                if depth == 1 and rng.random() < 0.1:
                    target_layer = layers[1]  # service-to-service calls (a few cycles)
                target = target_layer[int(rng.integers(len(target_layer)))]
                if target != name:
                    G.add_edge(name, target)
    # Everything below the entry layer is called by someone.
    for depth in range(1, len(layers)):
        above = layers[depth - 1]
        for name in layers[depth]:
            if G.in_degree(name) == 0:
                G.add_edge(above[int(rng.integers(len(above)))], name)
    return G
