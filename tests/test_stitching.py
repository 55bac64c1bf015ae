"""Consolidation in two processes (alertclf.stitching) gives exactly the one-process
result: every group id, reason and as-of value, the groups table (member order
included) and the carried state -- when the two states meet, when they never do, and
when the second process dies."""

from __future__ import annotations

import logging
import os
import re

import pandas as pd
import pytest

from alertclf import forking, stitching
from alertclf.consolidate import (
    NS_PER_MINUTE,
    CallerIndex,
    ConsolidationState,
    Group,
    _Grouper,
    consolidate,
    series_memory_ns,
)
from alertclf.io.alerts import normalize_alerts
from alertclf.mapping import enrich_alerts
from alertclf.settings import Settings
from alertclf.simulate import SimulationConfig, simulate

pytestmark = pytest.mark.skipif(
    not forking.can_fork(), reason="the split needs fork and two usable cores"
)
# A one-hour span makes the child's warm-up short (75 minutes): on the storm below its
# state differs from the full reader's at the cut and meets it 4 checkpoints later, so
# the comparison is exercised, not only the hand-over.
ONE_PROCESS = Settings(parallel_min_alerts=10**9, group_max_span_minutes=60)
TWO_PROCESSES = ONE_PROCESS.model_copy(update={"parallel_min_alerts": 2})


@pytest.fixture(scope="module")
def storm():
    """Two days of overlapping incidents on 300 services: ~42,000 alerts."""
    config = SimulationConfig(seed=5, days=2, scenario="storm", n_services=300,
                              incidents_per_day=150, storms_per_day=24)  # fmt: skip
    sim = simulate(config)
    alerts, rejected = normalize_alerts(sim.alerts.astype(str), Settings(), "sim.csv")
    assert rejected.empty
    return enrich_alerts(alerts, sim.graph, Settings()), sim.graph


def comparable(result) -> tuple:
    groups = result.groups.assign(
        members=result.groups["members"].map(lambda m: list(m.items())),
        local_members=result.groups["local_members"].map(list),
    )
    return result.group_ids, result.reasons, result.as_of, groups, result.state.to_json()


def assert_same(split, single) -> None:
    ids, reasons, as_of, groups, state = comparable(split)
    ids_1, reasons_1, as_of_1, groups_1, state_1 = comparable(single)
    pd.testing.assert_series_equal(ids, ids_1)
    pd.testing.assert_series_equal(reasons, reasons_1)
    pd.testing.assert_frame_equal(as_of, as_of_1)
    pd.testing.assert_frame_equal(groups, groups_1)  # same rows in the same order
    assert state == state_1


def test_two_processes_give_the_one_process_result(storm, caplog) -> None:
    alerts, g = storm
    assert len(alerts) > 40_000
    single = consolidate(alerts, g, ONE_PROCESS)
    with caplog.at_level(logging.INFO, logger="alertclf.stitching"):
        split = consolidate(alerts, g, TWO_PROCESSES)
    met = re.search(r"states met at alert \d+ of \d+, (\d+) after the cut", caplog.text)
    assert met, caplog.text  # the split was taken, not skipped
    assert int(met.group(1)) > 0  # and the states differed at the cut
    assert_same(split, single)
    # The scenario is not trivial: merges (re-rooting) and many groups on both sides.
    assert (single.reasons == "reroot").sum() > 10 and single.group_ids.nunique() > 500


def test_state_carried_from_an_earlier_batch_is_honoured(storm, caplog) -> None:
    alerts, g = storm
    ts = pd.to_datetime(alerts["timestamp"], utc=True)
    first, second = alerts[ts < ts.quantile(0.3)], alerts[ts >= ts.quantile(0.3)]
    index = CallerIndex(g, ONE_PROCESS.group_max_hops)
    carried = consolidate(first, g, ONE_PROCESS, None, index).state
    assert carried.groups and carried.series  # open groups cross the boundary
    single = consolidate(second, g, ONE_PROCESS, carried, index)
    with caplog.at_level(logging.INFO, logger="alertclf.stitching"):
        split = consolidate(second, g, TWO_PROCESSES, carried, index)
    assert "states met at alert" in caplog.text
    assert_same(split, single)


def test_states_that_never_meet_fall_back_to_one_process(storm, monkeypatch, caplog) -> None:
    alerts, g = storm
    single = consolidate(alerts, g, ONE_PROCESS)
    counter = iter(range(10**6))
    # Every fingerprint distinct, also between the two processes (the child is forked
    # after the patch, with a copy of the counter).
    monkeypatch.setattr(stitching, "_fingerprint", lambda *a: f"{os.getpid()}:{next(counter)}")
    with caplog.at_level(logging.INFO, logger="alertclf.stitching"):
        split = consolidate(alerts, g, TWO_PROCESSES)
    assert "never met" in caplog.text
    assert_same(split, single)


