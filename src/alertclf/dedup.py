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
    """Open episodes: [key, first alert id, first alert ns, last alert ns]."""

    episodes: list[list] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"episodes": self.episodes})

    @classmethod
    def from_json(cls, text: str) -> DedupState:
        data = json.loads(text) if text else {}
        episodes = []
        for entry in data.get("episodes", []):
            # Older state files kept only the last alert's time.
            key, first_id, *times = entry
            episodes.append([key, first_id, int(times[0]), int(times[-1])])
        return cls(episodes)


def dedup_keys(alerts: pd.DataFrame) -> np.ndarray:
    names = alerts["alert_name"].astype(str).str.strip().to_numpy(dtype=object)
    return service_keys(alerts) + "\x1f" + names


def mark_duplicates(
    alerts: pd.DataFrame, settings: Settings, state: DedupState | None = None
) -> tuple[pd.DataFrame, DedupState]:
    """``is_duplicate`` and ``duplicate_of`` per alert (aligned with ``alerts``).

    A carried episode enters as one row spanning its first to its last alert, so a late
    alert that falls inside it (classify accepts alerts up to ``late_arrival_minutes``
    behind the watermark) is a duplicate of the episode's first alert, as it would have
    been had it arrived on time.
    """
    window = settings.time_window_minutes * NS_PER_MINUTE
    state = state or DedupState()
    n = len(alerts)
    keys = dedup_keys(alerts) if n else np.zeros(0, dtype=object)
    times = to_epoch_ns(alerts["timestamp"]) if n else np.zeros(0, dtype=np.int64)
    ids = alerts["alert_id"].astype(str).to_numpy(dtype=object) if n else np.zeros(0, dtype=object)
    carried = state.episodes
    frame = pd.DataFrame(
        {
            "key": np.concatenate([np.array([e[0] for e in carried], dtype=object), keys]),
            "start": np.concatenate([np.array([e[2] for e in carried], dtype=np.int64), times]),
            "end": np.concatenate([np.array([e[3] for e in carried], dtype=np.int64), times]),
            "id": np.concatenate([np.array([e[1] for e in carried], dtype=object), ids]),
            # Carried rows sort before batch rows at the same instant.
            "flag": np.concatenate([np.zeros(len(carried), np.int8), np.ones(n, np.int8)]),
            "row": np.arange(len(carried) + n),
        }
    )
    frame = frame.sort_values(["key", "start", "flag", "id"], kind="stable")
    same_key = frame["key"].eq(frame["key"].shift())
    # The episode so far ends at the latest end of the rows before, within the key.
    reach = frame.groupby("key", sort=False)["end"].cummax().groupby(frame["key"]).shift()
    new_episode = ~same_key | (frame["start"] - reach > window)
    episode = new_episode.cumsum()
    first_id = frame["id"].where(new_episode).groupby(episode).transform("first")
    frame["is_duplicate"] = ~new_episode
    frame["duplicate_of"] = first_id.where(~new_episode, "")
    frame["episode"] = episode
    frame["first_start"] = frame["start"].where(new_episode).groupby(episode).transform("first")
    batch = frame[frame["flag"] == 1].sort_values("row")
    result = pd.DataFrame(
        {
            "is_duplicate": batch["is_duplicate"].to_numpy(dtype=bool),
            "duplicate_of": batch["duplicate_of"].to_numpy(dtype=object),
        },
        index=alerts.index,
    )
    # Episodes whose last alert is within the window of the newest alert stay open.
    end = int(frame["end"].max()) if len(frame) else 0
    spans = frame.groupby("episode").agg(
        key=("key", "first"), first=("id", "first"), start=("first_start", "first"),
        last=("end", "max"),
    )  # fmt: skip
    spans = spans[end - spans["last"] <= window]
    episodes = sorted(
        [str(k), str(f), int(s), int(last)]
        for k, f, s, last in zip(spans["key"], spans["first"], spans["start"], spans["last"],
                                 strict=True)
    )  # fmt: skip
    return result, DedupState(episodes)
