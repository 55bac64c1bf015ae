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

Measured (consolidation alone, whole two-day histories, true mapping, timing learned,
seeds 1-20 x 3 topologies; ARI mean / worst): storm 0.895 / 0.736 -> 0.937 / 0.788,
calm 0.994 / 0.945 -> 0.996 / 0.962; the benchmark's storm seeds 1-5: worst 0.768 ->
0.851. Causes 3-10 minutes late: storm 0.754 -> 0.843; fast and slow propagation gain
too (0.872 -> 0.919, 0.825 -> 0.900).

Alerts already published in an earlier batch cannot be rewritten there: their move is
returned as a *revision* (``alert_id, group_id, revised_group_id``), which the results
folder carries as ``group_revisions.csv`` and a replay applies to its combined table.
Alerts of the current batch take their new group directly. A pure stage: the state it
carries is :class:`RegroupState`.
"""

from __future__ import annotations

import json
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
REVISION_COLUMNS: tuple[str, ...] = ("alert_id", "group_id", "revised_group_id")


def empty_revisions() -> pd.DataFrame:
    return pd.DataFrame(columns=list(REVISION_COLUMNS), dtype=object)


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
    moved_series: int
    state: RegroupState


def lead_ns(settings: Settings) -> int:
    """How long after a series' first alert its cause's first alert may come."""
    minutes = max(1.5 * settings.hop_lag_minutes, settings.cause_lateness_minutes or 0.0)
    return round(minutes * NS_PER_MINUTE)


def _root_memory_ns(settings: Settings) -> int:
    # A pending series is at most an hour old at its last alert (longer ones lose their
    # oldest candidates, whose ends are then an hour away from theirs anyway).
    return series_memory_ns(settings) + 2 * settings.time_window_minutes * NS_PER_MINUTE


def regroup(
    alerts: pd.DataFrame,
    times: np.ndarray,
    keys: np.ndarray,
    groups: pd.DataFrame,
    index: CallerIndex,
    settings: Settings,
    state: RegroupState | None,
    end: int,
) -> Regrouping:
    """Move the chosen series that have been quiet for a window at ``end`` (epoch ns: the
    batch's newest alert) to the trouble they ended with.

    ``alerts``: the batch with ``alert_id, alert_name, group_id, group_reason``;
    ``times``/``keys``: their epoch ns and service keys; ``groups``: the groups the batch
    touched (:attr:`Consolidation.groups`)."""
    state = state or RegroupState()
    window = settings.time_window_minutes * NS_PER_MINUTE
    roots = dict(state.roots)
    touched = groups[["group_id", "root", "members"]].itertuples(index=False)
    for gid, root, members in touched:
        span = members.get(root)
        if span is not None:
            roots[gid] = [root, int(span[0]), int(span[1])]
    pending = {(p[0], p[1], p[2]): [int(p[3]), int(p[4]), list(p[5])] for p in state.pending}
    _extend(pending, alerts, times, keys)

    by_root: dict[str, list[str]] = {}
    for gid, (root, _, _) in roots.items():
        by_root.setdefault(root, []).append(gid)
    lead = lead_ns(settings)
    gain = END_GAIN_MINUTES * NS_PER_MINUTE
    batch_ids = set(alerts["alert_id"].astype(str))
    touched_ids = set(groups["group_id"])
    moves: dict[str, str] = {}  # alert id -> its new group
    revisions: list[tuple[str, str, str]] = []
    moved_series = 0
    still: list[list] = []
    for (key, name, gid), (first, last, ids) in sorted(pending.items()):
        if end - last <= window:
            still.append([key, name, gid, first, last, ids])
            continue
        target = _closer_end(key, gid, first, last, roots, by_root, index, window, lead, gain)
        if target is None:
            continue
        in_batch = [i for i in ids if i in batch_ids]
        if in_batch and target not in touched_ids:
            # The batch's incident table holds only the groups it touched.
            continue
        moved_series += 1
        moves.update(dict.fromkeys(in_batch, target))
        revisions += [(i, gid, target) for i in ids if i not in batch_ids]

    group_ids = alerts["group_id"].copy()
    if moves:
        moved = alerts["alert_id"].astype(str).map(moves)
        group_ids = moved.where(moved.notna(), group_ids).rename("group_id")
    return Regrouping(
        group_ids,
        pd.DataFrame(revisions, columns=list(REVISION_COLUMNS), dtype=object)
        if revisions
        else empty_revisions(),
        moved_series,
        RegroupState(roots, still).trimmed(end, settings),
    )


def _extend(
    pending: dict[tuple[str, str, str], list],
    alerts: pd.DataFrame,
    times: np.ndarray,
    keys: np.ndarray,
) -> None:
    """Add the batch's alerts to the pending series they continue, and start a pending
    series for each series whose first alert here was a choice between troubles."""
    ids = alerts["alert_id"].astype(str).to_numpy(dtype=object)
    order = np.lexsort((ids, times))  # consolidation's order
    frame = pd.DataFrame(
        {
            "key": keys[order],
            "name": alerts["alert_name"].to_numpy(dtype=object)[order],
            "group": alerts["group_id"].to_numpy(dtype=object)[order],
            "reason": alerts["group_reason"].to_numpy(dtype=object)[order],
            "t": times[order],
            "id": ids[order],
        }
    )
    series = frame.groupby(["key", "name", "group"], sort=False)
    heads = series.head(1)
    chosen = heads["reason"].isin(CHOSEN_REASONS).to_numpy()
    heads_keys = heads[["key", "name", "group"]].itertuples(index=False, name=None)
    known = np.fromiter((k in pending for k in heads_keys), dtype=bool, count=len(heads))
    wanted = heads[chosen | known]
    if wanted.empty:
        return
    code = series.ngroup().to_numpy()
    rows = frame[np.isin(code, code[wanted.index.to_numpy()])]
    for (key, name, gid), part in rows.groupby(["key", "name", "group"], sort=False):
        entry = pending.setdefault((key, name, gid), [int(part["t"].iloc[0]), 0, []])
        entry[1] = int(part["t"].iloc[-1])
        entry[2].extend(part["id"].tolist())


def _closer_end(
    key: str,
    gid: str,
    first: int,
    last: int,
    roots: dict[str, list],
    by_root: dict[str, list[str]],
    index: CallerIndex,
    window: int,
    lead: int,
    gain: int,
) -> str | None:
    """The group whose root ended closest to ``last``, if closer by ``gain``."""
    current = roots.get(gid)
    if current is None or key not in index:
        return None
    current_gap = _end_gap(last, current[2])
    best_gap, best = current_gap, None
    for dependency in sorted(index.callees(key)):
        if dependency == current[0]:
            continue
        for other in sorted(by_root.get(dependency, ())):
            _, root_first, root_last = roots[other]
            if root_first > first + lead or root_last < first - window:
                continue
            gap = _end_gap(last, root_last)
            if gap < best_gap:
                best_gap, best = gap, other
    if best is None or current_gap - best_gap < gain:
        return None
    return best


def _end_gap(series_last: int, root_last: int) -> float:
    """How far a series' end is from a root's, where ending *after* the root counts
    double: a symptom may stop before its cause does (its rule resolves, the fault stops
    reaching it), hardly after (storm seeds 1-40 mean 0.933 -> 0.936 against the plain
    distance)."""
    if series_last >= root_last:
        return float(series_last - root_last)
    return EARLY_END_WEIGHT * (root_last - series_last)
