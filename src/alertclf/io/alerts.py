"""Alert ingestion: CSV files in, one validated canonical alert frame out (DESIGN.md §2).

Every data row of every file ends up in exactly one of two frames: ``alerts`` (the
canonical columns of ``contracts.CANONICAL_COLUMNS``) or ``rejected`` (the row's raw
values plus ``source_file``, ``source_row`` and a human-readable ``reject_reason``), so
``len(alerts) + len(rejected) == rows_read`` always holds. A file that cannot be used at
all (not a CSV, empty, a required column missing) raises :class:`InputError` with one
line naming the file and the problem.

Speed: a well-formed file is parsed by pyarrow (all columns as strings, multi-threaded)
and normalised with vectorised pandas/pyarrow operations. Rows with the wrong number of
fields are set aside by a single-threaded pyarrow pass; only a quote that never closes
sends the file to the slower record-by-record reader. Each malformed row is rejected on
its own; the rest of the file is still read.
"""

from __future__ import annotations

import contextlib
import csv
import email.utils
import gzip
import hashlib
import itertools
import logging
import re
import sys
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from alertclf import contracts
from alertclf.distinct import per_distinct
from alertclf.errors import AlertclfError
from alertclf.io.sources import Source, list_sources
from alertclf.settings import Settings

logger = logging.getLogger(__name__)


class InputError(AlertclfError):
    """An input that cannot be used at all; the message names the file and the problem."""


# --- constants -------------------------------------------------------------------------
# pandas 3 parses datetimes at microsecond resolution by default; we use the same so that
# frames built elsewhere compare and merge with ours without unit juggling.
TIMESTAMP_DTYPE = "datetime64[us, UTC]"
TIMESTAMP_MIN = pd.Timestamp("1980-01-01", tz="UTC")
TIMESTAMP_MAX = pd.Timestamp("2200-01-01", tz="UTC")
REJECT_COLUMNS: tuple[str, ...] = ("source_file", "source_row", contracts.REJECT_REASON)
# Columns added to rejected rows whose field count exceeds the header's, so no value is lost.
EXTRA_FIELDS_COLUMN = "extra_fields"

# Every reason we produce starts with one of these; validate_summary groups by them and
# they let "; "-joined reasons be split even when a quoted value contains "; ".
REASON_PREFIXES: tuple[str, ...] = (
    "missing timestamp",
    "unparseable timestamp",
    "timestamp out of range",
    "empty service",
    "empty alert_name",
    "duplicate alert_id",
    "row has",
    "unbalanced quote",
    "late",
)
# A parse result: the sound rows as strings, their 1-based row numbers (None: 1..n), and the
# malformed rows as (row number, fields as read, reason).
_Parsed = tuple[pd.DataFrame, np.ndarray | None, list[tuple[int, list[str], str]]]
_UNCLOSED = "unbalanced quote (a quoted field never closes)"
_REASON_SPLIT = re.compile("; (?=" + "|".join(re.escape(p) for p in REASON_PREFIXES) + ")")

# Epoch seconds, as floats, of the accepted range (used for the numeric range check).
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_MIN_S = TIMESTAMP_MIN.timestamp()
_EPOCH_MAX_S = TIMESTAMP_MAX.timestamp()
# Values that mean "no timestamp" in exports from spreadsheets and databases.
_NULL_TOKENS = frozenset({"null", "none", "nan", "nat", "n/a", "na", "-"})
_NUMERIC_RE = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_INT_RE = r"[+-]?\d+"
_INT64_MAX = str(np.iinfo(np.int64).max)

# pyarrow parses in blocks; a single row longer than a block makes it fail (and we fall
# back to the robust reader). 4 MiB keeps two cores busy on big files and is far beyond
# any sane alert row.
_BLOCK_SIZE = 4 << 20
_BINARY_SAMPLE = 1 << 16
# Share of control bytes above which a "CSV" is really binary (random/compressed data has
# about 10%; text with a few stray NULs or ANSI colour codes stays far below).
_BINARY_CONTROL_SHARE = 0.05
_CONTROL_BYTES = bytes([*range(0, 9), 11, 12, *range(14, 32), 127])  # all but \t \n \r
_MESSAGE_VALUE_CHARS = 40

_SEVERITY_WORDS: dict[str, str] = {}
for _sev, _words in {
    "critical": "critical crit fatal emergency emerg alert disaster p0 sev0 s0 0 p1 sev1 s1 1",
    "high": "high major error err severe p2 sev2 s2 2",
    "warning": "warning warn medium moderate average p3 sev3 s3 3",
    "low": "low minor p4 sev4 s4 4",
    "info": "info informational information notice debug ok p5 sev5 s5 5 none",
}.items():
    for _word in _words.split():
        _SEVERITY_WORDS[_word] = _sev
# "sev-1", "Sev 1", "P_1", "severity1", "priority 2" -> "sev1"/"p1"/...
# Characters that print as nothing (zero-width spaces and joiners, the word joiner, BOMs,
# soft hyphens): a name made only of these is as empty as "" to the person reading it.
_INVISIBLE = re.compile(r"[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")
_SEVERITY_NUMBERED = re.compile(r"^(sev|severity|s|p|prio|priority)[\s_\-]*(\d)$")
_SEVERITY_PREFIX = {"severity": "sev", "prio": "p", "priority": "p"}

_STATUS_WORDS: dict[str, str] = {}
for _status, _words in {
    "firing": "firing fire fired active alerting alarm triggered trigger problem open raised",
    "resolved": "resolved resolve ok closed close cleared clear recovered recovery inactive",
}.items():
    for _word in _words.split():
        _STATUS_WORDS[_word] = _status


@dataclass
class AlertBatch:
    """The outcome of reading one or more alert files."""

    alerts: pd.DataFrame
    rejected: pd.DataFrame
    rows_read: int
    files: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def rows_accepted(self) -> int:
        return len(self.alerts)

    @property
    def rows_rejected(self) -> int:
        return len(self.rejected)


