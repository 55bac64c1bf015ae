"""What classify remembers between runs: the watermark and the open incident state.

Saved in ``<output>/.state/state.json`` by an atomic replace, and only after the run's
results folder is in place; a crash before that point leaves the old state, so the
batch is processed again, never skipped. A results folder written by a run whose state
was never saved is moved aside as superseded at the start of the next run (see
:func:`alertclf.flows.classify`), so each batch appears once.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from alertclf.errors import AlertclfError
from alertclf.pipeline import PipelineState

STATE_DIR = ".state"
STATE_FILE = "state.json"
LEDGER_PREFIX = "ledger-"
LEDGER_COLUMNS = ("alert_id", "timestamp_ns")

logger = logging.getLogger(__name__)


class StateError(AlertclfError):
    """The saved state cannot be read."""


@dataclass
class RunState:
    watermark: str | None = None  # ISO timestamp of the newest alert processed
    # Ids taken, as id -> timestamp: how states saved before the ledger remembered the
    # late-arrival window. Read into the ledger; new states leave it empty.
    recent_ids: dict[str, str] = field(default_factory=dict)
    # The ledger file in the state folder: every alert id taken or rejected as late,
    # ``ledger_days`` back from the watermark (see :func:`alertclf.flows.select_new`).
    ledger: str | None = None
    pipeline: str = ""  # PipelineState JSON
    last_run_id: str | None = None
    model_version: str | None = None
    graph_fingerprint: str | None = None
    runs: int = 0

    @property
    def watermark_ts(self) -> pd.Timestamp | None:
        return pd.Timestamp(self.watermark) if self.watermark else None

    def pipeline_state(self) -> PipelineState:
        return PipelineState.from_json(self.pipeline)


class StateStore:
    def __init__(self, output_dir: str | Path) -> None:
        self.folder = Path(output_dir) / STATE_DIR
        self.path = self.folder / STATE_FILE

    def load(self) -> RunState:
        if not self.path.exists():
            return RunState()
        try:
            data = json.loads(self.path.read_text("utf-8"))
            return RunState(**data)
        except (OSError, ValueError, TypeError) as err:
            raise StateError(
                f"{self.path}: the saved state is unreadable ({err}); move it aside to "
                "start over (the next run then processes the whole input again)"
            ) from None

    def read_ledger(self, state: RunState) -> pd.DataFrame:
        """``alert_id, timestamp_ns`` of the alerts the committed runs took or rejected."""
        frames = []
        if state.ledger:
            path = self.folder / state.ledger
            try:
                frames.append(pd.read_parquet(path, columns=list(LEDGER_COLUMNS)))
            except (OSError, ValueError) as err:
                raise StateError(
                    f"{path}: the ledger of processed alerts is unreadable ({err}); move the "
                    "state folder aside to start over (the next run then processes the whole "
                    "input again)"
                ) from None
        if state.recent_ids:
            stamps = pd.to_datetime(pd.Series(list(state.recent_ids.values())), utc=True)
            frames.append(
                pd.DataFrame(
                    {
                        "alert_id": pd.Series(list(state.recent_ids), dtype="str"),
                        "timestamp_ns": stamps.astype("int64").to_numpy(),
                    }
                )
            )
        if not frames:
            return pd.DataFrame(
                {"alert_id": pd.Series([], dtype="str"), "timestamp_ns": np.array([], np.int64)}
            )
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def write_ledger(self, ledger: pd.DataFrame) -> str:
        """Write a ledger under a new name (the committed one stays until the state that
        names the new one is saved) and return the name."""
        name = f"{LEDGER_PREFIX}{uuid.uuid4().hex}.parquet"
        path = self.folder / name
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            ledger[list(LEDGER_COLUMNS)].to_parquet(tmp, index=False)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise StateError(
                f"{path}: cannot save the ledger of processed alerts "
                f"({err.strerror or type(err).__name__}); the previous state is kept and this "
                "batch will be processed again"
            ) from err
        return name

    def save(self, state: RunState) -> None:
        self._save(state)
        # Ledgers no state names: the one just replaced, or one of a run that died
        # between writing its ledger and its state.
        for path in self.folder.glob(f"{LEDGER_PREFIX}*"):
            if path.name != state.ledger:
                try:
                    path.unlink()
                except OSError as err:
                    logger.warning("cannot remove the old ledger %s: %s", path, err)

    def _save(self, state: RunState) -> None:
        tmp = self.path.with_suffix(f".tmp-{os.getpid()}")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(asdict(state), handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as err:
            # The old state stays in place (the replace is atomic), so the batch is
            # processed again next time; say so in one line rather than a traceback.
            tmp.unlink(missing_ok=True)
            raise StateError(
                f"{self.path}: cannot save the state ({err.strerror or type(err).__name__}); "
                "the previous state is kept and this batch will be processed again"
            ) from err
