"""Pausing CPython's cyclic garbage collector around allocation-heavy loops.

The consolidation loop and the row-wise parts of reading and ranking allocate millions
of small, long-lived containers (tuples, lists, dicts) and create no reference cycles.
CPython's generational collector still re-scans the survivors every few hundred
allocations: on a million alerts it ran about 5,300 young and 19 full collections inside
consolidation alone, 8.7 of its 25 seconds, and reclaimed almost nothing (about 1,000
objects). Reference counting still frees everything as usual while it is paused.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block; restore its previous state after,
    also on error. Nested use is safe: only the outermost block re-enables it. Blocks on
    two threads at once leave it enabled once both have ended (the collector is one
    switch per process)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
