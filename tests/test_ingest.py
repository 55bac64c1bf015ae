"""Alert ingestion: the input contract of DESIGN.md §2, file by file and helper by helper."""

from __future__ import annotations

import gzip
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alertclf import contracts
from alertclf.io import alerts as ingest
from alertclf.io.alerts import (
    AlertBatch,
    InputError,
    derive_alert_ids,
    match_columns,
    normalize_alerts,
    normalize_severity,
    normalize_status,
    parse_timestamps,
    read_alert_source,
    read_alerts,
    validate_summary,
)
from alertclf.io.sources import Source, list_sources
from alertclf.settings import Settings

HEADER = "alert_id,timestamp,service,alert_name,severity,status,description"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return path


def read(tmp_path: Path, name: str, content: str | bytes, settings: Settings | None = None):
    return read_alerts(write(tmp_path, name, content), settings or Settings())


def assert_consistent(batch: AlertBatch) -> None:
    """Invariants every batch must satisfy, whatever went in."""
    assert len(batch.alerts) + len(batch.rejected) == batch.rows_read
    assert list(batch.alerts.columns) == list(contracts.CANONICAL_COLUMNS)
    assert str(batch.alerts["timestamp"].dtype) == "datetime64[us, UTC]"
    assert batch.alerts["source_row"].dtype == np.int64
    assert set(batch.alerts["severity"]) <= set(contracts.SEVERITIES)
    assert batch.alerts["alert_id"].is_unique
    assert not batch.alerts["timestamp"].isna().any()
    for column in contracts.CANONICAL_COLUMNS:
        if column not in ("timestamp", "source_row"):
            assert batch.alerts[column].dtype == "str", column
    assert list(batch.rejected.columns[-3:]) == ["source_file", "source_row", "reject_reason"]
    assert (batch.rejected["reject_reason"] != "").all()
    rows = pd.concat([batch.alerts, batch.rejected])[["source_file", "source_row"]]
    assert not rows.duplicated().any()


# --- a file with every kind of bad row ----------------------------------------------------
MIXED = (
    HEADER + "\n"
    "1,2024-03-01T10:00:00Z,api,HighCPU,P1,active,ok row\n"  # row 1 accepted
    "2,,api,HighCPU,warn,,no timestamp\n"  # row 2
    "3,2024-03-01 10:00:01,  ,HighCPU,warn,,blank service\n"  # row 3
    "4,yesterday,api,,x,,two problems\n"  # row 4
    "5,1709287200,api,DiskFull,sev-2,ok,epoch seconds\n"  # row 5 accepted
    "6,1709287200000,db,DiskFull,minor,resolved,epoch millis,EXTRA\n"  # row 6 ragged
    "7,1709287200000,db,DiskFull,minor,resolved\n"  # row 7 ragged (short)
    "1,2024-03-01T10:05:00Z,api,HighCPU,P1,active,dup id\n"  # row 8 duplicate of row 1
    '8,2024-03-01T10:06:00+01:00,web,"Multi\nline, quoted",info,firing,"say ""hi"""\n'  # 9
    "9,1900-01-01T00:00:00Z,api,Old,info,firing,too old\n"  # row 10
    '10,2024-03-01T10:07:00Z,api,"unclosed,info,firing,broken quote\n'  # row 11
    "11,2024-03-01T10:08:00.250Z,cache,Evictions,,,after the broken quote\n"  # row 12 accepted
)


@pytest.fixture
def mixed(tmp_path: Path) -> AlertBatch:
    return read(tmp_path, "mixed.csv", MIXED)


def test_bad_rows_are_rejected_with_their_reasons(mixed: AlertBatch) -> None:
    assert mixed.rows_read == 12
    assert_consistent(mixed)
    reasons = dict(zip(mixed.rejected["source_row"], mixed.rejected["reject_reason"], strict=True))
    assert reasons == {
        2: "missing timestamp",
        3: "empty service",
        4: "unparseable timestamp 'yesterday'; empty alert_name",
        6: "row has 8 fields, header has 7",
        7: "row has 6 fields, header has 7",
        8: f"duplicate alert_id '1' (first at file {mixed.files[0]} row 1)",
        10: "timestamp out of range '1900-01-01T00:00:00Z'",
        11: "unbalanced quote (a quoted field never closes)",
    }
    assert mixed.alerts["source_row"].tolist() == [1, 5, 9, 12]


def test_a_name_of_only_invisible_characters_is_empty(tmp_path: Path) -> None:
    # Zero-width spaces and joiners, BOMs and soft hyphens print as nothing.
    content = (
        "timestamp,service,alert_name\n"
        "2024-03-01T10:00:00Z,\u200b,HighCPU\n"
        "2024-03-01T10:00:01Z,api,\u200b\u200d \ufeff\u00ad\n"
        "2024-03-01T10:00:02Z,api\u200b,HighCPU\n"  # something visible: kept as it is
    )
    batch = read(tmp_path, "invisible.csv", content)
    assert_consistent(batch)
    reasons = dict(zip(batch.rejected["source_row"], batch.rejected["reject_reason"], strict=True))
    assert reasons == {1: "empty service", 2: "empty alert_name"}
    assert batch.alerts["service"].tolist() == ["api\u200b"]


