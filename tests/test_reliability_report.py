"""RELIABILITY.md is merged, not overwritten, when two pytest-xdist workers write it."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from reliability import Case, read_rows, write_report

WRITES = 40


def _write_many(path: str, section: str, start: multiprocessing.synchronize.Event) -> None:
    start.wait()
    for i in range(WRITES):
        write_report(Path(path), [Case(case=f"{section}.case{i}", how="concurrent write")])


def test_two_workers_writing_at_once_keep_every_row(tmp_path) -> None:
    # `make test` runs two workers; each merges its rows into the report at its end. Each
    # process here writes 40 times, row by row, at the same moment as the other: every
    # one of the 80 rows must survive (an unlocked read-merge-write lost some).
    report = tmp_path / "RELIABILITY.md"
    context = multiprocessing.get_context("fork")
    start = context.Event()
    workers = [
        context.Process(target=_write_many, args=(str(report), section, start))
        for section in ("fuzz", "faults")
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    rows = read_rows(report)
    assert len(rows) == 2 * WRITES
    assert {row.section for row in rows.values()} == {"fuzz", "faults"}