# --- public entry points ---------------------------------------------------------------
def read_alerts(location: str | Path | Source | Sequence[Source], settings: Settings) -> AlertBatch:
    """Read every CSV at ``location`` (file, folder, glob, or ready-made sources) into one batch.

    Files are read in the given (name) order. An ``alert_id`` accepted from an earlier file
    rejects later rows carrying it, so ids are unique across the whole batch; for derived
    ids that happens only when the very same row appears in two files (overlapping exports).
    """
    if isinstance(location, Source):
        sources = [location]
    elif isinstance(location, str | Path):
        sources = list_sources(location)
    else:
        sources = list(location)
    if not sources:
        raise InputError(f"{location}: no input files")
    seen: dict[str, tuple[str, int]] = {}
    batches: list[AlertBatch] = []
    for number, source in enumerate(sources, start=1):
        batch = read_alert_source(source, settings, known_ids=seen)
        batches.append(batch)
        if number < len(sources):  # the last file's ids are never looked up
            ids = batch.alerts["alert_id"].tolist()
            rows = batch.alerts["source_row"].tolist()
            seen.update(zip(ids, ((source.name, r) for r in rows), strict=True))
    return _combine(batches)


def read_alert_source(
    source: Source,
    settings: Settings,
    *,
    known_ids: Mapping[str, tuple[str, int]] | None = None,
) -> AlertBatch:
    """Read and normalise one file. ``known_ids`` (id -> (file, row)) are ids taken earlier."""
    name = source.name
    notes: list[str] = []
    data = _read_bytes(source)
    data = _decode(data, name, notes)
    header, delimiter = _read_header(data, name)
    if delimiter != ",":
        notes.append(f"{name}: fields separated by {delimiter!r}")
    # Fail on a missing column before parsing a possibly huge body.
    mapping, _ = _match_columns(header, settings.column_map)
    _require_columns(mapping, header, name, data)

    # Three readers, fastest first: pyarrow on a sound file; pyarrow single-threaded, setting
    # ragged rows aside; and, for a quote that never closes, the csv module record by record.
    parsed = _parse_fast(data, header, delimiter)
    if parsed is None:
        parsed = _parse_fast(data, header, delimiter, tolerant=True)
    if parsed is None:
        logger.info("%s: malformed CSV, using the robust record-by-record reader", name)
        parsed = _parse_robust(data, header, delimiter, name)
    raw, source_rows, malformed = parsed
    del data, parsed  # the raw bytes are no longer needed: free them before normalising
    rows_read = len(raw) + len(malformed)

    accepted, rejected = normalize_alerts(
        raw, settings, name, source_rows=source_rows, known_ids=known_ids, notes=notes
    )
    if malformed:
        structural = _malformed_frame(header, malformed, delimiter, name)
        structural, n_cut = _truncate_frame(structural, settings.max_field_chars)
        if n_cut:
            notes.append(f"{name}: {n_cut} fields of malformed rows truncated")
        rejected = concat_rejected([rejected, structural]).sort_values(
            "source_row", kind="stable", ignore_index=True
        )
    logger.info(
        "%s: %d rows read, %d accepted, %d rejected", name, rows_read, len(accepted), len(rejected)
    )
    for note in notes:
        logger.info("%s", note)
    return AlertBatch(accepted, rejected, rows_read, [name], notes)


# Text columns taken with surrounding whitespace removed.
_TRIMMED = ("service", "alert_name", "description", "alert_id", "host", "namespace",
            "cluster", "environment", "labels")  # fmt: skip


