"""Regrouping in hindsight: a symptom series moves to the trouble it ended with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from builders import DB_DOWN, ERRORS, HTTP5XX, LATENCY, T0, alert, frame, graph, split_by_time

from alertclf.consolidate import NS_PER_MINUTE
from alertclf.pipeline import GraphContext, PipelineState, learn_endings, prepare_batch
from alertclf.ranking import group_novelty, incident_facts, rank_incidents, root_causes
from alertclf.regroup import (
    REVISION_COLUMNS,
    RegroupState,
    _misfit,
    apply_revisions,
    early_end_share,
    latest_revisions,
    lead_ns,
    split_group_id,
    symptom_families,
)
from alertclf.settings import Settings

SETTINGS = Settings()  # time_window_minutes=15: a series is decided 15 minutes after it ends
# An estate whose symptoms end with their cause: series that stop early are split off.
ENDING = Settings(early_end_share=0.01)
# gw calls svcA and svcB; svcA calls dbA, svcB calls dbB.
GATEWAY = graph(("gw", "svcA"), ("gw", "svcB"), ("svcA", "dbA"), ("svcB", "dbB"))
CONTEXT = GraphContext.build(GATEWAY, SETTINGS)


def firing(start: float, end: float, service: str, name: str, every: float = 1.0) -> list:
    return [alert(m, service, name) for m in np.arange(start, end, every)]


def two_incidents(a_ends: float, b_ends: float, gw_ends: float) -> pd.DataFrame:
    """Two incidents under the gateway. Its errors begin at minute 2, when A's trouble on
    its path (svcA, from 1.5) is more recent than B's (svcB, from 1.0): consolidation
    puts the series in A. The gateway's errors then end with one of the two."""
    return frame(
        [
            *firing(0.0, b_ends, "dbB", "RedisDown"),
            *firing(1.0, b_ends, "svcB", LATENCY),
            *firing(0.5, a_ends, "dbA", DB_DOWN),
            *firing(1.5, a_ends, "svcA", ERRORS),
            *firing(2.0, gw_ends, "gw", HTTP5XX),
            alert(70.0, "dbB", "RedisDown"),  # time passes: the gateway's series is quiet
        ],
        GATEWAY,
    )


def groups_of(prepared) -> tuple[pd.Series, str, str]:
    alerts = prepared.alerts
    in_a = alerts.loc[alerts["service"] == "dbA", "group_id"].iloc[0]
    in_b = alerts.loc[alerts["service"] == "dbB", "group_id"].iloc[0]
    assert in_a != in_b
    return alerts.loc[alerts["service"] == "gw", "group_id"], in_a, in_b


def test_a_symptom_series_moves_to_the_trouble_it_ended_with() -> None:
    # The gateway's errors end at minute 25, with B (A goes on to 40): once they have
    # been quiet for a window, the whole series belongs to B.
    alerts = two_incidents(a_ends=40, b_ends=25, gw_ends=25)
    prepared = prepare_batch(alerts, CONTEXT, SETTINGS)
    gw, _, in_b = groups_of(prepared)
    assert prepared.alerts.loc[gw.index[0], "group_reason"] == "symptom"
    assert (gw == in_b).all()
    assert prepared.revisions.empty  # nothing was published before this batch
    assert prepared.timings["regroup"] >= 0


def test_the_choice_stands_where_the_series_ends_with_it() -> None:
    alerts = two_incidents(a_ends=25, b_ends=40, gw_ends=25)
    gw, in_a, _ = groups_of(prepare_batch(alerts, CONTEXT, SETTINGS))
    assert (gw == in_a).all()


@pytest.mark.parametrize("a_ends", [26.0, 23.5])
def test_an_end_less_than_three_minutes_closer_moves_nothing(a_ends: float) -> None:
    # B ends at 25 with the gateway; A's last alert is 1.5 minutes after and before the
    # gateway's: too close to tell the two apart, and within a firing (one minute) and
    # the margin of A's end, so the gateway's errors stay A's.
    alerts = two_incidents(a_ends=a_ends, b_ends=25, gw_ends=25)
    gw, in_a, _ = groups_of(prepare_batch(alerts, CONTEXT, SETTINGS))
    assert (gw == in_a).all()