def test_accepted_rows_are_normalised(mixed: AlertBatch) -> None:
    a = mixed.alerts.set_index("source_row")
    assert a.loc[1, "timestamp"] == pd.Timestamp("2024-03-01T10:00:00Z")
    assert a.loc[5, "timestamp"] == pd.Timestamp("2024-03-01T10:00:00Z")
    assert a.loc[9, "timestamp"] == pd.Timestamp("2024-03-01T09:06:00Z")
    assert a.loc[12, "timestamp"] == pd.Timestamp("2024-03-01T10:08:00.250Z")
    assert a["severity"].tolist() == ["critical", "high", "info", "unknown"]
    assert a["status"].tolist() == ["firing", "resolved", "firing", "firing"]
    assert a.loc[9, "alert_name"] == "Multi\nline, quoted"
    assert a.loc[9, "description"] == 'say "hi"'
    assert a.loc[1, "host"] == "" and a.loc[1, "labels"] == ""
    assert a["alert_id"].tolist() == ["1", "5", "8", "11"]


def test_rejected_rows_keep_raw_values(mixed: AlertBatch) -> None:
    r = mixed.rejected.set_index("source_row")
    assert r.loc[3, "service"] == "  "  # as read, not stripped
    assert r.loc[4, "timestamp"] == "yesterday"
    assert r.loc[6, "extra_fields"] == "EXTRA"
    assert r.loc[7, "description"] == ""
    assert r.loc[11, "alert_name"] == '"unclosed'
    assert set(r["source_file"]) == {mixed.files[0]}


def test_fast_and_robust_readers_agree(tmp_path: Path, monkeypatch) -> None:
    content = (
        HEADER + "\n"
        '1,2024-03-01T10:00:00Z,api,"a, b",P1,,"multi\r\nline"\n'
        "\n"  # blank lines are not rows
        '2,2024-03-01T10:00:01Z,api,"say ""x""",P2,,d\n'
        "3,2024-03-01T10:00:02Z,api,c,P3,,\r\n"
        "4,2024-03-01T10:00:03Z,api,d,P3,,last line without newline"
    )
    fast = read(tmp_path, "a.csv", content)
    monkeypatch.setattr(ingest, "_parse_fast", lambda *args, **kwargs: None)
    robust = read(tmp_path, "a.csv", content)
    pd.testing.assert_frame_equal(fast.alerts, robust.alerts)
    assert fast.rows_read == robust.rows_read == 4
    assert fast.alerts["source_row"].tolist() == [1, 2, 3, 4]


def test_ragged_rows_are_set_aside_without_the_slow_reader(tmp_path: Path, monkeypatch) -> None:
    rows = [f"{i},2024-03-01T10:00:{i:02d}Z,api,A{i},P1,,d" for i in range(1, 31)]
    rows[4] += ",surplus"
    rows[20] = "21,2024-03-01T10:00:21Z"
    rows[15] = '16,2024-03-01T10:00:16Z,api,"multi\nline",P1,,d'
    rows.insert(10, "")  # a blank line is not a row
    content = HEADER + "\n" + "\n".join(rows) + "\n"
    robust_calls: list[int] = []
    original = ingest._parse_robust
    monkeypatch.setattr(ingest, "_parse_robust", lambda *a: robust_calls.append(1) or original(*a))
    tolerant = read(tmp_path, "r.csv", content)
    assert robust_calls == []  # pyarrow set the ragged rows aside by itself
    monkeypatch.setattr(ingest, "_parse_fast", lambda *args, **kwargs: None)
    robust = read(tmp_path, "r.csv", content)
    assert robust_calls == [1]
    for batch in (tolerant, robust):
        assert_consistent(batch)
        assert batch.rows_read == 30
        assert batch.rejected["source_row"].tolist() == [5, 21]
        assert batch.rejected["reject_reason"].tolist() == [
            "row has 8 fields, header has 7",
            "row has 2 fields, header has 7",
        ]
        assert batch.rejected["extra_fields"].tolist() == ["surplus", ""]
    pd.testing.assert_frame_equal(tolerant.alerts, robust.alerts)
    pd.testing.assert_frame_equal(tolerant.rejected, robust.rejected)


def test_one_bad_quote_does_not_swallow_the_file(tmp_path: Path) -> None:
    rows = [f"{i},2024-03-01T10:00:{i:02d}Z,api,A{i},P1,,d" for i in range(1, 51)]
    rows[9] = '10,2024-03-01T10:00:10Z,api,"A10,P1,,d'
    batch = read(tmp_path, "q.csv", HEADER + "\n" + "\n".join(rows) + "\n")
    assert_consistent(batch)
    assert batch.rows_read == 50
    assert batch.rejected["source_row"].tolist() == [10]
    assert batch.rejected["reject_reason"].iloc[0].startswith("unbalanced quote")


