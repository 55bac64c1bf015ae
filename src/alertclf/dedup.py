"""Duplicate marking: the same alert on the same service, again, within the window.

Two alerts report the same problem when they carry the same alert name on the same
*mapped* service (so replicas on other hosts and pods, and spellings of the service
name that map to one graph node, count as the same service; unmapped services compare
by normalised name). A run of such alerts, each within ``time_window_minutes`` of the
previous one, is one episode: its first alert is the original and every later alert is
``is_duplicate`` with ``duplicate_of`` = that first alert. Duplicates are kept in the
results; only ``deduplicated_alerts.csv`` leaves them out.

Episodes still open at the end of a batch carry over, so an alert that re-fires just
after a batch boundary is a duplicate of the alert in the previous batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from alertclf.consolidate import NS_PER_MINUTE, service_keys, to_epoch_ns
from alertclf.settings import Settings


@dataclass
class DedupState:
    """Open episodes: [key, first alert id, last alert ns]."""

    episodes: list[list] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"episodes": self.episodes})

    @classmethod
    def from_json(cls, text: str) -> DedupState:
        data = json.loads(text) if text else {}
        return cls([list(e) for e in data.get("episodes", [])])


def dedup_keys(alerts: pd.DataFrame) -> np.ndarray:
    names = alerts["alert_name"].astype(str).str.strip().to_numpy(dtype=object)
    return service_keys(alerts) + "\x1f" + names


def mark_duplicates(
    alerts: pd.DataFrame, settings: Settings, state: DedupState | None = None
) -> tuple[pd.DataFrame, DedupState]:
    """``is_duplicate`` and ``duplicate_of`` per alert (aligned with ``alerts``)."""
    window = settings.time_window_minutes * NS_PER_MINUTE
    state = state or DedupState()
    n = len(alerts)
    keys = dedup_keys(alerts) if n else np.zeros(0, dtype=object)
    times = to_epoch_ns(alerts["timestamp"]) if n else np.zeros(0, dtype=np.int64)
    ids = alerts["alert_id"].astype(str).to_numpy(dtype=object) if n else np.zeros(0, dtype=object)
    carried = state.episodes
    all_keys = np.concatenate([np.array([e[0] for e in carried], dtype=object), keys])
    all_times = np.concatenate([np.array([e[2] for e in carried], dtype=np.int64), times])
    all_ids = np.concatenate([np.array([e[1] for e in carried], dtype=object), ids])
    # Carried rows sort before batch rows at the same instant (flag 0 < 1).
    flag = np.concatenate([np.zeros(len(carried), dtype=np.int8), np.ones(n, dtype=np.int8)])
    order = np.lexsort((all_ids, flag, all_times, all_keys))
    k, t, i = all_keys[order], all_times[order], all_ids[order]
    new_episode = np.ones(len(order), dtype=bool)
    if len(order) > 1:
        new_episode[1:] = (k[1:] != k[:-1]) | ((t[1:] - t[:-1]) > window)
    episode = np.cumsum(new_episode) - 1
    first_id = i[new_episode][episode]
    is_dup_sorted = ~new_episode
    # Back to input order, batch rows only.
    is_dup = np.empty(len(order), dtype=bool)
    dup_of = np.empty(len(order), dtype=object)
    is_dup[order] = is_dup_sorted
    dup_of[order] = np.where(is_dup_sorted, first_id, "")
    result = pd.DataFrame(
        {"is_duplicate": is_dup[len(carried) :], "duplicate_of": dup_of[len(carried) :]},
        index=alerts.index,
    )
    # Episodes whose last alert is within the window of the batch end stay open.
    end = int(all_times.max()) if len(all_times) else 0
    last_of_episode = np.r_[new_episode[1:], True] if len(order) else np.zeros(0, dtype=bool)
    still_open = last_of_episode & ((end - t) <= window)
    episodes = sorted(
        [str(key), str(first), int(last)]
        for key, first, last in zip(k[still_open], first_id[still_open], t[still_open], strict=True)
    )
    return result, DedupState(episodes)
