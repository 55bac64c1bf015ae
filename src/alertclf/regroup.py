"""Regrouping in hindsight: a symptom series moves to the trouble it ended with.

When a new symptom series starts above two or more troubles (a gateway over two
simultaneous incidents), consolidation must choose at its first alert, and what is known
then picks the right group about 60% of the time: on the storm runs (seeds 1-40, three
topologies) a gradient-boosted ranker over every candidate feature did no better than
the rule. The evidence comes later: **symptoms end with their cause**. Once a series has
been quiet for a window (no repeat can join it any more), it moves to the group whose
root's alerts ended closest to the series' last alert, when that is

- a group whose root is a dependency of the series' service within ``group_max_hops``
  (the only kind of group the series could have joined), with another root than its
  current group's;
- whose root was alerting when the series began: its first alert at most
  ``lead_ns`` after the series' first (a cause's own monitoring lags a scrape or two
  behind the fault: 1.5 hops of propagation lag, or the learned cause lateness), its last
  at most a window before;
- and ends at least ``END_GAIN_MINUTES`` (3) closer than the current root does, where a
  series ending before a root counts half as far as one ending after it
  (``EARLY_END_WEIGHT``). Without that margin (and the different root), series moved
  between two groups of one incident and calm online-boutique seed 7 fell from 0.945 to
  0.905.

Measured (benchmarks/timing.py: consolidation alone, whole two-day histories, true
mapping, timing learned, seeds 1-20 x 3 topologies; ARI mean / worst): storm 0.895 /
0.736 -> 0.939 / 0.813, calm 0.994 / 0.945 -> 0.996 / 0.962; causes 3-10 minutes late,
storm 0.754 -> 0.849; fast and slow propagation gain too (0.872 -> 0.923, 0.825 ->
0.910). benchmarks/quality.py (15-minute batches): storm worst 0.768 -> 0.851.

Alerts already published in an earlier batch cannot be rewritten there: their move is
returned as a *revision* (``alert_id, group_id, revised_group_id``), which the results
folder carries as ``group_revisions.csv`` and a replay applies to its combined table.
Alerts of the current batch take their new group directly. A pure stage: the state it
carries is :class:`RegroupState`.
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from alertclf.consolidate import NS_PER_MINUTE, CallerIndex, series_memory_ns
from alertclf.settings import Settings

# How a series' first alert joined its group when the choice was between troubles below
# it (consolidate.REASONS): only these series are looked at again.
CHOSEN_REASONS = frozenset({"symptom", "busy", "detour", "resume", "follow"})
END_GAIN_MINUTES = 3.0
# What a series ending before a root's end counts against it, per minute (after: 1).
EARLY_END_WEIGHT = 0.5
# Up to this many dependencies, a series' candidates are read service by service.
FEW_DEPENDENCIES = 64
REVISION_COLUMNS: tuple[str, ...] = ("alert_id", "group_id", "revised_group_id")


def empty_revisions() -> pd.DataFrame:
    return pd.DataFrame(columns=list(REVISION_COLUMNS), dtype=object)


def latest_revisions(revisions: list[pd.DataFrame]) -> pd.Series:
    """alert id -> its group after ``revisions`` (batches in order; the later wins)."""
    moves = [r for r in revisions if len(r)]
    if not moves:
        return pd.Series([], dtype=object)
    latest = pd.concat(moves, ignore_index=True).drop_duplicates("alert_id", keep="last")
    return latest.set_index("alert_id")["revised_group_id"]


def apply_revisions(alerts: pd.DataFrame, revised: pd.Series) -> pd.Series:
    """``alerts``' group ids with the moves of :func:`latest_revisions` applied."""
    if not len(revised):
        return alerts["group_id"]
    moved = alerts["alert_id"].astype(str).map(revised)
    return moved.where(moved.notna(), alerts["group_id"]).rename("group_id")


@dataclass
class RegroupState:
    """What regrouping carries from batch to batch."""

    # group id -> [root service key, root's first alert ns, root's last alert ns]
    roots: dict[str, list] = field(default_factory=dict)
    # [service key, alert name, group id, first alert ns, last alert ns, [alert ids]] of
    # the chosen series not yet quiet for a window
    pending: list[list] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"roots": self.roots, "pending": self.pending}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RegroupState:
        data = json.loads(text) if text else {}
        return cls(
            roots={str(g): list(v) for g, v in data.get("roots", {}).items()},
            pending=sorted(list(p) for p in data.get("pending", [])),
        )

    def trimmed(self, end: int, settings: Settings) -> RegroupState:
        """Without the roots no pending series can still use (see :func:`regroup`)."""
        keep = _root_memory_ns(settings)
        return RegroupState(
            {g: r for g, r in self.roots.items() if end - int(r[2]) <= keep},
            sorted(self.pending),
        )


@dataclass
class Regrouping:
    group_ids: pd.Series  # the batch's group ids, moved series changed
    revisions: pd.DataFrame  # REVISION_COLUMNS: moved alerts of earlier batches
    state: RegroupState


