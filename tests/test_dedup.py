"""Duplicate marking: re-fires and replicas of one alert on one service, within the window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from builders import CPU, DB_DOWN, ERRORS, LATENCY, alert, frame, simulated_enriched, split_by_time

from alertclf.dedup import DedupState, mark_duplicates
from alertclf.settings import Settings

SETTINGS = Settings()  # time_window_minutes=15
WINDOW = SETTINGS.time_window_minutes


def dedup(rows, **kwargs):
    alerts = frame(rows, **kwargs)
    result, state = mark_duplicates(alerts, SETTINGS)
    return alerts.join(result), state


def flags(out: pd.DataFrame) -> list[tuple[bool, str]]:
    return list(zip(out["is_duplicate"], out["duplicate_of"], strict=True))


def test_refires_within_the_window_are_duplicates_of_the_first_alert() -> None:
    # Each re-fire is within the window of the previous one, though the last is 40
    # minutes after the first: one episode, every later alert points at the FIRST.
    out, _ = dedup([alert(m, "api", ERRORS, mapped="api") for m in (0, 10, 20, 30, 40)])
    assert flags(out) == [(False, "")] + [(True, "a000")] * 4


def test_a_gap_longer_than_the_window_starts_a_new_original() -> None:
    minutes = [0, 5, 5 + WINDOW, 5 + WINDOW + 1 / 60, 30 + WINDOW, 40 + WINDOW]
    out, _ = dedup([alert(m, "api", ERRORS, mapped="api") for m in minutes])
    assert flags(out) == [
        (False, ""),
        (True, "a000"),
        (True, "a000"),  # exactly the window after the previous one: same episode
        (True, "a000"),
        (False, ""),  # 25 minutes of silence: new original
        (True, "a004"),
    ]


def test_replicas_of_one_mapped_service_are_duplicates() -> None:
    # Pods and spellings that map to one graph node are one service.
    rows = [
        alert(0, "api-7f9c-abcde", ERRORS, host="ip-10-0-0-1", mapped="api"),
        alert(0, "api-7f9c-fghij", ERRORS, host="ip-10-0-0-2", mapped="api"),
        alert(0.2, "PROD-API", ERRORS, host="ip-10-0-0-3", mapped="api"),
    ]
    out, _ = dedup(rows)
    assert flags(out) == [(False, ""), (True, "a000"), (True, "a000")]


def test_unmapped_services_compare_by_normalised_name() -> None:
    rows = [
        alert(0, "Legacy-Box", ERRORS, mapped=""),
        alert(1, " legacy-box ", ERRORS, mapped=""),
        alert(2, "legacy_box", ERRORS, mapped=""),  # another name: another service
    ]
    out, _ = dedup(rows)
    assert flags(out) == [(False, ""), (True, "a000"), (False, "")]


def test_different_services_or_alert_names_are_never_duplicates() -> None:
    rows = [
        alert(0, "api", ERRORS, mapped="api"),
        alert(0, "web", ERRORS, mapped="web"),
        alert(0, "api", LATENCY, mapped="api"),
        alert(0, "api", CPU, mapped="api"),
        alert(0, "api", ERRORS, mapped=""),  # unmapped "api" is not the node api
        alert(0, "db", DB_DOWN, mapped="db"),
    ]
    out, _ = dedup(rows)
    assert not out["is_duplicate"].any()
    assert (out["duplicate_of"] == "").all()


def test_interleaved_episodes_each_keep_their_own_original() -> None:
    rows = []
    for m in range(0, 30, 3):
        rows.append(alert(m, "api", ERRORS, mapped="api"))
        rows.append(alert(m + 1, "web", ERRORS, mapped="web"))
    out, _ = dedup(rows)
    originals = out.loc[~out["is_duplicate"], "alert_id"].tolist()
    assert originals == ["a000", "a001"]
    by_service = out[out["is_duplicate"]].groupby("mapped_service")["duplicate_of"].unique()
    assert by_service.to_dict() == {"api": ["a000"], "web": ["a001"]}


def test_duplicate_of_always_names_an_earlier_original_of_the_same_key() -> None:
    alerts, _, _ = simulated_enriched(seed=3)
    result, _ = mark_duplicates(alerts, SETTINGS)
    out = alerts.join(result).set_index("alert_id")
    dups = out[out["is_duplicate"]]
    assert 0.3 < len(dups) / len(out) < 0.95  # the scenario has re-fires and replicas
    originals = out.loc[dups["duplicate_of"]]
    assert not originals["is_duplicate"].any()
    assert (originals["alert_name"].to_numpy() == dups["alert_name"].to_numpy()).all()
    assert (originals["timestamp"].to_numpy() <= dups["timestamp"].to_numpy()).all()
    assert (out.loc[~out["is_duplicate"], "duplicate_of"] == "").all()


# --- state across batches ---------------------------------------------------------------
def test_refire_right_after_a_boundary_is_a_duplicate_of_the_previous_batch() -> None:
    first = frame([alert(0, "api", ERRORS, mapped="api"), alert(10, "api", ERRORS, mapped="api")])
    second = frame(
        [
            alert(24, "api", ERRORS, mapped="api", alert_id="b000"),  # 14 min after a001
            alert(24, "web", ERRORS, mapped="web", alert_id="b001"),
        ]
    )
    result1, state = mark_duplicates(first, SETTINGS)
    state = DedupState.from_json(state.to_json())
    result2, state2 = mark_duplicates(second, SETTINGS, state)
    assert list(result1["is_duplicate"]) == [False, True]
    assert flags(result2) == [(True, "a000"), (False, "")]
    # The episode keeps its first alert and moves its last time on.
    episodes = {e[0].split("\x1f")[0]: e for e in state2.episodes}
    assert episodes["api"][1] == "a000"
    assert episodes["api"][2] == frame([alert(0, "api", ERRORS)])["timestamp"].iloc[0].value
    assert episodes["api"][3] == frame([alert(24, "api", ERRORS)])["timestamp"].iloc[0].value


def test_late_arrival_inside_a_carried_episode_is_a_duplicate_of_its_first() -> None:
    first = frame([alert(0, "api", ERRORS, mapped="api"), alert(10, "api", ERRORS, mapped="api")])
    second = frame(
        [
            alert(5, "api", ERRORS, mapped="api", alert_id="late"),  # arrived late
            alert(12, "api", ERRORS, mapped="api", alert_id="next"),
        ]
    )
    _, state = mark_duplicates(first, SETTINGS)
    result, _ = mark_duplicates(second, SETTINGS, state)
    assert flags(result) == [(True, "a000"), (True, "a000")]


def test_a_carried_episode_keeps_its_first_alert_time_to_the_nanosecond() -> None:
    # 2026 in epoch nanoseconds is beyond float64's exact integers: a float on the way
    # (a NaN-masked column) once moved carried starts by up to 64 ns.
    rows = [alert(m, "api", ERRORS, mapped="api") for m in (0, 1)]
    alerts = frame(rows)
    alerts["timestamp"] = pd.to_datetime([1767646695457000000, 1767646755457000001], utc=True)
    _, state = mark_duplicates(alerts, SETTINGS)
    assert [e[2:] for e in state.episodes] == [[1767646695457000000, 1767646755457000001]]


def test_closed_episodes_are_not_carried() -> None:
    first = frame([alert(0, "api", ERRORS, mapped="api"), alert(30, "web", ERRORS, mapped="web")])
    _, state = mark_duplicates(first, SETTINGS)
    # api's episode ended more than a window before the batch's end: not carried.
    assert [e[0].split("\x1f")[0] for e in state.episodes] == ["web"]
    second = frame([alert(31, "api", ERRORS, mapped="api", alert_id="b000")])
    result, _ = mark_duplicates(second, SETTINGS, state)
    assert flags(result) == [(False, "")]


@pytest.mark.parametrize("minutes", [15, 60])
def test_batches_with_carried_state_equal_one_batch(minutes: float) -> None:
    alerts, _, _ = simulated_enriched(seed=3)
    reference, _ = mark_duplicates(alerts, SETTINGS)
    state, parts = None, []
    for batch in split_by_time(alerts, minutes):
        state = DedupState.from_json(state.to_json()) if state is not None else None
        result, state = mark_duplicates(batch, SETTINGS, state)
        parts.append(result)
    pd.testing.assert_frame_equal(pd.concat(parts).reindex(alerts.index), reference)


def test_empty_batch_keeps_open_episodes() -> None:
    alerts = frame([alert(0, "api", ERRORS, mapped="api")])
    _, state = mark_duplicates(alerts, SETTINGS)
    result, same = mark_duplicates(alerts.iloc[:0], SETTINGS, state)
    assert result.empty and list(result.columns) == ["is_duplicate", "duplicate_of"]
    assert same.episodes == state.episodes
    assert DedupState.from_json("") == DedupState()


# --- alignment ---------------------------------------------------------------------------
def test_output_is_aligned_with_the_input_index_and_order() -> None:
    rows = [alert(m, "api", ERRORS, mapped="api") for m in (0, 5, 10)]
    rows.append(alert(1, "web", ERRORS, mapped="web"))
    alerts = frame(rows, index=pd.Index([40, 10, 30, 20]))
    shuffled = alerts.iloc[[2, 0, 3, 1]]
    result, _ = mark_duplicates(shuffled, SETTINGS)
    assert result.index.equals(shuffled.index)
    expected = pd.DataFrame(
        {"is_duplicate": [True, False, False, True], "duplicate_of": ["a000", "", "", "a000"]},
        index=shuffled.index,
    )
    pd.testing.assert_frame_equal(result, expected, check_dtype=False)
    assert result["is_duplicate"].dtype == bool


def test_shuffled_input_gives_the_same_marks() -> None:
    alerts, _, _ = simulated_enriched(seed=3)
    reference, _ = mark_duplicates(alerts, SETTINGS)
    rng = np.random.default_rng(1)
    shuffled = alerts.iloc[rng.permutation(len(alerts))]
    result, _ = mark_duplicates(shuffled, SETTINGS)
    pd.testing.assert_frame_equal(result.reindex(alerts.index), reference)
