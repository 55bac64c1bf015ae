"""Work for the other core: a forked copy of this process computes one result while this
one goes on with something else.

Forking is what makes it cheap: the child inherits the batch as it is in memory, and only
the result crosses back (pickled, through a pipe). It is used on large batches only
(``parallel_min_alerts``), on Linux with two usable cores, and never from a daemonic
process (those may not have children). A child that fails or dies costs time, not the
result: the work is then done in this process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

logger = logging.getLogger(__name__)


def can_fork() -> bool:
    """Whether a forked helper can run beside this process."""
    return (
        _usable_cores() >= 2
        # fork is what makes the child cheap; on macOS it is unsafe with threaded
        # libraries, on Windows absent.
        and sys.platform.startswith("linux")
        and not multiprocessing.current_process().daemon
    )


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fork(target: Callable[..., None], *args: Any) -> tuple[multiprocessing.Process, Connection]:
    """Start ``target(connection, *args)`` in a forked child; return it and the reading
    end of its pipe."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=target, args=(sender, *args), daemon=True)
    child.start()
    sender.close()
    return child, receiver


class Forked:
    """``func(*args)``, computed in a forked child: :meth:`result` waits for it (or, if
    the child failed, computes it here)."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self._call = (func, args)
        self._child, self._conn = fork(_compute, func, *args)

    def result(self) -> Any:
        try:
            outcome = self._conn.recv()
        except (EOFError, OSError):
            outcome = ("failed", "the process died")
        finally:
            self._conn.close()
            self._child.join()
        if outcome[0] == "done":
            return outcome[1]
        func, args = self._call
        logger.warning("%s failed in a second process; computing it here:\n%s",
                       getattr(func, "__name__", func), outcome[1])  # fmt: skip
        return func(*args)

    def cancel(self) -> None:
        """Stop the child (its result is no longer wanted)."""
        self._conn.close()
        if self._child.is_alive():
            self._child.terminate()
        self._child.join()


def _compute(conn: Connection, func: Callable[..., Any], *args: Any) -> None:
    try:
        result = func(*args)
    except BaseException:
        conn.send(("failed", traceback.format_exc()))
    else:
        conn.send(("done", result))
    finally:
        conn.close()
