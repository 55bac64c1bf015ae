"""The classify charts, drawn by helper processes on the machine's other core.

A classify run on 1,000 alerts spent about 1.2 of its ~6 s on three PNGs (importing
matplotlib, loading its fonts, laying out and rendering), on one core while the other
idled. :class:`ChartWorker` starts ``python -m alertclf.chartworker`` helpers (one by
default; with several, each draws its share of the charts) as the run begins: they
import matplotlib and render a warm-up figure while the batch is read, mapped and
classified, then draw from the incident and cluster tables they are sent while the
result tables are written. The run waits only for the slowest share: on 1,000 alerts it
waited 0.6-0.9 s for the charts with one helper, about 0.3 s with two and 1.2-1.6 s
drawing them itself -- but two helpers starting up slow the run down more than that
(see :data:`HELPERS`).

Nothing depends on the helpers: a share whose helper cannot start, fails, or takes
longer than ``timeout`` seconds is drawn in this process (the same bytes: same code,
same library), with a warning. Helpers speak pickles over their own stdin and stdout
(trusted children of this process, never a socket) and write nothing to stderr.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from types import TracebackType

import pandas as pd

from alertclf.plots import CLASSIFY_CHARTS

logger = logging.getLogger(__name__)

TIMEOUT_S = 120.0  # the charts of a million-alert batch draw in ~3 s
# One: on these 2-core machines a second helper's start-up competes with the run itself.
# `mlflow run` on 1,000 alerts, 4 interleaved rounds: medians 8.73 s with one helper,
# 9.42 s with two, 9.40 s drawing in the run's own process.
HELPERS = 1


class ChartWorker:
    """Helper processes that draw one batch's classify charts (see the module doc).

    Use as a context manager around the run: the helpers start on entry and are stopped
    on exit, whether or not charts were asked for.
    """

    def __init__(self, helpers: int | None = None, timeout: float = TIMEOUT_S) -> None:
        if helpers is None:
            # A process that has drawn before (a notebook, the tests, an in-process
            # scheduler after a retrain, whose plots are drawn here) draws the three
            # charts in ~0.5 s with its warm matplotlib: less than a helper needs to
            # start (the 36-file fuzz corpus took 26 s instead of 16 with one). A
            # classify-only loop never loads matplotlib and keeps using helpers.
            helpers = 0 if "matplotlib.figure" in sys.modules else HELPERS
        self.helpers = max(0, min(helpers, len(CLASSIFY_CHARTS)))
        self.timeout = timeout
        self._processes: list[subprocess.Popen[bytes]] = []
        self._exchanges: list[threading.Thread] = []  # one per helper, once submitted

    @property
    def pids(self) -> list[int]:
        """The helpers' process ids."""
        return [process.pid for process in self._processes]

    def __enter__(self) -> ChartWorker:
        for _ in range(self.helpers):
            try:
                process = subprocess.Popen(
                    [sys.executable, "-m", "alertclf.chartworker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
            except (OSError, ValueError) as err:  # no interpreter path, no processes left
                logger.info("charts will be drawn in this process: %s", err)
                break
            self._processes.append(process)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the helpers (a no-op for those that have delivered their charts)."""
        for process in self._processes:
            if process.poll() is None:
                process.kill()
        for exchange in self._exchanges:
            exchange.join()  # it closes the pipes and reaps its helper
        if not self._exchanges:
            for process in self._processes:
                _reap(process)
        self._processes, self._exchanges = [], []

    def submit(
        self, incidents: pd.DataFrame, clusters: pd.DataFrame
    ) -> Callable[[], dict[str, bytes]]:
        """Send the tables to the helpers, which start drawing at once; return a callable
        that waits for the PNGs (by chart name, in :data:`CLASSIFY_CHARTS` order),
        drawing here any share whose helper failed. The helpers serve one batch."""
        processes = [] if self._exchanges else self._processes
        if not processes:
            return lambda: _draw_here(incidents, clusters, CLASSIFY_CHARTS, "no helper process")
        shares = _shares(CLASSIFY_CHARTS, len(processes))
        tables = pickle.dumps((incidents, clusters), protocol=pickle.HIGHEST_PROTOCOL)
        boxes: list[dict[str, object]] = []
        for process, share in zip(processes, shares, strict=True):
            box: dict[str, object] = {"answered": threading.Event()}
            # A pipe holds 64 KiB and a helper reads only after its warm-up: a thread
            # feeds each, so this process carries on writing the result tables.
            exchange = threading.Thread(
                target=_exchange,
                args=(process, (pickle.dumps(share), tables), box),
                name="chart-helper",
                daemon=True,
            )
            exchange.start()
            self._exchanges.append(exchange)
            boxes.append(box)
        exchanges = list(self._exchanges)

        def result() -> dict[str, bytes]:
            pngs: dict[str, bytes] = {}
            for process, exchange, box, share in zip(
                processes, exchanges, boxes, shares, strict=True
            ):
                # The answer, not the helper's exit (its interpreter takes ~0.2 s to
                # shut down; the exchange thread reaps it meanwhile).
                if not box["answered"].wait(self.timeout):  # type: ignore[attr-defined]
                    process.kill()
                    exchange.join()
                    box["error"] = f"no answer in {self.timeout:g} s"
                pngs.update(_answer(box, incidents, clusters, share))
            return {name: pngs[name] for name in CLASSIFY_CHARTS if name in pngs}

        return result


def _answer(
    box: dict[str, object], incidents: pd.DataFrame, clusters: pd.DataFrame, share: tuple
) -> dict[str, bytes]:
    """One helper's charts, or its share drawn here when it failed."""
    if "error" in box:
        return _draw_here(incidents, clusters, share, str(box["error"]))
    try:
        status, value, warnings = pickle.loads(box["out"])  # type: ignore[arg-type]
    except Exception as err:
        return _draw_here(incidents, clusters, share, f"unreadable answer ({err})")
    for message in warnings:
        logger.warning("%s", message)
    if status != "ok":
        return _draw_here(incidents, clusters, share, str(value))
    return dict(value)


def _shares(names: tuple[str, ...], helpers: int) -> list[tuple[str, ...]]:
    """``names`` cut in ``helpers`` consecutive shares, the first ones smallest: the
    incident timeline (first) takes as long as the two bar charts together."""
    sizes = [len(names) // helpers + (i >= helpers - len(names) % helpers) for i in range(helpers)]
    starts = [sum(sizes[:i]) for i in range(helpers)]
    return [names[start : start + size] for start, size in zip(starts, sizes, strict=True)]


def _exchange(process: subprocess.Popen[bytes], payload: tuple[bytes, ...], box: dict) -> None:
    try:
        assert process.stdin is not None and process.stdout is not None
        for part in payload:
            process.stdin.write(part)
        process.stdin.close()
        box["out"] = process.stdout.read(int.from_bytes(process.stdout.read(8), "big"))
    except Exception as err:  # a broken pipe: the helper died (or was stopped)
        box["error"] = f"{type(err).__name__}: {err}"
    finally:
        box["answered"].set()
        if process.poll() is None and "out" not in box:
            process.kill()
        _reap(process)


def _reap(process: subprocess.Popen[bytes]) -> None:
    process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None and not stream.closed:
            with contextlib.suppress(OSError):
                stream.close()


def _draw_here(
    incidents: pd.DataFrame, clusters: pd.DataFrame, names: tuple, why: str
) -> dict[str, bytes]:
    from alertclf import plots

    logger.warning("chart helper unavailable (%s): drawing %s here", why, ", ".join(names))
    return plots.classify_chart_pngs(incidents, clusters, names)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def main() -> int:
    """A helper: warm up, read the pickled chart names then ``(incidents, clusters)``
    from stdin, write ``(status, charts or error, warnings)`` to stdout. Quiet when stdin
    closes before the tables come."""
    from alertclf import plots

    collect = _Collect()
    package = logging.getLogger("alertclf")
    package.addHandler(collect)
    package.setLevel(logging.WARNING)
    package.propagate = False  # warnings travel back to the parent, not to stderr
    with contextlib.suppress(Exception):  # the real charts will say what is wrong
        plots.warm_up()
    stream = sys.stdin.buffer
    try:
        names = pickle.load(stream)
    except EOFError:
        return 0
    try:
        incidents, clusters = pickle.load(stream)
        reply = ("ok", plots.classify_chart_pngs(incidents, clusters, names), collect.messages)
    except Exception as err:
        reply = ("error", f"{type(err).__name__}: {err}", collect.messages)
    answer = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    # Length first: the parent takes the answer without waiting for this process to end.
    sys.stdout.buffer.write(len(answer).to_bytes(8, "big") + answer)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