def normalize_alerts(
    raw: pd.DataFrame,
    settings: Settings,
    source_file: str,
    *,
    source_rows: Sequence[int] | np.ndarray | None = None,
    known_ids: Mapping[str, tuple[str, int]] | None = None,
    notes: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Match columns, parse and validate ``raw`` (string columns as read). No I/O.

    ``source_rows`` are the 1-based data row numbers of ``raw``'s rows in the file
    (default 1..n); ``known_ids`` are alert ids accepted from earlier files; remarks for
    the user (column renames, truncations) are appended to ``notes`` when given.
    Returns ``(accepted, rejected)``; raises :class:`InputError` if a required column is
    missing.
    """
    notes = notes if notes is not None else []
    header = [str(c) for c in raw.columns]
    mapping, mapping_notes = _match_columns(header, settings.column_map)
    _require_columns(mapping, header, source_file)
    notes.extend(f"{source_file}: {n}" for n in mapping_notes)

    n = len(raw)
    rows = (
        np.arange(1, n + 1, dtype=np.int64)
        if source_rows is None
        else np.asarray(source_rows, dtype=np.int64)
    )
    if len(rows) != n:
        raise ValueError(f"source_rows has {len(rows)} entries for {n} rows")
    # Positional access throughout: header names may repeat.
    columns = [_as_text(raw.iloc[:, i]) for i in range(raw.shape[1])]
    columns, n_cut = _truncate(columns, settings.max_field_chars)
    if n_cut:
        notes.append(f"{source_file}: {n_cut} fields truncated to {settings.max_field_chars} chars")
    empty = _constant("", n)

    def column(name: str) -> pd.Series:
        return columns[mapping[name]] if name in mapping else empty

    # Arrow trims text without holding the interpreter: ten columns on two threads
    # (1M rows: 0.58 s of trimming on one).
    trimmed = [*_TRIMMED, *(["summary"] if "summary" in mapping else [])]
    with ThreadPoolExecutor(max_workers=2 if n >= 100_000 else 1) as pool:
        stripped = dict(
            zip(trimmed, pool.map(lambda c: column(c).str.strip(), trimmed), strict=True)
        )
    timestamps, ts_reason = parse_timestamps(column("timestamp"))
    service = stripped["service"]
    alert_name = stripped["alert_name"]
    description = stripped["description"]
    if "summary" in mapping:
        description = description.where(description != "", stripped["summary"])

    ids = stripped["alert_id"]
    no_id = (ids == "").to_numpy()
    if no_id.any():
        content = pd.DataFrame(
            {c: column(c) for c in contracts.INPUT_COLUMNS if c != "alert_id"}, copy=False
        )
        if no_id.all():
            ids = derive_alert_ids(content)
        else:
            ids = ids.copy()
            ids.iloc[no_id] = derive_alert_ids(content.iloc[no_id]).to_numpy()

    ts_bad = (ts_reason != "").to_numpy()
    svc_bad = _blank(service)
    name_bad = _blank(alert_name)
    bad = ts_bad | svc_bad | name_bad
    reasons = np.full(n, "", dtype=object)
    if bad.any():
        ts_list = ts_reason.to_numpy(dtype=object)
        for i in np.flatnonzero(bad):
            parts = [ts_list[i]] if ts_bad[i] else []
            if svc_bad[i]:
                parts.append("empty service")
            if name_bad[i]:
                parts.append("empty alert_name")
            reasons[i] = "; ".join(parts)

    # Only otherwise-valid rows compete for an id, so a broken first copy does not also
    # take down a good later one.
    valid = np.flatnonzero(~bad)
    _reject_duplicate_ids(ids, valid, rows, source_file, known_ids, reasons)
    rejected_mask = reasons != ""
    keep = np.flatnonzero(~rejected_mask)

    canonical = {
        "alert_id": ids,
        "timestamp": timestamps,
        "service": service,
        "alert_name": alert_name,
        "severity": normalize_severity(column("severity")),
        "status": normalize_status(column("status")),
        "host": stripped["host"],
        "namespace": stripped["namespace"],
        "cluster": stripped["cluster"],
        "environment": stripped["environment"],
        "description": description,
        "labels": stripped["labels"],
    }
    # Usually every row is accepted: then no column needs a take (0.35 s at 1M rows).
    everything = len(keep) == n
    accepted = pd.DataFrame(
        {
            k: (v if everything else v.iloc[keep]).reset_index(drop=True)
            for k, v in canonical.items()
        }
    )
    accepted["source_file"] = _constant(source_file, len(keep))
    accepted["source_row"] = rows[keep]
    accepted = accepted[list(contracts.CANONICAL_COLUMNS)]

    drop = np.flatnonzero(rejected_mask)
    rejected = _rejected_frame(
        header,
        # An empty take from a column in many Arrow chunks still joins them (0.4 s at 1M).
        [
            c.iloc[drop].to_numpy(dtype=object) if len(drop) else np.empty(0, object)
            for c in columns
        ],
        source_file,
        rows[drop],
        reasons[drop],
    )
    return accepted, rejected


# --- helpers (public, unit-tested) -----------------------------------------------------
def match_columns(header: Sequence[str], column_map: Mapping[str, str]) -> dict[str, int]:
    """Contract column -> position in ``header`` for every input column found.

    Names are compared case-insensitively after stripping whitespace and BOMs (spaces and
    hyphens count as underscores). A header name listed in ``column_map`` goes where the
    map says; otherwise an exact contract name, then ``contracts.DEFAULT_COLUMN_ALIASES``.
    When several columns claim one contract column, the exact contract name wins, then a
    ``column_map`` entry, then an alias; ties go to the leftmost column.
    """
    return _match_columns(header, column_map)[0]


def normalize_severity(values: pd.Series | Sequence[Any]) -> pd.Series:
    """Map free-form severities onto ``contracts.SEVERITIES`` (anything unknown -> "unknown")."""
    return _map_vocabulary(values, _severity_of)


def normalize_status(values: pd.Series | Sequence[Any]) -> pd.Series:
    """``firing``/``resolved`` from synonyms; empty -> firing; else the lower-cased value."""
    return _map_vocabulary(values, _status_of)


def _blank(values: pd.Series) -> np.ndarray:
    """Which of the (trimmed) ``values`` are empty or only invisible characters."""
    return per_distinct(
        _as_text(values), lambda text: not _INVISIBLE.sub("", text).strip(), True, bool
    )


def parse_timestamps(values: pd.Series | Sequence[Any]) -> tuple[pd.Series, pd.Series]:
    """Parse mixed ISO-8601 / epoch timestamps to UTC.

    Returns ``(timestamps, reasons)``: a ``datetime64[us, UTC]`` series (NaT where
    rejected) and a string series that is empty where the value is fine and otherwise
    says why (``missing timestamp``, ``unparseable timestamp '…'``, ``timestamp out of
    range '…'``). Naive times are UTC. Epoch numbers are seconds, milliseconds,
    microseconds or nanoseconds by magnitude, decided per value.
    """
    text = _as_text(values).str.strip()
    n = len(text)
    micros = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)  # int64 min is NaT
    reasons = np.full(n, "", dtype=object)

    lowered = text.str.lower()
    missing = ((text == "") | lowered.isin(list(_NULL_TOKENS))).to_numpy()
    reasons[missing] = "missing timestamp"
    numeric = text.str.fullmatch(_NUMERIC_RE).to_numpy(dtype=bool) & ~missing
    if numeric.any():
        idx = np.flatnonzero(numeric)
        values_us, out_of_range = _parse_epochs(text.iloc[idx])
        micros[idx] = values_us
        _set_reasons(reasons, text, idx[out_of_range], "timestamp out of range")
    textual = np.flatnonzero(~missing & ~numeric)
    if len(textual):
        values_us, failed = _parse_datetime_strings(text.iloc[textual])
        micros[textual] = values_us
        _set_reasons(reasons, text, textual[failed], "unparseable timestamp")
        # Range check on what parsed; epochs were range-checked in their own unit.
        parsed = textual[~failed]
        too_early = micros[parsed] < _to_micros(TIMESTAMP_MIN)
        too_late = micros[parsed] > _to_micros(TIMESTAMP_MAX)
        out = parsed[too_early | too_late]
        micros[out] = np.iinfo(np.int64).min
        _set_reasons(reasons, text, out, "timestamp out of range")

    stamps = pd.Series(micros.view("datetime64[us]")).dt.tz_localize("UTC")
    return stamps, pd.Series(reasons, dtype="str")


def derive_alert_ids(frame: pd.DataFrame) -> pd.Series:
    """Stable ids for rows without one: ``"a" + sha1(row content)[:16]``.

    The content is the row's values in column order; identical rows get their occurrence
    number mixed in, so they get distinct ids, and the same file yields the same ids on
    every run. The caller decides which columns (and their order) define the content.
    """
    n = len(frame)
    if n == 0:
        return pd.Series([], dtype="str", index=frame.index)
    columns = [_arrow_text(frame.iloc[:, i]) for i in range(frame.shape[1])]
    if columns:
        # \x1f (unit separator) keeps ("ab", "c") and ("a", "bc") apart.
        separator = pa.scalar("\x1f", pa.large_string())
        joined = pc.binary_join_element_wise(*columns, separator)
    else:
        joined = pa.repeat(pa.scalar("", pa.large_string()), n)
    texts = joined.to_pylist()
    sha1 = hashlib.sha1  # the one per-row Python loop; kept tight (~0.6 s per million rows)
    ids = ["a" + sha1(t.encode("utf-8", "surrogatepass")).hexdigest()[:16] for t in texts]
    # Equal content gives equal digests, so the digests also number the identical rows.
    codes, _ = pd.factorize(np.array(ids, dtype=object))
    occurrence = _occurrence(codes)
    for i in np.flatnonzero(occurrence):
        ids[i] = "a" + _sha1(f"{texts[i]}\x1e{occurrence[i]}")[:16]
    return pd.Series(ids, dtype="str", index=frame.index)


def _occurrence(codes: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions carry the same code (0 for the first)."""
    n = len(codes)
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    positions = np.arange(n)
    group_start = np.maximum.accumulate(np.where(starts, positions, 0))
    occurrence = np.empty(n, dtype=np.int64)
    occurrence[order] = positions - group_start
    return occurrence


def validate_summary(batch: AlertBatch) -> dict[str, Any]:
    """A JSON-ready report of a batch for ``alertclf validate``."""
    alerts, rejected = batch.alerts, batch.rejected
    categories: dict[str, int] = {}
    examples: list[dict[str, Any]] = []
    if len(rejected):
        for file, row, reason in zip(
            rejected["source_file"].tolist(),
            rejected["source_row"].tolist(),
            rejected[contracts.REJECT_REASON].tolist(),
            strict=True,
        ):
            for part in split_reasons(reason):
                key = reason_category(part)
                categories[key] = categories.get(key, 0) + 1
            if len(examples) < 20:
                examples.append({"source_file": file, "source_row": int(row), "reason": reason})
    span = None
    if len(alerts):
        first, last = alerts["timestamp"].min(), alerts["timestamp"].max()
        span = {
            "first": first.isoformat(),
            "last": last.isoformat(),
            "hours": round((last - first).total_seconds() / 3600, 3),
        }
    counts = alerts["service"].value_counts()
    # Ties in name order, so the report is the same on every run.
    services = sorted(((str(k), int(v)) for k, v in counts.items()), key=lambda kv: (-kv[1], kv[0]))
    return {
        "rows_read": int(batch.rows_read),
        "rows_accepted": len(alerts),
        "rows_rejected": len(rejected),
        "counts_add_up": len(alerts) + len(rejected) == batch.rows_read,
        "reject_reasons": dict(sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))),
        "reject_examples": examples,
        "files": list(batch.files),
        "time_span": span,
        "services": {
            "count": len(services),
            "top": [list(kv) for kv in services[:10]],
        },
        "alert_names": int(alerts["alert_name"].nunique()),
        "severities": {str(k): int(v) for k, v in alerts["severity"].value_counts().items()},
        "statuses": {str(k): int(v) for k, v in alerts["status"].value_counts().items()},
        "notes": list(batch.notes),
    }


