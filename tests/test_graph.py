"""Graph loading, fingerprint, topology features and neighbourhood helpers."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from alertclf import graph as graph_module
from alertclf.graph import (
    FEATURE_COLUMNS,
    GRAPH_FEATURE_DOCS,
    GraphError,
    callers_within,
    clear_graph_caches,
    compute_graph_features,
    dependants,
    dependencies,
    graph_features,
    graph_fingerprint,
    graph_notes,
    load_graph,
    node_type_ordinal,
    synthetic_layered_graph,
)

TOPOLOGIES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "topologies"


def topology(name: str) -> Path:
    path = TOPOLOGIES / name
    if not path.is_file():
        pytest.skip(f"real topology {path} not found (needs ../shared/datasets beside the repo)")
    return path


def node_link(nodes, links, **extra) -> bytes:
    doc = {"directed": True, "nodes": [{"id": n} for n in nodes], "links": links, **extra}
    return json.dumps(doc).encode()


@pytest.fixture(autouse=True)
def _fresh_caches():
    clear_graph_caches()
    yield
    clear_graph_caches()


# --- loading ---------------------------------------------------------------------------
def test_node_link_keeps_attributes_and_direction(tmp_path):
    path = tmp_path / "g.json"
    doc = {
        "directed": True,
        "graph": {"name": "shop"},
        "nodes": [
            {"id": "frontend", "type": "gateway", "team": "web", "criticality": "high"},
            {"id": "cart-service", "tier": 2},
            {"id": "cart-db"},
        ],
        "links": [
            {"source": "frontend", "target": "cart-service", "calls": 10},
            {"source": "cart-service", "target": "cart-db"},
        ],
    }
    path.write_text(json.dumps(doc))
    G = load_graph(path)
    assert isinstance(G, nx.DiGraph)
    assert set(G.edges) == {("frontend", "cart-service"), ("cart-service", "cart-db")}
    assert G.nodes["frontend"] == {"type": "gateway", "team": "web", "criticality": "high"}
    assert G.nodes["cart-service"]["tier"] == 2
    assert G.edges["frontend", "cart-service"]["calls"] == 10
    assert G.graph["name"] == "shop"
    assert graph_notes(G) == []


def test_edges_is_a_synonym_of_links_and_ids_become_str():
    data = json.dumps(
        {"nodes": [{"id": 1}, {"id": 2.0}, {"id": "3"}], "edges": [{"source": 1, "target": 2}]}
    ).encode()
    G = load_graph("mem.json", data=data)
    assert sorted(G.nodes) == ["1", "2", "3"]
    assert list(G.edges) == [("1", "2")]
    assert all(isinstance(n, str) for n in G)


def test_adjacency_form():
    data = json.dumps(
        {"frontend": ["cart", "catalog"], "cart": ["redis"], "catalog": [], "lonely": None}
    ).encode()
    G = load_graph("adjacency.json", data=data)
    assert set(G.edges) == {("frontend", "cart"), ("frontend", "catalog"), ("cart", "redis")}
    assert "redis" in G and "lonely" in G
    # Leaves named only as dependencies are normal in this form: no warning note.
    assert graph_notes(G) == []


def test_adjacency_dict_of_dicts():
    data = json.dumps({"a": {"b": {"weight": 3}}, "b": {}}).encode()
    G = load_graph("adj.json", data=data)
    assert G.edges["a", "b"]["weight"] == 3


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty"),
        (b"  \n\t ", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        (b"\xff\xfe\xfa not utf8", "UTF-8"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2, 3]", "JSON array"),
        (b'"just a string"', "JSON string"),
        (b"{}", "no nodes"),
        (b'{"nodes": [], "links": []}', "no nodes"),
        (b'{"nodes": {"a": 1}, "links": []}', "'nodes' must be an array"),
        (b'{"nodes": [{"name": "a"}], "links": []}', "node #0 has no 'id'"),
        (b'{"nodes": [{"id": null}], "links": []}', "node #0 id"),
        (b'{"nodes": [{"id": "a"}], "links": [{"source": "a"}]}', "links #0 needs both"),
        (b'{"nodes": [{"id": "a"}], "links": "a->b"}', "'links' must be an array"),
        (b'{"nodes": [{"id": "a"}], "links": [3]}', "links #0 must be an object"),
        (b'{"a": "b"}', "dependencies of 'a' must be an array"),
        (b'{"a": [["b"]]}', "dependency of 'a'"),
        # Python reads these; JSON has no such values, and each would be a silent guess.
        (b'{"nodes": [{"id": NaN}], "links": []}', "NaN is not a JSON value"),
        (b'{"nodes": [{"id": -Infinity}], "links": []}', "-Infinity is not a JSON value"),
        (b'{"nodes": [{"id": 1e999}], "links": []}', "1e999 is out of range"),
        (b'{"nodes": [{"id": "a"}], "links": [], "links": []}', "key 'links' appears twice"),
        (b'{"directed": "no", "nodes": [{"id": "a"}], "links": []}', "'directed' must be"),
        (b'{"directed": 0, "nodes": [{"id": "a"}], "links": []}', "'directed' must be"),
    ],
)
def test_unusable_files_raise_one_line_graph_error(data, problem):
    with pytest.raises(GraphError) as info:
        load_graph("bad/graph.json", data=data)
    message = str(info.value)
    assert message.startswith("bad/graph.json: ")
    assert problem in message
    assert "\n" not in message


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(GraphError, match=r"nope\.json: cannot read graph file"):
        load_graph(tmp_path / "nope.json")
    with pytest.raises(GraphError, match="cannot read graph file"):
        load_graph(tmp_path)


def test_unknown_endpoints_are_added_with_a_warning(caplog):
    data = node_link(
        ["a", "b"],
        [
            {"source": "a", "target": "b"},
            {"source": "a", "target": "ghost"},
            {"source": "phantom", "target": "b"},
        ],
    )
    with caplog.at_level(logging.WARNING, logger="alertclf.graph"):
        G = load_graph("g.json", data=data)
    assert {"ghost", "phantom"} <= set(G)
    assert any("2 node(s) referenced by links" in note for note in graph_notes(G))
    assert "2 node(s)" in caplog.text


def test_self_loops_dropped_and_noted(caplog):
    data = node_link(["a", "b"], [{"source": "a", "target": "a"}, {"source": "a", "target": "b"}])
    with caplog.at_level(logging.WARNING, logger="alertclf.graph"):
        G = load_graph("g.json", data=data)
    assert list(nx.selfloop_edges(G)) == []
    assert list(G.edges) == [("a", "b")]
    assert graph_notes(G) == ["1 self-loop(s) dropped"]
    assert "self-loop" in caplog.text
    only_loop = load_graph("loop.json", data=b'{"links": [{"source": "x", "target": "x"}]}')
    assert list(only_loop) == ["x"] and only_loop.number_of_edges() == 0


def test_undirected_input_adds_both_directions():
    data = node_link(["a", "b"], [{"source": "a", "target": "b"}], directed=False)
    G = load_graph("g.json", data=data)
    assert set(G.edges) == {("a", "b"), ("b", "a")}
    assert any("undirected" in note for note in graph_notes(G))


def test_duplicates_cycles_and_isolated_nodes_are_fine():
    data = json.dumps(
        {
            "nodes": [{"id": "a", "team": "x"}, {"id": "a", "tier": 1}, {"id": "b"}, {"id": "c"}],
            "links": [
                {"source": "a", "target": "b"},
                {"source": "a", "target": "b"},
                {"source": "b", "target": "a"},
            ],
        }
    ).encode()
    G = load_graph("g.json", data=data)
    assert sorted(G) == ["a", "b", "c"]
    assert G.number_of_edges() == 2
    assert G.nodes["a"] == {"team": "x", "tier": 1}
    features = graph_features(G)
    assert features.loc["a", "g_scc_size"] == 2
    assert features.loc["c", "g_is_entry_point"] == 1 and features.loc["c", "g_is_leaf"] == 1


def test_bom_and_data_argument_name_the_source():
    data = b"\xef\xbb\xbf" + node_link(["a"], [])
    G = load_graph("az://container/graph.json", data=data)
    assert list(G) == ["a"]
    assert G.graph["alertclf_source"] == "az://container/graph.json"


def test_fifty_thousand_nodes_load_whole():
    # How fast: benchmarks/bench.py (parts that must scale on their own).
    G = synthetic_layered_graph(50_000, avg_out_degree=2, seed=1)
    data = json.dumps(nx.node_link_data(G, edges="links")).encode()
    H = load_graph("big.json", data=data)
    assert H.number_of_nodes() == 50_000
    assert H.number_of_edges() == G.number_of_edges()
    assert set(H.edges) == {(str(u), str(v)) for u, v in G.edges}


@pytest.mark.parametrize(
    ("name", "n_nodes", "n_edges"),
    [("online-boutique.json", 13, 17), ("train-ticket.json", 28, 55)],
)
def test_real_topologies_load(name, n_nodes, n_edges):
    G = load_graph(topology(name))
    assert (G.number_of_nodes(), G.number_of_edges()) == (n_nodes, n_edges)
    assert graph_notes(G) == []


# --- fingerprint -------------------------------------------------------------------------
def small_graph(order=1) -> nx.DiGraph:
    nodes = [("gw", {"type": "gateway"}), ("svc", {}), ("db", {"type": "datastore"})]
    edges = [("gw", "svc"), ("svc", "db"), ("gw", "db")]
    G = nx.DiGraph()
    G.add_nodes_from(nodes[::order])
    G.add_edges_from(edges[::order])
    return G


def test_fingerprint_ignores_order_and_metadata_but_not_content():
    a, b = small_graph(1), small_graph(-1)
    b.graph["alertclf_source"] = "elsewhere.json"
    assert graph_fingerprint(a) == graph_fingerprint(b)
    assert re.fullmatch(r"[0-9a-f]{64}", graph_fingerprint(a))
    c = small_graph()
    c.nodes["svc"]["team"] = "payments"
    d = small_graph()
    d.add_edge("db", "gw")
    e = small_graph()
    e.edges["gw", "svc"]["calls"] = 3
    prints = {graph_fingerprint(g) for g in (a, c, d, e)}
    assert len(prints) == 4


def test_fingerprint_is_stable_across_processes():
    code = (
        "import networkx as nx; from alertclf.graph import graph_fingerprint as f; "
        "G = nx.DiGraph(); G.add_node('b', tags={'x', 'y', 'z'}, owner={'b': 1, 'a': 2}); "
        "G.add_edges_from([('a', 'b'), ('b', 'c')]); print(f(G))"
    )
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        outputs.add(done.stdout.strip())
    assert len(outputs) == 1


# --- features ----------------------------------------------------------------------------
def test_feature_docs_match_columns_and_module_docstring():
    names = [name for name, _, _ in GRAPH_FEATURE_DOCS]
    assert tuple(names) == FEATURE_COLUMNS
    assert len(set(names)) == len(names)
    assert all(name.startswith("g_") for name in names)
    assert all(meaning and why for _, meaning, why in GRAPH_FEATURE_DOCS)
    rows = re.findall(r"^\| `(g_\w+)` \| (.+?) \| (.+?) \|$", graph_module.__doc__, re.M)
    assert rows == GRAPH_FEATURE_DOCS
    features = graph_features(small_graph())
    assert tuple(features.columns) == FEATURE_COLUMNS


def chain_with_cycle() -> nx.DiGraph:
    # gateway -> api -> worker -> db, api <-> auth (cycle), isolated legacy box
    G = nx.DiGraph()
    G.add_node("edge-gateway", criticality="critical")
    G.add_node("api", type="service", criticality=3)
    G.add_node("order-worker")
    G.add_node("orders-db", type="service")  # generic "service" defers to the id
    G.add_node("auth")
    G.add_node("legacy")
    G.add_edges_from(
        [
            ("edge-gateway", "api"),
            ("api", "order-worker"),
            ("order-worker", "orders-db"),
            ("api", "auth"),
            ("auth", "api"),
        ]
    )
    return G


def test_features_on_a_hand_checked_graph():
    f = graph_features(chain_with_cycle())
    assert f.index.name == "service"
    assert list(f.index) == sorted(f.index)
    assert (f.dtypes == "float64").all()
    assert not f.isna().any().any()
    row = f.loc["api"]
    assert (row.g_in_degree, row.g_out_degree) == (2, 2)
    assert row.g_n_ancestors == 2  # edge-gateway and auth
    assert row.g_n_descendants == 3  # auth, order-worker, orders-db
    assert row.g_scc_size == 2 and f.loc["auth", "g_scc_size"] == 2
    assert f.loc["orders-db", "g_n_ancestors"] == 4
    assert f.loc["orders-db", "g_blast_radius_share"] == pytest.approx(4 / 6)
    assert f.loc["edge-gateway", "g_is_entry_point"] == 1
    assert f.loc["orders-db", "g_is_leaf"] == 1
    assert f.loc["edge-gateway", "g_depth"] == 0
    assert f.loc["api", "g_depth"] == 1
    assert f.loc["orders-db", "g_depth"] == 3
    assert f.loc["edge-gateway", "g_height"] == 3
    assert f.loc["orders-db", "g_height"] == 0
    assert f.loc["legacy", "g_depth"] == 0  # isolated: its own entry point
    assert f.loc["legacy", "g_wcc_share"] == pytest.approx(1 / 6)
    assert f.loc["api", "g_wcc_share"] == pytest.approx(5 / 6)
    assert f.loc["edge-gateway", "g_node_type"] == 0
    assert f.loc["api", "g_node_type"] == 1
    assert f.loc["order-worker", "g_node_type"] == 2
    assert f.loc["orders-db", "g_node_type"] == 3
    assert f.loc["legacy", "g_node_type"] == -1
    assert f.loc["edge-gateway", "g_criticality"] == 4
    assert f.loc["api", "g_criticality"] == 3
    assert f.loc["auth", "g_criticality"] == 0
    # Rank flows along calls: dependencies outrank their callers.
    pagerank = f["g_pagerank"]
    assert pagerank["orders-db"] > pagerank["order-worker"] > pagerank["edge-gateway"]
    assert f["g_pagerank"].sum() == pytest.approx(1.0)


def test_depth_marks_unreachable_nodes_as_max_plus_one():
    G = nx.DiGraph([("entry", "a"), ("a", "b"), ("x", "y"), ("y", "x")])  # x<->y: no entry
    f = graph_features(G)
    assert f.loc["b", "g_depth"] == 2
    assert f.loc["x", "g_depth"] == 3 and f.loc["y", "g_depth"] == 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_features_agree_with_networkx(seed):
    G = nx.gnp_random_graph(80, 0.05, seed=seed, directed=True)
    G = nx.relabel_nodes(G, {i: f"svc-{i:03d}" for i in G})
    f = compute_graph_features(G)
    order = list(f.index)
    n = len(order)

    def col(values):
        return np.array([values[v] for v in order])

    np.testing.assert_allclose(f.g_betweenness, col(nx.betweenness_centrality(G)), atol=1e-12)
    harmonic = nx.harmonic_centrality(G)
    np.testing.assert_allclose(f.g_harmonic, col(harmonic) / (n - 1), atol=1e-12)
    np.testing.assert_allclose(f.g_pagerank, col(nx.pagerank(G, tol=1e-13)), atol=1e-8)
    hubs, authorities = nx.hits(G, max_iter=2000, tol=1e-13)
    np.testing.assert_allclose(f.g_hub, col(hubs), atol=1e-6)
    np.testing.assert_allclose(f.g_authority, col(authorities), atol=1e-6)
    np.testing.assert_allclose(f.g_clustering, col(nx.clustering(G.to_undirected())))
    np.testing.assert_array_equal(f.g_core_number, col(nx.core_number(G)))
    np.testing.assert_array_equal(f.g_n_ancestors, [len(nx.ancestors(G, v)) for v in order])
    np.testing.assert_array_equal(f.g_n_descendants, [len(nx.descendants(G, v)) for v in order])
    sccs = {v: len(c) for c in nx.strongly_connected_components(G) for v in c}
    np.testing.assert_array_equal(f.g_scc_size, col(sccs))


def test_sampled_centralities_track_exact_ones_on_large_graphs():
    G = synthetic_layered_graph(900, seed=5)
    assert G.number_of_nodes() > graph_module.EXACT_CENTRALITY_MAX_NODES
    f = compute_graph_features(G)
    exact = nx.harmonic_centrality(G)
    rho = stats.spearmanr(f.g_harmonic, [exact[v] for v in f.index]).statistic
    assert rho > 0.9
    assert f.equals(compute_graph_features(G))  # seeded: same sample every time


def test_features_depend_on_content_not_insertion_order():
    G = synthetic_layered_graph(300, seed=2)
    H = nx.DiGraph()
    H.add_nodes_from(reversed(list(G.nodes(data=True))))
    H.add_edges_from(reversed(list(G.edges)))
    pd.testing.assert_frame_equal(compute_graph_features(G), compute_graph_features(H))


def test_edge_cases_empty_single_and_undirected():
    empty = graph_features(nx.DiGraph())
    assert empty.empty and tuple(empty.columns) == FEATURE_COLUMNS
    single = graph_features(_single())
    assert single.shape == (1, len(FEATURE_COLUMNS))
    assert not single.isna().any().any()
    undirected = graph_features(nx.path_graph(["a", "b", "c"]))
    assert undirected.loc["b", "g_in_degree"] == 2 and undirected.loc["b", "g_out_degree"] == 2


def _single() -> nx.DiGraph:
    G = nx.DiGraph()
    G.add_node("only")
    return G


def test_features_are_cached_in_process_and_on_disk(tmp_path, monkeypatch):
    G = synthetic_layered_graph(120, seed=4)
    calls = []
    real = graph_module.compute_graph_features
    monkeypatch.setattr(
        graph_module, "compute_graph_features", lambda g: calls.append(1) or real(g)
    )
    first = graph_features(G, cache_dir=tmp_path)
    again = graph_features(G, cache_dir=tmp_path)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first, again)
    files = list(tmp_path.glob("graph_features-*.parquet"))
    assert len(files) == 1

    # A caller that changes its copy must not change what the cache hands out later.
    again["g_pagerank"] = -1.0
    del again["g_hub"]
    pd.testing.assert_frame_equal(graph_features(G), first)

    # A new process (empty LRU) reads the parquet file instead of recomputing.
    clear_graph_caches()
    from_disk = graph_features(G, cache_dir=tmp_path)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(from_disk, first)

    # A corrupt cache file is ignored and rewritten.
    clear_graph_caches()
    files[0].write_bytes(b"garbage")
    rebuilt = graph_features(G, cache_dir=tmp_path)
    assert len(calls) == 2
    pd.testing.assert_frame_equal(rebuilt, first)
    assert pd.read_parquet(files[0]).shape == first.shape


def test_unwritable_cache_dir_does_not_fail(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="alertclf.graph"):
        f = graph_features(small_graph(), cache_dir=blocker / "cache")
    assert len(f) == 3
    assert "could not write graph feature cache" in caplog.text


def test_five_thousand_node_graph_has_every_feature():
    # How fast: benchmarks/bench.py (parts that must scale on their own).
    G = synthetic_layered_graph(5000, seed=1)
    assert 15_000 < G.number_of_edges() < 25_000
    f = compute_graph_features(G)
    assert f.shape == (5000, len(FEATURE_COLUMNS))
    assert not f.isna().any().any()


def test_real_topology_features():
    G = load_graph(topology("online-boutique.json"))
    f = graph_features(G)
    assert f.loc["loadgenerator", "g_is_entry_point"] == 1
    assert f.loc["redis-cart", "g_is_leaf"] == 1
    assert f.loc["redis-cart", "g_node_type"] == 3  # "type": "service" in the file, id says redis
    assert f.loc["frontend", "g_node_type"] == 0
    assert f.loc["cartservice", "g_n_ancestors"] == 3  # checkout, frontend, loadgenerator
    T = load_graph(topology("train-ticket.json"))
    t = graph_features(T)
    assert t.loc["ts-gateway-service", "g_node_type"] == 0
    assert len(t) == 28


def test_node_type_ordinal_rules():
    assert node_type_ordinal("kafka-consumer") == 2
    assert node_type_ordinal("redis-cart") == 3
    assert node_type_ordinal("mongodb") == 3
    assert node_type_ordinal("feedback") == -1  # contains "db" but is not a database
    assert node_type_ordinal("ts-gateway-service") == 0
    assert node_type_ordinal("x", {"type": "database"}) == 3
    assert node_type_ordinal("loadgenerator", {"type": "service"}) == 1


# --- neighbourhoods ----------------------------------------------------------------------
def test_direct_neighbours():
    G = chain_with_cycle()
    assert dependencies(G, "api") == ["auth", "order-worker"]
    assert dependants(G, "api") == ["auth", "edge-gateway"]
    assert dependencies(G, "missing") == [] and dependants(G, "missing") == []


def test_callers_within_hops():
    G = nx.DiGraph([("d", "c"), ("c", "b"), ("b", "a"), ("x", "a"), ("a", "b")])
    assert callers_within(G, "a", 1) == {"b": 1, "x": 1}
    assert callers_within(G, "a", 2) == {"b": 1, "x": 1, "c": 2}
    assert callers_within(G, "a", 10) == {"b": 1, "x": 1, "c": 2, "d": 3}
    assert callers_within(G, "a", 0) == {}
    assert callers_within(G, "nowhere", 3) == {}
    with pytest.raises(ValueError, match="max_hops"):
        callers_within(G, "a", -1)


def test_callers_within_is_cached_and_returns_copies(monkeypatch):
    G = nx.DiGraph([("b", "a"), ("c", "b")])
    calls = []
    real = graph_module._bfs_callers
    monkeypatch.setattr(graph_module, "_bfs_callers", lambda *a: calls.append(a) or real(*a))
    first = callers_within(G, "a", 2)
    first["zzz"] = 9
    assert callers_within(G, "a", 2) == {"b": 1, "c": 2}
    assert len(calls) == 1


# --- synthetic graphs --------------------------------------------------------------------
def test_synthetic_layered_graph_shape():
    G = synthetic_layered_graph(200, seed=3)
    assert G.number_of_nodes() == 200
    assert nx.utils.graphs_equal(G, synthetic_layered_graph(200, seed=3))
    kinds = nx.get_node_attributes(G, "type")
    called = {v for _, v in G.edges}
    assert all(v in called for v in G if kinds[v] != "gateway")
    for sibling in ("order-service", "order-worker", "order-db", "cart-service", "redis-cart"):
        assert sibling in G
