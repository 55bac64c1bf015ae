"""Bad input, fuzzed: hostile alert CSVs, hostile graphs and the command line on both.

Every input is either processed or refused with one clear line naming the file; never a
bare traceback; ``accepted + rejected == rows read`` always, and ``rows read`` equals the
data records written wherever the generator knows that number.

What this adds to ``test_ingest_properties.py`` (which fuzzes single UTF-8 tables and raw
bytes): files composed of several hostile ingredients at once -- encodings (UTF-8, BOM,
UTF-16, latin-1), header variants (case, padding, duplicated and missing columns, unknown
columns in any order), timestamps in mixed formats and zones with an exact expected
instant per row (ISO with offsets, naive, epoch s/ms, RFC 2822, far past and future), NUL
bytes, 1 MB fields, duplicate ids, numeric service names, truncation at any byte -- with a
per-row oracle; a corpus of real and broken files; graphs with self-loops, cycles,
dangling edges, isolated nodes, odd JSON shapes and 50,000 nodes; and the CLI on all of it.
"""

from __future__ import annotations

import csv
import email.utils
import io
import json
import os
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import networkx as nx
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertclf import tracking
from alertclf.cli import main
from alertclf.flows import retrain
from alertclf.graph import GraphError, graph_features, load_graph, synthetic_layered_graph
from alertclf.io.alerts import TIMESTAMP_MAX, TIMESTAMP_MIN, InputError, read_alert_source
from alertclf.io.alerts import read_alerts as read_alert_files
from alertclf.io.sources import Source
from alertclf.pipeline import GraphContext
from alertclf.settings import Settings
from alertclf.simulate import SimulationConfig, simulate, write_simulation

# Each test decides its own MLflow store; nothing leaks through the environment.
pytestmark = pytest.mark.usefixtures("isolated_tracking")

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
SETTINGS = Settings()  # production limits: 10,000-character fields
FAST = {"algorithm": "kmeans", "kmeans_k_min": 4, "kmeans_k_max": 8}
HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
MEGABYTE = 1 << 20


# --- hostile alert tables ------------------------------------------------------------------------
FIELDS = ("alert_id", "timestamp", "service", "alert_name", "severity", "status", "description")
REQUIRED = ("timestamp", "service", "alert_name")
EXTRA_COLUMNS = ("region", "x_notes", "Ticket Ref")  # no contract name, no alias
ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "latin-1")
# Python's csv writer quotes a lone CR only when it is part of the line terminator or
# every field is quoted (see test_ingest_properties.DIALECTS).
DIALECTS = (("\r\n", csv.QUOTE_MINIMAL), ("\n", csv.QUOTE_ALL), ("\r\n", csv.QUOTE_ALL))
NUMERIC_SERVICES = ("007", "42", "3.14", "-1", "1e3", "0", "+5", "12345678901234567890")
# ASCII with the characters that break naive CSV code; latin-1 only adds letters that can
# never form valid UTF-8 (so the reader's encoding guess is certain); UTF-8/16 add more.
ASCII_TEXT = "abcXYZ019 ,;\"'|=+-@\t\n_.:/\\"
LATIN1_TEXT = ASCII_TEXT + "éèü"
WIDE_TEXT = LATIN1_TEXT + "—日本ß€"


@dataclass
class Stamp:
    text: str
    kind: str  # "ok" | "out_of_range" | "garbage" | "missing"
    instant: pd.Timestamp | None = None  # the UTC instant a correct reader must find
    tolerance_us: int = 0