def split_reasons(reason: str) -> list[str]:
    """The individual problems in a ``"; "``-joined ``reject_reason``."""
    return [p for p in _REASON_SPLIT.split(reason) if p]


def reason_category(reason: str) -> str:
    """A reason without its quoted value/location, e.g. ``unparseable timestamp``."""
    for prefix in REASON_PREFIXES:
        if reason.startswith(prefix):
            return "wrong number of fields" if prefix == "row has" else prefix
    return reason


# --- reading bytes ---------------------------------------------------------------------
def _read_bytes(source: Source) -> bytes:
    try:
        with source.open() as handle:
            data = handle.read()
    except OSError as err:
        raise InputError(f"{source.name}: cannot read file ({err.strerror or err})") from None
    if not data:
        raise InputError(f"{source.name}: empty file (0 bytes)")
    return data


def _decode(data: bytes, name: str, notes: list[str]) -> bytes:
    """Return the file as UTF-8 bytes without BOM or NULs, or raise for non-text input."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise InputError(f"{name}: not a valid gzip file ({err})") from None
        if not data:
            raise InputError(f"{name}: empty file (empty gzip archive)")
    if data[:4] == b"PK\x03\x04":
        raise InputError(f"{name}: a ZIP archive (or .xlsx workbook), not a CSV file")

    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]  # and still check that the rest really is UTF-8
    text: str | None = None
    if data[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
        text = data.decode("utf-32", errors="replace")
        notes.append(f"{name}: decoded as UTF-32")
    elif data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = data.decode("utf-16", errors="replace")
        notes.append(f"{name}: decoded as UTF-16")
    elif len(data) >= 4 and data[1] == 0 and data[3] == 0 and data[0] and data[2]:
        # ASCII text in UTF-16 without a BOM: every other byte is NUL.
        text = data.decode("utf-16-le", errors="replace")
        notes.append(f"{name}: decoded as UTF-16-LE (no BOM)")
    elif len(data) >= 4 and data[0] == 0 and data[2] == 0 and data[1] and data[3]:
        text = data.decode("utf-16-be", errors="replace")
        notes.append(f"{name}: decoded as UTF-16-BE (no BOM)")
    elif not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            text = _decode_non_utf8(data, name, notes)
    if text is not None:
        data = text.lstrip("\ufeff").encode("utf-8", errors="replace")

    # isspace stops at the first other byte; strip() would copy the whole file (0.27 s
    # for a million alerts) to find it.
    if not data or data.isspace():
        raise InputError(f"{name}: empty file (no header row)")
    # A header line never holds control characters; binary data nearly always does.
    # (Data rows may: they are judged row by row, and NULs in them are dropped below.)
    body = data.lstrip()
    header_line = body[: body.find(b"\n")] if b"\n" in body else body
    if header_line.rstrip(b"\r") != header_line.rstrip(b"\r").translate(None, _CONTROL_BYTES):
        raise InputError(f"{name}: binary content, not a CSV text file")
    nuls = data.count(b"\x00") if b"\x00" in data else 0  # `in` is a fast scan, count not
    if nuls:
        data = data.replace(b"\x00", b"")
        notes.append(f"{name}: {nuls} NUL bytes removed")
    return data


def _decode_non_utf8(data: bytes, name: str, notes: list[str]) -> str:
    # A UTF-8 file with a few corrupt bytes is still UTF-8: decoding it as latin-1 would
    # garble every accented service name. Only when invalid bytes dominate is it latin-1.
    lenient = data.decode("utf-8", errors="replace")
    invalid = lenient.count("\ufffd")
    non_ascii = len(lenient) - len(lenient.encode("ascii", errors="ignore"))
    multibyte = non_ascii - invalid
    if multibyte > invalid:
        notes.append(f"{name}: {invalid} invalid UTF-8 byte sequences replaced by U+FFFD")
        return lenient
    return _decode_lines(data, name, notes)


def _decode_lines(data: bytes, name: str, notes: list[str]) -> str:
    """Latin-1, but line by line: an export concatenated from sources in two encodings
    keeps the names of its UTF-8 lines (the whole file as latin-1 turned "café" into
    "cafÃ©"). A multi-byte sequence never holds a newline byte, so splitting first is
    safe, also inside a quoted multi-line field."""
    lines = data.split(b"\n")
    latin1: list[int] = []
    utf8 = 0
    for number, line in enumerate(lines):
        if line.isascii():
            continue
        try:
            lines[number] = line.decode("utf-8")
            utf8 += 1
        except UnicodeDecodeError:
            lines[number] = line.decode("latin-1")
            latin1.append(number + 1)
    if not utf8:
        notes.append(f"{name}: decoded as latin-1 (not valid UTF-8)")
    else:
        shown = ", ".join(map(str, latin1[:5])) + (", ..." if len(latin1) > 5 else "")
        notes.append(
            f"{name}: {len(latin1)} lines not valid UTF-8 decoded as latin-1 (lines {shown})"
        )
    return "\n".join(line if isinstance(line, str) else line.decode("ascii") for line in lines)


def _looks_binary(sample: bytes) -> bool:
    if not sample:
        return False
    control = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    return control / len(sample) > _BINARY_CONTROL_SHARE


# --- parsing ---------------------------------------------------------------------------
def _read_header(data: bytes, name: str) -> tuple[list[str], str]:
    """The header record and the delimiter (',' unless the header plainly uses ';', tab, |)."""
    # The header is in the first 64 KiB, unless its first line is longer than that.
    prefix = data[: 1 << 16] if b"\n" in data[: 1 << 16] else data
    prefix = prefix.decode("utf-8", errors="ignore")
    lines = _split_lines(prefix)
    first = next((line for line in lines if line.strip("\r\n")), "")
    delimiter = ","
    if "," not in first:
        counts = {d: first.count(d) for d in (";", "\t", "|")}
        best = max(counts, key=lambda d: counts[d])
        if counts[best]:
            delimiter = best
    with _csv_field_limit():
        try:
            reader = csv.reader(iter(lines), delimiter=delimiter)
            header = next((row for row in reader if row), None)
        except csv.Error as err:
            raise InputError(f"{name}: unreadable CSV header ({err})") from None
    if not header:
        raise InputError(f"{name}: empty file (no header row)")
    return header, delimiter


def _parse_fast(
    data: bytes, header: list[str], delimiter: str, *, tolerant: bool = False
) -> _Parsed | None:
    """All rows as strings via pyarrow, or None when the file needs a more careful reader.

    ``tolerant`` sets rows with the wrong field count aside instead of failing; pyarrow
    then runs single-threaded, because only then does it number the rows it skips.
    """
    # An odd number of quote characters means a quote opens and never closes; pyarrow
    # would silently swallow the rest of the file into one field, so let the robust reader
    # localise it.
    if data.count(b'"') % 2:
        return None
    width = len(header)
    skipped: list[tuple[int | None, int, str]] = []

    def set_aside(row: Any) -> str:
        skipped.append((row.number, row.actual_columns, row.text))
        return "skip"

    try:
        table = pa_csv.read_csv(
            pa.py_buffer(data),
            read_options=pa_csv.ReadOptions(
                autogenerate_column_names=True, block_size=_BLOCK_SIZE, use_threads=not tolerant
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=delimiter,
                newlines_in_values=True,
                invalid_row_handler=set_aside if tolerant else None,
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types={f"f{i}": pa.string() for i in range(width)},
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowException, ValueError) as err:
        # Ragged rows, a huge field, ...: expected on malformed files.
        logger.debug("pyarrow could not parse the file: %s", err)
        return None
    # The header arrives as data row 0 (generated column names avoid pyarrow's own handling
    # of duplicate or odd header names); it must agree with what we parsed ourselves.
    if table.num_columns != width or table.num_rows == 0:
        return None
    if any(not pa.types.is_string(t) for t in table.schema.types):
        return None
    if [table.column(i)[0].as_py() for i in range(width)] != header:
        return None
    frame = table.slice(1).to_pandas()
    frame.columns = header
    if not skipped:
        return frame, None, []

    malformed: list[tuple[int, list[str], str]] = []
    for number, n_fields, text in skipped:
        # A skipped record spanning lines may be a stray quote that swallowed good rows:
        # only the robust reader can split it up again.
        if number is None or "\n" in text or "\r" in text:
            return None
        with _csv_field_limit():  # the row may hold a huge field
            fields = next(csv.reader([text], delimiter=delimiter), [])
        # pyarrow counts records from 1 for the header, blank lines not included.
        malformed.append((number - 1, fields, f"row has {_fields(n_fields)}, header has {width}"))
    total = len(frame) + len(malformed)
    rows = np.setdiff1d(np.arange(1, total + 1), [m[0] for m in malformed])
    if len(rows) != len(frame):
        return None
    return frame, rows, malformed


def _parse_robust(data: bytes, header: list[str], delimiter: str, name: str) -> _Parsed:
    """Record-by-record parse that pins ragged rows and broken quotes on their rows.

    A record spanning several lines with the wrong field
    count, or a quote still open at the end of the file, means a quote that never closes:
    that record's first line is rejected (its quotes read literally) and parsing resumes
    on the next line, so one stray quote cannot swallow the rest of the file.
    """
    lines = _split_lines(data.decode("utf-8"))
    n_lines = len(lines)
    width = len(header)
    good: list[list[str]] = []
    good_rows: list[int] = []
    bad: list[tuple[int, list[str], str]] = []
    row_number = -1  # the header is record 0
    pos = 0
    with _csv_field_limit():
        while pos < n_lines:
            reader = csv.reader(itertools.islice(lines, pos, None), delimiter=delimiter)
            consumed = 0
            restart = None
            try:
                for fields in reader:
                    line_num = reader.line_num
                    start, span = pos + consumed, line_num - consumed
                    consumed = line_num
                    if not fields:
                        continue  # a blank line is not a row
                    row_number += 1
                    # Only multi-line records and the file's last record can hide an open
                    # quote (elsewhere it would have pulled in the next line).
                    if (span > 1 or start + 1 == n_lines) and row_number:
                        record = lines[start : start + span]
                        at_end = start + span == n_lines
                        if (span > 1 and len(fields) != width) or (
                            at_end
                            and "".join(record).count('"') % 2
                            and not _well_formed(record, delimiter)
                        ):
                            bad.append(
                                (row_number, _literal_fields(lines[start], delimiter), _UNCLOSED)
                            )
                            if span > 1:
                                restart = start + 1
                                break
                            continue
                    if not row_number:
                        continue  # the header, already parsed by _read_header
                    if len(fields) == width:
                        good.append(fields)
                        good_rows.append(row_number)
                    else:
                        reason = f"row has {_fields(len(fields))}, header has {width}"
                        bad.append((row_number, fields, reason))
            except csv.Error as err:
                raise InputError(f"{name}: not a readable CSV ({err})") from None
            if restart is None:
                break
            pos = restart

    frame = pd.DataFrame(
        {
            i: pd.Series(pa.array(col, type=pa.large_string()), dtype="str")
            for i, col in enumerate(zip(*good, strict=True))
        }
        if good
        else {i: pd.Series([], dtype="str") for i in range(width)}
    )
    frame.columns = header
    return frame, np.array(good_rows, dtype=np.int64), bad


def _malformed_frame(
    header: list[str], malformed: list[tuple[int, list[str], str]], delimiter: str, name: str
) -> pd.DataFrame:
    """Rejected rows for records that could not be split into the header's fields."""
    width = len(header)
    values: list[list[str]] = [[] for _ in range(width)]
    extra: list[str] = []
    for _, fields, _ in malformed:
        for i in range(width):
            values[i].append(fields[i] if i < len(fields) else "")
        # Fields beyond the header's are kept too, re-joined as CSV text.
        extra.append(_join_fields(fields[width:], delimiter))
    return _rejected_frame(
        header,
        [np.array(v, dtype=object) for v in values],
        name,
        np.array([m[0] for m in malformed], dtype=np.int64),
        np.array([m[2] for m in malformed], dtype=object),
        extra=extra if any(extra) else None,
    )