# --- unusable files ----------------------------------------------------------------------
def test_zero_byte_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.csv", b"")
    with pytest.raises(InputError, match=r"empty\.csv: empty file"):
        read_alerts(path, Settings())


def test_header_only_file_is_an_empty_batch(tmp_path: Path) -> None:
    batch = read(tmp_path, "h.csv", "timestamp,service,alert_name\n")
    assert batch.rows_read == 0
    assert_consistent(batch)
    assert len(batch.rejected) == 0


def test_missing_required_column_names_file_and_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "timestamp,host,alert_name\n2024-01-01,h,A\n")
    with pytest.raises(InputError) as err:
        read_alerts(path, Settings())
    assert (
        str(err.value)
        == f"{path}: missing required column 'service' (found: timestamp, host, alert_name)"
    )


def test_several_missing_columns_are_listed(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "a,b\n1,2\n")
    with pytest.raises(
        InputError,
        match=r"missing required columns 'timestamp', 'service', 'alert_name' \(found: a, b\)",
    ):
        read_alerts(path, Settings())


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("blank.csv", b"\r\n\n   \n", "empty file"),
        ("image.csv", PNG, "binary content"),
        ("random.csv", np.random.default_rng(1).bytes(4096), "binary content"),
        ("nul.csv", b"time\x00stamp,service,alert_name\n1,2,3\n", "binary content"),
        ("bin.csv.gz", gzip.compress(PNG), "binary content"),
        ("broken.csv.gz", b"\x1f\x8b\x08\x00not really gzip", "not a valid gzip file"),
        ("data.json", json.dumps([{"timestamp": 1}]).encode(), "looks like JSON"),
        ("obj.csv", b'{"timestamp": 1, "service": "a"}\n', "looks like JSON"),
        ("page.csv", b"<!DOCTYPE html><html>error</html>", "looks like HTML"),
        ("book.xlsx", b"PK\x03\x04" + bytes(100), "ZIP archive"),
    ],
)
def test_unusable_files_raise_one_line_input_error(
    tmp_path: Path, name: str, content: bytes, problem: str
) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(InputError) as err:
        read_alerts(path, Settings())
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert "\n" not in message


def test_garbage_header_message_is_one_short_line(tmp_path: Path) -> None:
    names = ",".join(f"col\r{i}" if i % 2 else f"c{i}" for i in range(60))
    path = write(tmp_path, "wide.csv", '"' + names.replace(",", '","') + '"\n')
    with pytest.raises(InputError) as err:
        read_alerts(path, Settings())
    assert "\n" not in str(err.value) and "\r" not in str(err.value)
    assert "(60 columns)" in str(err.value)


def test_unreadable_source_is_an_input_error() -> None:
    def fail():
        raise PermissionError(13, "Permission denied")

    with pytest.raises(InputError, match=r"locked\.csv: cannot read file"):
        read_alert_source(Source("locked.csv", fail), Settings())


# --- encodings ---------------------------------------------------------------------------
SIMPLE = "timestamp,service,alert_name,description\n2024-01-01T00:00:00Z,café-api,HighCPU,Größe ✓\n"


@pytest.mark.parametrize(
    ("encoded", "note"),
    [
        (SIMPLE.encode("utf-8"), None),
        (b"\xef\xbb\xbf" + SIMPLE.encode("utf-8"), None),
        (SIMPLE.encode("utf-16"), "decoded as UTF-16"),  # BOM + native order
        (b"\xff\xfe" + SIMPLE.encode("utf-16-le"), "decoded as UTF-16"),
        (b"\xfe\xff" + SIMPLE.encode("utf-16-be"), "decoded as UTF-16"),
        (gzip.compress(SIMPLE.encode("utf-8")), None),
    ],
)
def test_unicode_encodings(tmp_path: Path, encoded: bytes, note: str | None) -> None:
    batch = read(tmp_path, "enc.csv", encoded)
    assert batch.alerts["service"].tolist() == ["café-api"]
    assert batch.alerts["description"].tolist() == ["Größe ✓"]
    assert any(note in n for n in batch.notes) if note else not batch.notes


def test_latin1_falls_back_with_a_note(tmp_path: Path) -> None:
    text = "timestamp,service,alert_name\n2024-01-01T00:00:00Z,café-api,Überlast\n"
    batch = read(tmp_path, "l1.csv", text.encode("latin-1"))
    assert batch.alerts["service"].tolist() == ["café-api"]
    assert batch.alerts["alert_name"].tolist() == ["Überlast"]
    assert batch.notes == ["" + str(tmp_path / "l1.csv") + ": decoded as latin-1 (not valid UTF-8)"]


