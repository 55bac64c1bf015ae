"""Regrouping in hindsight: a symptom series moves to the trouble it ended with, or is
split off a group whose root it did not end with.

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

A series that went on in another group within a window (consolidation's ``follow``) is
one series: each part is measured by the last alert of the whole and decided once the
whole is quiet (:func:`_series_ends`). The part left behind ended only because the
series moved on; by its own last alert it was split off its group as outliving its root
(storm train-ticket seed 2: 0.877 -> 0.895).

Measured (benchmarks/timing.py: consolidation alone, whole two-day histories, true
mapping, timing learned, seeds 1-20 x 3 topologies; ARI mean / worst): storm 0.895 /
0.736 -> 0.939 / 0.813, calm 0.994 / 0.945 -> 0.996 / 0.962; causes 3-10 minutes late,
storm 0.754 -> 0.849; fast and slow propagation gain too (0.872 -> 0.923, 0.825 ->
0.910). benchmarks/quality.py (15-minute batches): storm worst 0.768 -> 0.851.

**Splitting.** The same evidence says when a series followed no trouble of its group:
a symptom ends with its cause *within one firing* (its last alert at most one re-fire
period before the cause's end, or the cause's last at most one of the cause's periods
before the symptom's). A series on another service than its group's root that stopped
while the root went on firing for more than the series' own period plus
``SPLIT_MARGIN_MINUTES`` (1), or went on firing for more than the root's period plus
that margin after the root stopped, is **split off** into the group split off that
group (one per group, :func:`split_group_id`; its root is the member that began first).
The early side only where the estate's symptoms do end with their cause: its
``early_end_share`` (learned from history by :func:`early_end_share`) is under
:data:`EARLY_END_SHARE_MAX`. Where a simulator variant lets symptoms end anywhere in the
last half of their incident, splitting early stops cost calm ARI 0.982 -> 0.860 (seeds
1-20, consolidation alone), while outliving splits alone still gained (0.9824 -> 0.9831).
Where the share is unknown (too few series in the history), a series that stopped
early is still split off when its alert family also never showed on a symptom series
under any family of its root in the history (``symptom_families``, learned by
:func:`symptom_families`; each with at least :data:`SYMPTOM_FIT_MIN_SERIES` symptom
series): a service's own fault that began during a trouble below it.
Periods are mean gaps between firings of one alert name (alerts within
``FIRING_GAP_NS`` are one firing: replicas); a series that fired once has a window's.
It is decided when the evidence arrives (the root's alert that came too late, the
series' alert after the root stopped); a chosen series that another trouble below it
may still explain waits for its move instead. This undoes what consolidation cannot
know at the time: an incident whose first, symptom-like alerts were re-rooted at a
dependency that began alerting a minute later for an incident of its own (storm
train-ticket seed 32: three incidents in one group, ARI 0.804 -> 0.938 by this alone),
and a service's own fault read as a symptom of a trouble below it.

**Symptoms on a root.** A symptom alert (latency, errors, readiness) on a service with a
fault of its own joins that fault as another alert on the root when the fault is the
most recent trouble on its path; a trouble below it may have caused it instead. Such a
series is revisited like a chosen one, its end measured from the root's last *fault*
(non-symptom) alert: one that outlived its own service's fault and ended with a trouble
below moves there (a simulator variant where half the faulty services also report their
own latency or errors: calm online-boutique seed 7 0.921 -> 1.0, seeds 1-10 mean 0.9946 ->
0.9972, storm 0.9350 -> 0.9361; the usual simulator: storm 0.9530 -> 0.9535, calm 0.9978
-> 0.9979, no run lower). A root without a fault alert (its fault is its symptoms)
leaves the series where it is.

Alerts already published in an earlier batch cannot be rewritten there: their move is
returned as a *revision* (``alert_id, group_id, revised_group_id``), which the results
folder carries as ``group_revisions.csv`` and a replay applies to its combined table.
Alerts of the current batch take their new group directly. A split group whose alerts
all came in earlier batches is still listed in the incident table of the batch that
split it off, from what the split carries (:attr:`Regrouping.groups`). A pure stage:
the state it carries is :class:`RegroupState`.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from alertclf.catalogue import alert_family, can_be_symptom
from alertclf.consolidate import (
    NS_PER_MINUTE,
    CallerIndex,
    series_memory_ns,
    service_keys,
    severity_ordinals,
    to_epoch_ns,
)
from alertclf.settings import Settings

# How a series' first alert joined its group when the choice was between troubles below
# it (consolidate.REASONS): only these series are looked at again, and symptom series
# that joined as another alert on their group's root (see *Symptoms on a root*).
CHOSEN_REASONS = frozenset({"symptom", "busy", "detour", "resume", "follow"})
END_GAIN_MINUTES = 3.0
# What a series ending before a root's end counts against it, per minute (after: 1).
EARLY_END_WEIGHT = 0.5
# Up to this many dependencies, a series' candidates are read service by service.
FEW_DEPENDENCIES = 64
REVISION_COLUMNS: tuple[str, ...] = ("alert_id", "group_id", "revised_group_id")
# Alerts of one series closer than this are one firing (replicas, pods of one service:
# the simulator spreads them over 30 s).
FIRING_GAP_NS = 45 * 10**9
# How much later than its next firing was due a series may stop before its root (or its
# root stop before it) and still be the root's: a scrape or two of jitter.
SPLIT_MARGIN_MINUTES = 1.0
# Series that stopped early are split off only where that is rare (the estate's
# ``early_end_share``, learned from history): in estates whose symptoms often resolve
# before their cause, a series stopping early says nothing.
EARLY_END_SHARE_MAX = 0.05
EARLY_END_MIN_SERIES = 10  # ended series a share is learned from, at least
# Where the share is unknown, a series that stopped early is still split off when its
# alert family was never seen on a symptom series under its root's families in the
# history (``symptom_families``), each with at least this many symptom series: two
# independent signs that it is a fault of its own (storm online-boutique seed 6: a load
# generator's KubePodNotReady read as a symptom of a CPU trouble two hops below). Not
# where the share is learned too high: stopping early is then no sign, and the family
# alone split valid rare symptoms (errors under CPU roots seen 0 of 7 times; a variant
# where symptoms stop early, train-ticket calm seed 8: 0.987 -> 0.936).
SYMPTOM_FIT_MIN_SERIES = 5


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

    # group id -> [root service key, root's first alert ns, root's last alert ns, sum
    # and number of the gaps between firings of one alert on the root, the alert
    # families seen on the root, the root's last fault (non-symptom) alert ns or 0]
    roots: dict[str, list] = field(default_factory=dict)
    # [service key, alert name, group id, first alert ns, last alert ns, [alert ids],
    # firings, chosen, split group id or "", highest severity] of the series on another
    # service than their group's root, and of the symptom series on the root that joined
    # as another alert there, that fired within the last window: ``chosen`` when its
    # first alert was a choice between troubles or such a symptom (those may move), the
    # split group once it has been split off (its later alerts follow)
    pending: list[list] = field(default_factory=list)
    # group id -> the group split off it (see :func:`_split_record`)
    splits: dict[str, list] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {"roots": self.roots, "pending": self.pending, "splits": self.splits},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> RegroupState:
        data = json.loads(text) if text else {}
        # A state saved before splitting existed: roots' periods and families unknown,
        # every pending series chosen, none split.
        return cls(
            roots={str(g): _padded_root(v) for g, v in data.get("roots", {}).items()},
            pending=sorted(
                [*p, 1, True, "", 0][:10] if len(p) == 6 else list(p)
                for p in data.get("pending", [])
            ),
            splits={str(g): list(v) for g, v in data.get("splits", {}).items()},
        )

    def trimmed(self, end: int, settings: Settings) -> RegroupState:
        """Without the roots no pending series can still use (see :func:`regroup`) and
        the split groups that stopped as long ago. The root of a group that a pending
        series is in stays, however long ago it stopped: the series is measured from it
        (a symptom that outlived its group's root by hours followed another trouble;
        with that root forgotten it could not move, storm generated-60 seed 3: 0.878 ->
        0.964)."""
        keep = _root_memory_ns(settings)
        held = {series[2] for series in self.pending}
        return RegroupState(
            {g: r for g, r in self.roots.items() if end - int(r[2]) <= keep or g in held},
            sorted(self.pending),
            {g: r for g, r in self.splits.items() if end - int(r[2]) <= keep},
        )


@dataclass
class Regrouping:
    group_ids: pd.Series  # the batch's group ids, moved series changed
    revisions: pd.DataFrame  # REVISION_COLUMNS: moved alerts of earlier batches
    state: RegroupState
    # the split groups created or grown here (with alerts of the batch or only revised
    # ones), as Consolidation.groups has groups, plus the alert names they hold
    groups: pd.DataFrame = field(default_factory=lambda: _split_groups_frame([]))


def _padded_root(root: list) -> list:
    """A copy of a root entry with all its fields: older states saved [key, first, last]
    (before splitting) or no families (before symptom families)."""
    key, first, last, *rest = root
    gaps = rest[:2] if len(rest) >= 2 else [0, 0]
    families = list(rest[2]) if len(rest) > 2 else []
    fault_last = int(rest[3]) if len(rest) > 3 else 0
    return [key, first, last, *gaps, families, fault_last]


def lead_ns(settings: Settings) -> int:
    """How long after a series' first alert its cause's first alert may come."""
    minutes = max(1.5 * settings.hop_lag_minutes, settings.cause_lateness_minutes or 0.0)
    return round(minutes * NS_PER_MINUTE)


def splits_early_endings(settings: Settings) -> bool:
    """Whether series that stopped while their root went on are split off: where the
    estate's symptoms end with their cause (``early_end_share`` learned and under
    :data:`EARLY_END_SHARE_MAX`)."""
    share = settings.early_end_share
    return share is not None and share < EARLY_END_SHARE_MAX


def early_end_share(
    alerts: pd.DataFrame, groups: pd.DataFrame, index: CallerIndex, settings: Settings
) -> float | None:
    """The share of the series of a grouped history on another service than their
    group's root, with no other trouble below them while they fired (and ended a
    window before its newest alert), that stopped early by :func:`_ended_apart`'s rule: what
    ``early_end_share`` is learned from. None under :data:`EARLY_END_MIN_SERIES` such
    series.

    ``alerts``: with ``group_id``, ``alert_name``, ``timestamp`` and the mapping columns
    (:attr:`~alertclf.pipeline.Prepared.alerts`); ``groups``: their groups
    (:attr:`~alertclf.pipeline.Prepared.groups`)."""
    if not len(alerts) or not len(groups):
        return None
    window = settings.time_window_minutes * NS_PER_MINUTE
    frame = _history_frame(alerts).assign(t=to_epoch_ns(alerts["timestamp"]))
    frame = frame.sort_values(["g", "k", "n", "t"], kind="stable")
    runs, _ = pd.factorize(pd.MultiIndex.from_frame(frame[["g", "k", "n"]]))
    frame["fired"] = _new_firings(runs, frame["t"].to_numpy())
    series = (
        frame.groupby(["g", "k", "n"], sort=False)
        .agg(first=("t", "min"), last=("t", "max"), firings=("fired", "sum"))
        .reset_index()
    )
    rows = groups.drop_duplicates("group_id", keep="last")
    series["root"] = series["g"].map(_root_of_group(rows))
    root_last = series[series["k"] == series["root"]].groupby("g")["last"].max()
    series["root_last"] = series["g"].map(root_last)
    ended = series[
        series["root_last"].notna()
        & (series["k"] != series["root"])
        & (int(frame["t"].max()) - series["last"] > window)
    ]
    # Only series with no other trouble below them while they fired: where there was
    # one, a series ending apart from its root is as often that trouble's (what
    # splitting is for) as early.
    ended = ended[_unambiguous(ended, rows, index)]
    if len(ended) < EARLY_END_MIN_SERIES:
        return None
    margin = SPLIT_MARGIN_MINUTES * NS_PER_MINUTE
    early = [
        _stopped_early(int(first), int(last), int(firings), int(root_last), window, margin)
        for first, last, firings, root_last in ended[
            ["first", "last", "firings", "root_last"]
        ].itertuples(index=False)
    ]
    return round(float(np.mean(early)), 4)


def _unambiguous(series: pd.DataFrame, groups: pd.DataFrame, index: CallerIndex) -> np.ndarray:
    """Per series (``g, k, first, last``): whether no group but its own had a root below
    ``k`` (within the hop bound) alerting while it fired."""
    spans: dict[str, list[tuple[int, int, str]]] = {}
    for gid, root, members in groups[["group_id", "root", "members"]].itertuples(index=False):
        span = members.get(root)
        if span is not None:
            spans.setdefault(root, []).append((int(span[0]), int(span[1]), gid))
    alone = []
    for gid, key, first, last in series[["g", "k", "first", "last"]].itertuples(index=False):
        below = index.callees(key) if key in index else {}
        roots = (
            below.keys() & spans.keys() if len(below) < len(spans) else spans.keys() & below.keys()
        )
        alone.append(
            not any(
                other != gid and start <= last and end >= first
                for root in roots
                for start, end, other in spans[root]
            )
        )
    return np.array(alone, dtype=bool)


def symptom_families(
    alerts: pd.DataFrame, groups: pd.DataFrame
) -> dict[str, dict[str, int]] | None:
    """How often each alert family showed on a symptom series (another service than its
    group's root) under each family seen on the root, in a grouped history: what
    ``symptom_families`` is learned from. None when the history holds no such series.

    ``alerts`` and ``groups`` as for :func:`early_end_share`."""
    if not len(alerts) or not len(groups):
        return None
    series = _history_frame(alerts).drop_duplicates()
    series["root"] = series["g"].map(_root_of_group(groups))
    series["family"] = series["n"].map(alert_family)
    on_root = series["k"] == series["root"]
    causes = series.loc[on_root, ["g", "family"]].drop_duplicates()
    symptoms = series.loc[~on_root & series["root"].notna(), ["g", "family"]]
    # One row per (symptom series, family of its root); counted per pair of families.
    pairs = symptoms.merge(causes.rename(columns={"family": "cause"}), on="g")
    table: dict[str, dict[str, int]] = {}
    for (cause, family), count in pairs.groupby(["cause", "family"]).size().items():
        table.setdefault(str(cause), {})[str(family)] = int(count)
    return table or None


def _history_frame(alerts: pd.DataFrame) -> pd.DataFrame:
    """Per alert of a grouped history: group id ``g``, service key ``k``, alert name
    ``n``."""
    return pd.DataFrame(
        {
            "g": alerts["group_id"].to_numpy(dtype=object),
            "k": service_keys(alerts),
            "n": alerts["alert_name"].to_numpy(dtype=object),
        }
    )


def _root_of_group(groups: pd.DataFrame) -> dict[str, str]:
    """Group id -> its root service key, as the last row of each group has it."""
    rows = groups.drop_duplicates("group_id", keep="last")
    return dict(zip(rows["group_id"], rows["root"], strict=True))


def _misfit(name: str, root: list | None, settings: Settings) -> bool:
    """Whether ``name``'s family never showed on a symptom series under any of ``root``'s
    families in the history, each of which had :data:`SYMPTOM_FIT_MIN_SERIES` symptom
    series (a family seen less is no evidence: its symptoms could be anything). Only
    where the early-end share is unlearned: where it is learned, stopping early is either
    enough (:func:`splits_early_endings`) or no sign at all."""
    table = settings.symptom_families
    if settings.early_end_share is not None or not table or root is None or not root[5]:
        return False
    family = alert_family(name)
    rows = [table.get(cause, {}) for cause in root[5]]
    return all(
        row.get(family, 0) == 0 and sum(row.values()) >= SYMPTOM_FIT_MIN_SERIES for row in rows
    )


def _root_memory_ns(settings: Settings) -> int:
    # Every pending series fired within the last window, so a root forgotten at this age
    # ended more than an hour before it: too far to be the closest end. (Its current
    # group's root is kept: see RegroupState.trimmed.)
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
    batch's newest alert) to the trouble they ended with, and split off the series that
    ended apart from their group's root.

    ``alerts``: the batch with ``alert_name, group_id, group_reason, severity``;
    ``times``, ``keys``, ``ids``: their epoch ns, service keys and ids as strings (as
    :class:`~alertclf.consolidate.Consolidation` has them); ``groups``: the groups the
    batch touched (:attr:`Consolidation.groups`)."""
    state = state or RegroupState()
    window = settings.time_window_minutes * NS_PER_MINUTE
    roots = {gid: _padded_root(root) for gid, root in state.roots.items()}
    _update_roots(roots, groups, alerts, keys, times)
    # (service key, alert name, group id) -> [first alert ns, last alert ns, ids of its
    # alerts published by earlier batches, positions of its alerts in this batch,
    # firings, chosen, split group id, highest severity]
    pending = {(p[0], p[1], p[2]): [*p[3:5], list(p[5]), [], *p[6:10]] for p in state.pending}
    _extend(pending, alerts, ids, times, keys, roots)

    alerting = _Roots(roots, window, lead_ns(settings))
    ends = _series_ends(pending, window)
    gain = END_GAIN_MINUTES * NS_PER_MINUTE
    margin = SPLIT_MARGIN_MINUTES * NS_PER_MINUTE
    touched_ids = set(groups["group_id"])
    splits = {
        gid: [*r[:6], {k: list(v) for k, v in r[6].items()}, list(r[7]), dict(r[8])]
        for gid, r in state.splits.items()
    }
    changed: set[str] = set()  # original ids of the split groups that grew here
    early_splits = splits_early_endings(settings)
    revisions: list[tuple[str, str, str]] = []
    moved: list[tuple[list[int], str]] = []  # (positions in the batch, new group)
    still: list[list] = []
    for (key, name, gid), entry in pending.items():
        first, last, published, here, firings, chosen, split_to, severity = entry
        series_last = ends.get((key, name, gid), last)
        quiet = end - series_last > window
        if split_to:  # split off earlier: its new alerts follow it
            if here:
                moved.append((here, split_to))
                changed.add(gid)
            record = splits.setdefault(gid, _split_record(gid))
            _add_series(record, key, name, (first, last), len(here), severity, False)
        else:
            # A chosen series that ended closer to another trouble waits to move there.
            target = (
                _closer_end(key, gid, first, series_last, roots, alerting, index, gain)
                if chosen and (quiet or here)
                else None
            )
            if quiet and target is not None:
                # (The batch's incident table holds only the groups it touched.)
                if not (here and target not in touched_ids):
                    moved.append((here, target))
                    revisions += [(i, gid, target) for i in published]
                continue
            root = roots.get(gid)
            side = _ended_apart(key, first, last, firings, root, window, margin)
            if (
                target is None
                and (
                    side == "late"
                    or (side == "early" and (early_splits or _misfit(name, root, settings)))
                )
                # while another trouble it may follow can still end closer, it waits
                and not (
                    chosen and not quiet and _another_root(key, first, roots, gid, alerting, index)
                )
            ):
                record = splits.setdefault(gid, _split_record(gid))
                split_to = record[0]
                _add_series(
                    record, key, name, (first, last), len(published) + len(here), severity, True
                )
                moved.append((here, split_to))
                changed.add(gid)
                revisions += [(i, gid, split_to) for i in published]
                published = []
        if not quiet:  # (a split series' alerts need no ids: they are moved as they come)
            known = [] if split_to else published + ids[here].tolist()
            still.append([key, name, gid, first, last, known, firings, chosen, split_to, severity])
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
        RegroupState(roots, still, splits).trimmed(end, settings),
        _split_groups_frame([splits[gid] for gid in sorted(changed)]),
    )


