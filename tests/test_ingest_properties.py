"""Property tests for alert ingestion: whatever comes in, nothing crashes and nothing is lost."""

from __future__ import annotations

import csv
import io

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertclf import contracts
from alertclf.io import alerts as ingest
from alertclf.io.alerts import (
    InputError,
    derive_alert_ids,
    normalize_severity,
    normalize_status,
    parse_timestamps,
    read_alert_source,
)
from alertclf.io.sources import Source
from alertclf.settings import Settings

SETTINGS = Settings(max_field_chars=64)
# No NUL (stripped on read) and no surrogates (not encodable): everything else is fair game,
# including commas, quotes, CR/LF and non-ASCII letters.
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
TIMESTAMPS = st.one_of(
    st.datetimes(
        min_value=pd.Timestamp("1970-01-01").to_pydatetime(),
        max_value=pd.Timestamp("2300-01-01").to_pydatetime(),
    ).map(lambda d: d.isoformat()),
    st.integers(min_value=-(10**12), max_value=10**19).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(["", "null", "2024-02-30", "2024-01-01T25:00:00", "1e400", "+", "."]),
    TEXT,
)
FIELDS = ("alert_id", "timestamp", "service", "alert_name", "severity", "status", "description")
ROW = st.fixed_dictionaries(
    {
        "alert_id": st.one_of(st.just(""), st.sampled_from(["A", "B", "C"]), TEXT),
        "timestamp": TIMESTAMPS,
        "service": TEXT,
        "alert_name": TEXT,
        "severity": TEXT,
        "status": TEXT,
        "description": TEXT,
    }
)


def check_batch(batch: ingest.AlertBatch) -> None:
    assert len(batch.alerts) + len(batch.rejected) == batch.rows_read
    assert list(batch.alerts.columns) == list(contracts.CANONICAL_COLUMNS)
    assert str(batch.alerts["timestamp"].dtype) == "datetime64[us, UTC]"
    assert not batch.alerts["timestamp"].isna().any()
    assert batch.alerts["alert_id"].is_unique
    assert set(batch.alerts["severity"]) <= set(contracts.SEVERITIES)
    assert (batch.rejected["reject_reason"] != "").all()


@settings(deadline=None)
@given(st.lists(st.one_of(TEXT, st.none(), st.integers()), max_size=30))
def test_normalize_severity_is_always_a_known_severity(values: list) -> None:
    out = normalize_severity(pd.Series(values, dtype=object))
    assert len(out) == len(values)
    assert set(out) <= set(contracts.SEVERITIES)


@settings(deadline=None)
@given(st.lists(TEXT, max_size=30))
def test_normalize_status_never_empty(values: list[str]) -> None:
    out = normalize_status(values)
    assert len(out) == len(values)
    assert all(out)
    assert [o for v, o in zip(values, out, strict=True) if not v.strip()] == [
        "firing" for v in values if not v.strip()
    ]


@settings(deadline=None)
@given(st.lists(TIMESTAMPS, max_size=40))
def test_parse_timestamps_is_total(values: list[str]) -> None:
    stamps, reasons = parse_timestamps(pd.Series(values, dtype="str"))
    assert len(stamps) == len(reasons) == len(values)
    assert str(stamps.dtype) == "datetime64[us, UTC]"
    assert (stamps.isna() == (reasons != "")).all()
    ok = stamps.dropna()
    assert ((ok >= ingest.TIMESTAMP_MIN) & (ok <= ingest.TIMESTAMP_MAX)).all()
    assert all(r.startswith(ingest.REASON_PREFIXES[:3]) for r in reasons if r)


@settings(deadline=None)
@given(
    st.integers(
        min_value=int(ingest.TIMESTAMP_MIN.timestamp() * 1e6),
        max_value=int(ingest.TIMESTAMP_MAX.timestamp() * 1e6),
    )
)
def test_epoch_units_round_trip(micros: int) -> None:
    seconds, ms = micros // 1_000_000, micros // 1000
    stamps, _ = parse_timestamps([str(seconds), str(ms), str(micros), str(micros * 1000)])
    expected = pd.Timestamp(micros, unit="us", tz="UTC")
    assert stamps.tolist() == [
        expected.floor("s"),
        expected.floor("ms"),
        expected,
        expected,
    ]