def test_mostly_utf8_file_with_one_bad_byte_stays_utf8(tmp_path: Path) -> None:
    rows = "".join(f"2024-01-01T00:00:{i:02d}Z,café-{i},Überlast\n" for i in range(20))
    data = ("timestamp,service,alert_name\n" + rows).encode() + b"2024-01-01,bad\xff,X\n"
    batch = read(tmp_path, "u8.csv", data)
    assert batch.alerts["service"].iloc[0] == "café-0"
    assert batch.alerts["service"].iloc[-1] == "bad\ufffd"
    assert any("invalid UTF-8" in n for n in batch.notes)


def test_nul_bytes_inside_fields_are_stripped(tmp_path: Path) -> None:
    data = b"timestamp,service,alert_name\n2024-01-01,ap\x00i,X\x00\n"
    batch = read(tmp_path, "nul.csv", data)
    assert batch.alerts[["service", "alert_name"]].values.tolist() == [["api", "X"]]
    assert any("2 NUL bytes removed" in n for n in batch.notes)


def test_unicode_and_numeric_names_are_kept_as_strings(tmp_path: Path) -> None:
    text = (
        "timestamp,service,alert_name\n"
        "2024-01-01,支付服务,高CPU\n2024-01-01,007,42\n2024-01-01,🚀-svc,0.10\n"
    )
    batch = read(tmp_path, "u.csv", text)
    assert batch.alerts["service"].tolist() == ["支付服务", "007", "🚀-svc"]
    assert batch.alerts["alert_name"].tolist() == ["高CPU", "42", "0.10"]


def test_semicolon_separated_file(tmp_path: Path) -> None:
    batch = read(tmp_path, "s.csv", "timestamp;service;alert_name\n2024-01-01;api;X\n")
    assert batch.alerts["service"].tolist() == ["api"]
    assert any("separated by ';'" in n for n in batch.notes)


# --- columns -----------------------------------------------------------------------------
def test_match_columns_is_case_and_space_insensitive() -> None:
    header = ["\ufeffTimeStamp ", " SERVICE", "Alert Name", "extra", "Severity"]
    assert match_columns(header, {}) == {
        "timestamp": 0,
        "service": 1,
        "alert_name": 2,
        "severity": 4,
    }


def test_match_columns_exact_name_wins_over_alias_and_map() -> None:
    header = ["alertname", "app", "alert_name", "service", "timestamp", "startsAt"]
    mapping = match_columns(header, {"app": "service"})
    assert mapping["alert_name"] == 2
    assert mapping["service"] == 3
    assert mapping["timestamp"] == 4


def test_match_columns_handles_duplicate_names() -> None:
    assert match_columns(["service", "Service", "SERVICE"], {}) == {"service": 0}


def test_match_columns_map_overrides_the_default_meaning() -> None:
    # The user says their "service" column really holds host names.
    mapping = match_columns(["service", "app", "name"], {"service": "host", "app": "service"})
    assert mapping == {"alert_name": 2, "service": 1, "host": 0}


def test_alertmanager_names_via_default_aliases(tmp_path: Path) -> None:
    text = (
        "fingerprint,startsAt,alertname,service,instance,env,message\n"
        "f1,2024-05-01T12:00:00.123456789Z,KubePodCrashLooping,checkout,node-1,prod,crash\n"
    )
    batch = read(tmp_path, "am.csv", text)
    row = batch.alerts.iloc[0]
    assert row["alert_id"] == "f1"
    assert row["timestamp"] == pd.Timestamp("2024-05-01T12:00:00.123456Z")
    assert (row["alert_name"], row["host"], row["environment"]) == (
        "KubePodCrashLooping",
        "node-1",
        "prod",
    )
    assert row["description"] == "crash"
    assert any("'startsAt' read as timestamp" in n for n in batch.notes)


def test_column_map_from_settings(tmp_path: Path) -> None:
    text = "Fired,Job,Rule\n2024-05-01T12:00:00Z,checkout,Latency\n"
    settings = Settings(column_map={"Fired": "timestamp", "job": "SERVICE", "rule": "alert_name"})
    batch = read(tmp_path, "m.csv", text, settings)
    assert batch.alerts[["service", "alert_name"]].values.tolist() == [["checkout", "Latency"]]
    with pytest.raises(InputError, match="missing required column"):
        read(tmp_path, "m.csv", text)


def test_conflicting_columns_are_noted_and_duplicate_headers_survive(tmp_path: Path) -> None:
    text = (
        "timestamp,service,service,alert_name,name,source_row\n2024-01-01,a,b,X,Y,99\n,a,b,X,Y,98\n"
    )
    batch = read(tmp_path, "d.csv", text)
    assert batch.alerts[["service", "alert_name"]].values.tolist() == [["a", "X"]]
    assert batch.alerts["source_row"].tolist() == [1]
    assert any("'name' ignored" in n for n in batch.notes)
    # Rejected rows keep every raw column under a unique name.
    assert list(batch.rejected.columns) == [
        "timestamp",
        "service",
        "service.1",
        "alert_name",
        "name",
        "source_row.1",
        "source_file",
        "source_row",
        "reject_reason",
    ]
    assert batch.rejected["service.1"].tolist() == ["b"]
    assert batch.rejected["source_row"].tolist() == [2]


