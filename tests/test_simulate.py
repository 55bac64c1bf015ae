"""The simulator: determinism, ground truth consistency, and the phenomena it promises."""

from __future__ import annotations

import json

import networkx as nx
import pandas as pd
import pytest

from alertclf.catalogue import CATALOGUE, FAMILIES, alert_family
from alertclf.cli import main
from alertclf.contracts import TRUTH_COLUMNS
from alertclf.simulate import SimulationConfig, describe, simulate, write_simulation
from alertclf.topology import generate_topology, infer_kind


def test_same_seed_gives_byte_identical_files(tmp_path):
    for name in ("a", "b"):
        assert main(["simulate", "--out", str(tmp_path / name), "--seed", "3"]) == 0
    for file in ("alert_data.csv", "graph_data.json", "truth.csv"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    assert main(["simulate", "--out", str(tmp_path / "c"), "--seed", "4"]) == 0
    assert (tmp_path / "a" / "alert_data.csv").read_bytes() != (
        tmp_path / "c" / "alert_data.csv"
    ).read_bytes()


def test_truth_covers_every_alert_with_contract_columns():
    sim = simulate(SimulationConfig(seed=5, days=1))
    assert list(sim.truth.columns[: len(TRUTH_COLUMNS)]) == list(TRUTH_COLUMNS)
    assert sim.truth["alert_id"].is_unique
    assert sim.truth["alert_id"].tolist() == sim.alerts["alert_id"].tolist()
    assert set(sim.truth["category"]) <= set(FAMILIES)


def test_roots_are_on_root_service_and_symptoms_are_callers():
    sim = simulate(SimulationConfig(seed=6, days=1, scenario="storm", name_variant_share=0))
    truth = sim.truth[~sim.truth["is_noise"]]
    roots = truth[truth["is_root"]]
    assert (roots["true_service"] == roots["root_service"]).all()
    symptoms = truth[~truth["is_root"]]
    graph = sim.graph
    in_graph = symptoms[symptoms["root_service"].isin(graph.nodes)]
    assert len(in_graph) > 0
    for service, root in (
        in_graph[["true_service", "root_service"]].drop_duplicates().itertuples(index=False)
    ):
        # Symptoms appear on callers of the root: the root is reachable from them.
        assert nx.has_path(graph, service, root), (service, root)


def test_duplicates_follow_the_window_definition():
    sim = simulate(SimulationConfig(seed=7, days=1))
    frame = sim.truth.assign(t=pd.to_datetime(sim.alerts["timestamp"]), a=sim.alerts["alert_name"])
    frame = frame.sort_values(["true_service", "a", "t"], kind="stable")
    first = frame.groupby(["true_service", "a"]).head(1)
    assert not first["is_duplicate"].any()
    assert frame["is_duplicate"].mean() > 0.3  # re-firing and replicas are common


def test_storm_overlaps_more_than_calm():
    calm = describe(simulate(SimulationConfig(seed=8, days=2, scenario="calm")))
    storm = describe(simulate(SimulationConfig(seed=8, days=2, scenario="storm")))
    assert storm["overlapping_incidents_share"] > calm["overlapping_incidents_share"] + 0.3
    assert storm["peak_alerts_per_hour"] > 2 * calm["peak_alerts_per_hour"]


def test_service_names_differ_from_graph_and_unknown_services_exist():
    sim = simulate(SimulationConfig(seed=9, days=1))
    nodes = set(sim.graph.nodes)
    alerts = sim.alerts
    truth = sim.truth
    known = truth["true_service"].isin(nodes)
    renamed = known & (alerts["service"] != truth["true_service"])
    assert renamed.mean() > 0.1
    assert (~known).mean() > 0.01
    # Pod names of replicas: several alerts of one service at the same moment, other hosts.
    pods = alerts["service"].str.contains(r"-[a-z0-9]{10}-[a-z0-9]{5}$", regex=True)
    assert pods.any()


def test_real_topology_can_drive_the_simulation(tmp_path):
    path = "../shared/datasets/topologies/online-boutique.json"
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        pytest.skip(f"{path} not present (shared datasets absent)")
    graph = nx.node_link_graph(data, edges="links")
    sim = simulate(SimulationConfig(seed=1, days=1, scenario="storm"), graph=graph)
    assert set(sim.truth["true_service"]) & set(graph.nodes)
    assert main(["simulate", "--out", str(tmp_path), "--topology", path]) == 0


def test_generated_topology_is_layered_and_acyclic():
    for n in (10, 60, 2000):
        graph = generate_topology(n, seed=1)
        assert nx.is_directed_acyclic_graph(graph)
        assert abs(graph.number_of_nodes() - n) <= max(3, n // 10)
        kinds = {infer_kind(v, graph.nodes[v]) for v in graph}
        assert kinds == {"gateway", "service", "worker", "datastore"}
        entries = [v for v in graph if graph.in_degree(v) == 0]
        assert all(graph.nodes[v]["type"] == "gateway" for v in entries)


def test_catalogue_names_classify_into_their_own_family():
    for alert in CATALOGUE:
        assert alert_family(alert.name) == alert.family, alert.name


def test_bad_knobs_are_refused_with_the_option_name(capsys):
    assert main(["simulate", "--out", "x", "--scenario", "calm", "--set", "nope=1"]) == 2
    assert "unknown option 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["simulate", "--out", "x", "--noise-share", "2"])
    assert "--noise-share" in capsys.readouterr().err


def test_files_are_written_with_contract_columns(tmp_path):
    paths = write_simulation(simulate(SimulationConfig(seed=2, days=0.5)), tmp_path)
    alerts = pd.read_csv(paths["alerts"])
    assert {"timestamp", "service", "alert_name", "alert_id", "severity"} <= set(alerts.columns)
    graph = json.loads(paths["graph"].read_text())
    assert graph["directed"] is True and graph["links"]
