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
is propagation; the lag below which ``quantile`` of that excess lies is the estimate.
"""

from __future__ import annotations

import logging
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
) -> PropagationLag:
    """The propagation lag of the estate the mapped ``alerts`` come from (columns
    ``timestamp, service, mapped_service, alert_name``). Cost: one sort of the alerts and
    one search per active dependency edge; no pair of alerts is enumerated."""
    if len(alerts) == 0:
        return PropagationLag(None, 0, 0.0)
    path_lags = _PathLags(
        _onsets(alerts, window_minutes * NS_PER_MINUTE), index, int(horizon_minutes * NS_PER_MINUTE)
    )
    observed = path_lags(shift=0)
    if len(observed) < min_samples:
        return PropagationLag(None, len(observed), 0.0)
    edges = np.arange(0.0, horizon_minutes + bin_minutes, bin_minutes)
    counts = np.histogram(observed / NS_PER_MINUTE, edges)[0].astype(np.float64)
    chance = np.mean(
        [
            np.histogram(
                path_lags(shift=int(h * 60 * NS_PER_MINUTE)) / NS_PER_MINUTE,
                edges,
            )[0]
            for h in NULL_SHIFTS_HOURS
        ],
        axis=0,
    )
    excess = np.clip(counts - chance, 0.0, None)
    total = float(excess.sum())
    # Propagation must stand out of chance: more onsets than chance gives, by three
    # standard deviations of a Poisson count and by a handful at least.
    beyond = float(counts.sum() - chance.sum())
    if beyond < max(min_samples / 4, 3 * np.sqrt(max(float(chance.sum()), 1.0))):
        return PropagationLag(None, len(observed), max(beyond, 0.0))
    cumulative = np.cumsum(excess)
    upper = edges[1:][int(np.searchsorted(cumulative, quantile * total))]
    return PropagationLag(float(upper), len(observed), total)


def _onsets(alerts: pd.DataFrame, window_ns: float) -> pd.DataFrame:
    """The first alert of every series: ``key`` (service), ``symptom`` (whether the
    alert may be a symptom), ``t`` (epoch ns)."""
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


class _PathLags:
    """Each symptom onset's lag behind the latest onset on one of its service's direct
    dependencies. The onsets are grouped by service once; every shift of the
    dependencies' onsets (the observed lags, then the chance-only ones) reuses them."""

    def __init__(self, onsets: pd.DataFrame, index: CallerIndex, horizon: int) -> None:
        self.index, self.horizon = index, horizon
        self.start = int(onsets["t"].min())
        self.span = int(onsets["t"].max()) - self.start + 1
        self.times = {key: group.to_numpy() for key, group in onsets.groupby("key")["t"]}
        symptoms = onsets[onsets["symptom"].to_numpy()]
        self.symptoms = {
            key: group.to_numpy() for key, group in symptoms.groupby("key")["t"] if key in index
        }

    def __call__(self, shift: int) -> np.ndarray:
        """ns of the lags within the horizon, the dependencies' onsets moved by ``shift``
        around the history's span (not off its ends, which would lose matches near them
        and make chance look rarer than it is); onsets with none are left out."""
        if shift:
            times = {
                key: np.sort((t - self.start + shift) % self.span + self.start)
                for key, t in self.times.items()
            }
        else:
            times = {key: np.sort(t) for key, t in self.times.items()}
        never = np.iinfo(np.int64).max
        lags = []
        for key, at in self.symptoms.items():
            best = np.full(len(at), never, dtype=np.int64)
            for dependency in self.index.dependencies(key):
                theirs = times.get(dependency)
                if theirs is None:
                    continue
                before = np.searchsorted(theirs, at, side="right") - 1
                lag = np.where(before >= 0, at - theirs[np.maximum(before, 0)], never)
                np.minimum(best, lag, out=best)
            lags.append(best[best <= self.horizon])
        return np.concatenate(lags) if lags else np.array([], dtype=np.int64)


def with_learned_lag(settings: Settings, minutes: object) -> Settings:
    """``settings`` with the propagation lag a model learned, unless one is configured
    (a configured value always wins) or nothing was learned. A value that is no valid
    lag (a model's metadata edited by hand) is ignored with a warning."""
    if settings.propagation_lag_minutes is not None or minutes is None:
        return settings
    try:
        return Settings.model_validate(
            {**settings.model_dump(), "propagation_lag_minutes": minutes}
        )
    except ValueError:
        logger.warning("ignoring a learned propagation lag of %r: not minutes in (0, 120]", minutes)
        return settings