def test_description_falls_back_to_summary(tmp_path: Path) -> None:
    text = (
        "timestamp,service,alert_name,summary,description\n"
        "2024-01-01,a,X,sum1,desc1\n2024-01-01,a,X,sum2,\n"
    )
    batch = read(tmp_path, "s.csv", text)
    assert batch.alerts["description"].tolist() == ["desc1", "sum2"]


def test_labels_are_kept_as_raw_text_even_if_not_json(tmp_path: Path) -> None:
    text = (
        "timestamp,service,alert_name,labels\n"
        '2024-01-01,a,X,"{""team"": ""core""}"\n2024-01-01,a,X,{broken\n'
    )
    batch = read(tmp_path, "l.csv", text)
    assert batch.alerts["labels"].tolist() == ['{"team": "core"}', "{broken"]


# --- values ------------------------------------------------------------------------------
SEVERITY_SPELLINGS = {
    "critical": "critical CRIT Fatal emergency emerg alert P1 sev1 SEV-1 |Sev 1| s1 1 | p0 |",
    "high": "high Major error ERR p2 sev2 s2 2",
    "warning": "warning WARN medium moderate p3 sev_3 S3 3",
    "low": "low minor P4 sev4 s4 4",
    "info": "info Informational notice debug ok p5 sev5 s5 5 none",
    "unknown": "|| |  | banana 6 p9 sev-10",
}


def spellings(table: dict[str, str]) -> list[tuple[str, str]]:
    """(raw, expected) pairs; |...| quotes a spelling with spaces (or an empty one)."""
    pairs = []
    for expected, text in table.items():
        quoted = text.split("|")
        for i, chunk in enumerate(quoted):
            raws = [chunk] if i % 2 else chunk.split()
            pairs += [(raw, expected) for raw in raws]
    return pairs


@pytest.mark.parametrize(("raw", "expected"), spellings(SEVERITY_SPELLINGS))
def test_normalize_severity(raw: str, expected: str) -> None:
    assert normalize_severity(pd.Series([raw])).tolist() == [expected]


def test_normalize_severity_keeps_length_and_handles_missing() -> None:
    out = normalize_severity(pd.Series(["P1", None, np.nan, "warn"], dtype=object))
    assert out.tolist() == ["critical", "unknown", "unknown", "warning"]
    assert normalize_severity(pd.Series([], dtype="str")).tolist() == []


STATUS_SPELLINGS = {
    "firing": "firing || ACTIVE alerting triggered Problem",
    "resolved": "resolved OK closed cleared Recovered",
    "suppressed": "Suppressed",
}


@pytest.mark.parametrize(("raw", "expected"), spellings(STATUS_SPELLINGS))
def test_normalize_status(raw: str, expected: str) -> None:
    assert normalize_status([raw]).tolist() == [expected]


def test_parse_timestamps_formats() -> None:
    values = [
        "2024-03-01T10:00:00Z",  # ISO with Z
        "2024-03-01 10:00:00",  # space, naive = UTC
        "2024-03-01T12:00:00+02:00",  # offset
        "2024-03-01T10:00:00.500",  # fractional
        "2024-03-01T10:00:00.123456789Z",  # nanoseconds (kept to the microsecond)
        "1709287200",  # epoch seconds
        "1709287200.5",  # fractional epoch seconds
        "1709287200000",  # epoch ms
        "1709287200000000",  # epoch µs
        "1709287200000000000",  # epoch ns
        "2024-03-01",  # date only
        "2024-03-01t10:00:00z",  # lower-case
        "2024/03/01 10:00:00",  # slashes, year first
        "2024-03-01 10:00:00 UTC",  # trailing zone word
        "2024-03-01T10:00:00,5Z",  # comma decimal
        "Fri, 01 Mar 2024 10:00:00 +0000",  # RFC 2822
        "1.7092872e9",  # spreadsheet scientific notation
    ]
    stamps, reasons = parse_timestamps(pd.Series(values))
    assert str(stamps.dtype) == "datetime64[us, UTC]"
    assert (reasons == "").all(), reasons.tolist()
    ten = pd.Timestamp("2024-03-01T10:00:00Z")
    assert stamps.tolist() == [
        ten,
        ten,
        ten,
        ten + pd.Timedelta("500ms"),
        ten + pd.Timedelta("123456us"),
        ten,
        ten + pd.Timedelta("500ms"),
        ten,
        ten,
        ten,
        pd.Timestamp("2024-03-01T00:00:00Z"),
        ten,
        ten,
        ten,
        ten + pd.Timedelta("500ms"),
        ten,
        ten,
    ]