def lead_ns(settings: Settings) -> int:
    """How long after a series' first alert its cause's first alert may come."""
    minutes = max(1.5 * settings.hop_lag_minutes, settings.cause_lateness_minutes or 0.0)
    return round(minutes * NS_PER_MINUTE)


def _root_memory_ns(settings: Settings) -> int:
    # Every pending series fired within the last window, so a root forgotten at this age
    # ended more than an hour before it: too far to be the closest end (for a series
    # that ran longer than that, its current root would have to end farther still).
    return series_memory_ns(settings) + 2 * settings.time_window_minutes * NS_PER_MINUTE


def regroup(
    alerts: pd.DataFrame,
    times: np.ndarray,
    keys: np.ndarray,
    ids: np.ndarray,
    groups: pd.DataFrame,
    index: CallerIndex,
    settings: Settings,
    state: RegroupState | None,
    end: int,
) -> Regrouping:
    """Move the chosen series that have been quiet for a window at ``end`` (epoch ns: the
    batch's newest alert) to the trouble they ended with.

    ``alerts``: the batch with ``alert_name, group_id, group_reason``; ``times``,
    ``keys``, ``ids``: their epoch ns, service keys and ids as strings (as
    :class:`~alertclf.consolidate.Consolidation` has them); ``groups``: the groups the
    batch touched (:attr:`Consolidation.groups`)."""
    state = state or RegroupState()
    window = settings.time_window_minutes * NS_PER_MINUTE
    roots = dict(state.roots)
    touched = groups[["group_id", "root", "members"]].itertuples(index=False)
    for gid, root, members in touched:
        span = members.get(root)
        if span is not None:
            roots[gid] = [root, int(span[0]), int(span[1])]
    # (service key, alert name, group id) -> [first alert ns, last alert ns, ids of its
    # alerts published by earlier batches, positions of its alerts in this batch]
    pending = {(p[0], p[1], p[2]): [int(p[3]), int(p[4]), list(p[5]), []] for p in state.pending}
    _extend(pending, alerts, ids, times, keys)

    alerting = _Roots(roots, window, lead_ns(settings))
    gain = END_GAIN_MINUTES * NS_PER_MINUTE
    touched_ids = set(groups["group_id"])
    revisions: list[tuple[str, str, str]] = []
    moved: list[tuple[list[int], str]] = []  # (positions in the batch, new group)
    still: list[list] = []
    for (key, name, gid), (first, last, published, here) in pending.items():
        if end - last <= window:
            still.append([key, name, gid, first, last, published + ids[here].tolist()])
            continue
        target = _closer_end(key, gid, first, last, roots, alerting, index, gain)
        if target is None or (here and target not in touched_ids):
            # (The batch's incident table holds only the groups it touched.)
            continue
        moved.append((here, target))
        revisions += [(i, gid, target) for i in published]
    group_ids = alerts["group_id"]
    if any(here for here, _ in moved):
        values = group_ids.to_numpy(dtype=object).copy()
        for here, target in moved:
            values[here] = target
        group_ids = pd.Series(values, index=alerts.index, name="group_id")
    return Regrouping(
        group_ids,
        pd.DataFrame(revisions, columns=list(REVISION_COLUMNS), dtype=object)
        if revisions
        else empty_revisions(),
        RegroupState(roots, still).trimmed(end, settings),
    )


def _extend(
    pending: dict[tuple[str, str, str], list],
    alerts: pd.DataFrame,
    ids: np.ndarray,
    times: np.ndarray,
    keys: np.ndarray,
) -> None:
    """Add the positions of the batch's alerts to the pending series they continue, and
    start a pending series for each series whose first alert here was a choice between
    troubles."""
    if len(alerts) == 0:
        return
    order = np.lexsort((ids, times))  # consolidation's order
    # One int per (service key, alert name, group): factorised columns, combined.
    parts = [
        pd.factorize(column[order])
        for column in (
            keys,
            alerts["alert_name"].to_numpy(dtype=object),
            alerts["group_id"].to_numpy(dtype=object),
        )
    ]
    sizes = [len(uniques) for _, uniques in parts]
    series, distinct = pd.factorize(_combined([codes for codes, _ in parts], sizes))
    heads = np.empty(len(distinct), dtype=np.int64)
    heads[series[::-1]] = np.arange(len(series))[::-1]  # each series' first alert
    reasons = alerts["group_reason"].to_numpy(dtype=object)[order][heads]
    wanted = np.isin(reasons, list(CHOSEN_REASONS))
    if pending:  # the series this batch continues
        columns = list(zip(*pending, strict=True))
        codes = [pd.Index(u).get_indexer(list(c)) for (_, u), c in zip(parts, columns, strict=True)]
        known = np.logical_and.reduce([c >= 0 for c in codes])
        found = pd.Index(distinct).get_indexer(_combined([c[known] for c in codes], sizes))
        wanted[found[found >= 0]] = True
    keep = wanted[series]
    if not keep.any():
        return
    by_series = np.argsort(series[keep], kind="stable")  # time order kept within a series
    codes = series[keep][by_series]
    positions = order[keep][by_series]
    stamps = times[positions]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)]
    named = [uniques[codes_[heads]] for codes_, uniques in parts]  # per series
    for start, stop in zip(starts.tolist(), ends.tolist(), strict=True):
        head = codes[start]
        key = (named[0][head], named[1][head], named[2][head])
        entry = pending.setdefault(key, [int(stamps[start]), 0, [], []])
        entry[1] = int(stamps[stop - 1])
        entry[3].extend(positions[start:stop].tolist())