@settings(deadline=None)
@given(st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=20))
def test_derived_ids_are_deterministic_and_unique(rows: list[tuple[str, str]]) -> None:
    frame = pd.DataFrame(rows, columns=["a", "b"], dtype="str")
    ids = derive_alert_ids(frame)
    assert ids.is_unique
    assert ids.tolist() == derive_alert_ids(frame.copy()).tolist()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=400),
        # Plausible headers followed by junk reach the row parser, not just the header check.
        st.binary(max_size=300).map(lambda b: b"timestamp,service,alert_name\n" + b),
        st.binary(max_size=300).map(lambda b: b"\xef\xbb\xbftimestamp;service;alert_name\r\n" + b),
        st.binary(max_size=300).map(
            lambda b: "timestamp,service,alert_name\n".encode("utf-16") + b
        ),
    )
)
def test_random_bytes_give_a_batch_or_an_input_error(data: bytes) -> None:
    try:
        batch = read_alert_source(Source.from_bytes("fuzz.csv", data), SETTINGS)
    except InputError as err:
        message = str(err)
        assert message.startswith("fuzz.csv: ")
        assert "\n" not in message
        return
    check_batch(batch)


# Python's csv writer quotes only the characters of its own line terminator, so a lone "\r"
# in a field is written bare unless the terminator is "\r\n" or every field is quoted (and
# a bare "\r" does end a CSV line).
DIALECTS = st.sampled_from(
    [("\r\n", csv.QUOTE_MINIMAL), ("\n", csv.QUOTE_ALL), ("\r\n", csv.QUOTE_ALL)]
)


def to_csv(rows: list[dict[str, str]], dialect: tuple[str, int]) -> bytes:
    line_end, quoting = dialect
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator=line_end, quoting=quoting)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ROW, max_size=25), DIALECTS)
def test_random_tables_round_trip(rows: list[dict[str, str]], dialect: tuple[str, int]) -> None:
    data = to_csv(rows, dialect)
    batch = read_alert_source(Source.from_bytes("t.csv", data), SETTINGS)
    check_batch(batch)
    assert batch.rows_read == len(rows)
    assert sorted([*batch.alerts["source_row"], *batch.rejected["source_row"]]) == list(
        range(1, len(rows) + 1)
    )
    for row in batch.alerts.itertuples():
        original = rows[row.source_row - 1]
        assert row.service == original["service"].strip()[:64] or len(original["service"]) > 64
        assert row.service and row.alert_name


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ROW, max_size=15), DIALECTS)
def test_robust_reader_matches_fast_reader(
    rows: list[dict[str, str]], dialect: tuple[str, int]
) -> None:
    data = to_csv(rows, dialect)
    source = Source.from_bytes("t.csv", data)
    fast = read_alert_source(source, SETTINGS)
    original = ingest._parse_fast
    ingest._parse_fast = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        robust = read_alert_source(source, SETTINGS)
    finally:
        ingest._parse_fast = original
    pd.testing.assert_frame_equal(fast.alerts, robust.alerts)
    pd.testing.assert_frame_equal(fast.rejected, robust.rejected)


@pytest.mark.parametrize("n", [0, 1, 5])
def test_duplicated_rows_only_differ_in_ids(n: int) -> None:
    data = b"timestamp,service,alert_name\n" + b"2024-01-01,a,X\n" * n
    batch = read_alert_source(Source.from_bytes("d.csv", data), SETTINGS)
    assert batch.alerts["alert_id"].nunique() == n


SOUND = "alert_id,timestamp,service,alert_name\n" + "".join(
    f'{i},2024-01-01T00:00:{i:02d}Z,svc{i},"name, {i}"\n' for i in range(8)
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(SOUND)),
            st.sampled_from(['"', ",", "\n", "\r", "", '""', "\x00", "é", "x"]),
        ),
        max_size=6,
    )
)
def test_damaged_csv_still_accounts_for_every_row(edits: list[tuple[int, str]]) -> None:
    text = SOUND
    for position, replacement in edits:
        text = text[:position] + replacement + text[position + 1 :]
    try:
        batch = read_alert_source(Source.from_bytes("m.csv", text.encode()), SETTINGS)
    except InputError as err:
        assert "\n" not in str(err)
        return
    check_batch(batch)