def test_parse_timestamps_rejections() -> None:
    long_value = "x" * 100
    values = [
        "",
        "   ",
        "null",
        "N/A",
        "soon",
        "2024-13-45",
        long_value,
        "1900-01-01",
        "2300-01-01T00:00:00Z",
        "-5",
        "12",
        "99999999999999999999999",
        "1980-01-01T00:00:00Z",
        "2200-01-01T00:00:00Z",
        "2200-01-01T00:00:01Z",
    ]
    stamps, reasons = parse_timestamps(values)
    assert reasons.tolist() == [
        "missing timestamp",
        "missing timestamp",
        "missing timestamp",
        "missing timestamp",
        "unparseable timestamp 'soon'",
        "unparseable timestamp '2024-13-45'",
        "unparseable timestamp '" + "x" * 40 + "…'",
        "timestamp out of range '1900-01-01'",
        "timestamp out of range '2300-01-01T00:00:00Z'",
        "timestamp out of range '-5'",
        "timestamp out of range '12'",
        "timestamp out of range '99999999999999999999999'",
        "",
        "",
        "timestamp out of range '2200-01-01T00:00:01Z'",
    ]
    assert stamps.isna().tolist() == [r != "" for r in reasons]


def test_mixed_timestamp_formats_in_one_file(tmp_path: Path) -> None:
    text = (
        "timestamp,service,alert_name\n"
        "2024-03-01T10:00:00Z,a,X\n1709287260,a,X\n1709287320000,a,X\n"
        "2024-03-01 10:03:00+00:00,a,X\nnot a date,a,X\n"
    )
    batch = read(tmp_path, "t.csv", text)
    minutes = (
        batch.alerts["timestamp"] - pd.Timestamp("2024-03-01T10:00:00Z")
    ).dt.total_seconds() / 60
    assert minutes.tolist() == [0, 1, 2, 3]
    assert batch.rejected["reject_reason"].tolist() == ["unparseable timestamp 'not a date'"]


def test_huge_fields_are_truncated_and_counted(tmp_path: Path) -> None:
    big = "y" * 20_000
    text = (
        "timestamp,service,alert_name,description\n"
        f"2024-01-01,a,X,{big}\n2024-01-01,a,{big},{big}\n"
    )
    batch = read(tmp_path, "big.csv", text, Settings(max_field_chars=1000))
    assert batch.alerts["description"].str.len().tolist() == [1000, 1000]
    assert batch.alerts["alert_name"].str.len().tolist() == [1, 1000]
    assert any("3 fields truncated to 1000 chars" in n for n in batch.notes)


def test_huge_field_beyond_parser_block(tmp_path: Path) -> None:
    big = "z" * (6 << 20)  # longer than pyarrow's block: the robust reader takes over
    text = f"timestamp,service,alert_name,description\n2024-01-01,a,X,{big}\n2024-01-02,b,Y,small\n"
    batch = read(tmp_path, "huge.csv", text)
    assert batch.rows_read == 2
    assert batch.alerts["description"].str.len().tolist() == [10_000, 5]


def test_ragged_row_with_a_field_over_the_csv_module_limit_is_rejected(tmp_path: Path) -> None:
    # Found by the fuzz suite: a row cut short (too few fields) that holds a field over
    # the csv module's 128 KiB limit crashed the reader instead of being rejected.
    big = "x" * 200_000
    text = f"timestamp,service,alert_name,description\n2024-01-01,a,X,ok\n2024-01-02,{big}\n"
    batch = read(tmp_path, "ragged.csv", text)
    assert batch.rows_read == 2
    assert batch.alerts["service"].tolist() == ["a"]
    assert len(batch.rejected) == 1
    assert batch.rejected["reject_reason"].iloc[0] == "row has 2 fields, header has 4"


# --- ids ---------------------------------------------------------------------------------
def test_derived_ids_are_stable_and_distinct_for_identical_rows(tmp_path: Path) -> None:
    row = "2024-01-01T00:00:00Z,api,HighCPU,warning\n"
    text = (
        "timestamp,service,alert_name,severity\n"
        + row * 3
        + "2024-01-01T00:00:01Z,api,HighCPU,warning\n"
    )
    first = read(tmp_path, "x.csv", text)
    second = read(tmp_path, "x.csv", text)
    ids = first.alerts["alert_id"].tolist()
    assert ids == second.alerts["alert_id"].tolist()
    assert len(set(ids)) == 4
    assert all(i.startswith("a") and len(i) == 17 for i in ids)
    # Column order and extra columns do not change the derived id.
    other = (
        "severity,extra,alert_name,service,timestamp\n"
        "warning,zzz,HighCPU,api,2024-01-01T00:00:00Z\n"
    )
    assert read(tmp_path, "y.csv", other).alerts["alert_id"].tolist() == [ids[0]]