def _split_lines(text: str) -> list[str]:
    """Lines with their endings (CSV lines end with CR LF, LF or a lone CR)."""
    if text.count("\r") == text.count("\r\n"):
        # The common case, at C speed: no lone carriage returns.
        lines = text.split("\n")
        last = lines.pop()
        lines = [line + "\n" for line in lines]
        if last:
            lines.append(last)
        return lines
    # Not str.splitlines(): that also splits on \x0b, \x1c, \u2028 ... which may sit in fields.
    return [line for line in re.split(r"(?<=\n)|(?<=\r)(?!\n)", text) if line]


def _literal_fields(line: str, delimiter: str) -> list[str]:
    """A line's fields with quote characters taken literally (for rows with a broken quote)."""
    return next(csv.reader([line], delimiter=delimiter, quoting=csv.QUOTE_NONE), [])


def _well_formed(record_lines: list[str], delimiter: str) -> bool:
    try:
        return len(list(csv.reader(record_lines, delimiter=delimiter, strict=True))) == 1
    except csv.Error:
        return False


def _join_fields(fields: list[str], delimiter: str) -> str:
    if not fields:
        return ""
    out: list[str] = []
    for value in fields:
        if delimiter in value or '"' in value or "\n" in value or "\r" in value:
            value = '"' + value.replace('"', '""') + '"'
        out.append(value)
    return delimiter.join(out)