def test_a_series_still_firing_is_not_decided() -> None:
    # The batch ends 10 minutes after the gateway's last alert: a repeat may still join
    # its series, so it stays where it went, and waits in the state.
    alerts = two_incidents(a_ends=40, b_ends=25, gw_ends=25)
    alerts = alerts[alerts["timestamp"] < T0 + pd.Timedelta(minutes=34)]
    prepared = prepare_batch(alerts, CONTEXT, SETTINGS)
    gw, in_a, _ = groups_of(prepared)
    assert (gw == in_a).all()
    (pending,) = [p for p in prepared.state.regroup.pending if p[0] == "gw"]
    assert pending[:3] == ["gw", HTTP5XX, in_a]
    assert sorted(pending[5]) == sorted(prepared.alerts.loc[gw.index, "alert_id"])


def in_batches(alerts: pd.DataFrame) -> tuple[pd.DataFrame, list[pd.DataFrame], PipelineState]:
    """``alerts`` through consecutive 15-minute batches, the state carried as JSON: the
    published alerts with every batch's revisions applied, the revisions, the last state."""
    state, published, revisions = PipelineState(), [], []
    for batch in split_by_time(alerts, 15):
        prepared = prepare_batch(batch, CONTEXT, SETTINGS, PipelineState.from_json(state.to_json()))
        state = prepared.state
        published.append(prepared.alerts)
        revisions.append(prepared.revisions)
    combined = pd.concat(published)
    combined["group_id"] = apply_revisions(combined, latest_revisions(revisions))
    return combined, revisions, state


def test_batches_publish_revisions_of_earlier_alerts() -> None:
    # In 15-minute batches the gateway's alerts of the first two batches are published
    # in A; the batch that sees the series quiet for a window revises them to B. Applied
    # in order, the batches' results equal the one-batch result.
    alerts = two_incidents(a_ends=40, b_ends=25, gw_ends=25)
    whole = prepare_batch(alerts, CONTEXT, SETTINGS).alerts
    combined, revisions, state = in_batches(alerts)
    moved = pd.concat(revisions)
    gw_ids = set(alerts.loc[alerts["service"] == "gw", "alert_id"])
    assert list(moved.columns) == list(REVISION_COLUMNS)
    assert set(moved["alert_id"]) == gw_ids and moved["alert_id"].is_unique
    pd.testing.assert_series_equal(
        combined.set_index("alert_id")["group_id"].sort_index(),
        whole.set_index("alert_id")["group_id"].sort_index(),
    )
    assert not state.regroup.pending  # decided once, then forgotten


def test_the_part_of_a_series_left_behind_by_follow_moves_with_the_whole_series() -> None:
    # A ends at 20, B and the gateway's errors at 45. At minute 28 a repeat finds A quiet
    # on its path, and the rest of the series follows B (consolidation's rule 4). The part
    # left in A ended only because the series moved on: measured by its own last alert
    # it ended 8 minutes after A and 17 before B, was not closer to B by the margin and
    # was split off A; measured by the whole series' end it moves to B, in one batch and
    # in 15-minute batches alike (storm train-ticket seed 2: ARI 0.877 -> 0.895).
    alerts = two_incidents(a_ends=20, b_ends=45, gw_ends=45)
    prepared = prepare_batch(alerts, CONTEXT, SETTINGS)
    gw, _, in_b = groups_of(prepared)
    assert "follow" in set(prepared.alerts.loc[gw.index, "group_reason"])
    assert (gw == in_b).all()
    combined, _, state = in_batches(alerts)
    assert (combined.loc[combined["service"] == "gw", "group_id"] == in_b).all()
    assert not state.regroup.pending