def test_empty_explicit_id_gets_a_derived_one(tmp_path: Path) -> None:
    text = "alert_id,timestamp,service,alert_name\nA1,2024-01-01,a,X\n ,2024-01-01,a,X\n"
    ids = read(tmp_path, "x.csv", text).alerts["alert_id"].tolist()
    assert ids[0] == "A1" and ids[1].startswith("a") and len(ids[1]) == 17


def test_derive_alert_ids_helper() -> None:
    frame = pd.DataFrame({"a": ["x", "x", "y", "x"], "b": ["1", "1", "1", "1"]})
    ids = derive_alert_ids(frame)
    assert ids.tolist()[0] != ids.tolist()[1]
    assert len(set(ids)) == 4
    assert derive_alert_ids(frame.iloc[:1]).tolist() == ids.tolist()[:1]
    assert derive_alert_ids(frame).tolist() == ids.tolist()
    # ("ab", "c") and ("a", "bc") are different content.
    split = pd.DataFrame({"a": ["ab", "a"], "b": ["c", "bc"]})
    assert len(set(derive_alert_ids(split))) == 2


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(
        folder,
        "1.csv",
        "alert_id,timestamp,service,alert_name\nA,2024-01-01,a,X\nB,2024-01-01,a,X\n",
    )
    write(
        folder,
        "2.csv",
        "alert_id,timestamp,service,alert_name\nB,2024-01-02,a,X\nC,2024-01-02,a,X\n",
    )
    batch = read_alerts(folder, Settings())
    assert_consistent(batch)
    assert batch.alerts["alert_id"].tolist() == ["A", "B", "C"]
    assert batch.rejected["reject_reason"].tolist() == [
        f"duplicate alert_id 'B' (first at file {folder / '1.csv'} row 2)"
    ]
    assert batch.rejected["source_file"].tolist() == [str(folder / "2.csv")]


def test_an_invalid_first_copy_does_not_block_a_valid_later_one(tmp_path: Path) -> None:
    text = "alert_id,timestamp,service,alert_name\nA,,a,X\nA,2024-01-01,a,X\nA,2024-01-02,a,X\n"
    batch = read(tmp_path, "x.csv", text)
    assert batch.alerts["source_row"].tolist() == [2]
    assert batch.rejected["reject_reason"].tolist() == [
        "missing timestamp",
        f"duplicate alert_id 'A' (first at file {tmp_path / 'x.csv'} row 2)",
    ]


# --- the pure normaliser -----------------------------------------------------------------
def test_normalize_alerts_is_pure_and_uses_given_row_numbers() -> None:
    raw = pd.DataFrame(
        {"ts": ["2024-01-01", "bad"], "svc": ["a", "b"], "alertname": ["X", "Y"]}, dtype="str"
    )
    settings = Settings(column_map={"ts": "timestamp", "svc": "service"})
    accepted, rejected = normalize_alerts(raw, settings, "mem.csv", source_rows=[7, 9])
    assert accepted["source_row"].tolist() == [7]
    assert accepted["source_file"].tolist() == ["mem.csv"]
    assert rejected.to_dict("records") == [
        {
            "ts": "bad",
            "svc": "b",
            "alertname": "Y",
            "source_file": "mem.csv",
            "source_row": 9,
            "reject_reason": "unparseable timestamp 'bad'",
        },
    ]
    with pytest.raises(
        InputError,
        match=r"mem\.csv: missing required column 'service' \(found: ts, svc, alertname\)",
    ):
        normalize_alerts(raw, Settings(), "mem.csv")


def test_normalize_alerts_on_empty_frame() -> None:
    raw = pd.DataFrame({c: pd.Series([], dtype="str") for c in contracts.REQUIRED_COLUMNS})
    accepted, rejected = normalize_alerts(raw, Settings(), "e.csv")
    assert accepted.empty and rejected.empty
    assert list(accepted.columns) == list(contracts.CANONICAL_COLUMNS)
    assert str(accepted["timestamp"].dtype) == "datetime64[us, UTC]"


# --- sources -----------------------------------------------------------------------------
def test_list_sources_file_folder_glob(tmp_path: Path) -> None:
    for name in ["b.csv", "a.csv", "c.csv.gz", "notes.txt", "D.CSV", ".a.csv.swp", "._b.csv"]:
        write(tmp_path, name, "x")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "e.csv", "x")
    names = [Path(s.name).name for s in list_sources(tmp_path)]
    assert names == ["D.CSV", "a.csv", "b.csv", "c.csv.gz"]
    assert [s.name for s in list_sources(tmp_path / "a.csv")] == [str(tmp_path / "a.csv")]
    assert [Path(s.name).name for s in list_sources(str(tmp_path / "*.csv"))] == ["a.csv", "b.csv"]
    assert [Path(s.name).name for s in list_sources(str(tmp_path / "**" / "e.csv"))] == ["e.csv"]
    with list_sources(tmp_path / "a.csv")[0].open() as handle:
        assert handle.read() == b"x"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_is_read_once_like_a_file(tmp_path: Path) -> None:
    # As ``--alerts <(curl ...)`` passes it: a pipe can be opened only once.
    pipe = tmp_path / "alerts.csv"
    os.mkfifo(pipe)
    content = b"timestamp,service,alert_name\n2024-03-01T10:00:00Z,api,HighCPU\n"
    writer = threading.Thread(target=pipe.write_bytes, args=(content,))
    writer.start()
    (source,) = list_sources(pipe)
    writer.join()
    for _ in range(2):
        with source.open() as handle:
            assert handle.read() == content


