"""How long a fault takes to show on its callers' alerts in this estate, learned from
history without labels.

Consolidation needs a time scale: a new symptom series joins trouble on its path only if
that trouble began recently, and a young group of symptoms is re-rooted at a fault below
it only while it is young. That scale is the *propagation lag*: per hop, the time the
fault takes to reach a caller plus each alert rule's evaluation interval and ``for:``
clause. It differs between estates -- a caller rule with ``for: 5m`` fires minutes after
its dependency's -- and a fixed guess is wrong somewhere: on the simulator with
per-hop lags of 2-6 minutes instead of 0.5-3, a fixed 5-minute bound split incidents
(calm ARI mean 0.903 against 0.986 with the lag learned; see README *Quality*).

The estimate: every alert series (one alert name on one service, re-firing within the
window) starts at an *onset*. For each symptom-like onset on a service, the lag since the
latest onset on one of its direct dependencies (within ``horizon_minutes``) is one
sample. Background alerts give such lags too, by chance; the same samples are therefore
drawn again with the dependencies' onsets shifted by hours, which keeps every service's
alert rate and destroys causality. What the true lags have in excess of the shifted ones
is propagation; the lag below which ``quantile`` of that excess lies is the estimate
(the excess beyond a gap of ``STRAY_GAP_MINUTES`` without any left out as strays).

The *cause lateness* is the other side of the same clock: how long a failing service's
own first alert can come *after* its callers' first symptoms. A resource alert with
``for: 5m`` (CPU, memory, disk) fires minutes after the latency its callers report at
once, so the group of symptoms is minutes old when its cause shows up, and must still
be re-rooted there (:mod:`alertclf.consolidate`, rule 3). For each fault onset (an alert
that cannot be a symptom) the lag since the *earliest* symptom onset on one of its
direct callers (within ``horizon_minutes``) is one sample, chance and strays removed as
above. It is learned only where causes come late more often than early: beyond chance,
more fault onsets follow a caller's symptom than are followed by one. Where causes alert
first (the usual case) callers' symptoms before a fault are other incidents' -- in a
storm, plenty -- and the estimate stays unset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from alertclf.catalogue import can_be_symptom
from alertclf.consolidate import CallerIndex, service_keys, to_epoch_ns
from alertclf.distinct import per_distinct
from alertclf.settings import Settings

logger = logging.getLogger(__name__)

NS_PER_MINUTE = 60 * 10**9
# Shifts of the dependencies' onsets that make the chance-only samples: hours, both ways,
# far beyond any propagation and away from the daily cycle's own peaks.
NULL_SHIFTS_HOURS = (-5.0, -3.0, 3.0, 5.0)
# Lags beyond a gap this long in the excess over chance are strays (a noise alert
# minutes away), not its tail: with a handful of samples a quantile would be a stray
# itself. Two noise alerts 6.6 and 9.5 minutes before a fault made 7 minutes of a cause
# lateness of 1.5; on the simulator with callers alerting 0.1-1 minute after their
# dependency, a stray made propagation lags of 3.5 minutes (calm ARI mean 0.977 -> 0.979,
# benchmarks/timing.py).
STRAY_GAP_MINUTES = 3.0


@dataclass(frozen=True)
class PropagationLag:
    """``minutes``: the estimate, None when the history holds too little propagation to
    tell; ``samples``: onsets with trouble on their path within the horizon; ``excess``:
    how many of them are more than chance."""

    minutes: float | None
    samples: int
    excess: float


def estimate_propagation_lag(
    alerts: pd.DataFrame,
    index: CallerIndex,
    window_minutes: float,
    quantile: float = 0.75,
    horizon_minutes: float = 30.0,
    bin_minutes: float = 0.5,
    min_samples: int = 5,
    onsets: pd.DataFrame | None = None,
) -> PropagationLag:
    """The propagation lag of the estate the mapped ``alerts`` come from (columns
    ``timestamp, service, mapped_service, alert_name``). Cost: one sort of the alerts and
    one search per active dependency edge; no pair of alerts is enumerated. ``onsets``:
    the alerts' series onsets, when already found (:func:`estimate_timing`)."""
    if onsets is None:
        onsets = _onsets(alerts, window_minutes * NS_PER_MINUTE)
    if onsets.empty:
        return PropagationLag(None, 0, 0.0)
    lags = _OnsetLags(
        targets=_by_service(onsets[onsets["symptom"].to_numpy()], index),
        sources=_by_service(onsets),
        neighbours=index.dependencies,
        horizon=int(horizon_minutes * NS_PER_MINUTE),
        span=onsets["t"],
    )
    observed, shifted = lags.drawn("latest_before")
    return _beyond_chance(observed, shifted, horizon_minutes, bin_minutes, quantile, min_samples)