def _series_ends(pending: dict[tuple, list], window: int) -> dict[tuple, int]:
    """Where a series went on in another group within a window (consolidation's
    ``follow``: its trouble went quiet under it while another below it went on), the
    last alert of the whole series for each part but the last: one alert rule's firing
    ends once, and the part left behind stopped only because the series moved."""
    parts: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    for (key, name, gid), entry in pending.items():
        parts.setdefault((key, name), []).append((entry[0], entry[1], gid))
    ends: dict[tuple, int] = {}
    for (key, name), chain in parts.items():
        if len(chain) < 2:
            continue
        chain.sort()
        later = chain[-1][1]
        for (_, last, gid), (next_first, _, _) in zip(
            reversed(chain[:-1]), reversed(chain[1:]), strict=True
        ):
            later = max(last, later) if next_first - last <= window else last
            ends[(key, name, gid)] = later
    return ends


def _update_roots(
    roots: dict[str, list],
    groups: pd.DataFrame,
    alerts: pd.DataFrame,
    keys: np.ndarray,
    times: np.ndarray,
) -> None:
    """The touched groups' roots and spans, and the gaps between the firings of each
    alert on a group's root (alerts of one name more than :data:`FIRING_GAP_NS` apart;
    gaps across batches are not counted: a new root counts from here)."""
    current: dict[str, str] = {}
    # Plain lists: iterating the frame's columns together costs a tuple per group.
    for gid, root, members in zip(
        groups["group_id"].tolist(), groups["root"].tolist(), groups["members"].tolist(),
        strict=True,
    ):  # fmt: skip
        span = members.get(root)
        if span is not None:
            current[gid] = root
            known = roots.get(gid)
            kept = known[3:7] if known is not None and known[0] == root else [0, 0, [], 0]
            roots[gid] = [root, int(span[0]), int(span[1]), *kept]
    if not len(alerts) or not current:
        return
    # Integer codes throughout: a million alerts touch ~155,000 groups.
    codes, uniques = pd.factorize(alerts["group_id"].to_numpy(dtype=object))
    root_of = np.array([current.get(g) for g in uniques], dtype=object)
    rows = np.flatnonzero(root_of[codes] == keys)
    if not len(rows):
        return
    names, distinct = pd.factorize(alerts["alert_name"].to_numpy(dtype=object)[rows])
    group, stamps = codes[rows], times[rows]
    _add_root_families(roots, uniques, group, names, distinct)
    fault = ~np.array([can_be_symptom(n) for n in distinct], dtype=bool)[names]
    fault_last = np.zeros(len(uniques), dtype=np.int64)
    np.maximum.at(fault_last, group[fault], stamps[fault])
    for code in np.flatnonzero(fault_last).tolist():
        entry = roots[uniques[code]]
        entry[6] = max(int(entry[6]), int(fault_last[code]))
    order = np.lexsort((stamps, names, group))
    group, stamps = group[order], stamps[order]
    runs = _combined([group, names[order]], [len(uniques), len(distinct)])
    head = np.r_[True, runs[1:] != runs[:-1]]
    fired = _new_firings(runs, stamps) & ~head  # a firing after the first of its run
    gap = np.r_[0, np.diff(stamps)]
    if not fired.any():
        return
    totals = np.bincount(group[fired], weights=gap[fired].astype(np.float64))
    counts = np.bincount(group[fired])
    for code in np.flatnonzero(counts).tolist():
        entry = roots[uniques[code]]
        entry[3] += int(totals[code])
        entry[4] += int(counts[code])