@dataclass
class Hostile:
    """A generated file, and what a correct reader must make of it."""

    data: bytes
    ingredients: set[str]
    rows: list[dict[str, str]] = field(default_factory=list)  # field -> raw value, per row
    stamps: list[Stamp] = field(default_factory=list)
    missing_required: str | None = None
    truncated: bool = False
    junk: bool = False  # a body of random bytes: nothing is known about its rows

    @property
    def known_rows(self) -> int | None:
        return None if (self.truncated or self.junk) else len(self.rows)

    def __repr__(self) -> str:
        # A 1 MB field would make every failure report megabytes long.
        head = self.data[:400] + (b"..." if len(self.data) > 400 else b"")
        return (
            f"Hostile({len(self.data)} bytes: {head!r}, ingredients={sorted(self.ingredients)}, "
            f"rows={len(self.rows)}, stamps={[s.text for s in self.stamps]}, "
            f"missing={self.missing_required}, truncated={self.truncated}, junk={self.junk})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # hypothesis prints failing examples with this


@st.composite
def stamps(draw: st.DrawFn) -> Stamp:
    kind = draw(
        st.sampled_from(
            ["iso_z", "iso_offset", "naive", "epoch_s", "epoch_ms", "rfc2822", "far", "bad"]
        )
    )
    if kind == "far":
        text = draw(
            st.sampled_from(
                [
                    "1800-01-01T00:00:00Z",
                    "0001-01-01T00:00:00",
                    "1969-12-31T23:59:59Z",
                    "2200-01-02T00:00:00+00:00",
                    "9999-12-31T23:59:59Z",
                    "-1",
                    "32503680000000",  # year 3000 in milliseconds
                    "99999999999999999999999",
                ]
            )
        )
        # Some far values are not even parseable; either way the row must be rejected.
        return Stamp(text, "out_of_range")
    if kind == "bad":
        text = draw(
            st.sampled_from(["", "null", "N/A", "yesterday", "2024-02-30", "25:00", "1e400"])
        )
        return Stamp(text, "missing" if text.lower() in ("", "null", "n/a") else "garbage")
    instant = pd.Timestamp(
        draw(
            st.datetimes(
                min_value=datetime(1981, 1, 1),
                max_value=datetime(2199, 12, 31),
                timezones=st.none(),
            )
        ),
        tz="UTC",
    ).floor("us")
    if kind == "iso_z":
        return Stamp(instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "ok", instant)
    if kind == "iso_offset":
        minutes = draw(st.integers(-12 * 4, 14 * 4)) * 15
        local = instant.tz_convert(timezone(timedelta(minutes=minutes)))
        return Stamp(local.isoformat(), "ok", instant)
    if kind == "naive":
        return Stamp(instant.strftime("%Y-%m-%d %H:%M:%S"), "ok", instant.floor("s"))
    seconds = (instant - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    if kind == "epoch_s":
        return Stamp(str(seconds), "ok", instant.floor("s"))
    if kind == "epoch_ms":
        millis = (instant - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
        return Stamp(str(millis), "ok", instant.floor("ms"))
    moment = instant.floor("s").to_pydatetime()
    return Stamp(email.utils.format_datetime(moment), "ok", instant.floor("s"))


def header_name(draw: st.DrawFn, name: str) -> str:
    """A spelling the reader must still recognise: case and padding only."""
    style = draw(st.sampled_from(["same", "upper", "title", "padded"]))
    return {
        "same": name,
        "upper": name.upper(),
        "title": name.title(),
        "padded": f"  {name} ",
    }[style]


@st.composite
def hostile_tables(draw: st.DrawFn, allow_junk: bool = True) -> Hostile:
    encoding = draw(st.sampled_from(ENCODINGS))
    alphabet = {"latin-1": LATIN1_TEXT}.get(encoding, WIDE_TEXT)
    ingredients = {f"encoding {encoding}"}
    text = st.text(alphabet=alphabet, max_size=10)

    # Columns: every field (maybe one required dropped), extras, duplicates, any order.
    fields = list(FIELDS)
    missing = None
    if draw(st.integers(0, 9)) == 0:
        missing = draw(st.sampled_from(REQUIRED))
        fields.remove(missing)
        ingredients.add("missing header")
    columns: list[tuple[str, str]] = [(header_name(draw, f), f) for f in fields]
    for extra in draw(st.lists(st.sampled_from(EXTRA_COLUMNS), max_size=2, unique=True)):
        columns.append((extra, "extra"))
    duplicated = draw(st.lists(st.sampled_from(fields), max_size=2, unique=True))
    if duplicated:
        ingredients.add("duplicate headers")
    columns = draw(st.permutations(columns))
    # Duplicates go after their first copy: the leftmost exact name is the one read.
    for name in duplicated:
        first = next(i for i, (_, f) in enumerate(columns) if f == name)
        at = draw(st.integers(first + 1, len(columns)))
        columns.insert(at, (header_name(draw, name), f"dup:{name}"))

    n_rows = draw(st.integers(0, 12))
    huge_row = draw(st.integers(0, n_rows)) if n_rows and draw(st.integers(0, 7)) == 0 else None
    rows: list[dict[str, str]] = []
    row_stamps: list[Stamp] = []
    for i in range(n_rows):
        stamp = draw(stamps())
        service = draw(
            st.one_of(
                st.sampled_from(NUMERIC_SERVICES),
                text,
                st.sampled_from(["api", "db", "  padded-svc  ", ""]),
            )
        )
        if service in NUMERIC_SERVICES:
            ingredients.add("numeric service names")
        alert_id = draw(
            st.one_of(st.sampled_from(["A1", "A2", "A3"]), st.just(f"u{i}"), st.just(""))
        )
        row = {
            "alert_id": alert_id,
            "timestamp": stamp.text,
            "service": service,
            "alert_name": draw(st.one_of(st.sampled_from(["HighCPU", "DiskFull", ""]), text)),
            "severity": draw(st.sampled_from(["P1", "sev2", "warning", "", "weird"])),
            "status": draw(st.sampled_from(["firing", "resolved", "", "ALARM"])),
            "description": draw(text),
        }
        if draw(st.integers(0, 9)) == 0:
            key = draw(st.sampled_from(["service", "description", "alert_name"]))
            cut = draw(st.integers(0, len(row[key])))
            row[key] = row[key][:cut] + "\x00" + row[key][cut:]
            ingredients.add("NUL bytes")
        if i == huge_row:
            row["description"] = "x" * MEGABYTE
            ingredients.add("1 MB field")
        rows.append(row)
        row_stamps.append(stamp)
    if any(r["alert_id"] in ("A1", "A2", "A3") for r in rows):
        ingredients.add("duplicate ids")
    kinds = {s.kind for s in row_stamps}
    if len(kinds) > 1 or len({s.text[:4].isdigit() for s in row_stamps}) > 1:
        ingredients.add("mixed timestamps")
    if "out_of_range" in kinds:
        ingredients.add("far past/future")

    line_end, quoting = draw(st.sampled_from(DIALECTS))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=line_end, quoting=quoting)
    writer.writerow([name for name, _ in columns])
    for row in rows:
        values = []
        for _, kind in columns:
            if kind == "extra":
                values.append("extra")
            elif kind.startswith("dup:"):
                values.append("second copy")  # never the value read
            else:
                values.append(row[kind])
        writer.writerow(values)
    data = out.getvalue().encode(encoding)
    hostile = Hostile(data, ingredients, rows, row_stamps, missing)

    if allow_junk and draw(st.integers(0, 9)) == 0:
        body = draw(st.binary(max_size=300))
        hostile.data = data[: data.find(b"\n") + 1] + body if b"\n" in data else body
        hostile.junk = True
        hostile.ingredients.add("random bytes")
    elif draw(st.integers(0, 5)) == 0 and len(data) > 1:
        hostile.data = data[: draw(st.integers(1, len(data) - 1))]
        hostile.truncated = True
        hostile.ingredients.add("truncated")
    return hostile


def expected_value(raw: str, limit: int = SETTINGS.max_field_chars) -> str:
    """What the reader keeps of a raw text value: NULs dropped, truncated, then stripped."""
    return raw.replace("\x00", "")[:limit].strip()


def check_accounting(batch, name: str) -> None:
    assert len(batch.alerts) + len(batch.rejected) == batch.rows_read
    assert batch.alerts["alert_id"].is_unique
    assert not batch.alerts["timestamp"].isna().any()
    ts = batch.alerts["timestamp"]
    assert ((ts >= TIMESTAMP_MIN) & (ts <= TIMESTAMP_MAX)).all()
    assert (batch.rejected["reject_reason"] != "").all()
    rows = [
        *zip(batch.alerts["source_file"], batch.alerts["source_row"], strict=True),
        *zip(batch.rejected["source_file"], batch.rejected["source_row"], strict=True),
    ]
    assert len(rows) == len(set(rows)), f"{name}: a row was counted twice"


def check_refusal(err: InputError, name: str) -> str:
    message = str(err)
    assert message.startswith(f"{name}: "), message
    assert "\n" not in message and len(message) < 400, message
    return message


def check_oracle(batch, hostile: Hostile) -> None:
    """Row by row: the right rows accepted, with the right values; the rest rejected for
    the right reason."""
    accepted = {int(r): i for i, r in enumerate(batch.alerts["source_row"])}
    rejected = dict(
        zip(batch.rejected["source_row"].astype(int), batch.rejected["reject_reason"], strict=True)
    )
    ids_taken: set[str] = set()
    for number, (row, stamp) in enumerate(zip(hostile.rows, hostile.stamps, strict=True), 1):
        service = expected_value(row["service"])
        name = expected_value(row["alert_name"])
        problems = []
        if stamp.kind != "ok":
            problems.append("timestamp")
        if not service:
            problems.append("empty service")
        if not name:
            problems.append("empty alert_name")
        if problems:
            reason = rejected[number]
            for problem in problems:
                assert problem in reason, (number, problem, reason)
            continue
        alert_id = expected_value(row["alert_id"])
        if alert_id and alert_id in ids_taken:
            assert rejected[number].startswith(f"duplicate alert_id '{alert_id}'"), number
            continue
        if alert_id:
            ids_taken.add(alert_id)
        assert number in accepted, (number, row, rejected.get(number))
        got = batch.alerts.iloc[accepted[number]]
        assert got["service"] == service
        assert got["alert_name"] == name
        if alert_id:
            assert got["alert_id"] == alert_id
        assert abs((got["timestamp"] - stamp.instant) // pd.Timedelta(microseconds=1)) <= (
            stamp.tolerance_us
        ), (stamp.text, got["timestamp"], stamp.instant)


@settings(HYPOTHESIS, max_examples=120)
@given(hostile=hostile_tables())
def test_hostile_csv_is_read_or_refused_and_every_row_accounted_for(
    hostile: Hostile, reliability
) -> None:
    case = reliability(
        "fuzz.csv_hostile_tables",
        "hypothesis: alert CSVs composed of encodings (UTF-8, BOM, UTF-16, latin-1), header "
        "case/padding, duplicated/missing/unknown columns in any order, mixed timestamps "
        "(ISO with zones, naive, epoch s/ms, RFC 2822, far past/future, garbage), NUL bytes, "
        "1 MB fields, duplicate ids, numeric service names, random-byte bodies and "
        "truncation at any byte; per-row oracle (value, instant, reject reason)",
    )
    case.add(examples=1)
    try:
        batch = read_alert_source(Source.from_bytes("hostile.csv", hostile.data), SETTINGS)
    except InputError as err:
        message = check_refusal(err, "hostile.csv")
        case.add(refused=1)
        if hostile.missing_required and not (hostile.junk or hostile.truncated):
            assert "missing required column" in message
        else:
            # Only a file whose header itself is broken may be refused.
            assert hostile.junk or hostile.truncated, message
        return
    assert hostile.missing_required is None or hostile.junk or hostile.truncated
    check_accounting(batch, "hostile.csv")
    case.add(alerts_in=batch.rows_read, alerts_accounted=len(batch.alerts) + len(batch.rejected))
    if hostile.known_rows is not None:
        assert batch.rows_read == hostile.known_rows
        check_oracle(batch, hostile)
    if hostile.known_rows is not None and "1 MB field" in hostile.ingredients:
        assert any("truncated" in note for note in batch.notes)


@settings(HYPOTHESIS, max_examples=40)
@given(hostile=hostile_tables(allow_junk=False))
def test_hostile_csv_files_on_disk_are_named_in_every_refusal(
    hostile: Hostile, tmp_path_factory, reliability
) -> None:
    """The same through ``read_alerts`` on real files in a folder, several at once (ids
    must stay unique across files)."""
    case = reliability(
        "fuzz.csv_hostile_folders",
        "hypothesis: the hostile tables above written as files, read as a folder of three "
        "(the file, a copy with the same rows, and a clean file); refusals name the path",
    )
    case.add(examples=1)
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "a.csv").write_bytes(hostile.data)
    (folder / "b.csv").write_bytes(hostile.data)
    (folder / "c.csv").write_bytes(b"timestamp,service,alert_name\n2024-01-01T00:00:00Z,api,X\n")
    try:
        batch = read_alert_files(folder, SETTINGS)
    except InputError as err:
        message = str(err)
        assert message.startswith(str(folder / "a.csv")) or message.startswith(
            str(folder / "b.csv")
        ), message
        assert "\n" not in message
        case.add(refused=1)
        return
    check_accounting(batch, str(folder))
    case.add(alerts_in=batch.rows_read, alerts_accounted=len(batch.alerts) + len(batch.rejected))
    if hostile.known_rows is not None:
        assert batch.rows_read == 2 * hostile.known_rows + 1
        # The second copy repeats the first's ids: explicit ones are all rejected there.
        second = batch.alerts[batch.alerts["source_file"] == str(folder / "b.csv")]
        explicit = {expected_value(r["alert_id"]) for r in hostile.rows} - {""}
        assert not set(second["alert_id"]) & explicit


# --- a corpus of real and broken files -----------------------------------------------------------
@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("fuzz-scenario")
    sim = simulate(SimulationConfig(seed=21, days=0.5, scenario="mixed"))
    return write_simulation(sim, out)


@dataclass
class CorpusFile:
    name: str
    data: bytes
    rows: int | None  # data records, where known
    refused: bool  # the reader must refuse it (InputError)


def corpus(scenario: dict[str, Path]) -> list[CorpusFile]:
    """Real files and seeded mutations of a realistic export (same every run)."""
    rng = random.Random(20261129)
    real = scenario["alerts"].read_bytes()
    lines = real.decode().splitlines(keepends=True)
    n = len(lines) - 1
    header = lines[0]
    files = [
        CorpusFile("sound.csv", real, n, False),
        CorpusFile("utf16.csv", real.decode().encode("utf-16"), n, False),
        CorpusFile("bom.csv", b"\xef\xbb\xbf" + real, n, False),
        CorpusFile("crlf.csv", real.replace(b"\n", b"\r\n"), n, False),
        CorpusFile("header-only.csv", header.encode(), 0, False),
        CorpusFile("empty.csv", b"", None, True),
        CorpusFile("blank.csv", b"\n\n  \n", None, True),
        CorpusFile("binary.csv", rng.randbytes(4096), None, True),
        CorpusFile("json.csv", b'{"alerts": [1, 2, 3]}', None, True),
        CorpusFile("html.csv", b"<html><body>502 Bad Gateway</body></html>", None, True),
        CorpusFile("zip.csv", b"PK\x03\x04" + rng.randbytes(200), None, True),
        CorpusFile("broken.csv.gz", b"\x1f\x8b" + rng.randbytes(100), None, True),
        CorpusFile(
            "no-service.csv",
            header.replace("service", "svc_x", 1).encode() + "".join(lines[1:20]).encode(),
            None,
            True,
        ),
        CorpusFile(
            "header-twice.csv",
            (header + "".join(lines[1:50]) + header + "".join(lines[50:100])).encode(),
            100,
            False,
        ),
        CorpusFile(
            "nul-sprinkled.csv",
            header.encode() + "".join(lines[1:200]).encode().replace(b",", b"\x00,", 40),
            199,
            False,
        ),
        CorpusFile(
            "latin1.csv",
            (header + "".join(lines[1:100])).encode()
            + "2026-01-05T00:00:00Z,café-api,HighCPU,critical,x1\n".encode("latin-1"),
            100,
            False,
        ),
        CorpusFile(
            "huge-field.csv",
            b"timestamp,service,alert_name,description\n"
            + b"2026-01-05T00:00:00Z,api,HighCPU,"
            + b"y" * (3 * MEGABYTE)
            + b"\n"
            + b"2026-01-05T00:00:01Z,api,HighCPU,short\n",
            2,
            False,
        ),
        CorpusFile(
            "stray-quote.csv",
            header.encode()
            + "".join(lines[1:30]).encode()
            + b'"unclosed,row\n'
            + "".join(lines[30:60]).encode(),
            None,
            False,
        ),
    ]
    for k in range(6):
        cut = rng.randrange(len(header) + 1, len(real))
        files.append(CorpusFile(f"truncated-{k}.csv", real[:cut], None, False))
    for k in range(4):
        data = bytearray(real)
        for _ in range(20):
            data[rng.randrange(len(header) + 1, len(data))] = rng.randrange(256)
        files.append(CorpusFile(f"flipped-{k}.csv", bytes(data), None, False))
    for path, refused in (
        (DATASETS / "huawei-alarms" / "24V_439N_Microwave" / "Alarm.csv", True),
        (DATASETS / "alert-rules" / "awesome-prometheus-alerts.csv", True),
        (DATASETS / "alert-rules" / "kube-prometheus-alerts.csv", True),
    ):
        if path.exists():
            files.append(
                CorpusFile(f"real-{path.parent.name}-{path.name}", path.read_bytes(), None, refused)
            )
    return files


def test_corpus_of_real_and_broken_files(scenario, reliability) -> None:
    case = reliability(
        "fuzz.csv_corpus",
        "a seeded corpus: a realistic export and its UTF-16/BOM/CRLF forms, header-only, empty, "
        "binary, JSON, HTML, ZIP, broken gzip, a missing column, the header repeated mid-file, "
        "NULs, latin-1 rows, a 3 MB field, a stray quote, 6 truncations, 4 byte-flip "
        "mutations, and real files that are not alert exports (telecom alarms, alert rule "
        "catalogues)",
    )
    for item in corpus(scenario):
        case.add(examples=1)
        try:
            batch = read_alert_source(Source.from_bytes(item.name, item.data), SETTINGS)
        except InputError as err:
            check_refusal(err, item.name)
            assert item.refused, f"{item.name} was refused: {err}"
            case.add(refused=1)
            continue
        assert not item.refused, f"{item.name} should have been refused"
        check_accounting(batch, item.name)
        if item.rows is not None:
            assert batch.rows_read == item.rows, item.name
        case.add(
            alerts_in=batch.rows_read, alerts_accounted=len(batch.alerts) + len(batch.rejected)
        )


def test_real_telecom_alarms_with_a_column_map_are_all_accounted_for(reliability) -> None:
    """64,598 real alarms whose timestamps are seconds from an unknown origin (so 1970):
    read through a column map, every row is accounted for (all out of range)."""
    path = DATASETS / "huawei-alarms" / "24V_439N_Microwave" / "Alarm.csv"
    if not path.exists():
        pytest.skip(f"{path} not present (../shared/datasets)")
    case = reliability(
        "fuzz.csv_real_alarms_column_map",
        "the real 24V_439N_Microwave Alarm.csv with column_map device_id->service, "
        "alarm_id->alert_name, start_timestamp->timestamp (relative seconds, i.e. 1970)",
    )
    mapped = Settings(
        column_map={
            "device_id": "service",
            "alarm_id": "alert_name",
            "start_timestamp": "timestamp",
        }
    )
    started = time.perf_counter()
    batch = read_alert_files(path, mapped)
    check_accounting(batch, str(path))
    assert batch.rows_read == 64_598
    assert batch.rejected["reject_reason"].str.startswith("timestamp out of range").all()
    case.figures(
        examples=1,
        alerts_in=batch.rows_read,
        alerts_accounted=len(batch.alerts) + len(batch.rejected),
        seconds=round(time.perf_counter() - started, 2),
    )


# --- graphs --------------------------------------------------------------------------------------
NODE_IDS = st.one_of(
    st.sampled_from(["a", "b", "c", "api", "db", " padded ", "", "../../etc/passwd"]),
    st.integers(-3, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
    st.lists(st.integers(), max_size=2),
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def hostile_graphs(draw: st.DrawFn) -> tuple[bytes, str]:
    shape = draw(st.sampled_from(["node_link", "adjacency", "json", "bytes"]))
    if shape == "bytes":
        return draw(st.binary(max_size=200)), "random bytes"
    if shape == "json":
        return json.dumps(draw(JSON_VALUES)).encode(), "random JSON"
    nodes = draw(st.lists(NODE_IDS, max_size=8))
    edge = st.tuples(
        NODE_IDS | st.sampled_from(nodes or ["a"]), NODE_IDS | st.sampled_from(nodes or ["a"])
    )
    edges = draw(st.lists(edge, max_size=12))
    # Self-loops and cycles on purpose, beside whatever the draw made.
    if nodes and draw(st.booleans()):
        edges.append((nodes[0], nodes[0]))
    if len(nodes) > 2 and draw(st.booleans()):
        edges += [(nodes[0], nodes[1]), (nodes[1], nodes[2]), (nodes[2], nodes[0])]
    if shape == "adjacency":
        doc: Any = {}
        for src, dst in edges:
            doc.setdefault(str(src), []).append(dst)
        for node in nodes:
            doc.setdefault(str(node), [])
        return json.dumps(doc, default=str).encode(), "adjacency"
    key = draw(st.sampled_from(["links", "edges"]))
    doc = {
        "directed": draw(st.sampled_from([True, False, "yes", None])),
        "nodes": [{"id": n} if draw(st.booleans()) else n for n in nodes],
        key: [{"source": s, "target": t} if draw(st.booleans()) else [s, t] for s, t in edges],
    }
    return json.dumps(doc, default=str).encode(), "node-link"


@settings(HYPOTHESIS, max_examples=200)
@given(case_data=hostile_graphs())
def test_hostile_graphs_load_or_fail_with_one_line(
    case_data: tuple[bytes, str], reliability
) -> None:
    data, _kind = case_data
    case = reliability(
        "fuzz.graph_hostile",
        "hypothesis: node-link (links/edges, object or pair edges, odd `directed`) and adjacency "
        "graphs with ids of every JSON type, self-loops, cycles, dangling edges, duplicates and "
        "isolated nodes; random JSON documents; random bytes -> a DiGraph whose topology "
        "features compute, or one GraphError line naming the file",
    )
    case.add(examples=1)
    try:
        G = load_graph("hostile.json", data=data)
    except GraphError as err:
        message = str(err)
        assert message.startswith("hostile.json: ") and "\n" not in message, message
        case.add(refused=1)
        return
    assert isinstance(G, nx.DiGraph) and G.number_of_nodes() > 0
    assert all(isinstance(n, str) and n == n.strip() and n for n in G.nodes)
    assert nx.number_of_selfloops(G) == 0
    features = graph_features(G)
    assert len(features) == G.number_of_nodes()
    assert not features.isna().any().any()
    case.add(processed=1)


def test_fifty_thousand_node_graph_with_every_oddity_is_processed(reliability) -> None:
    case = reliability(
        "fuzz.graph_50k_nodes",
        "a 50,000-service layered graph plus 500 self-loops, 1,000 two-cycles, 500 dangling "
        "edges and 500 isolated nodes: load_graph + GraphContext.build (topology features, "
        "caller index, service mapper), timed",
    )
    rng = random.Random(7)
    G = synthetic_layered_graph(50_000, avg_out_degree=2, seed=1)
    doc = nx.node_link_data(G, edges="links")
    ids = [n["id"] for n in doc["nodes"]]
    doc["links"] += [{"source": i, "target": i} for i in rng.sample(ids, 500)]
    doc["links"] += [{"source": ids[i + 1], "target": ids[i]} for i in range(0, 2000, 2)]
    doc["links"] += [{"source": rng.choice(ids), "target": f"ghost-{i}"} for i in range(500)]
    doc["nodes"] += [{"id": f"island-{i}"} for i in range(500)]
    data = json.dumps(doc).encode()
    started = time.perf_counter()
    H = load_graph("big.json", data=data)
    loaded = time.perf_counter() - started
    context = GraphContext.build(H, SETTINGS)
    total = time.perf_counter() - started
    assert H.number_of_nodes() == 51_000
    assert nx.number_of_selfloops(H) == 0
    assert len(context.features) == 51_000
    assert not context.features.isna().any().any()
    case.figures(
        examples=1,
        nodes=H.number_of_nodes(),
        edges=H.number_of_edges(),
        load_seconds=round(loaded, 2),
        seconds=round(total, 2),
    )


# --- the command line ----------------------------------------------------------------------------
GRAPH = {
    "directed": True,
    "nodes": [{"id": "api"}, {"id": "db"}, {"id": "007"}],
    "links": [{"source": "api", "target": "db"}, {"source": "api", "target": "api"}],
}


@pytest.fixture(scope="module")
def store(scenario, tmp_path_factory) -> Path:
    """A production model, trained once for the classify runs of this module."""
    models = tmp_path_factory.mktemp("fuzz-models")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        os.environ.pop(name, None)
    tracking._SET_BY_US.clear()
    retrain(Settings(**FAST), scenario["alerts"], scenario["graph"], models)
    tracking._SET_BY_US.clear()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return models


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``alertclf`` in this process: anything but a handled exit escapes as a failure."""
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_cli_refusal(code: int, err: str, command: str, path: Path) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"alertclf {command}: error: "), lines[0]
    assert str(path) in lines[0] or path.name in lines[0], lines[0]
    assert "Traceback" not in err


@settings(HYPOTHESIS, max_examples=30)
@given(hostile=hostile_tables())
def test_validate_on_hostile_files(hostile: Hostile, tmp_path_factory, capsys, reliability) -> None:
    case = reliability(
        "fuzz.cli_validate",
        "hypothesis: `alertclf validate` (in-process `main`) on the hostile tables: exit 0 with "
        "read = accepted + rejected, or exit 2 with one stderr line naming the file",
    )
    case.add(examples=1)
    folder = tmp_path_factory.mktemp("validate")
    alerts, graph = folder / "alerts.csv", folder / "graph.json"
    alerts.write_bytes(hostile.data)
    graph.write_text(json.dumps(GRAPH))
    code, out, err = run_cli(
        ["validate", "--alerts", str(alerts), "--graph", str(graph), "--out", str(folder / "v")],
        capsys,
    )
    if code == 2:
        check_cli_refusal(code, err, "validate", alerts)
        case.add(refused=1)
        return
    assert code == 0, err
    read, accepted, rejected = map(
        int, re.search(r"rows read (\d+), accepted (\d+), rejected (\d+)", out).groups()
    )
    assert read == accepted + rejected
    if hostile.known_rows is not None:
        assert read == hostile.known_rows
    case.add(alerts_in=read, alerts_accounted=accepted + rejected)


@pytest.mark.slow
def test_classify_on_the_corpus(scenario, store, tmp_path, capsys, reliability) -> None:
    """``alertclf classify`` on each corpus file: results whose counts add up, or one line."""
    case = reliability(
        "fuzz.cli_classify_corpus",
        "`alertclf classify` (in-process `main`, a trained production model) on every corpus "
        "file and on broken graphs: exit 0 with run_metadata read = accepted + rejected and "
        "one result row per new alert, or exit 2 with one stderr line naming the file",
    )
    graph = tmp_path / "graph.json"
    graph.write_bytes(scenario["graph"].read_bytes())
    for number, item in enumerate(corpus(scenario)):
        if item.name.startswith("real-huawei"):
            continue  # 64k rows refused at once; the column-map case covers that file
        case.add(examples=1)
        alerts = tmp_path / item.name
        alerts.write_bytes(item.data)
        out = tmp_path / f"out-{number}"
        code, _, err = run_cli(
            [
                "classify",
                "--alerts",
                str(alerts),
                "--graph",
                str(graph),
                "--output",
                str(out),
                "--models",
                str(store),
                "--no-bootstrap",
                "--top",
                "0",
            ],
            capsys,
        )
        if code == 2:
            check_cli_refusal(code, err, "classify", alerts)
            case.add(refused=1)
            continue
        assert code == 0, (item.name, err)
        (folder,) = [p for p in out.iterdir() if p.name[:1].isdigit()]
        meta = json.loads((folder / "run_metadata.json").read_text())
        assert meta["rows_read"] == meta["rows_accepted"] + meta["rows_rejected"]
        final = pd.read_csv(folder / "alert_consolidation_final.csv", dtype=str)
        rejected = pd.read_csv(folder / "rejected_alerts.csv", dtype=str)
        assert len(final) == meta["rows_new"] == meta["rows_accepted"]
        assert len(rejected) == meta["rows_rejected"]
        if item.rows is not None:
            assert meta["rows_read"] == item.rows
        case.add(alerts_in=meta["rows_read"], alerts_accounted=len(final) + len(rejected))

    sound = tmp_path / "sound.csv"
    for number, (name, data) in enumerate(
        [
            ("graph-binary.json", random.Random(3).randbytes(500)),
            ("graph-array.json", b"[1, 2, 3]"),
            ("graph-null-id.json", b'{"nodes": [{"id": null}], "links": []}'),
            ("graph-empty.json", b'{"nodes": [], "links": []}'),
            ("graph-latin1.json", '{"caf\xe9": []}'.encode("latin-1")),
        ]
    ):
        case.add(examples=1)
        bad = tmp_path / name
        bad.write_bytes(data)
        code, _, err = run_cli(
            [
                "classify",
                "--alerts",
                str(sound),
                "--graph",
                str(bad),
                "--output",
                str(tmp_path / f"g-{number}"),
                "--models",
                str(store),
                "--top",
                "0",
            ],
            capsys,
        )
        check_cli_refusal(code, err, "classify", bad)
        case.add(refused=1)


@pytest.mark.slow
def test_real_processes_print_one_line_and_no_traceback(
    scenario, store, tmp_path, reliability
) -> None:
    """The same as real processes, as cron or the scheduler run them."""
    case = reliability(
        "fuzz.cli_subprocess",
        "`python -m alertclf.cli classify|validate --log-level ERROR` as real processes on a "
        "binary file, a JSON file, a truncated export and a broken graph: exit 2, exactly one "
        "stderr line, no traceback",
    )
    sound = tmp_path / "sound.csv"
    sound.write_bytes(scenario["alerts"].read_bytes())
    graph = tmp_path / "graph.json"
    graph.write_bytes(scenario["graph"].read_bytes())
    binary = tmp_path / "binary.csv"
    binary.write_bytes(random.Random(5).randbytes(2000))
    as_json = tmp_path / "alerts.json.csv"
    as_json.write_text('{"not": "a csv"}')
    bad_graph = tmp_path / "bad-graph.json"
    bad_graph.write_bytes(b'{"nodes": [1, 2], "links": {"source": 1}}')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    runs = [
        ("classify", binary, graph, binary),
        ("classify", as_json, graph, as_json),
        ("validate", binary, graph, binary),
        ("classify", sound, bad_graph, bad_graph),
    ]
    for command, alerts, graph_path, culprit in runs:
        argv = [
            sys.executable,
            "-m",
            "alertclf.cli",
            command,
            "--alerts",
            str(alerts),
            "--graph",
            str(graph_path),
            "--log-level",
            "ERROR",
        ]
        if command == "classify":
            argv += ["--output", str(tmp_path / "out"), "--models", str(store)]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        case.add(examples=1, refused=1)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(f"alertclf {command}: error: {culprit}"), lines[0]