def test_a_cause_that_alerts_after_its_symptom_is_a_candidate_within_the_lead() -> None:
    # B's root alerts 2.5 minutes after the gateway's first error (within 1.5 hops of
    # the default 2-minute lag); 4 minutes after, it cannot be what the gateway began
    # with.
    assert lead_ns(SETTINGS) == 3 * NS_PER_MINUTE
    for late, moves in ((2.5, True), (4.0, False)):
        rows = [
            *firing(2.0 + late, 25, "dbB", "RedisDown"),
            *firing(1.0, 25, "svcB", LATENCY),
            *firing(0.5, 40, "dbA", DB_DOWN),
            *firing(1.5, 40, "svcA", ERRORS),
            *firing(2.0, 25, "gw", HTTP5XX),
            alert(70.0, "dbA", DB_DOWN),
        ]
        prepared = prepare_batch(frame(rows, GATEWAY), CONTEXT, SETTINGS)
        gw, in_a, in_b = groups_of(prepared)
        assert (gw == (in_b if moves else in_a)).all(), late


def test_regroup_state_round_trips_and_an_older_state_loads() -> None:
    alerts = two_incidents(a_ends=40, b_ends=25, gw_ends=25)
    alerts = alerts[alerts["timestamp"] < T0 + pd.Timedelta(minutes=34)]
    state = prepare_batch(alerts, CONTEXT, SETTINGS).state
    again = PipelineState.from_json(state.to_json())
    assert again.regroup == state.regroup and state.regroup.roots
    older = PipelineState.from_json('{"consolidation": {}, "dedup": {}}')
    assert older.regroup == RegroupState()


def test_a_group_root_is_forgotten_after_an_hour_and_a_half() -> None:
    state = RegroupState({"g1": ["db", 0, 0]}, [])
    assert state.trimmed(90 * NS_PER_MINUTE, SETTINGS).roots
    assert not state.trimmed(91 * NS_PER_MINUTE, SETTINGS).roots


def test_a_series_that_outlives_its_root_by_hours_still_moves_in_batches() -> None:
    # A (dbA, svcA) lasts ten minutes; B's database fails at 0 and lasts 110, its
    # service does not alert, so the gateway's errors (2 to 110) went to A and stay
    # there (nothing on their path alerts in B). They end with B. In 15-minute batches
    # the batch ending at 109 finds A's root stopped 100 minutes before, the series
    # still firing: kept in the state while the series is pending, that root is still
    # the end the series is measured from when the next batch decides it.
    alerts = frame(
        [
            *firing(0.0, 110, "dbB", "RedisDown"),
            *firing(0.5, 10, "dbA", DB_DOWN),
            *firing(1.5, 10, "svcA", ERRORS),
            *firing(2.0, 110, "gw", HTTP5XX),
            alert(130.0, "dbA", DB_DOWN),  # time passes: the gateway's series is quiet
        ],
        GATEWAY,
    )
    whole = prepare_batch(alerts, CONTEXT, SETTINGS).alerts
    in_b = whole.loc[whole["service"] == "dbB", "group_id"].iloc[0]
    gw_rows = whole["service"] == "gw"
    assert whole.loc[gw_rows, "group_reason"].iloc[0] == "symptom"
    assert (whole.loc[gw_rows, "group_id"] == in_b).all()
    combined, _, state = in_batches(alerts)
    gw = combined[combined["service"] == "gw"]
    assert len(gw) == gw_rows.sum() and (gw["group_id"] == in_b).all()
    assert not state.regroup.pending


