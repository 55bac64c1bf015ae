"""Writing result tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write one result table as UTF-8 CSV without the index."""
    path = Path(path)
    frame.to_csv(path, index=False)
    return path
