"""Reliability cases: every test that tries a failure on purpose records what it did and
what happened, and ``RELIABILITY.md`` is regenerated from those records.

A test takes the ``reliability`` fixture and declares its case, then adds figures as it
learns them::

    def test_kill(reliability):
        case = reliability("faults.kill9", "SIGKILL of `alertclf classify` at 5 seeded delays")
        ...
        case.figures(alerts_in=1003, alerts_accounted=1003, failures_injected=5)

The row's result comes from the test's own outcome (``pass`` or ``FAIL``; a skipped test
records nothing), so a failing test can never leave a stale "pass" behind. At the end of
a session that recorded anything, the rows are merged by case id into the data block at
the bottom of ``RELIABILITY.md`` (rows of cases not run this time are kept, so a partial
run does not erase the table) and the whole file is rewritten in a fixed order. Each
record is also appended to ``benchmarks/out/reliability.jsonl`` (git-ignored), a history
of every run.

Registered for the whole suite by one import line in ``tests/conftest.py`` (the hook
functions below must sit in a conftest's namespace for pytest to call them).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "RELIABILITY.md"
JSONL = ROOT / "benchmarks" / "out" / "reliability.jsonl"
# Tests that write elsewhere (a scratch copy) set this; the suite itself never does.
ENV_REPORT = "ALERTCLF_RELIABILITY_REPORT"

SECTIONS: dict[str, str] = {
    "fuzz": "1. Bad input, fuzzed",
    "faults": "2. Faults, injected",
    "security": "3. Security",
    "load": "4. Load",
}
# Figures that add up across cases into the summary, in this order.
TOTALS: dict[str, str] = {
    "examples": "inputs tried",
    "alerts_in": "alerts in",
    "alerts_accounted": "alerts accounted for",
    "failures_injected": "failures injected",
    "failures_recovered": "failures recovered",
}
# Column order of the figures inside a row; the rest follow alphabetically.
FIGURE_ORDER = (
    "examples",
    "alerts_in",
    "alerts_accounted",
    "failures_injected",
    "failures_recovered",
    "retries",
    "seconds",
)
DATA_BEGIN = "<!-- reliability-data"
DATA_END = "reliability-data -->"


@dataclass
class Case:
    """One row of the table."""

    case: str  # "<section>.<name>", e.g. "faults.kill9"
    how: str
    result: str = "pass"
    figures: dict[str, Any] = field(default_factory=dict)
    test: str = ""
    date: str = ""

    @property
    def section(self) -> str:
        return self.case.split(".", 1)[0]


# This session's rows by case id (a case recorded twice keeps the later record).
_SESSION: dict[str, Case] = {}


def record(case: str, how: str, result: str = "pass", *, test: str = "", **figures: Any) -> Case:
    """Add (or replace) one row for this session and append it to the JSON-lines log."""
    if case.split(".", 1)[0] not in SECTIONS:
        raise ValueError(f"case id {case!r} must start with one of {sorted(SECTIONS)}")
    row = Case(
        case=case,
        how=" ".join(how.split()),
        result=result,
        figures={k: _plain(v) for k, v in figures.items()},
        test=test,
        date=datetime.now(UTC).strftime("%Y-%m-%d"),
    )
    _SESSION[case] = row
    try:
        JSONL.parent.mkdir(parents=True, exist_ok=True)
        with JSONL.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({**asdict(row), "at": datetime.now(UTC).isoformat()}) + "\n")
    except OSError:
        pass  # the log is a convenience; the session collector is what the report uses
    return row


class CaseRecorder:
    """What the ``reliability`` fixture hands out: declare cases, add figures as you go."""

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid
        self.cases: dict[str, tuple[str, dict[str, Any]]] = {}

    def __call__(self, case: str, how: str, **figures: Any) -> _Handle:
        # Hypothesis calls the test body once per example with the same fixture: keep
        # counting into the figures declared by the first example.
        known = self.cases.get(case, (how, {}))[1]
        self.cases[case] = (how, {**known, **figures})
        return _Handle(self, case)

    def finish(self, result: str) -> None:
        for case, (how, figures) in self.cases.items():
            record(case, how, result, test=self.nodeid, **figures)


@dataclass
class _Handle:
    recorder: CaseRecorder
    case: str

    def figures(self, **figures: Any) -> None:
        self.recorder.cases[self.case][1].update(figures)

    def add(self, **increments: float) -> None:
        """Add to counters (e.g. one more example, N more alerts)."""
        current = self.recorder.cases[self.case][1]
        for key, value in increments.items():
            current[key] = current.get(key, 0) + value


# --- pytest wiring ------------------------------------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[Any]:
    """Keep each phase's report on the item, so the fixture knows how the test ended."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


