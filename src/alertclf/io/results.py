"""The results store: one folder per classify run, complete or absent.

``results/{run_id}/`` is written into a hidden temporary folder beside it, every file
flushed to disk, and then renamed into place in one step, so a reader (or a crash)
never sees a half-written result folder. ``run_id`` is the UTC start time
``YYYYMMDD_HHMMSS`` (``_2``, ``_3``... when taken).

CSV cells that begin with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return are
written with a leading apostrophe (OWASP "CSV injection"): a spreadsheet then shows
text instead of running a formula. The raw value is recoverable with
:func:`unescape_cell` (drop one apostrophe when apostrophes and then one of those
characters follow). A value that itself starts with apostrophes before such a character
(``'=x``) gets one more, so every raw value comes back exactly.

Every text value is quoted (pyarrow's "needed" style quotes all strings), so that a
value holding a line break stays one value for every reader.

A results folder that cannot be written (disk full, permissions) fails with one
:class:`ResultsError` naming the folder; the temporary folder is removed, so nothing
half-written is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from alertclf.errors import AlertclfError


@dataclass(frozen=True)
class View:
    """Rows of another table of the same results folder, chosen by position.

    Written from the source table's Arrow form (``take``): no second pandas copy of a
    million rows and no second escaping and conversion, which made the two views of the
    alert table cost as much as the table itself.
    """

    source: str  # file name of the table the rows come from
    rows: Callable[[pd.DataFrame], np.ndarray]  # source frame -> row positions, in order


Table = pd.DataFrame | View

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
VIEW_SLICE_ROWS = 65_536  # rows of a table (or gathered for a view) written at a time
WRITEBACK_BYTES = 64 << 20  # see _start_writeback
TMP_PREFIX = ".tmp-"
# Values escaped on the way out: a trigger first, or apostrophes and then a trigger (else
# "'=x" would be written as is and read back as "=x").
_NEEDS_ESCAPE = re.compile(r"'*[=+\-@\t\r]")
_ESCAPED = re.compile(r"'+[=+\-@\t\r]")
_FIRST_CHARACTERS = pa.array(["'", *FORMULA_TRIGGERS])


class ResultsError(AlertclfError):
    """The results folder could not be written; nothing of it is visible."""


def escape_cell(value: Any) -> Any:
    if isinstance(value, str) and _NEEDS_ESCAPE.match(value):
        return "'" + value
    return value


def unescape_cell(value: Any) -> Any:
    if isinstance(value, str) and _ESCAPED.match(value):
        return value[1:]
    return value


def _escaped(series: pd.Series) -> pd.Series | None:
    """``series`` with formula-like cells escaped, or None when none needs it."""
    if (
        pd.api.types.is_numeric_dtype(series)
        or pd.api.types.is_datetime64_any_dtype(series)
        or pd.api.types.is_bool_dtype(series)
    ):
        return None
    text = series.astype("str")  # missing stays missing
    # Only a cell that starts with an apostrophe or a trigger can need it: that test
    # (one character per cell) clears most columns of a million rows without the
    # regular expression (sampled on a million alerts: 1.8 -> 0.7 s of thread time).
    first = pc.utf8_slice_codeunits(pa.array(text, type=pa.string(), from_pandas=True), 0, 1)
    if not pc.any(pc.is_in(first, value_set=_FIRST_CHARACTERS)).as_py():
        return None
    risky = text.str.match(_NEEDS_ESCAPE.pattern).fillna(False).astype(bool)
    return text.where(~risky, "'" + text) if risky.any() else None


def to_arrow(frame: pd.DataFrame, escape: bool = False, pool: Executor | None = None) -> pa.Table:
    """One result table as Arrow, in the text forms the CSV contract uses: ISO-8601 UTC
    timestamps ending in ``Z``, ``True``/``False``, text as text; with ``escape``, text
    cells that look like formulas escaped (see above). Given a thread ``pool``, the columns are
    converted side by side (pyarrow's compute functions release the GIL: the alert table
    of a million alerts 1.9 -> 1.1 s on 2 cores)."""

    def convert(name: Any) -> pa.Array:
        series = frame[name]
        escaped = _escaped(series) if escape else None
        return _arrow_column(series if escaped is None else escaped)

    names = list(frame.columns)
    arrays = list(pool.map(convert, names)) if pool else [convert(n) for n in names]
    return (
        pa.table({str(n): a for n, a in zip(names, arrays, strict=True)}) if names else pa.table({})
    )


def _arrow_column(series: pd.Series) -> pa.Array:
    if pd.api.types.is_datetime64_any_dtype(series):
        stamps = pa.array(pd.to_datetime(series, utc=True).dt.tz_localize(None), pa.timestamp("us"))
        # Arrow's cast to text is "YYYY-MM-DD HH:MM:SS.ffffff", the same digits as
        # strftime's "%Y-%m-%dT%H:%M:%S" at microseconds, five times faster (1.1 -> 0.2 s
        # a million): only the separator differs.
        text = pc.replace_substring(pc.cast(stamps, pa.string()), " ", "T", max_replacements=1)
        return pc.binary_join_element_wise(text, "Z", "")
    if pd.api.types.is_bool_dtype(series):
        return pc.if_else(pa.array(series.to_numpy(dtype=bool)), "True", "False")
    if pd.api.types.is_numeric_dtype(series):
        return pa.array(series.to_numpy(), from_pandas=True)
    return pa.array(series.astype("str"), type=pa.string(), from_pandas=True)


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write one result table as UTF-8 CSV, formula-safe, flushed to disk.

    pyarrow's writer quotes every text value, so a CR or LF inside an alert's text never
    splits its row, and writes a million rows in about a second.
    """
    return write_arrow_csv(to_arrow(frame, escape=True), path)