@pytest.mark.parametrize("where", ["missing.csv", "empty_dir", "nothing*.csv"])
def test_list_sources_nothing_found_names_the_location(tmp_path: Path, where: str) -> None:
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match=str(tmp_path / where).replace("*", r"\*")):
        list_sources(tmp_path / where)


def test_read_alerts_folder_concatenates_in_name_order(tmp_path: Path) -> None:
    write(tmp_path, "2.csv", "timestamp,service,alert_name\n2024-01-02,b,Y\n,b,Y\n")
    write(tmp_path, "1.csv.gz", gzip.compress(b"TIMESTAMP,Service,Alertname\n2024-01-01,a,X\n"))
    write(tmp_path, "3.csv", "timestamp,service,alert_name,host\n")
    batch = read_alerts(tmp_path, Settings())
    assert_consistent(batch)
    assert batch.files == [str(tmp_path / n) for n in ["1.csv.gz", "2.csv", "3.csv"]]
    assert batch.rows_read == 3
    assert batch.alerts["service"].tolist() == ["a", "b"]
    assert batch.rejected["source_file"].tolist() == [str(tmp_path / "2.csv")]


def test_read_alerts_accepts_ready_made_sources() -> None:
    sources = [Source.from_bytes("blob/a.csv", b"timestamp,service,alert_name\n2024-01-01,a,X\n")]
    batch = read_alerts(sources, Settings())
    assert batch.alerts["source_file"].tolist() == ["blob/a.csv"]


# --- summary and logging -----------------------------------------------------------------
def test_validate_summary(mixed: AlertBatch) -> None:
    summary = validate_summary(mixed)
    json.dumps(summary)  # JSON-ready
    assert (summary["rows_read"], summary["rows_accepted"], summary["rows_rejected"]) == (12, 4, 8)
    assert summary["counts_add_up"] is True
    assert summary["reject_reasons"] == {
        "wrong number of fields": 2,
        "duplicate alert_id": 1,
        "empty alert_name": 1,
        "empty service": 1,
        "missing timestamp": 1,
        "timestamp out of range": 1,
        "unbalanced quote": 1,
        "unparseable timestamp": 1,
    }
    assert summary["time_span"]["first"] == "2024-03-01T09:06:00+00:00"
    assert summary["time_span"]["last"] == "2024-03-01T10:08:00.250000+00:00"
    assert summary["services"] == {"count": 3, "top": [["api", 2], ["cache", 1], ["web", 1]]}
    assert summary["files"] == mixed.files
    assert len(summary["reject_examples"]) == 8


def test_reasons_split_even_when_a_value_contains_the_separator() -> None:
    reason = "unparseable timestamp 'a; b'; empty service"
    assert ingest.split_reasons(reason) == ["unparseable timestamp 'a; b'", "empty service"]


def test_progress_is_logged_not_printed(tmp_path: Path, caplog, capsys) -> None:
    with caplog.at_level(logging.INFO, logger="alertclf.io.alerts"):
        read(tmp_path, "x.csv", "timestamp,service,alert_name\n2024-01-01,a,X\n")
    assert "1 rows read, 1 accepted, 0 rejected" in caplog.text
    assert capsys.readouterr().out == ""


def test_a_latin1_line_in_a_utf8_export_garbles_neither(tmp_path: Path) -> None:
    """Concatenated exports: one UTF-8 name and one latin-1 line each decode as what they
    are (the whole file as latin-1 turned café into cafÃ©)."""
    data = (
        "timestamp,service,alert_name\n2024-01-01T00:00:00Z,café-api,HighCPU\n".encode()
        + "2024-01-01T00:00:01Z,münchen-db,Überlast\n".encode("latin-1")
        + b"2024-01-01T00:00:02Z,api,X\n"
    )
    batch = read(tmp_path, "mixed.csv", data)
    assert batch.alerts["service"].tolist() == ["café-api", "münchen-db", "api"]
    assert batch.alerts["alert_name"].tolist() == ["HighCPU", "Überlast", "X"]
    assert batch.notes == [
        f"{tmp_path / 'mixed.csv'}: 1 lines not valid UTF-8 decoded as latin-1 (lines 3)"
    ]