@pytest.mark.parametrize(("own_ends", "moves"), [(60.0, True), (31.0, False)])
def test_a_symptom_on_a_root_that_outlives_its_fault_moves_to_the_trouble_it_ended_with(
    own_ends: float, moves: bool
) -> None:
    # svcA calls dbA and dbB. dbB is down from 0 to 60; svcA's own CPU saturates from 1
    # to 30 (a group rooted at svcA). svcA's latency from 3 joins its own fault, the
    # more recent trouble on its path, as another alert on the root. Ending at 60 with
    # dbB's outage, 30 minutes after svcA's last CPU alert, it followed dbB: it moves
    # there once quiet. Ending with the CPU alerts, it stays.
    g = graph(("svcA", "dbA"), ("svcA", "dbB"))
    context = GraphContext.build(g, SETTINGS)
    alerts = frame(
        [
            *firing(0.0, 60, "dbB", "RedisDown"),
            *firing(1.0, 30, "svcA", "CPUThrottlingHigh"),
            *firing(3.0, own_ends, "svcA", LATENCY),
            alert(100.0, "dbA", DB_DOWN),  # time passes: the latency series is quiet
        ],
        g,
    )
    prepared = prepare_batch(alerts, context, SETTINGS)
    out = prepared.alerts
    latency = out[(out["service"] == "svcA") & (out["alert_name"] == LATENCY)]
    cpu_group = out.loc[out["alert_name"] == "CPUThrottlingHigh", "group_id"].iloc[0]
    db_group = out.loc[out["service"] == "dbB", "group_id"].iloc[0]
    assert latency["group_reason"].iloc[0] == "root"
    assert set(latency["group_id"]) == ({db_group} if moves else {cpu_group})


def one_incident(root_ends: float, gw_ends: float) -> pd.DataFrame:
    """One incident under the gateway (A), the gateway's errors ending at ``gw_ends``."""
    return frame(
        [
            *firing(0.5, root_ends, "dbA", DB_DOWN),
            *firing(1.5, root_ends, "svcA", ERRORS),
            *firing(2.0, gw_ends, "gw", HTTP5XX),
            alert(70.0, "dbB", "RedisDown"),
        ],
        GATEWAY,
    )


@pytest.mark.parametrize(
    ("root_ends", "gw_ends"),
    [(40, 20), (20, 35)],
    ids=["stopped-while-the-root-went-on", "outlived-the-root"],
)
def test_a_series_that_ended_apart_from_its_root_is_split_off(
    root_ends: float, gw_ends: float
) -> None:
    # The gateway fires every minute: stopping 20 minutes before its root, or firing 15
    # minutes after it, it did not follow that trouble. Its alerts leave A for a group of
    # their own; svcA, which ended with dbA, stays.
    prepared = prepare_batch(one_incident(root_ends, gw_ends), CONTEXT, ENDING)
    alerts = prepared.alerts
    in_a = alerts.loc[alerts["service"] == "dbA", "group_id"].iloc[0]
    assert (alerts.loc[alerts["service"] == "svcA", "group_id"] == in_a).all()
    split = split_group_id(in_a)
    assert split != in_a and split.startswith(in_a[: in_a.rfind("-")])
    assert (alerts.loc[alerts["service"] == "gw", "group_id"] == split).all()
    (row,) = prepared.groups[prepared.groups["group_id"] == split].itertuples()
    assert row.root == "gw" and list(row.members) == ["gw"]
    assert row.n_alerts_total == (alerts["service"] == "gw").sum()