_REPORTS = pytest.StashKey[dict]()


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Iterator[CaseRecorder]:
    """Declare reliability cases; their rows get this test's outcome at teardown."""
    recorder = CaseRecorder(request.node.nodeid)
    yield recorder
    reports = request.node.stash.get(_REPORTS, {})
    call = reports.get("call")
    if call is None or call.skipped:
        return  # skipped (or never ran): the previous row stays as it was
    result = "pass" if call.passed else "FAIL"
    recorder.finish(result)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Merge this session's rows into RELIABILITY.md (only if there are any)."""
    if _SESSION:
        write_report(Path(os.environ.get(ENV_REPORT) or REPORT), _SESSION.values())


# --- the report -----------------------------------------------------------------------------
def read_rows(path: Path) -> dict[str, Case]:
    """The rows stored in the data block of an existing report (none if absent)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    start = text.find(DATA_BEGIN)
    end = text.find(DATA_END, start)
    if start < 0 or end < 0:
        return {}
    try:
        rows = json.loads(text[start + len(DATA_BEGIN) : end])
    except ValueError:
        return {}
    return {row["case"]: Case(**row) for row in rows if isinstance(row, dict) and "case" in row}


def write_report(path: Path, session_rows: Any) -> None:
    # `make test` runs two pytest-xdist workers, and each merges its own rows at its end:
    # the read-merge-write holds an exclusive lock, or one worker's rows could be lost.
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = read_rows(path)
        rows.update({row.case: row for row in session_rows})
        path.write_text(render(rows.values()), encoding="utf-8")


def _order(row: Case) -> tuple[int, str]:
    sections = list(SECTIONS)
    index = sections.index(row.section) if row.section in sections else len(sections)
    return index, row.case


def render(rows: Any) -> str:
    rows = sorted(rows, key=_order)
    passing = sum(1 for r in rows if r.result == "pass")
    totals = {key: sum(float(r.figures.get(key, 0) or 0) for r in rows) for key in TOTALS}
    lost = totals["alerts_in"] - totals["alerts_accounted"]
    lines = [
        "# Reliability and security",
        "",
        "Trust is the product: an alert pipeline that crashes during a storm, loses alerts or",
        "leaks a storage key is worse than none. Every failure below was tried on purpose by a",
        "test in `tests/test_reliability_*.py`; this file is **generated** from what those tests",
        "recorded (`tests/reliability.py`), rewritten at the end of every test session that ran",
        "any of them, so it is only as current as the last run (the date per row). Rows of cases",
        "not run in a session are kept as they were. Do not edit it by hand.",
        "",
        "Run them: `make test` (everything) or `make reliability` (these suites only, about 15",
        "minutes on 2 cores); `-m 'not slow'` keeps only the fast in-process cases.",
        "",
        "## Summary",
        "",
        "| | |",
        "|---|---|",
        f"| cases tried | {len(rows)} |",
        f"| cases passing | {passing} of {len(rows)} |",
    ]
    for key, label in TOTALS.items():
        lines.append(f"| {label} | {_number(totals[key])} |")
    lines.append(f"| alerts lost (in − accounted for) | {_number(lost)} |")
    lines.append("")
    lines.append(
        "*Alerts accounted for*: every row read ended up exactly once in the results or in "
        "`rejected_alerts.csv` (for the fault cases: exactly once across the visible results "
        "folders after the recovery run). *Inputs tried* counts generated files, fuzz "
        "examples, kill points and requests."
    )
    for section, title in SECTIONS.items():
        members = [r for r in rows if r.section == section]
        if not members:
            continue
        lines += ["", f"## {title}", "", "| case | how | result | figures | last run |"]
        lines.append("|---|---|---|---|---|")
        for row in members:
            result = "✅ pass" if row.result == "pass" else f"❌ {row.result}"
            lines.append(
                f"| `{row.case}` | {_cell(row.how)} | {result} | {_cell(_figures(row.figures))} "
                f"| {row.date} |"
            )
    lines += ["", *NOTES, "", DATA_BEGIN]
    data = [asdict(r) for r in rows]
    lines.append(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False))
    lines.append(DATA_END)
    return "\n".join(lines) + "\n"


def _figures(figures: dict[str, Any]) -> str:
    keys = [k for k in FIGURE_ORDER if k in figures]
    keys += sorted(k for k in figures if k not in FIGURE_ORDER)
    return "; ".join(f"{k.replace('_', ' ')} {_number(figures[k])}" for k in keys)


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _plain(value: Any) -> Any:
    """Figures as JSON numbers or text (numpy scalars, paths...)."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