def _combined(codes: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    """One int64 per row from the factorised codes of several columns."""
    out = np.zeros(len(codes[0]), dtype=np.int64)
    for column, size in zip(codes, sizes, strict=True):
        out = out * size + column
    return out


class _Roots:
    """The remembered roots, ordered by their last alert: those below each service, and
    per time slot in which a series may begin under them."""

    def __init__(self, roots: dict[str, list], window: int, lead: int) -> None:
        self.window, self.lead = window, lead
        self.by_root: dict[str, list] = {}
        # window-wide slot -> the roots a series beginning in it may join: those that
        # began at most ``lead`` after and ended at most a window before its first alert
        per_slot: dict[int, list] = {}
        for gid, (root, first, last) in roots.items():
            entry = (int(last), gid, int(first), root)
            self.by_root.setdefault(root, []).append(entry)
            for slot in range((first - lead) // window, (last + window) // window + 1):
                per_slot.setdefault(slot, []).append(entry)
        self.slots = {slot: _by_end(entries) for slot, entries in per_slot.items()}
        self.below: dict[str, tuple[list[int], list]] = {}  # service key -> its roots

    def closest(
        self,
        key: str,
        first: int,
        last: int,
        reach: tuple[float, float],
        services: dict[str, int],
        other_than: str,
    ) -> tuple[float, str] | None:
        """(gap, group id) of the root among ``services`` (the dependencies of ``key``,
        but ``other_than``) alerting when a series began at ``first`` whose end is
        closest to the series' ``last``, looking only at ends within ``reach`` (lowest,
        highest).

        A 2,000-service storm has hundreds of troubles alerting below a gateway at any
        time (9.9 million candidates for the 78,229 series of the 1M bench batch, 40 s
        to read them all), while its median service depends on 16 services. So the
        walk goes out from the series' end, both ways, to the first fit on each side
        (the gap only grows from there): through the roots of ``key``'s dependencies
        where they are few (gathered once per service key), else through the roots
        alerting when the series began."""
        if len(services) <= FEW_DEPENDENCIES:
            below = self.below.get(key)
            if below is None:
                mine = [e for service in services for e in self.by_root.get(service, ())]
                below = self.below[key] = _by_end(mine)
            lasts, entries = below
        elif first // self.window in self.slots:
            lasts, entries = self.slots[first // self.window]
        else:
            return None
        found: list[tuple[float, int, str]] = []
        middle = bisect_left(lasts, last)
        before = range(middle - 1, bisect_left(lasts, reach[0]) - 1, -1)
        after = range(middle, bisect_right(lasts, reach[1]))
        latest_first, earliest_last = first + self.lead, first - self.window
        for side in (before, after):
            for position in side:
                root_last, gid, root_first, root = entries[position]
                if (
                    root_first <= latest_first
                    and root_last >= earliest_last
                    and root != other_than
                    and root in services
                ):
                    found.append((_end_gap(last, root_last), root_last, gid))
                    break
        if not found:
            return None
        gap, _, gid = min(found)
        return gap, gid


def _by_end(entries: list) -> tuple[list[int], list]:
    entries.sort()
    return [entry[0] for entry in entries], entries


def _closer_end(
    key: str,
    gid: str,
    first: int,
    last: int,
    roots: dict[str, list],
    alerting: _Roots,
    index: CallerIndex,
    gain: int,
) -> str | None:
    """The group whose root ended closest to ``last``, if closer by ``gain``."""
    current = roots.get(gid)
    if current is None or key not in index:
        return None
    current_gap = _end_gap(last, current[2])
    slack = current_gap - gain
    if slack < 0:  # most series: they ended with their root
        return None
    # Only roots that ended within the slack can be closer by the gain.
    reach = (last - slack, last + slack / EARLY_END_WEIGHT)
    closest = alerting.closest(key, first, last, reach, index.callees(key), current[0])
    if closest is None or current_gap - closest[0] < gain:
        return None
    return closest[1]


def _end_gap(series_last: int, root_last: int) -> float:
    """How far a series' end is from a root's, where ending *after* the root counts
    double: a symptom may stop before its cause does (its rule resolves, the fault stops
    reaching it), hardly after (storm seeds 1-40 mean 0.933 -> 0.936 against the plain
    distance)."""
    if series_last >= root_last:
        return float(series_last - root_last)
    return EARLY_END_WEIGHT * (root_last - series_last)