def _fields(n: int) -> str:
    return "1 field" if n == 1 else f"{n} fields"


@contextlib.contextmanager
def _csv_field_limit() -> Iterator[None]:
    # The csv module refuses fields over 128 KiB by default; we truncate long fields
    # ourselves (max_field_chars), so lift the limit while parsing and restore it after.
    old = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(old)


# --- columns ---------------------------------------------------------------------------
def _column_key(name: str) -> str:
    key = name.replace("\ufeff", "").replace("\x00", "").strip().strip('"').strip().casefold()
    return re.sub(r"[\s\-]+", "_", key)


def _match_columns(
    header: Sequence[str], column_map: Mapping[str, str]
) -> tuple[dict[str, int], list[str]]:
    user_map = {_column_key(k): v.lower() for k, v in column_map.items()}
    claims: dict[str, list[tuple[int, int]]] = {}  # target -> [(priority, position)]
    for position, raw_name in enumerate(header):
        key = _column_key(str(raw_name))
        if key in user_map:
            target, priority = user_map[key], (0 if user_map[key] == key else 1)
        elif key in contracts.INPUT_COLUMNS:
            target, priority = key, 0
        elif key in contracts.DEFAULT_COLUMN_ALIASES:
            target, priority = contracts.DEFAULT_COLUMN_ALIASES[key], 2
        else:
            continue
        if target in contracts.INPUT_COLUMNS:
            claims.setdefault(target, []).append((priority, position))
    mapping: dict[str, int] = {}
    notes: list[str] = []
    for target in contracts.INPUT_COLUMNS:
        if target not in claims:
            continue
        ranked = sorted(claims[target])
        winner = ranked[0][1]
        mapping[target] = winner
        if str(header[winner]) != target:
            notes.append(f"column {_show(str(header[winner]))} read as {target}")
        for _, loser in ranked[1:]:
            notes.append(
                f"column {_show(str(header[loser]))} ignored: "
                f"{_show(str(header[winner]))} already provides {target}"
            )
    return mapping, notes


def _require_columns(
    mapping: Mapping[str, int], header: Sequence[str], name: str, data: bytes | None = None
) -> None:
    missing = [c for c in contracts.REQUIRED_COLUMNS if c not in mapping]
    if not missing:
        return
    if data is not None:
        # Not a CSV at all? Say so rather than list a garbage header's "columns".
        if _looks_binary(data[:_BINARY_SAMPLE]):
            raise InputError(f"{name}: binary content, not a CSV text file")
        start = data.lstrip()[:1]
        if start in (b"{", b"["):
            raise InputError(f"{name}: not a CSV file (looks like JSON)")
        if start == b"<":
            raise InputError(f"{name}: not a CSV file (looks like HTML/XML)")
    shown = [_show(str(h), quote=False) for h in header[:20]]
    found = ", ".join(shown) + (f", … ({len(header)} columns)" if len(header) > 20 else "")
    what = (
        f"missing required column '{missing[0]}'"
        if len(missing) == 1
        else "missing required columns " + ", ".join(f"'{m}'" for m in missing)
    )
    raise InputError(f"{name}: {what} (found: {found or 'no columns'})")