def test_a_split_decided_after_the_series_was_published_is_revised_and_listed() -> None:
    # In 15-minute batches the gateway's errors end at minute 13, in the first batch; its
    # root fires on in the second, which splits them off by revisions alone. That batch
    # lists the split group among its incidents (with the root it had), and the batches'
    # results, moves applied in order, equal the one-batch result.
    alerts = one_incident(root_ends=40, gw_ends=14)
    whole = prepare_batch(alerts, CONTEXT, ENDING).alerts
    state, published, revisions, deciding = PipelineState(), [], [], None
    for batch in split_by_time(alerts, 15):
        prepared = prepare_batch(batch, CONTEXT, ENDING, PipelineState.from_json(state.to_json()))
        assert PipelineState.from_json(prepared.state.to_json()) == prepared.state
        state = prepared.state
        published.append(prepared.alerts)
        revisions.append(prepared.revisions)
        if len(prepared.revisions):
            deciding = prepared
    gw_ids = set(alerts.loc[alerts["service"] == "gw", "alert_id"])
    assert deciding is not None and set(deciding.revisions["alert_id"]) == gw_ids
    split = deciding.revisions["revised_group_id"].iloc[0]
    assert not (deciding.alerts["group_id"] == split).any()  # no alert of it in the batch
    roots = root_causes(deciding.groups, CONTEXT.index, SETTINGS.time_window_minutes)
    facts = incident_facts(deciding.alerts, roots, CONTEXT.features, T0, deciding.groups)
    (row,) = facts[facts["group_id"] == split].itertuples()
    assert row.root_cause_service == "gw" and row.n_alerts == len(gw_ids)
    assert row.n_alerts_batch == 0 and row.top_alerts == f"{HTTP5XX} x{len(gw_ids)}"
    scored = deciding.alerts.assign(is_outlier=False, cluster_id=0)
    rows = pd.Index(facts["group_id"]).get_indexer(scored["group_id"])
    ranked = rank_incidents(facts, group_novelty(scored, rows, len(facts)))
    assert ranked.set_index("group_id").loc[split, "importance_score"] > 0
    combined = pd.concat(published)
    combined["group_id"] = apply_revisions(combined, latest_revisions(revisions))
    pd.testing.assert_series_equal(
        combined.set_index("alert_id")["group_id"].sort_index(),
        whole.set_index("alert_id")["group_id"].sort_index(),
    )


@pytest.mark.parametrize("share", [None, 0.2])
def test_where_symptoms_often_stop_early_only_a_series_outliving_its_root_is_split(
    share: float | None,
) -> None:
    # Not learned, or a fifth of the estate's symptom series stop early: stopping early
    # says nothing, outliving the root still does.
    settings = Settings(early_end_share=share)
    stopped = prepare_batch(one_incident(root_ends=40, gw_ends=20), CONTEXT, settings).alerts
    assert stopped["group_id"].nunique() == 2  # A and the dbB alert at minute 70
    outlived = prepare_batch(one_incident(root_ends=20, gw_ends=35), CONTEXT, settings).alerts
    in_a = outlived.loc[outlived["service"] == "dbA", "group_id"].iloc[0]
    assert (outlived.loc[outlived["service"] == "gw", "group_id"] == split_group_id(in_a)).all()


def test_the_early_end_share_is_learned_from_a_grouped_history() -> None:
    # Twelve incidents, one an hour, each with ten callers' series: where they all end
    # with their root the share is 0; where half of them stop 10 minutes early, 0.5.
    services = [f"c{i}" for i in range(10)]
    fan = graph(*[(c, "db") for c in services])
    context = GraphContext.build(fan, SETTINGS)

    def history(early: int) -> pd.DataFrame:
        rows = []
        for hour in range(12):
            start = 60.0 * hour
            rows += firing(start, start + 30, "db", DB_DOWN, every=2)
            for i, caller in enumerate(services):
                stop = start + 30 - (10 if i < early else 0)
                rows += firing(start + 1, stop, caller, ERRORS, every=2)
        return frame(rows, fan)

    for early, share in ((0, 0.0), (5, 0.5)):
        prepared = prepare_batch(history(early), context, SETTINGS)
        assert early_end_share(prepared.alerts, prepared.groups, context.index, SETTINGS) == share
        assert learn_endings(prepared, context, SETTINGS).early_end_share == share
    few = prepare_batch(history(0).iloc[:150], context, SETTINGS)
    assert (
        early_end_share(few.alerts, few.groups, context.index, SETTINGS) is None
    )  # under 100 series


