"""Consolidation of a large batch in two processes, stitched so that the result is the
one a single process gives, alert for alert.

Grouping is sequential: where an alert goes depends on every group open when it
arrives. But it forgets: a group takes alerts for at most ``group_max_span_minutes``,
a series is remembered for four windows after its last alert (``series_memory_ns``).
So a second grouper that starts from nothing that long before a point in the batch
usually holds, at that point, the same open groups and series as the grouper that
read the batch from its beginning -- and from there on both place every alert alike.

"Usually" is checked, not assumed. The batch (alerts in time order) is cut at ``m``:

- a forked child starts an empty grouper ``warm-up`` before ``m`` (``max span +
  window``, at least the series memory), reads to the end of the batch, and at
  checkpoints ``m, m + step, ...`` sends a fingerprint of its state
  (:meth:`alertclf.consolidate._Grouper.fingerprint`);
- this process reads the batch from its beginning (with the state carried from the
  last batch) up to ``m``, then compares its own fingerprint at each checkpoint with
  the child's; at the first equal one, ``j``, it stops, and the result is this
  process's placements before ``j`` and the child's from ``j`` on.

When the states differ, the difference usually dies out within a few tens of thousands
of alerts (on the million-alert bench storm: 2 of 3,337 open groups differed at ``m``
and none 15,000 alerts later; cuts at eleven places met 0 to 75,000 alerts after the
cut), hence several checkpoints. If none matches, or the child fails, this process
simply reads on to the end: the answer is the same, only slower.

The cut is placed so that both processes are busy about as long: the child reads the
warm-up and sends its placements back, this process does the ``meanwhile`` work. On
the bench storm (1M alerts over 48 hours, about 200,000 of them in a warm-up) this
process reads about 530,000 alerts and the child 685,000.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection

import numpy as np

from alertclf import forking
from alertclf.consolidate import (
    AS_OF_PLACED,
    NS_PER_MINUTE,
    ConsolidationState,
    Group,
    Placement,
    _Grouper,
    _placement,
    series_memory_ns,
)
from alertclf.settings import Settings

log = logging.getLogger(__name__)

# Where the states may meet, in steps of half a percent of the batch after the cut:
# close together first, where they usually meet (on the bench storm: 1 to 9 steps),
# then wider; each costs the child a fingerprint (~40 ms at a million alerts).
CHECKPOINT_STEPS = (0, 1, 2, 3, 4, 6, 8, 11, 15, 20, 26, 34, 44)
# The child's cost of sending an alert's placement back (transposed and pickled), as a
# share of placing it (1M bench: 0.96 s for 466,000 alerts placed in 5.8 s).
RETURN_COST = 0.16


def place_split(
    columns: list[list],
    times: np.ndarray,
    settings: Settings,
    grouper: Callable[[ConsolidationState], _Grouper],
    state: ConsolidationState,
    meanwhile: Callable[[], object] | None = None,
    meanwhile_cost: float = 0.0,
) -> Placement | None:
    """Place the alerts (``columns`` as for :func:`alertclf.consolidate._place`, in time
    order; ``times`` the same times as an array) in two processes, calling ``meanwhile``
    in this one once its share is placed (its cost, as a share of placing the batch,
    moves the cut forward). Returns None, without calling ``meanwhile``, when a split
    would not pay (one core, no ``fork``, a batch that is mostly warm-up)."""
    n = len(times)
    if not forking.can_fork():
        return None
    window = settings.time_window_minutes * NS_PER_MINUTE
    # Long enough to see every series the fingerprint reads (rule 5 remembers one
    # for ``memory`` after its last alert).
    memory = series_memory_ns(settings)
    warm_up = max(settings.group_max_span_minutes * NS_PER_MINUTE + window, memory)
    step = max(100, n // 200)
    cut = _balanced_cut(times, warm_up, head_start=3 * step + int(meanwhile_cost * n))
    start = int(np.searchsorted(times, times[cut] - warm_up))
    if cut >= n - step or n - start > 0.8 * n:
        return None
    checkpoints = [cut + k * step for k in CHECKPOINT_STEPS if cut + k * step < n]
    child, receiver = forking.fork(_child, columns, times, memory, grouper, start, cut, checkpoints)
    try:
        return _parent(
            receiver, child, columns, times, memory, grouper(state), cut, checkpoints, meanwhile
        )
    finally:
        receiver.close()
        if child.is_alive():
            child.terminate()
        child.join()


def _balanced_cut(times: np.ndarray, warm_up: int, head_start: int) -> int:
    """The smallest cut ``m`` at which this process's share (``m`` plus ``head_start``:
    the alerts read until the states meet and the ``meanwhile`` work) is at least the
    child's (the warm-up, everything after ``m`` and sending that back)."""
    n = len(times)
    low, high = 0, n - 1
    while low < high:
        middle = (low + high) // 2
        start = int(np.searchsorted(times, times[middle] - warm_up))
        if middle + head_start >= middle - start + (n - middle) * (1 + RETURN_COST):
            high = middle
        else:
            low = middle + 1
    return low


def _series_keys(columns: list[list], times: np.ndarray, end: int, memory: int) -> set:
    """(service key, alert name) of the alerts within ``memory`` before row ``end``:
    every series of this batch that can still decide anything."""
    t = int(times[end])
    begin = int(np.searchsorted(times, t - memory))
    return set(zip(columns[1][begin:end], columns[2][begin:end], strict=True))


def _fingerprint(g: _Grouper, columns: list[list], times: np.ndarray, row: int, memory: int) -> str:
    keys = _series_keys(columns, times, row, memory)
    if times[row] - memory <= times[0]:  # series carried from the last batch may count
        keys |= g.series.keys()
    return g.fingerprint(int(times[row]), keys)