def estimate_cause_lateness(
    alerts: pd.DataFrame,
    index: CallerIndex,
    window_minutes: float,
    quantile: float = 0.9,
    horizon_minutes: float = 10.0,
    bin_minutes: float = 0.5,
    min_samples: int = 5,
    onsets: pd.DataFrame | None = None,
) -> PropagationLag:
    """How late a fault's own first alert comes after its callers' first symptoms in this
    estate (module docstring); ``minutes`` None where causes do not come late.
    ``onsets`` as for :func:`estimate_propagation_lag`.

    The horizon is short (10 minutes): that is all a group of symptoms may wait for its
    cause, and longer horizons draw more chance pairs. The upper decile, not the
    quartile: the bound must cover nearly every late cause, since a cause that comes
    later than it splits its incident in two."""
    if onsets is None:
        onsets = _onsets(alerts, window_minutes * NS_PER_MINUTE)
    if onsets.empty:
        return PropagationLag(None, 0, 0.0)
    symptom = onsets["symptom"].to_numpy()
    lags = _OnsetLags(
        targets=_by_service(onsets[~symptom], index),
        sources=_by_service(onsets[symptom]),
        neighbours=lambda key: index.direct_callers(key) - {key},
        horizon=int(horizon_minutes * NS_PER_MINUTE),
        span=onsets["t"],
    )
    observed, shifted = lags.drawn("earliest_before")
    if _excess_count(observed, shifted) <= _excess_count(*lags.drawn("next_after")):
        return PropagationLag(None, len(observed), 0.0)
    return _beyond_chance(observed, shifted, horizon_minutes, bin_minutes, quantile, min_samples)


def estimate_timing(
    alerts: pd.DataFrame,
    index: CallerIndex,
    window_minutes: float,
    lag: bool = True,
    lateness: bool = True,
) -> tuple[PropagationLag | None, PropagationLag | None]:
    """The propagation lag and the cause lateness (each None when not asked for) with
    their default parameters, from one pass over the alerts' series onsets (on a
    million alerts that pass is 0.9 s of each estimate's 2-3 s)."""
    onsets = _onsets(alerts, window_minutes * NS_PER_MINUTE)
    return (
        estimate_propagation_lag(alerts, index, window_minutes, onsets=onsets) if lag else None,
        estimate_cause_lateness(alerts, index, window_minutes, onsets=onsets) if lateness else None,
    )


def _excess_count(observed: np.ndarray, shifted: list[np.ndarray]) -> float:
    """How many more samples the observed onsets give than the shifted (chance) ones."""
    return len(observed) - float(np.mean([len(lags) for lags in shifted]))


def _beyond_chance(
    observed: np.ndarray,
    shifted: list[np.ndarray],
    horizon_minutes: float,
    bin_minutes: float,
    quantile: float,
    min_samples: int,
) -> PropagationLag:
    """The ``quantile`` of the ``observed`` lags (ns) in excess of the ``shifted``
    (chance-only) ones, before the first gap of ``STRAY_GAP_MINUTES`` without any, if
    they stand out of chance at all."""
    if len(observed) < min_samples:
        return PropagationLag(None, len(observed), 0.0)
    edges = np.arange(0.0, horizon_minutes + bin_minutes, bin_minutes)
    counts = np.histogram(observed / NS_PER_MINUTE, edges)[0].astype(np.float64)
    chance = np.mean([np.histogram(lags / NS_PER_MINUTE, edges)[0] for lags in shifted], axis=0)
    excess = np.clip(counts - chance, 0.0, None)
    # The lags must stand out of chance: more onsets than chance gives, by three
    # standard deviations of a Poisson count and by a handful at least.
    beyond = float(counts.sum() - chance.sum())
    if beyond < max(min_samples / 4, 3 * np.sqrt(max(float(chance.sum()), 1.0))):
        return PropagationLag(None, len(observed), max(beyond, 0.0))
    filled = np.flatnonzero(excess > 0)
    apart = np.flatnonzero(np.diff(filled) * bin_minutes > STRAY_GAP_MINUTES)
    if len(apart):
        excess[filled[apart[0]] + 1 :] = 0.0
    total = float(excess.sum())
    cumulative = np.cumsum(excess)
    upper = edges[1:][int(np.searchsorted(cumulative, quantile * total))]
    return PropagationLag(float(upper), len(observed), total)


def _onsets(alerts: pd.DataFrame, window_ns: float) -> pd.DataFrame:
    """The first alert of every series: ``key`` (service), ``symptom`` (whether the
    alert may be a symptom), ``t`` (epoch ns)."""
    if len(alerts) == 0:
        return pd.DataFrame(
            {"key": [], "name": [], "t": np.array([], dtype=np.int64), "symptom": []}
        )
    frame = pd.DataFrame(
        {
            "key": service_keys(alerts),
            "name": alerts["alert_name"].astype(str).to_numpy(),
            "t": to_epoch_ns(alerts["timestamp"]),
        }
    ).sort_values(["key", "name", "t"], kind="stable")
    same = (frame["key"].to_numpy()[1:] == frame["key"].to_numpy()[:-1]) & (
        frame["name"].to_numpy()[1:] == frame["name"].to_numpy()[:-1]
    )
    gap = np.diff(frame["t"].to_numpy()) > window_ns
    first = np.concatenate([[True], ~same | gap])
    onsets = frame[first]
    return onsets.assign(
        symptom=per_distinct(onsets["name"], can_be_symptom, False, bool)
    ).reset_index(drop=True)