@pytest.mark.parametrize(
    ("table", "split"),
    [
        ({"datastore": {"latency": 5}}, True),  # errors never showed under a datastore root
        ({"datastore": {"latency": 4, "errors": 1}}, False),  # they did, once
        ({"datastore": {"latency": 4}}, False),  # too few symptom series to tell
        ({"cpu": {"latency": 50}}, False),  # nothing known of datastore roots
        (None, False),
    ],
)
def test_a_series_that_stopped_early_is_split_where_its_family_never_followed_the_roots(
    table: dict | None, split: bool
) -> None:
    # Early-end share unknown, so stopping early alone splits nothing; the gateway's
    # errors (stopping 20 minutes before dbA's outage) also being a family that never
    # showed on a symptom under a datastore root in the history make two signs of a fault
    # of its own. svcA's errors ended with their root and stay either way.
    settings = Settings(symptom_families=table)
    alerts = prepare_batch(one_incident(root_ends=40, gw_ends=20), CONTEXT, settings).alerts
    in_a = alerts.loc[alerts["service"] == "dbA", "group_id"].iloc[0]
    assert (alerts.loc[alerts["service"] == "svcA", "group_id"] == in_a).all()
    gw = alerts.loc[alerts["service"] == "gw", "group_id"]
    assert (gw == (split_group_id(in_a) if split else in_a)).all()
    # Only a series that stopped early: one ending with its root stays.
    kept = prepare_batch(one_incident(root_ends=40, gw_ends=40), CONTEXT, settings).alerts
    assert kept["group_id"].nunique() == 2  # A and the dbB alert at minute 70
    # Where the estate's symptoms are known to stop early, stopping early is no sign.
    early = Settings(symptom_families=table, early_end_share=0.2)
    alerts = prepare_batch(one_incident(root_ends=40, gw_ends=20), CONTEXT, early).alerts
    assert alerts["group_id"].nunique() == 2


def test_symptom_families_are_learned_from_a_grouped_history_and_carried_by_the_state() -> None:
    # dbA's outage with errors on svcA and the gateway: two errors series under a
    # datastore root. The root's families ride in the regroup state across batches.
    alerts = one_incident(root_ends=40, gw_ends=40)
    prepared = prepare_batch(alerts, CONTEXT, SETTINGS)
    assert symptom_families(prepared.alerts, prepared.groups) == {"datastore": {"errors": 2}}
    assert learn_endings(prepared, CONTEXT, SETTINGS).symptom_families == {
        "datastore": {"errors": 2}
    }
    configured = Settings(symptom_families={"cpu": {"latency": 1}})
    assert learn_endings(prepared, CONTEXT, configured).symptom_families == {"cpu": {"latency": 1}}
    assert symptom_families(prepared.alerts.iloc[0:0], prepared.groups) is None
    first = prepare_batch(
        alerts[alerts["timestamp"] < T0 + pd.Timedelta(minutes=10)], CONTEXT, SETTINGS
    )
    (root,) = [r for r in first.state.regroup.roots.values() if r[0] == "dbA"]
    assert root[5] == ["datastore"]
    again = PipelineState.from_json(first.state.to_json())
    assert again.regroup == first.state.regroup
    older = RegroupState.from_json('{"roots": {"g1": ["db", 0, 0, 60, 1]}}')
    assert older.roots == {"g1": ["db", 0, 0, 60, 1, [], 0]}  # no fault alert known


def test_a_family_is_a_misfit_only_where_every_family_of_the_root_says_so() -> None:
    # A root with CPU and error alerts (train-ticket storm seed 3: a seat-service CPU
    # trouble that also fails its upstream calls): a family unseen under errors roots may
    # still follow CPU ones while those are unknown, or too few, or show it.
    root = ["seat", 0, 0, 0, 0, ["cpu", "errors"]]
    errors = {"errors": 8, "latency": 1}

    def misfit(name: str, table: dict) -> bool:
        return _misfit(name, root, Settings(symptom_families=table))

    assert misfit("KubePodNotReady", {"errors": errors, "cpu": {"latency": 6}})
    assert not misfit("KubePodNotReady", {"errors": errors})
    assert not misfit("KubePodNotReady", {"errors": errors, "cpu": {"latency": 4}})
    assert not misfit(LATENCY, {"errors": errors, "cpu": {"latency": 6}})
    assert not misfit("KubePodNotReady", {"errors": errors, "cpu": {"availability": 1, "x": 5}})