# --- values ----------------------------------------------------------------------------
def _as_text(values: pd.Series | Sequence[Any]) -> pd.Series:
    """A string series with a fresh 0..n-1 index; missing values become ''."""
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    if series.dtype != "str":
        series = series.astype("str")
    if series.hasnans:
        series = series.fillna("")
    return series.reset_index(drop=True)


def _arrow_text(values: pd.Series) -> pa.Array:
    """The column as a pyarrow large_string array (zero-copy for pandas' str dtype)."""
    array = pa.array(_as_text(values))
    return array if array.type == pa.large_string() else array.cast(pa.large_string())


def _constant(value: str, n: int) -> pd.Series:
    return pd.Series(pa.repeat(value, n), dtype="str")


def _truncate(columns: list[pd.Series], limit: int) -> tuple[list[pd.Series], int]:
    total = 0
    out = []
    for col in columns:
        too_long = col.str.len() > limit
        count = int(too_long.sum())
        if count:
            col = col.where(~too_long, col.str.slice(0, limit))
            total += count
        out.append(col)
    return out, total


def _truncate_frame(frame: pd.DataFrame, limit: int) -> tuple[pd.DataFrame, int]:
    """Truncate the raw-value columns of a rejected frame (not source_file/row/reason)."""
    frame = frame.copy()
    total = 0
    for position, name in enumerate(frame.columns):
        if name in REJECT_COLUMNS:
            continue
        (col,), count = _truncate([frame.iloc[:, position]], limit)
        if count:
            frame.isetitem(position, col.to_numpy())
            total += count
    return frame, total


def _map_vocabulary(values: pd.Series | Sequence[Any], mapper: Any) -> pd.Series:
    return pd.Series(per_distinct(_as_text(values), mapper, "", object), dtype="str")


def _severity_of(value: str) -> str:
    key = value.strip().casefold()
    match = _SEVERITY_NUMBERED.match(key)
    if match:
        prefix = _SEVERITY_PREFIX.get(match.group(1), match.group(1))
        key = prefix + match.group(2)
    return _SEVERITY_WORDS.get(key, "unknown")


def _status_of(value: str) -> str:
    key = value.strip().casefold()
    if not key:
        return "firing"
    return _STATUS_WORDS.get(key, key)