# The findings behind the cases (what failed before the fixes, and what is left open).
# Kept here, beside the generator, because the file is regenerated whole.
NOTES = [
    "## What failed when first tried, and the fixes",
    "",
    "- **MLflow server down → a 16-minute hang.** MLflow's HTTP client retries 7 times with",
    "  exponential backoff (about 4 minutes per call) and waits up to 120 s per answer; under",
    "  `tracking._retry` (4 attempts) a classify against a dead server had not ended after",
    "  2 minutes and would have run for over 15. `tracking.configure_tracking` now sets",
    "  `MLFLOW_HTTP_REQUEST_MAX_RETRIES=2`, `MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1`,",
    "  `MLFLOW_HTTP_REQUEST_TIMEOUT=30` for http(s) stores unless the operator set them: the",
    "  failure now comes in about 20 s (`faults.mlflow_server_down`).",
    "- **Store errors mid-run → traceback, or the real error hidden.** Only the experiment",
    "  lookup was wrapped; a locked SQLite file or a lost server during logging raised raw",
    "  SQLAlchemy/MLflow exceptions, and mlflow's own `with start_run()` then failed again",
    "  while marking the run FAILED, replacing the first error. `tracking.start_run` now ends",
    "  the run itself (a failure to mark it is a warning) and turns store errors into one",
    "  `TrackingError` line; messages keep only the first line of SQLAlchemy's SQL dump.",
    "- **Disk full → traceback.** `write_results` removed its temporary folder but re-raised",
    "  the bare `OSError`; it is now a one-line `ResultsError` (and `StateStore.save` a",
    "  `StateError`), exit status 2 (`faults.disk_full`).",
    "- **CSV escaping was not reversible for values starting with an apostrophe.** `'=x` was",
    "  written unchanged and read back by `unescape_cell` as `=x`. Values of the form",
    "  `'*` + trigger now get one more apostrophe, so every value round-trips",
    "  (`security.csv_injection_roundtrip`).",
    "- **A carriage return inside a value split a result row in two.** The CSV writer ended",
    "  lines with LF and left a lone CR unquoted, which every reader treats as a line break;",
    "  result CSVs now end lines with CR LF (RFC 4180), so such values are quoted",
    "  (`security.csv_injection`).",
    "- **SAS signature in logs and messages.** urllib3 logs each request's path and query at",
    "  DEBUG, so `--log-level DEBUG` printed the graph URL's `sig=`; the blob reader now puts",
    "  a redacting filter on that logger. `alertclf validate` could not read a graph from a",
    "  blob URL at all and echoed the URL, SAS included, in its error; it now reads graphs as",
    "  classify does and prints locations redacted, and a graph read from a blob is named by",
    "  its redacted URL in messages and metadata (`security.secrets_never_stored`).",
    "",
    "## Open limitations",
    "",
    "- `mlflow run` records entry-point parameters as given, so a SAS token inside an",
    "  `--alerts`/`--graph` URL would land in the run's params: the scheduler (whose jobs",
    "  are `mlflow run`s) refuses such URLs; direct commands and the in-process mode record",
    "  only the redacted location. Calling `mlflow run . -e classify -P graph=<URL?sig=...>`",
    "  by hand still stores the token: the README says to use the `AZURE_STORAGE_*`",
    "  variables (`security.secrets_never_stored`).",
    "- An in-process job cannot be killed at its timeout (documented in the README); the",
    "  soak runs in-process because 200 `mlflow run` cycles take about 40 minutes here.",
    "- Memory in a long-lived in-process scheduler: RSS levels off (a fixed input: 490 →",
    "  522 MiB over 200 cycles, flat over the last 80), but Python objects still grow by",
    "  about 50 per cycle: MLflow keeps one artifact repository per run (capped at 1,024",
    "  runs) and registers the model-from-code module anew in `sys.modules` on every model",
    "  load (a few KB per classify). The `mlflow run` mode (the default) starts a fresh",
    "  process per job and is not affected.",
]
