"""The seed's Python API, kept: :class:`AlertWorkflowScheduler`.

::

    from alertclf import AlertWorkflowScheduler

    scheduler = AlertWorkflowScheduler(
        alerts_csv_path="alerts.csv",
        graph_json_path="graph.json",
        output_dir="results",
        model_dir="data/models",
    )
    scheduler.run_once()  # one classify now, in this process; returns a summary dict
    scheduler.start(workflow_interval_minutes=15, enable_retraining=True)  # returns at once
    try:
        while True:
            time.sleep(60)
            print(scheduler.status()["jobs"]["classify"]["outcome"])
    except KeyboardInterrupt:
        scheduler.stop()  # after the current job

It is the command line's scheduler (:mod:`alertclf.scheduler`: the same lock, status file,
timeouts and ``mlflow run`` jobs) with its loop in a background thread.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alertclf.scheduler import (
    CLASSIFY,
    Scheduler,
    SchedulerConfig,
    SchedulerError,
    read_status,
)
from alertclf.settings import Settings

logger = logging.getLogger(__name__)


class AlertWorkflowScheduler:
    """Classify every N minutes and retrain weekly, in the background.

    ``in_process=False`` (the default) runs each job as ``mlflow run`` in a child process
    with a hard timeout; ``in_process=True`` calls the flows in the scheduler thread (no
    start-up cost, but a hung job cannot be killed). ``settings`` (or ``config_file``)
    tunes the pipeline; ``retrain_day``/``retrain_time``/``job_timeout_minutes`` default
    to the settings' values (Monday, 07:00 local time, 30 minutes).
    ``scheduler_options`` passes further :class:`~alertclf.scheduler.SchedulerConfig`
    fields (e.g. ``project_dir``, or the test hooks).
    """

    def __init__(
        self,
        alerts_csv_path: str | Path,
        graph_json_path: str | Path,
        output_dir: str | Path = "results",
        model_dir: str | Path = "data/models",
        *,
        history_path: str | Path | None = None,
        settings: Settings | None = None,
        config_file: str | Path | None = None,
        in_process: bool = False,
        retrain_day: str | None = None,
        retrain_time: str | None = None,
        job_timeout_minutes: float | None = None,
        scheduler_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.alerts_csv_path = str(alerts_csv_path)
        self.graph_json_path = str(graph_json_path)
        self.output_dir = Path(output_dir)
        self.model_dir = Path(model_dir)
        self.history_path = str(history_path) if history_path is not None else None
        self.settings = settings if settings is not None else Settings.build(config_file)
        self.in_process = in_process
        self.retrain_day = retrain_day or self.settings.retrain_day
        self.retrain_time = retrain_time or self.settings.retrain_time
        self.job_timeout_minutes = job_timeout_minutes or self.settings.job_timeout_minutes
        self.scheduler_options = dict(scheduler_options or {})
        self._scheduler: Scheduler | None = None
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    # --- the seed's methods -----------------------------------------------------------------
    def run_once(self) -> dict[str, Any]:
        """Classify the new alerts now, in this process (training a first model when the
        registry has none); return the job record: ``outcome`` (``success``/``failed``),
        ``results_dir``, ``error``, ``duration_seconds`` and a ``summary`` (rows, model
        version, incidents, top incidents). Refused while :meth:`start` is running."""
        if self.running:
            raise SchedulerError(
                "the background scheduler is running and classifies on its own; stop() it "
                "before run_once()"
            )
        config = self._config(self.settings.interval_minutes, enable_retraining=False)
        config.in_process = True
        return Scheduler(config).run_once(CLASSIFY).as_dict()

    def start(self, workflow_interval_minutes: float = 15, enable_retraining: bool = True) -> None:
        """Start classifying every ``workflow_interval_minutes`` (the first run at once) and,
        with ``enable_retraining``, retraining weekly. Returns immediately; the loop runs in
        a background thread. Raises :class:`~alertclf.scheduler.SchedulerLockedError` when
        another scheduler uses the same output folder."""
        with self._guard:
            if self.running:
                raise SchedulerError("already started; stop() it first")
            scheduler = Scheduler(self._config(workflow_interval_minutes, enable_retraining))
            scheduler.start()  # here, so that a refusal raises in the caller
            for line in scheduler.banner():
                logger.info("%s", line)
            thread = threading.Thread(
                target=self._loop, args=(scheduler,), name="alertclf-scheduler", daemon=True
            )
            self._scheduler, self._thread = scheduler, thread
            # A daemon thread dies with the interpreter; stop it properly first.
            atexit.register(self.stop)
            thread.start()

    def stop(self, timeout: float | None = None, abort: bool = False) -> None:
        """Stop after the current job and wait for it (at most ``timeout`` seconds);
        ``abort`` terminates a running ``mlflow run`` job instead of waiting for it."""
        thread, scheduler = self._thread, self._scheduler
        atexit.unregister(self.stop)
        if thread is None or scheduler is None:
            return
        scheduler.stop(abort=abort)
        try:
            thread.join(timeout)
        except KeyboardInterrupt:
            logger.warning("interrupted while waiting for the current job: aborting it")
            scheduler.stop(abort=True)
            thread.join(timeout)
        if not thread.is_alive():
            self._thread = None

    def status(self) -> dict[str, Any]:
        """The scheduler's status: ``scheduler`` (state, pid, schedule) and ``jobs``
        (``classify``/``retrain``: last start/end, outcome, duration, counters, next run).
        Before :meth:`start`, what the status file of the output folder says."""
        if self._scheduler is not None:
            return self._scheduler.status()
        saved = read_status(self.output_dir)
        return saved or {"scheduler": {"state": "not started"}, "jobs": {}}

    # --- extras ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> AlertWorkflowScheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _config(self, interval_minutes: float, enable_retraining: bool) -> SchedulerConfig:
        return SchedulerConfig(
            alerts=self.alerts_csv_path,
            graph=self.graph_json_path,
            history=self.history_path,
            output=self.output_dir,
            models=self.model_dir,
            interval_minutes=interval_minutes,
            retrain_day=self.retrain_day,
            retrain_time=self.retrain_time,
            enable_retraining=enable_retraining,
            in_process=self.in_process,
            job_timeout_seconds=self.job_timeout_minutes * 60,
            settings=self.settings,
            **self.scheduler_options,
        )

    @staticmethod
    def _loop(scheduler: Scheduler) -> None:
        try:
            scheduler.run()
        except Exception:  # the thread's last word; jobs themselves never raise
            logger.exception("the alertclf scheduler loop ended with an error")
