"""What classify remembers between runs: the watermark and the open incident state.

Saved in ``<output>/.state/state.json`` by an atomic replace, and only after the run's
results folder is in place; a crash before that point leaves the old state, so the
batch is processed again, never skipped. A results folder written by a run whose state
was never saved is moved aside as superseded at the start of the next run (see
:func:`alertclf.flows.classify`), so each batch appears once.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from alertclf.errors import AlertclfError
from alertclf.pipeline import PipelineState

STATE_DIR = ".state"
STATE_FILE = "state.json"


class StateError(AlertclfError):
    """The saved state cannot be read."""


@dataclass
class RunState:
    watermark: str | None = None  # ISO timestamp of the newest alert processed
    recent_ids: dict[str, str] = field(default_factory=dict)  # id -> timestamp, late window
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

    def save(self, state: RunState) -> None:
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