@pytest.mark.parametrize("how", ["raises", "exits"])
def test_a_failing_second_process_falls_back_to_one_process(storm, monkeypatch, caplog, how):
    alerts, g = storm
    single = consolidate(alerts, g, ONE_PROCESS)
    original = stitching._place_rows

    def broken(grouper, columns, begin, end):
        if begin > 0 and grouper.touched == {}:  # only the child starts mid-batch
            if how == "raises":
                raise RuntimeError("injected failure in the second process")
            os._exit(3)
        return original(grouper, columns, begin, end)

    monkeypatch.setattr(stitching, "_place_rows", broken)
    with caplog.at_level(logging.INFO, logger="alertclf.stitching"):
        split = consolidate(alerts, g, TWO_PROCESSES)
    expected = "failed" if how == "raises" else "died"
    assert f"the second process {expected}" in caplog.text
    assert_same(split, single)


def test_small_batches_and_one_core_stay_in_one_process(storm, monkeypatch) -> None:
    alerts, g = storm

    def no_fork(*args):
        raise AssertionError("a second process was started")

    monkeypatch.setattr(forking.multiprocessing, "get_context", no_fork)
    single = consolidate(alerts, g, ONE_PROCESS)  # the batch is below the threshold
    monkeypatch.setattr(forking, "_usable_cores", lambda: 1)
    assert_same(consolidate(alerts, g, TWO_PROCESSES), single)


def test_fingerprint_covers_what_decides_and_only_that(storm) -> None:
    alerts, g = storm
    ts = pd.to_datetime(alerts["timestamp"], utc=True)
    state = consolidate(alerts[ts < ts.quantile(0.5)], g, ONE_PROCESS).state
    t = max(x.last_seen for x in state.groups) + 60 * 10**9  # a minute after the last alert
    window = ONE_PROCESS.time_window_minutes * NS_PER_MINUTE
    # an open group with several members
    big = max(range(len(state.groups)), key=lambda i: (t - state.groups[i].last_seen <= window,
                                                       len(state.groups[i].members)))  # fmt: skip
    index = CallerIndex(g, ONE_PROCESS.group_max_hops)

    def fingerprint(changed) -> str:
        copy = ConsolidationState.from_json(state.to_json())
        changed(copy)
        grouper = _Grouper(index, ONE_PROCESS, copy)
        return grouper.fingerprint(t, [(k, n) for k, n, *_ in copy.series])

    def nothing(s):
        pass

    def live_series(s):  # a series still within the window counts one more alert
        next(x for x in s.series if t - x[3] <= window)[4] += 1

    def quiet_series(s, ago=2 * window, count=9, elsewhere=True):
        gid = s.groups[0].group_id
        s.series.append(["svc-x", "HighLatency", gid, t - ago, count, [], elsewhere])

    def remembered_series(s):  # quiet for two windows: rule 5 reads when it last fired
        quiet_series(s)

    def remembered_series_own(s):  # ... and whether it was a symptom elsewhere
        quiet_series(s, elsewhere=False)

    def remembered_series_count(s):  # ... and nothing else of it: a repeat starts afresh
        quiet_series(s, count=3)

    def stale_series(s):  # quiet for longer than the memory: no rule reads it
        quiet_series(s, ago=series_memory_ns(ONE_PROCESS) + window)

    def group_size(s):
        s.groups[big].n_alerts += 1

    def member_order(s):  # listed members are written out in this order
        s.groups[big].members = dict(reversed(s.groups[big].members.items()))

    def quiet_group(s):  # silent for longer than the window: no rule reads it
        quiet = Group(**ConsolidationState.from_json(state.to_json()).groups[big].to_json())
        quiet.group_id, quiet.last_seen = "G-quiet", t - 2 * window
        s.groups.append(quiet)

    reference = fingerprint(nothing)
    assert t - state.groups[big].last_seen <= window and len(state.groups[big].members) > 1
    assert fingerprint(nothing) == reference
    for change in (live_series, group_size, member_order, remembered_series):
        assert fingerprint(change) != reference, change.__name__
    for change in (stale_series, quiet_group):
        assert fingerprint(change) == reference, change.__name__
    assert fingerprint(remembered_series_count) == fingerprint(remembered_series)
    assert fingerprint(remembered_series_own) != fingerprint(remembered_series)


def test_a_series_firing_for_the_whole_batch_changes_nothing(storm) -> None:
    # Longer than any warm-up: the child cannot have seen where it began.
    alerts, g = storm
    service = sorted(g.nodes)[7]
    stamps = pd.date_range(alerts["timestamp"].min(), alerts["timestamp"].max(), freq="5min")
    flapping = alerts.iloc[[0] * len(stamps)].assign(
        alert_id=[f"flap-{i}" for i in range(len(stamps))], timestamp=stamps, service=service,
        mapped_service=service, alert_name="DiskSpaceLow", severity="warning", host="h1",
    )  # fmt: skip
    both = pd.concat([alerts, flapping], ignore_index=True)
    single = consolidate(both, g, ONE_PROCESS)
    assert single.group_ids[len(alerts) :].nunique() > 20  # it spans many groups
    assert_same(consolidate(both, g, TWO_PROCESSES), single)