def _place_rows(g: _Grouper, columns: list[list], begin: int, end: int) -> list[tuple]:
    return [g.add(*row) for row in zip(*(c[begin:end] for c in columns), strict=True)]


def _child(
    conn: Connection,
    columns: list[list],
    times: np.ndarray,
    memory: int,
    grouper: Callable[[ConsolidationState], _Grouper],
    start: int,
    cut: int,
    checkpoints: list[int],
) -> None:
    """The forked reader of the batch's second part; see the module docstring."""
    try:
        began = time.perf_counter()
        g = grouper(ConsolidationState())
        _place_rows(g, columns, start, cut)
        warmed = time.perf_counter()
        g.touched = {}  # groups first touched at or after the cut
        placed: list[tuple] = []
        for row, following in itertools.pairwise([*checkpoints, len(times)]):
            fingerprint = _fingerprint(g, columns, times, row, memory)
            conn.send(("checkpoint", row, fingerprint, len(g.alias)))
            placed += _place_rows(g, columns, row, following)
        done = time.perf_counter()
        transposed = list(zip(*placed, strict=True))
        # The as-of values (numbers) travel back as arrays, the rest as tuples.
        numbers = [np.asarray(c, dtype=np.float64) for c in transposed[AS_OF_PLACED]]
        out = [*transposed[:2], *numbers, transposed[-1]]
        conn.send(("done", out, g.touched, list(g.alias.items()), g.state_at(columns[0][-1])))
        log.debug(
            "consolidation child: warm-up %d alerts %.2f s, %d more %.2f s, sent in %.2f s",
            cut - start, warmed - began, len(placed), done - warmed, time.perf_counter() - done,
        )  # fmt: skip
    except BaseException:  # the parent reads on alone; tell it why
        conn.send(("failed", traceback.format_exc()))
    finally:
        conn.close()


def _parent(
    conn: Connection,
    child: multiprocessing.Process,
    columns: list[list],
    times: np.ndarray,
    memory: int,
    g: _Grouper,
    cut: int,
    checkpoints: list[int],
    meanwhile: Callable[[], object] | None,
) -> Placement:
    n = len(times)
    placed = _place_rows(g, columns, 0, cut)
    meeting = None
    for i, row in enumerate(checkpoints):
        message = _receive(conn)
        if message is None:
            break
        _, child_row, child_print, alias_count = message
        if child_row != row:  # a protocol error is a bug
            raise RuntimeError(f"consolidation: child checkpoint {child_row}, expected {row}")
        if _fingerprint(g, columns, times, row, memory) == child_print:
            meeting = (row, alias_count)
            break
        following = checkpoints[i + 1] if i + 1 < len(checkpoints) else n
        placed += _place_rows(g, columns, row, following)
    if meeting is None:
        log.info("consolidation: the two states never met; placing the rest in this process")
        child.terminate()
    if meanwhile is not None:
        meanwhile()
    result = _receive(conn, "done") if meeting is not None else None
    if result is None:
        placed += _place_rows(g, columns, len(placed), n)
        return _placement(g, placed, columns[0][-1])
    row, alias_count = meeting
    _, child_columns, child_touched, child_alias, end_state = result
    log.info(
        "consolidation in two processes: states met at alert %d of %d, %d after the cut",
        row,
        n,
        row - cut,
    )
    return _stitch(
        placed, row - cut, g, child_columns, child_touched, child_alias[alias_count:], end_state
    )


def _receive(conn: Connection, kind: str = "checkpoint") -> tuple | None:
    """The child's next message of ``kind`` (checkpoints it sent past the meeting point
    are passed over); None when it failed or died."""
    try:
        message = conn.recv()
        while kind == "done" and message[0] == "checkpoint":
            message = conn.recv()
    except (EOFError, OSError):
        log.warning("consolidation: the second process died; placing the rest in this one")
        return None
    if message[0] == "failed":
        log.warning("consolidation: the second process failed; placing the rest in this one:\n%s",
                    message[1])  # fmt: skip
        return None
    if message[0] != kind:  # pragma: no cover - a protocol error is a bug
        raise RuntimeError(f"consolidation: expected {kind!r} from the child, got {message[0]!r}")
    return message


def _stitch(
    placed: list[tuple],
    skip: int,
    g: _Grouper,
    child_columns: list,
    child_touched: dict[str, Group],
    child_alias: list[tuple[str, str]],
    end_state: ConsolidationState,
) -> Placement:
    """This process's placements, then the child's from the meeting point (``skip``
    placements after its first one) on."""
    mine = list(zip(*placed, strict=True))
    n = len(placed) + len(child_columns[0]) - skip
    columns: list = []
    for own, theirs in zip(mine, child_columns, strict=True):
        column = np.empty(n, dtype=theirs.dtype if isinstance(theirs, np.ndarray) else object)
        column[: len(own)] = own
        column[len(own) :] = theirs[skip:]
        columns.append(column)
    # Merges after the meeting point are the child's; before it, this process's.
    alias = {**g.alias, **dict(child_alias)}
    # Groups in the order they first took an alert, as one process would list them:
    # this process's, less those merged away later, then the child's new ones (a
    # group both touched keeps its first place and the child's final contents).
    touched = {gid: group for gid, group in g.touched.items() if gid not in alias}
    for gid in dict.fromkeys(child_columns[0][skip:]):
        group = child_touched.get(gid)
        if group is not None:
            touched[gid] = group
    return Placement(columns, list(touched.values()), alias, end_state)
