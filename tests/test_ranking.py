"""Root cause, importance with reasons, ranks and cluster names."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from builders import (
    CPU,
    DB_CONN,
    DB_DOWN,
    DISK,
    ERRORS,
    HTTP5XX,
    LATENCY,
    T0,
    alert,
    frame,
    graph,
    simulated_enriched,
)

from alertclf.consolidate import CallerIndex, consolidate
from alertclf.contracts import INCIDENT_COLUMNS
from alertclf.dedup import mark_duplicates
from alertclf.graph import graph_features
from alertclf.ranking import (
    NOISE_CLUSTER_NAME,
    _top_counts,
    cluster_profiles,
    cluster_table,
    incident_table,
    root_causes,
)
from alertclf.settings import Settings

SETTINGS = Settings()
WINDOW = SETTINGS.time_window_minutes
CHAIN = graph(("web", "api"), ("api", "db"))
FORK = graph(("web", "api"), ("api", "db1"), ("api", "db2"))


def ns(minute: float) -> int:
    return (T0 + pd.Timedelta(minutes=minute)).value


def groups_frame(*groups: dict) -> pd.DataFrame:
    """``Consolidation.groups``-shaped rows: members given as {service: first minute}."""
    return pd.DataFrame(
        {
            "group_id": [g["id"] for g in groups],
            "root": [g["root"] for g in groups],
            "members": [{k: [ns(v), ns(v)] for k, v in g["members"].items()} for g in groups],
            "local_members": [list(g.get("local", [])) for g in groups],
        }
    )


def index_of(g) -> CallerIndex:
    return CallerIndex(g, SETTINGS.group_max_hops)


# --- root cause --------------------------------------------------------------------------
def test_root_cause_of_a_consolidated_chain_is_the_failing_dependency() -> None:
    alerts = frame(
        [alert(0, "db", DB_DOWN), alert(1, "api", LATENCY), alert(2, "web", ERRORS)], CHAIN
    )
    groups = consolidate(alerts, CHAIN, SETTINGS).groups
    roots = root_causes(groups, index_of(CHAIN), WINDOW)
    assert roots.columns.tolist() == ["group_id", "root_cause_service", "root_cause_confidence"]
    assert roots["root_cause_service"].tolist() == ["db"]
    assert roots["root_cause_confidence"].iloc[0] == pytest.approx(1.0)


def test_root_cause_is_the_service_the_others_call_even_when_not_first() -> None:
    # The grouping rooted the group at web (its first alert); db, which web and api call
    # and which fired a non-symptom alert, is the better explanation.
    groups = groups_frame(
        {"id": "G1", "root": "web", "members": {"web": 0, "api": 1, "db": 2}, "local": ["db"]}
    )
    roots = root_causes(groups, index_of(CHAIN), WINDOW)
    assert roots["root_cause_service"].tolist() == ["db"]
    expected = 0.5 * 1.0 + 0.25 * np.exp(-2 / (WINDOW / 3)) + 0.25
    assert roots["root_cause_confidence"].iloc[0] == pytest.approx(expected, abs=1e-4)


def test_where_causes_alert_late_a_late_cause_still_counts_as_first() -> None:
    # Both databases fired own-fault alerts; db1 began 2 minutes after api's first
    # symptom and db2 4 minutes later still. Where causes come up to 6 minutes late,
    # both are on time: the tie goes to the grouping's root, db2, at full confidence.
    groups = groups_frame(
        {
            "id": "G1",
            "root": "db2",
            "members": {"api": 0, "db1": 2, "db2": 6},
            "local": ["db1", "db2"],
        }
    )
    assert root_causes(groups, index_of(FORK), WINDOW)["root_cause_service"].tolist() == ["db1"]
    late = root_causes(groups, index_of(FORK), WINDOW, cause_lateness_minutes=6)
    assert late["root_cause_service"].tolist() == ["db2"]
    assert late["root_cause_confidence"].iloc[0] == pytest.approx(0.5 * 0.5 + 0.25 + 0.25)


@pytest.mark.parametrize("first", ["db1", "db2"])
def test_between_equally_called_services_the_earliest_is_the_root(first: str) -> None:
    # api calls both databases; both fired own-fault alerts; the one that began first wins,
    # whichever the grouping chose as root.
    second = "db2" if first == "db1" else "db1"
    groups = groups_frame(
        {
            "id": "G1",
            "root": second,
            "members": {first: 0, second: 3, "api": 4},
            "local": [first, second],
        }
    )
    roots = root_causes(groups, index_of(FORK), WINDOW)
    assert roots["root_cause_service"].tolist() == [first]
    assert 0 <= roots["root_cause_confidence"].iloc[0] <= 1


def test_own_fault_outweighs_earliness_among_equals() -> None:
    # db1 began a little earlier but only echoed; db2 fired a non-symptom alert.
    groups = groups_frame(
        {"id": "G1", "root": "db1", "members": {"db1": 0, "db2": 0.5, "api": 1}, "local": ["db2"]}
    )
    roots = root_causes(groups, index_of(FORK), WINDOW)
    assert roots["root_cause_service"].tolist() == ["db2"]


def test_unmapped_root_has_lower_confidence() -> None:
    groups = groups_frame(
        {"id": "Gm", "root": "db", "members": {"db": 0}, "local": ["db"]},
        {
            "id": "Gu",
            "root": "?legacy-box",
            "members": {"?legacy-box": 0},
            "local": ["?legacy-box"],
        },
    )
    roots = root_causes(groups, index_of(CHAIN), WINDOW).set_index("group_id")
    assert roots.loc["Gu", "root_cause_service"] == "legacy-box"  # shown without the marker
    assert roots.loc["Gm", "root_cause_confidence"] == pytest.approx(1.0)
    assert roots.loc["Gu", "root_cause_confidence"] == pytest.approx(0.5)


def test_a_lone_symptom_service_is_its_own_root_with_three_quarters_confidence() -> None:
    # One service, only latency: coverage and earliness are full, own fault is not.
    groups = groups_frame(
        {"id": "Gs", "root": "api", "members": {"api": 0}},
        {"id": "Gu", "root": "?box", "members": {"?box": 0}},
    )
    roots = root_causes(groups, index_of(CHAIN), WINDOW).set_index("group_id")
    assert roots.loc["Gs", "root_cause_service"] == "api"
    assert roots.loc["Gs", "root_cause_confidence"] == pytest.approx(0.75)
    assert roots.loc["Gu", "root_cause_confidence"] == pytest.approx(0.375)


def test_root_causes_on_a_scenario_are_members_with_unit_confidence() -> None:
    alerts, _, g = simulated_enriched(seed=3)
    groups = consolidate(alerts, g, SETTINGS).groups
    roots = root_causes(groups, index_of(g), WINDOW)
    assert len(roots) == len(groups) and roots["group_id"].is_unique
    assert roots["root_cause_confidence"].between(0, 1).all()
    members = dict(zip(groups["group_id"], groups["members"], strict=True))
    for gid, service in zip(roots["group_id"], roots["root_cause_service"], strict=True):
        assert service in {k.lstrip("?") for k in members[gid]}
    unmapped_names = alerts.loc[alerts["mapped_service"] == "", "service"].str.strip().str.lower()
    unmapped = roots["root_cause_service"].isin(set(unmapped_names) - set(g.nodes))
    if unmapped.any():
        assert roots.loc[unmapped, "root_cause_confidence"].max() <= 0.5


# --- incidents ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def incidents():
    """A broad critical incident, a lone info alert and an unmapped warning."""
    g = graph(("web", "api"), ("api", "db"), ("batch", "db"), ("web", "cdn"))
    rows = [
        alert(0, "db", DB_DOWN, severity="critical"),
        alert(0.5, "db", DB_DOWN, severity="critical", host="replica-2"),
        alert(1, "api", LATENCY),
        alert(1.5, "batch", ERRORS),
        alert(2, "web", HTTP5XX, severity="high"),
        alert(4, "db", DB_CONN, severity="high"),
        alert(6, "api", LATENCY),
        alert(20, "cdn", CPU, severity="info"),
        alert(25, "legacy-box", DISK),
    ]
    alerts = frame(rows, g)
    grouped = consolidate(alerts, g, SETTINGS)
    dups, _ = mark_duplicates(alerts, SETTINGS)
    alerts = alerts.join(dups).assign(
        group_id=grouped.group_ids,
        cluster_id=[0, 0, 1, 1, 1, 0, 1, 2, -1],
        is_outlier=[False] * 8 + [True],
    )
    roots = root_causes(grouped.groups, index_of(g), WINDOW)
    gf = graph_features(g)
    batch_end = alerts["timestamp"].max()
    table = incident_table(alerts, roots, gf, batch_end, grouped.groups)
    return alerts, table, roots, gf, grouped


def test_incident_table_has_the_contract_columns(incidents) -> None:
    alerts, table, _, _, _ = incidents
    assert set(INCIDENT_COLUMNS) <= set(table.columns)
    assert list(table.columns[: len(INCIDENT_COLUMNS)]) == list(INCIDENT_COLUMNS)
    assert sorted(table["group_id"]) == sorted(alerts["group_id"].unique())
    assert table["n_alerts"].sum() == len(alerts)


def test_incidents_are_ranked_one_to_n_by_descending_score(incidents) -> None:
    _, table, _, _, _ = incidents
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    scores = table["importance_score"].to_numpy()
    assert (np.diff(scores) <= 0).all()
    assert table["importance_score"].between(0, 100).all()
    # The broad critical incident outranks the lone alerts.
    top = table.iloc[0]
    assert top["root_cause_service"] == "db"
    assert top["max_severity"] == "critical"
    assert top["n_alerts"] == 7 and top["n_unique"] == 5  # two re-fires/replicas
    assert set(top["services"].split("|")) == {"db", "api", "batch", "web"}


def test_a_lone_unusual_alert_does_not_outrank_a_real_incident() -> None:
    # A warning-level incident (three alerts on two services) against one critical,
    # unclustered alert on an unknown host: unusual, but a lone odd alert is what noise
    # looks like. (It scored 47.9 to the incident's 45.7 when novelty counted alone.)
    g = graph(("web", "api"), ("api", "db"))
    rows = [
        alert(0, "db", DB_DOWN),
        alert(1, "api", LATENCY),
        alert(3, "db", DB_CONN),
        alert(3.5, "print-spooler", DISK, severity="critical"),
    ]
    alerts = frame(rows, g)
    grouped = consolidate(alerts, g, SETTINGS)
    dups, _ = mark_duplicates(alerts, SETTINGS)
    alerts = alerts.join(dups).assign(
        group_id=grouped.group_ids, cluster_id=[0, 1, 0, -1], is_outlier=[False] * 3 + [True]
    )
    roots = root_causes(grouped.groups, index_of(g), WINDOW)
    table = incident_table(alerts, roots, graph_features(g), alerts["timestamp"].max())
    assert table["root_cause_service"].tolist() == ["db", "print-spooler"]


def test_every_incident_has_reasons_naming_numbers(incidents) -> None:
    _, table, _, _, _ = incidents
    for reasons in table["reasons"]:
        assert reasons.strip()
        assert re.search(r"\d", reasons), reasons
    top = table.iloc[0]["reasons"]
    # At most the three largest contributions, each with its number.
    assert len(top.split("; ")) <= 3
    assert "critical severity" in top and "4 services" in top


def test_an_incident_continued_from_an_earlier_batch_counts_all_of_it(incidents) -> None:
    alerts, _, _, gf, _ = incidents
    g = graph(("web", "api"), ("api", "db"), ("batch", "db"), ("web", "cdn"))
    cut = alerts["timestamp"] >= alerts["timestamp"].iloc[5]  # from db's 4th minute on
    first = consolidate(alerts[~cut], g, SETTINGS)
    second = consolidate(alerts[cut], g, SETTINGS, first.state)
    later = alerts[cut].assign(group_id=second.group_ids)
    roots = root_causes(second.groups, index_of(g), WINDOW)
    table = incident_table(later, roots, gf, later["timestamp"].max(), second.groups)
    row = table.set_index("group_id").loc[alerts["group_id"].iloc[0]]
    assert row["first_seen"] == alerts["timestamp"].iloc[0]
    assert row["last_seen"] == alerts["timestamp"].iloc[6]
    assert row["n_alerts"] == 7  # the whole incident so far...
    assert row["n_alerts_batch"] == 2  # ...of which this batch holds two
    assert set(row["services"].split("|")) == {"db", "api", "batch", "web"}
    assert row["max_severity"] == "critical"  # fired in the earlier batch
    assert row["root_cause_service"] == "db"


def test_empty_alerts_give_an_empty_incident_table(incidents) -> None:
    alerts, _, roots, gf, _ = incidents
    table = incident_table(alerts.iloc[:0], roots, gf, T0)
    assert table.empty and set(INCIDENT_COLUMNS) <= set(table.columns)


# --- clusters ----------------------------------------------------------------------------
def cluster_alerts() -> tuple[pd.DataFrame, np.ndarray]:
    rows = (
        [alert(i, "db", DB_DOWN) for i in range(6)]
        + [alert(i, "api", LATENCY) for i in range(4)]
        + [alert(i, "web", LATENCY) for i in range(1)]
        + [alert(i, "db", DB_CONN) for i in range(3)]
        + [alert(9, "legacy-box", DISK)]
    )
    alerts = frame(rows, CHAIN)
    # Clusters 0 and 3 both are "datastore on db": their names must still differ.
    ids = np.array([0] * 6 + [1] * 5 + [3] * 3 + [-1])
    return alerts, ids


def test_cluster_names_are_stable_unique_and_readable() -> None:
    alerts, ids = cluster_alerts()
    profiles = cluster_profiles(alerts, ids)
    shuffled = alerts.sample(frac=1.0, random_state=0)
    again = cluster_profiles(
        shuffled, pd.Series(ids, index=alerts.index)[shuffled.index].to_numpy()
    )
    assert {k: v["name"] for k, v in profiles.items()} == {k: v["name"] for k, v in again.items()}
    names = [p["name"] for p in profiles.values()]
    assert len(set(names)) == len(names)
    assert profiles[0]["name"] == "Datastore health · db"
    assert profiles[3]["name"] == "Datastore health · db #2"
    assert profiles[1]["name"] == "Latency · api (+1)"  # web holds 1 of 5 alerts (>= 5%)
    assert profiles[-1]["name"] == NOISE_CLUSTER_NAME
    assert profiles[0]["size"] == 6
    assert sum(p["share"] for p in profiles.values()) == pytest.approx(1.0)


def test_cluster_names_follow_the_cause_family_when_known() -> None:
    alerts, ids = cluster_alerts()
    alerts["cause_family"] = "datastore"  # the api/web latency belongs to a db incident
    profiles = cluster_profiles(alerts, ids)
    assert profiles[1]["name"].startswith("Datastore health · api")


def test_cluster_table_ranks_clusters_with_reasons() -> None:
    alerts, ids = cluster_alerts()
    profiles = cluster_profiles(alerts, ids)
    dups, _ = mark_duplicates(alerts, SETTINGS)
    batch = alerts.join(dups).assign(cluster_id=ids, is_outlier=False)
    batch.loc[batch.index[-1], "cluster_id"] = 7  # a cluster without a profile
    table = cluster_table(batch, profiles, graph_features(CHAIN), batch["timestamp"].max())
    assert table["cluster_rank"].tolist() == list(range(1, len(table) + 1))
    assert (np.diff(table["importance_score"].to_numpy()) <= 0).all()
    assert table["importance_score"].between(0, 100).all()
    assert all(r.strip() and re.search(r"\d", r) for r in table["reasons"])
    names = table.set_index("cluster_id")["cluster_name"]
    assert names[0] == "Datastore health · db" and names[7] == "Cluster 7"
    assert table["n_alerts"].sum() == len(batch)
    assert cluster_table(batch.iloc[:0], profiles, graph_features(CHAIN), T0).empty


@pytest.mark.parametrize("by_dtype", [object, np.int64])
@pytest.mark.parametrize("counted", [False, True])
def test_top_counts_equal_a_groupby_join(by_dtype, counted) -> None:
    # _top_counts joins per key without a Python call per group or per row; it must give
    # what the plain groupby would, ties (by value) and keys in the same order.
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 300, 5_000)
    frame = pd.DataFrame(
        {
            "by": keys.astype(str).astype(object) if by_dtype is object else keys,
            "value": rng.choice(["cpu", "disk", "latency", "errors", "oom", "Disk"], 5_000),
        }
    )
    for n in (None, 2):
        counts = frame.groupby(["by", "value"], sort=False).size().rename("n").reset_index()
        counts = counts.sort_values(["by", "n", "value"], ascending=[True, False, True])
        if n is not None:
            counts = counts.groupby("by", sort=False).head(n)
        counts["text"] = [
            f"{v.upper()} x{c}" if counted else v.upper()
            for v, c in zip(counts["value"], counts["n"], strict=True)
        ]
        expected = counts.groupby("by", sort=True)["text"].agg("|".join)
        got = _top_counts(frame, "by", "value", n, str.upper, counted)
        pd.testing.assert_series_equal(got, expected)
    assert _top_counts(frame.iloc[:0], "by", "value", 2, str.upper, counted).empty