def _by_service(onsets: pd.DataFrame, index: CallerIndex | None = None) -> dict[str, np.ndarray]:
    """Onset times per service (only services in ``index``, if given)."""
    return {
        key: group.to_numpy()
        for key, group in onsets.groupby("key")["t"]
        if index is None or key in index
    }


class _OnsetLags:
    """For each target onset on a service, its lag to an onset of the ``sources`` on one
    of that service's ``neighbours``: ``latest_before`` (the latest source onset at or
    before it), ``earliest_before`` (the earliest within the horizon before it) or
    ``next_after`` (the first after it). The sources are grouped by service once; every
    shift of them (the observed lags, then the chance-only ones) reuses them."""

    def __init__(
        self,
        targets: dict[str, np.ndarray],
        sources: dict[str, np.ndarray],
        neighbours: Callable[[str], set[str]],
        horizon: int,
        span: pd.Series,
    ) -> None:
        self.targets, self.sources, self.neighbours = targets, sources, neighbours
        self.horizon = horizon
        self.start = int(span.min())
        self.span = int(span.max()) - self.start + 1

    def drawn(self, how: str) -> tuple[np.ndarray, list[np.ndarray]]:
        """The observed lags and, for each of :data:`NULL_SHIFTS_HOURS`, the chance-only
        ones."""
        shifts = [int(h * 60 * NS_PER_MINUTE) for h in NULL_SHIFTS_HOURS]
        return self(0, how), [self(shift, how) for shift in shifts]

    def __call__(self, shift: int, how: str) -> np.ndarray:
        """ns of the lags within the horizon, the sources moved by ``shift`` around the
        history's span (not off its ends, which would lose matches near them and make
        chance look rarer than it is); targets with none are left out."""
        if shift:
            times = {
                key: np.sort((t - self.start + shift) % self.span + self.start)
                for key, t in self.sources.items()
            }
        else:
            times = {key: np.sort(t) for key, t in self.sources.items()}
        never = np.iinfo(np.int64).max
        lags = []
        for key, at in self.targets.items():
            best = np.full(len(at), never, dtype=np.int64)
            for neighbour in self.neighbours(key):
                theirs = times.get(neighbour)
                if theirs is None:
                    continue
                lag = _lag(theirs, at, how, self.horizon, never)
                if how == "earliest_before":
                    # the largest lag within the horizon; ``never`` marks none
                    found = lag != never
                    best = np.where(found & ((best == never) | (lag > best)), lag, best)
                else:
                    np.minimum(best, lag, out=best)
            lags.append(best[best <= self.horizon])
        return np.concatenate(lags) if lags else np.array([], dtype=np.int64)


def _lag(theirs: np.ndarray, at: np.ndarray, how: str, horizon: int, never: int) -> np.ndarray:
    """Per target time in ``at``, its lag to the sorted source times ``theirs``."""
    last = len(theirs) - 1
    if how == "latest_before":
        before = np.searchsorted(theirs, at, side="right") - 1
        return np.where(before >= 0, at - theirs[np.maximum(before, 0)], never)
    if how == "earliest_before":
        first = np.searchsorted(theirs, at - horizon, side="left")
        onset = theirs[np.minimum(first, last)]
        return np.where((first <= last) & (onset <= at), at - onset, never)
    after = np.searchsorted(theirs, at, side="right")
    return np.where(after <= last, theirs[np.minimum(after, last)] - at, never)


def with_learned_lag(settings: Settings, minutes: object) -> Settings:
    """``settings`` with the propagation lag a model learned, unless one is configured
    (a configured value always wins) or nothing was learned. A value that is no valid
    lag (a model's metadata edited by hand) is ignored with a warning."""
    return _with_learned(settings, "propagation_lag_minutes", "propagation lag", minutes)


def with_learned_lateness(settings: Settings, minutes: object) -> Settings:
    """``settings`` with the cause lateness a model learned, on the same terms as
    :func:`with_learned_lag`."""
    return _with_learned(settings, "cause_lateness_minutes", "cause lateness", minutes)


def with_learned_share(settings: Settings, share: object) -> Settings:
    """``settings`` with the early-end share a model learned (alertclf.regroup), on the
    same terms as :func:`with_learned_lag`."""
    return _with_learned(settings, "early_end_share", "early-end share", share, "in [0, 1]")


def with_learned_families(settings: Settings, table: object) -> Settings:
    """``settings`` with the symptom families a model learned (alertclf.regroup), on the
    same terms as :func:`with_learned_lag`."""
    return _with_learned(
        settings, "symptom_families", "symptom-family table", table, "{family: {family: count}}"
    )


def _with_learned(
    settings: Settings,
    field: str,
    what: str,
    value: object,
    valid: str = "minutes in (0, 120]",
) -> Settings:
    if getattr(settings, field) is not None or value is None:
        return settings
    try:
        return Settings.model_validate({**settings.model_dump(), field: value})
    except ValueError:
        logger.warning("ignoring a learned %s of %r: not %s", what, value, valid)
        return settings