def write_arrow_csv(table: pa.Table, path: str | Path, rows: np.ndarray | None = None) -> Path:
    """Write a table already escaped and converted by :func:`write_csv`'s steps; with
    ``rows``, only those rows in that order, gathered a slice at a time (gathering a
    million rows at once took another 0.8 GB of fresh memory, about 2 s a GB here)."""
    path = Path(path)
    options = pacsv.WriteOptions(quoting_style="needed")
    # A full disk raises OSError here (pyarrow's IO errors are OSErrors too);
    # write_results turns it into one line and removes the temporary folder.
    with open(path, "wb") as handle:
        if not table.num_columns:
            handle.write(b"\n")
        else:
            slices = (
                table.to_batches(max_chunksize=VIEW_SLICE_ROWS)
                if rows is None
                else (
                    table.take(pa.array(rows[start : start + VIEW_SLICE_ROWS]))
                    for start in range(0, len(rows), VIEW_SLICE_ROWS)
                )
            )
            handed = 0
            with pacsv.CSVWriter(handle, table.schema, write_options=options) as writer:
                for part in slices:
                    writer.write(part)
                    handed = _start_writeback(handle, handed)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def _start_writeback(handle: Any, handed: int) -> int:
    """Hand the bytes written past ``handed`` to the disk without waiting for them, once
    there are ``WRITEBACK_BYTES``; returns the new mark.

    Why: Linux holds up to a tenth of the RAM in unwritten pages before it writes any,
    so the fsync at the end wrote all 1.8 GB of a million alerts' results at once.
    Started early, the disk writes while the rest is still being formatted. The result
    tables of a million alerts, written by 4 threads: 5.3 s with the closing fsync
    alone, 4.4 s with this, 4.5 s with no fsync at all; inside classify about 0.6 s less.
    ``POSIX_FADV_DONTNEED`` starts the write-back of the range's unwritten pages without
    waiting and drops its already written ones from the cache: the store's copy is a hard
    link, and an upload to a tracking server reads them back at disk speed, which is
    faster than any upload.
    """
    position = handle.tell()
    if position - handed < WRITEBACK_BYTES or not hasattr(os, "posix_fadvise"):
        return handed
    handle.flush()
    os.posix_fadvise(handle.fileno(), handed, position - handed, os.POSIX_FADV_DONTNEED)
    return position