def _add_root_families(
    roots: dict[str, list],
    uniques: np.ndarray,
    group: np.ndarray,
    names: np.ndarray,
    distinct: pd.Index,
) -> None:
    """Add the families of the root alerts (group codes ``group``, name codes ``names``)
    to their roots' entries."""
    families, labels = pd.factorize(np.array([alert_family(n) for n in distinct], dtype=object))
    pairs = np.unique(_combined([group, families[names]], [len(uniques), len(labels)]))
    for code in pairs.tolist():
        seen = roots[uniques[code // len(labels)]][5]
        family = str(labels[code % len(labels)])
        if family not in seen:
            seen.append(family)
            seen.sort()


def _root_period(root: list, window: int) -> float:
    """How often a root's alerts re-fire: the mean gap between firings of one alert
    name on it; a window where none fired twice."""
    return root[3] / root[4] if root[4] else float(window)


def _period(first: int, last: int, firings: int, window: int) -> float:
    """How often a series re-fires: its mean gap between firings; a window where it
    fired once (no evidence of a period)."""
    return (last - first) / (firings - 1) if firings > 1 else float(window)


def _ended_apart(
    key: str,
    first: int,
    last: int,
    firings: int,
    root: list | None,
    window: int,
    margin: int,
) -> str:
    """``"early"`` if a series on ``key`` stopped while its group's ``root`` went on
    firing for more than the series' own period (its next firing was due and did not
    come), ``"late"`` if it went on firing more than the root's period after the root
    stopped, else ``""``: a symptom ends with its cause, within one firing of either."""
    if root is None or root[0] == key:
        return ""
    root_last = int(root[2])
    if _stopped_early(first, last, firings, root_last, window, margin):
        return "early"
    return "late" if last - root_last > _root_period(root, window) + margin else ""


def _stopped_early(
    first: int, last: int, firings: int, root_last: int, window: int, margin: int
) -> bool:
    """Whether a series' root fired on more than the series' own period (plus
    ``margin``) after the series' last alert."""
    return root_last - last > _period(first, last, firings, window) + margin


def split_group_id(gid: str) -> str:
    """The id of the group split off ``gid``: ``gid``'s time, another digest."""
    stamp = gid[: gid.rfind("-")]
    return f"{stamp}-{hashlib.sha1(f'{gid}|split'.encode()).hexdigest()[:6]}"


def _split_groups_frame(records: list[list]) -> pd.DataFrame:
    """Split records as rows of :attr:`Consolidation.groups` (root: the member that
    began first), so the incident table and root causes treat them as any group; with
    the alert names they hold (``names``), for the batch that splits off only alerts
    of earlier ones (:func:`alertclf.ranking.incident_facts`)."""
    roots = [min(r[6], key=lambda k, m=r[6]: (m[k][0], k)) if r[6] else "" for r in records]
    return pd.DataFrame(
        {
            "group_id": [r[0] for r in records],
            "root": roots,
            "start": pd.to_datetime([r[1] for r in records], unit="ns", utc=True),
            "last_seen": pd.to_datetime([r[2] for r in records], unit="ns", utc=True),
            "n_alerts_total": [r[3] for r in records],
            "n_series_total": [r[4] for r in records],
            "max_severity_total": [r[5] for r in records],
            "root_changes": [0] * len(records),
            "members": [{k: list(v) for k, v in r[6].items()} for r in records],
            "local_members": [list(r[7]) for r in records],
            "names": [dict(r[8]) for r in records],
        }
    )


def _split_record(gid: str) -> list:
    # [split group id, first alert ns, last alert ns, alerts, series, highest severity,
    #  {service key: [first ns, last ns]}, [members that fired a non-symptom alert],
    #  {alert name: alerts}]
    return [split_group_id(gid), None, None, 0, 0, 0, {}, [], {}]


def _add_series(
    record: list,
    key: str,
    name: str,
    span: tuple[int, int],
    alerts: int,
    severity: int,
    new: bool,
) -> None:
    """Count a series (``new``: split off now) or its later alerts into a split record."""
    first, last = span
    if record[1] is None or first < record[1]:
        record[1] = first
    if record[2] is None or last > record[2]:
        record[2] = last
    record[3] += alerts
    member = record[6].setdefault(key, [first, last])
    member[0], member[1] = min(member[0], first), max(member[1], last)
    record[4] += int(new)
    record[8][name] = record[8].get(name, 0) + alerts
    record[5] = max(record[5], int(severity))
    if not can_be_symptom(name) and key not in record[7]:
        record[7].append(key)


def _extend(
    pending: dict[tuple[str, str, str], list],
    alerts: pd.DataFrame,
    ids: np.ndarray,
    times: np.ndarray,
    keys: np.ndarray,
    roots: dict[str, list],
) -> None:
    """Add the positions, firings and severity of the batch's alerts to the pending
    series they continue, and start a pending series for each series on another service
    than its group's root (chosen: its first alert here was a choice between troubles)
    and for each symptom series that joined its group as another alert on the root
    (chosen too: see *Symptoms on a root* above)."""
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
    named = [uniques[codes_[heads]] for codes_, uniques in parts]  # per series
    reasons = alerts["group_reason"].to_numpy(dtype=object)[order][heads]
    chosen = np.isin(reasons, list(CHOSEN_REASONS))
    root_keys = {gid: root[0] for gid, root in roots.items()}
    on_root = pd.Series(named[2]).map(root_keys).to_numpy(dtype=object) == named[0]
    name_codes, name_uniques = parts[1]
    symptom = np.array([can_be_symptom(n) for n in name_uniques], dtype=bool)[name_codes[heads]]
    own = on_root & (reasons == "root") & symptom
    chosen = chosen | own
    wanted = ~on_root | own
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
    firings = np.add.reduceat(_new_firings(codes, stamps).astype(np.int64), starts)
    severity = np.maximum.reduceat(severity_ordinals(alerts["severity"])[positions], starts)
    for at, (start, stop) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        head = codes[start]
        key = (named[0][head], named[1][head], named[2][head])
        entry = pending.get(key)
        if entry is None:
            entry = pending[key] = [int(stamps[start]), 0, [], [], 0, bool(chosen[head]), "", 0]
        elif stamps[start] - entry[1] <= FIRING_GAP_NS:  # the firing it continues
            entry[4] -= 1
        entry[1] = int(stamps[stop - 1])
        entry[3].extend(positions[start:stop].tolist())
        entry[4] += int(firings[at])
        entry[7] = max(entry[7], int(severity[at]))


def _new_firings(runs: np.ndarray, stamps: np.ndarray) -> np.ndarray:
    """Per alert, sorted by run (``runs``: one code per series) then time: whether it
    begins a firing -- its run's first alert, or more than :data:`FIRING_GAP_NS` after
    the run's previous one (replicas of one firing come seconds apart)."""
    return np.r_[True, (runs[1:] != runs[:-1]) | (np.diff(stamps) > FIRING_GAP_NS)]


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
        for gid, (root, first, last, *_) in roots.items():
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
    # The root's own symptom is measured from its fault alerts (none known: it stays).
    current_end = current[6] if current[0] == key else current[2]
    if not current_end:
        return None
    current_gap = _end_gap(last, current_end)
    slack = current_gap - gain
    if slack < 0:  # most series: they ended with their root
        return None
    # Only roots that ended within the slack can be closer by the gain.
    reach = (last - slack, last + slack / EARLY_END_WEIGHT)
    closest = alerting.closest(key, first, last, reach, index.callees(key), current[0])
    if closest is None or current_gap - closest[0] < gain:
        return None
    return closest[1]


def _another_root(
    key: str, first: int, roots: dict[str, list], gid: str, alerting: _Roots, index: CallerIndex
) -> bool:
    """Whether a root other than group ``gid``'s, below ``key``, was alerting when a
    series that began at ``first`` did (a trouble the series may follow)."""
    current = roots.get(gid)
    if current is None or key not in index:
        return False
    everywhere = (float("-inf"), float("inf"))
    found = alerting.closest(key, first, first, everywhere, index.callees(key), current[0])
    return found is not None


def _end_gap(series_last: int, root_last: int) -> float:
    """How far a series' end is from a root's, where ending *after* the root counts
    double: a symptom may stop before its cause does (its rule resolves, the fault stops
    reaching it), hardly after (storm seeds 1-40 mean 0.933 -> 0.936 against the plain
    distance)."""
    if series_last >= root_last:
        return float(series_last - root_last)
    return EARLY_END_WEIGHT * (root_last - series_last)