def _parse_epochs(text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Numeric strings -> (microseconds since epoch, out-of-range mask)."""
    n = len(text)
    micros = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    as_int = text.str.fullmatch(_INT_RE).to_numpy(dtype=bool)
    digits = text.str.lstrip("+-")
    # Integers beyond int64 are far out of range anyway; keep them away from the cast.
    lengths = digits.str.len().to_numpy()
    overflow = as_int & ((lengths > 19) | ((lengths == 19) & (digits > _INT64_MAX).to_numpy()))
    as_int = as_int & ~overflow
    floats = text.astype("float64").to_numpy()
    magnitude = np.abs(floats)
    # 1e11 s is the year 5138, 1e11 ms is 1973: magnitudes cannot be confused in range.
    per_second = np.select(
        [magnitude < 1e11, magnitude < 1e14, magnitude < 1e17], [1.0, 1e3, 1e6], 1e9
    )
    seconds = floats / per_second
    out = ~((seconds >= _EPOCH_MIN_S) & (seconds <= _EPOCH_MAX_S)) | overflow
    ok = ~out
    # Exact integer arithmetic where possible (floats lose nanosecond digits).
    ints = np.zeros(n, dtype=np.int64)
    if as_int.any():
        ints[as_int] = text.iloc[np.flatnonzero(as_int)].astype("int64").to_numpy()
    exact = ok & as_int
    scale = per_second[exact]
    values = ints[exact]
    micros[exact] = np.where(scale <= 1e6, values * (1e6 / scale).astype(np.int64), values // 1000)
    approx = ok & ~as_int
    micros[approx] = np.round(floats[approx] * (1e6 / per_second[approx])).astype(np.int64)
    return micros, out


def _parse_datetime_strings(text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Date-time strings -> (microseconds since epoch, failed mask)."""
    micros = _iso_micros(text)
    failed = micros == np.iinfo(np.int64).min
    if failed.any():
        # Second chance for near-ISO spellings: "2024/01/02 10:00", lower-case t/z,
        # comma decimals, a trailing "UTC"/"GMT".
        idx = np.flatnonzero(failed)
        cleaned = (
            text.iloc[idx]
            .str.replace(r"^(\d{4})/(\d{1,2})/(\d{1,2})", r"\1-\2-\3", regex=True)
            .str.replace(r"^(\d{4}-\d{2}-\d{2})[tT ]", r"\1T", regex=True)
            .str.replace(r"(:\d{2}),(\d+)", r"\1.\2", regex=True)
            .str.replace(r"\s*(?:[zZ]|UTC|GMT|utc|gmt)$", "+00:00", regex=True)
        )
        micros[idx] = _iso_micros(cleaned)
        failed = micros == np.iinfo(np.int64).min
    if failed.any():
        # RFC 2822 ("Tue, 02 Jan 2024 10:00:00 +0000"), once per distinct value.
        idx = np.flatnonzero(failed)
        codes, uniques = pd.factorize(text.iloc[idx])
        parsed = np.array([_rfc2822_micros(u) for u in uniques], dtype=np.int64)
        micros[idx] = parsed[codes]
        failed = micros == np.iinfo(np.int64).min
    return micros, failed


def _iso_micros(text: pd.Series) -> np.ndarray:
    if not len(text):
        return np.zeros(0, dtype=np.int64)
    parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    naive = parsed.dt.tz_convert(None).dt.as_unit("us")
    return naive.to_numpy().view(np.int64).copy()


def _rfc2822_micros(value: str) -> int:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return int(np.iinfo(np.int64).min)
    if parsed is None:
        return int(np.iinfo(np.int64).min)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return _to_micros(parsed)


def _to_micros(stamp: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact, any year)."""
    return (stamp - _EPOCH) // timedelta(microseconds=1)


def _set_reasons(reasons: np.ndarray, text: pd.Series, idx: np.ndarray, prefix: str) -> None:
    if len(idx):
        values = text.iloc[idx].tolist()
        reasons[idx] = [f"{prefix} {_show(v)}" for v in values]


def _show(value: str, quote: bool = True, limit: int = _MESSAGE_VALUE_CHARS) -> str:
    """A short, one-line rendering of a value for messages and reasons."""
    short = value[:limit]
    short = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in short)
    if len(value) > limit:
        short += "…"
    return f"'{short}'" if quote else short


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", errors="surrogatepass")).hexdigest()


# --- duplicates and frames -------------------------------------------------------------
def _reject_duplicate_ids(
    ids: pd.Series,
    valid: np.ndarray,
    rows: np.ndarray,
    source_file: str,
    known_ids: Mapping[str, tuple[str, int]] | None,
    reasons: np.ndarray,
) -> None:
    if not len(valid):
        return
    valid_ids = ids.iloc[valid].reset_index(drop=True)
    in_file = valid_ids.duplicated(keep="first").to_numpy()
    if known_ids:
        # Look this file's ids up in the mapping (linear in this file, not in all before it).
        earlier = np.fromiter((i in known_ids for i in valid_ids.tolist()), bool, len(valid))
    else:
        earlier = np.zeros(len(valid), dtype=bool)
    dup = np.flatnonzero(in_file | earlier)
    if not len(dup):
        return
    first_rows = pd.Series(rows[valid], index=valid_ids.to_numpy())
    first_rows = first_rows[~first_rows.index.duplicated(keep="first")]
    for j in dup:
        alert_id = valid_ids.iloc[j]
        if earlier[j]:
            file, row = known_ids[alert_id]  # type: ignore[index]
        else:
            file, row = source_file, int(first_rows[alert_id])
        reasons[valid[j]] = f"duplicate alert_id {_show(alert_id)} (first at file {file} row {row})"


def _reject_names(header: Sequence[str]) -> list[str]:
    """Unique column names for the rejected frame (raw names may repeat or clash)."""
    # extra_fields is always reserved so every file's rejected frame names columns alike.
    reserved = {*REJECT_COLUMNS, EXTRA_FIELDS_COLUMN}
    names: list[str] = []
    used: set[str] = set()
    for raw_name in header:
        base = str(raw_name)
        candidate, k = base, 0
        while candidate in used or candidate in reserved:
            k += 1
            candidate = f"{base}.{k}"
        used.add(candidate)
        names.append(candidate)
    return names


def _rejected_frame(
    header: Sequence[str],
    values: list[np.ndarray],
    source_file: str,
    rows: np.ndarray,
    reasons: np.ndarray,
    extra: list[str] | None = None,
) -> pd.DataFrame:
    names = _reject_names(header)
    data: dict[str, Any] = {
        name: pd.Series(col, dtype="str") for name, col in zip(names, values, strict=True)
    }
    if extra is not None:
        data[EXTRA_FIELDS_COLUMN] = pd.Series(extra, dtype="str")
    data["source_file"] = pd.Series([source_file] * len(rows), dtype="str")
    data["source_row"] = pd.Series(rows, dtype="int64")
    data[contracts.REJECT_REASON] = pd.Series(reasons, dtype="str")
    return pd.DataFrame(data)


def concat_rejected(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f.columns)]
    nonempty = [f for f in frames if len(f)] or frames[:1]
    combined = pd.concat(nonempty, ignore_index=True) if len(nonempty) > 1 else nonempty[0]
    # Keep every raw column seen in any file (also from empty frames), reasons last.
    raw_columns: list[str] = []
    for frame in frames:
        raw_columns += [c for c in frame.columns if c not in {*REJECT_COLUMNS, *raw_columns}]
    combined = combined.reindex(columns=[*raw_columns, *REJECT_COLUMNS])
    for name in raw_columns:
        combined[name] = combined[name].astype("str").fillna("")
    combined["source_row"] = combined["source_row"].astype("int64")
    return combined.reset_index(drop=True)


def _empty_alerts() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series([], dtype="str") for c in contracts.CANONICAL_COLUMNS})
    frame["timestamp"] = pd.Series([], dtype=TIMESTAMP_DTYPE)
    frame["source_row"] = pd.Series([], dtype="int64")
    return frame


def reject_accepted(batch: AlertBatch, positions: np.ndarray, reasons: Sequence[str]) -> AlertBatch:
    """The batch with the accepted alerts at ``positions`` moved to the rejected rows, with
    their reasons (counts still add up: accepted + rejected == read)."""
    if len(positions) == 0:
        return batch
    keep = np.ones(len(batch.alerts), dtype=bool)
    keep[positions] = False
    return AlertBatch(
        alerts=batch.alerts[keep].reset_index(drop=True),
        rejected=concat_rejected(
            [batch.rejected, as_rejected(batch.alerts.iloc[positions], reasons)]
        ),
        rows_read=batch.rows_read,
        files=batch.files,
        notes=batch.notes,
    )


def as_rejected(alerts: pd.DataFrame, reasons: Sequence[str]) -> pd.DataFrame:
    """Accepted alerts as rejected rows. They are written in their canonical form (time in
    ISO 8601, severity normalised): the raw text of an accepted row is not kept."""
    stamps = pd.to_datetime(alerts["timestamp"], utc=True)
    data = {
        name: (stamps.map(pd.Timestamp.isoformat) if name == "timestamp" else alerts[name])
        .astype("str")
        .to_numpy()
        for name in contracts.CANONICAL_COLUMNS
        if name not in REJECT_COLUMNS
    }
    rejected = pd.DataFrame(data)
    rejected["source_file"] = alerts["source_file"].astype("str").to_numpy()
    rejected["source_row"] = alerts["source_row"].astype("int64").to_numpy()
    rejected[contracts.REJECT_REASON] = pd.Series(list(reasons), dtype="str")
    return rejected


def _combine(batches: list[AlertBatch]) -> AlertBatch:
    if len(batches) == 1:
        return batches[0]
    alerts = [b.alerts for b in batches if len(b.alerts)]
    combined = pd.concat(alerts, ignore_index=True) if alerts else _empty_alerts()
    return AlertBatch(
        alerts=combined,
        rejected=concat_rejected([b.rejected for b in batches]),
        rows_read=sum(b.rows_read for b in batches),
        files=[f for b in batches for f in b.files],
        notes=[n for b in batches for n in b.notes],
    )