def write_json(data: Any, path: str | Path) -> Path:
    path = Path(path)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True, default=_json_default)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    return path


def write_bytes(content: bytes, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def new_run_id(root: Path, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d_%H%M%S")
    candidate, n = stamp, 1
    while (root / candidate).exists() or any(root.glob(f"{TMP_PREFIX}{candidate}-*")):
        n += 1
        candidate = f"{stamp}_{n}"
    return candidate


def write_results(
    root: str | Path,
    run_id: str,
    tables: Mapping[str, Table],
    documents: dict[str, Any],
    files: Mapping[str, bytes | Path] | Callable[[], Mapping[str, bytes | Path]] | None = None,
) -> Path:
    """Write every file into a temporary folder, then rename it to ``root/run_id``.

    ``files`` adds other files as they are (bytes, or a file to copy), e.g. the report
    and its charts; names are relative and may have one level of sub-folder. Given as a
    function, it is called while the tables are being written (their writers release
    the GIL), so drawing a report costs no extra wall time; the ``documents`` are
    written after it returns.
    """
    root = Path(root)
    if not callable(files):
        _check_file_names(files or {})
    with atomic_results_folder(root, run_id) as tmp:
        # The views' rows are chosen before any writer starts (pandas work that holds
        # the GIL), and each view is started with its source, the largest first.
        views = {name: t for name, t in tables.items() if isinstance(t, View)}
        rows_of = {
            name: np.asarray(view.rows(tables[view.source]), dtype=np.int64)
            for name, view in views.items()
        }
        views_of: dict[str, list[str]] = {}
        for name in sorted(views, key=lambda name: -len(rows_of[name])):
            views_of.setdefault(views[name].source, []).append(name)

        def write_view(source: pa.Table, name: str) -> Path:
            return write_arrow_csv(source, tmp / name, rows_of.pop(name))

        # Arrow's take and CSV writer release the GIL: every table is written in a
        # thread as soon as it is converted, its views side by side with it (1M alerts,
        # three files of 0.2-0.8 GB, 2 cores: 11.2 -> 8.9-10.0 s).
        converters = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
        with converters, ThreadPoolExecutor(max_workers=1 + len(rows_of)) as pool:
            writes = []
            for name, table in tables.items():
                if isinstance(table, View):
                    continue
                arrow = to_arrow(table, escape=True, pool=converters)
                writes.append(pool.submit(write_arrow_csv, arrow, tmp / name))
                writes += [pool.submit(write_view, arrow, view) for view in views_of.get(name, [])]
                del arrow  # the writers hold it as long as they need it
            if callable(files):
                files = files()
                _check_file_names(files)
            for write in writes:
                write.result()
        files = files or {}
        for name, data in documents.items():
            write_json(data, tmp / name)
        for name, content in files.items():
            write_bytes(
                content if isinstance(content, bytes) else Path(content).read_bytes(), tmp / name
            )
    return root / run_id


def _check_file_names(files: Mapping[str, Any]) -> None:
    for name in files:
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts or not 1 <= len(parts) <= 2:
            raise ValueError(f"results file name {name!r} must be relative, inside the folder")


@contextlib.contextmanager
def atomic_results_folder(root: str | Path, run_id: str) -> Iterator[Path]:
    """A temporary folder to fill; renamed to ``root/run_id`` in one step when the block
    ends, so the results are complete or absent. On any error it is removed, and an
    OSError (a full disk, a read-only mount: the operator's to fix, not a bug) becomes
    one :class:`ResultsError` line."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{TMP_PREFIX}{run_id}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        yield tmp
        for folder in [p for p in tmp.iterdir() if p.is_dir()]:
            _fsync_dir(folder)
        _fsync_dir(tmp)
        os.rename(tmp, root / run_id)
        _fsync_dir(root)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ResultsError(
            f"{root}: cannot write the results folder {run_id} "
            f"({err.strerror or type(err).__name__}); nothing of it was kept"
        ) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(root: str | Path) -> list[Path]:
    """Temporary folders left by a crash (never renamed, so never visible as results)."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for tmp in root.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
