"""Importing, on a background thread, the modules a job needs only after it has read its
input: MLflow's SQL store and scikit-learn cost about 1.4 s of imports on these
machines, and reading a large CSV leaves the interpreter idle much of the time (pyarrow
parses and trims text without holding the GIL).

A module that fails to import here is simply imported again, and fails with its own
error, where the job needs it.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterable

from alertclf.gcpause import gc_paused

logger = logging.getLogger(__name__)


def import_in_background(modules: Iterable[str]) -> threading.Thread:
    """Start a daemon thread importing ``modules`` in order; join it before forking."""
    names = list(modules)

    def run() -> None:
        # Imports allocate many objects: a full collection they trigger would scan the
        # job's live objects too (0.27 s while a million alerts are read).
        with gc_paused():
            for name in names:
                try:
                    importlib.import_module(name)
                except Exception as err:  # the job's own import will report it
                    logger.debug("background import of %s failed: %s", name, err)

    thread = threading.Thread(target=run, name="alertclf-imports", daemon=True)
    thread.start()
    return thread
