"""Regrouping in hindsight: a symptom series moves to the trouble it ended with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from builders import DB_DOWN, ERRORS, HTTP5XX, LATENCY, T0, alert, frame, graph, split_by_time

from alertclf.consolidate import NS_PER_MINUTE
from alertclf.pipeline import GraphContext, PipelineState, prepare_batch
from alertclf.regroup import (
    REVISION_COLUMNS,
    RegroupState,
    apply_revisions,
    latest_revisions,
    lead_ns,
)
from alertclf.settings import Settings

SETTINGS = Settings()  # time_window_minutes=15: a series is decided 15 minutes after it ends
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


@pytest.mark.parametrize("a_ends", [26.5, 22.5])
def test_an_end_less_than_three_minutes_closer_moves_nothing(a_ends: float) -> None:
    # B ends at 25 with the gateway; A's end is 1.5 and 2.5 minutes from the gateway's:
    # too close to tell the two apart.
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


def test_batches_publish_revisions_of_earlier_alerts() -> None:
    # In 15-minute batches the gateway's alerts of the first two batches are published
    # in A; the batch that sees the series quiet for a window revises them to B. Applied
    # in order, the batches' results equal the one-batch result.
    alerts = two_incidents(a_ends=40, b_ends=25, gw_ends=25)
    whole = prepare_batch(alerts, CONTEXT, SETTINGS).alerts
    state, published, revisions = PipelineState(), [], []
    for batch in split_by_time(alerts, 15):
        prepared = prepare_batch(batch, CONTEXT, SETTINGS, PipelineState.from_json(state.to_json()))
        state = prepared.state
        published.append(prepared.alerts)
        revisions.append(prepared.revisions)
    moved = pd.concat(revisions)
    gw_ids = set(alerts.loc[alerts["service"] == "gw", "alert_id"])
    assert list(moved.columns) == list(REVISION_COLUMNS)
    assert set(moved["alert_id"]) == gw_ids and moved["alert_id"].is_unique
    combined = pd.concat(published)
    combined["group_id"] = apply_revisions(combined, latest_revisions(revisions))
    pd.testing.assert_series_equal(
        combined.set_index("alert_id")["group_id"].sort_index(),
        whole.set_index("alert_id")["group_id"].sort_index(),
    )
    assert not state.regroup.pending  # decided once, then forgotten


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
