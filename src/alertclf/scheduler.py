"""The operations loop: classify every N minutes, retrain weekly, never overlapping.

A thin loop on the ``schedule`` library. Each job runs as ``mlflow run <project> -e
classify|retrain --env-manager local`` in its own process group, so a hung job can be
killed whole at its timeout; ``in_process`` calls the flows directly instead (no
``mlflow run`` start-up cost, but no hard timeout either: see :meth:`Scheduler._run_in_process`).

What the loop guarantees, and why:

* **No overlap.** Jobs run one after another in the loop's thread (that is how
  ``schedule`` works). A second scheduler on the same output folder is refused: the lock
  ``<output>/.scheduler.lock`` names the holder's pid, host and start time, and the holder
  keeps an ``flock`` on it for its lifetime. The kernel drops that ``flock`` when the
  process dies however it dies, so a lock left by a crash is recognised as stale (nobody
  holds it and its pid is gone) and taken over with a warning.
* **A failing job never kills the loop.** ``schedule`` lets an exception from a job
  propagate out of ``run_pending()``; every job goes through :meth:`Scheduler._job`,
  which records the outcome and catches everything.
* **No catch-up bursts.** ``schedule`` runs a job at most once per ``run_pending()`` and
  computes its next run from the moment the job *ended*. After a long job, or a machine
  that slept through several slots, each job runs once and is then back on its cadence.
  The price is a drift of one job duration per slot (15 min + ~10 s); classify is driven by
  its watermark, so a drifting slot never loses or repeats alerts.
* **Clean stop.** SIGINT/SIGTERM (or :meth:`Scheduler.stop`) stop the loop after the
  current job; a second signal aborts the current job. The lock is released and the
  status file says ``stopped``.
* **Temporary folders.** ``mlflow run`` leaves an empty ``tempfile.mkdtemp()`` folder
  behind per run. Each job gets ``TMPDIR=<output>/.tmp/<job>-XXXX``, removed afterwards.

State for operators: ``<output>/scheduler_status.json`` (replaced atomically) and the
output of each job in ``<output>/scheduler_logs/`` (the newest :data:`LOG_KEEP` per job).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import schedule

from alertclf import __version__
from alertclf.errors import AlertclfError

if TYPE_CHECKING:
    from alertclf.settings import Settings

logger = logging.getLogger(__name__)

CLASSIFY = "classify"
RETRAIN = "retrain"
JOBS = (CLASSIFY, RETRAIN)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

LOCK_FILE = ".scheduler.lock"
STATUS_FILE = "scheduler_status.json"
TMP_DIR = ".tmp"  # per-job TMPDIRs; not ".tmp-*", which classify sweeps as its own
LOGS_DIR = "scheduler_logs"
SETTINGS_FILE = ".scheduler_settings.yaml"
LOG_KEEP = 50
# Where classify keeps its watermark (alertclf.io.state.STATE_DIR / STATE_FILE; importing
# that module would load the whole pipeline into a process that only waits for jobs).
STATE_PATH = (".state", "state.json")

SUCCESS, FAILED, TIMEOUT, INTERRUPTED = "success", "failed", "timeout", "interrupted"

_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")
_CLI_ERROR = re.compile(r"alertclf \w+: error: .*")


class SchedulerError(AlertclfError):
    """The scheduler cannot start or go on; the message says why and what to do."""


class SchedulerLockedError(SchedulerError):
    """Another live scheduler holds the output folder."""


# --- configuration ------------------------------------------------------------------------
@dataclass
class SchedulerConfig:
    """Everything one scheduler needs. Times are in minutes as on the command line, except
    the job timeout (seconds, so tests can use short ones) and the test hooks below."""

    alerts: str
    graph: str
    history: str | None = None  # None: the same location as ``alerts``
    output: str | Path = "results"
    models: str | Path = "data/models"
    interval_minutes: float = 15.0
    retrain_day: str = "monday"
    retrain_time: str = "07:00"  # local time of the scheduler host
    enable_retraining: bool = True
    in_process: bool = False
    job_timeout_seconds: float = 30 * 60.0
    project_dir: str | Path | None = None  # None: the MLproject this package came from
    settings: Settings | None = None  # None: the defaults
    # Called in the loop's thread after each job with its JobResult (to page someone, or
    # for tests to stop at a precise point); an exception in it is logged, never raised.
    on_job_end: Callable[[JobResult], None] | None = None
    # --- hooks for tests and emergencies -------------------------------------------------
    retrain_every_seconds: float | None = None  # replace the weekly slot by a short interval
    job_commands: Mapping[str, Sequence[str]] | None = None  # replace a job's command
    kill_grace_seconds: float = 10.0  # SIGINT -> this long -> SIGKILL, at a timeout
    poll_seconds: float | None = None  # loop granularity; None: from the interval

    def __post_init__(self) -> None:
        for name in ("alerts", "graph"):
            if not str(getattr(self, name) or "").strip():
                raise SchedulerError(f"the scheduler needs --{name}")
        if not self.interval_minutes > 0:
            raise SchedulerError(f"interval must be > 0 minutes, got {self.interval_minutes!r}")
        if not self.job_timeout_seconds > 0:
            raise SchedulerError(f"job timeout must be > 0, got {self.job_timeout_seconds!r}")
        day = str(self.retrain_day).strip().lower()
        if day not in WEEKDAYS:
            raise SchedulerError(
                f"retrain day {self.retrain_day!r} is not a weekday ({', '.join(WEEKDAYS)})"
            )
        self.retrain_day = day
        match = _HHMM.match(str(self.retrain_time).strip())
        if not match or int(match[1]) > 23 or int(match[2]) > 59:
            raise SchedulerError(
                f"retrain time {self.retrain_time!r}: expected HH:MM between 00:00 and 23:59"
            )
        self.retrain_time = f"{int(match[1]):02d}:{match[2]}"
        unknown = set(self.job_commands or {}) - set(JOBS)
        if unknown:
            raise SchedulerError(f"job_commands: unknown job(s) {sorted(unknown)}")
        for name in ("alerts", "graph", "history"):
            location = str(getattr(self, name) or "")
            if "?" in location and "sig=" in location.lower():
                # Jobs get locations as `mlflow run` parameters, which MLflow stores as
                # given: a SAS signature there would end up in the tracking store.
                raise SchedulerError(
                    f"--{name} carries a SAS token in its URL; put it in "
                    "AZURE_STORAGE_SAS_TOKEN (or AZURE_STORAGE_CONNECTION_STRING) instead"
                )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, alerts: str, graph: str, **options: Any
    ) -> SchedulerConfig:
        """The schedule from ``settings`` (``interval_minutes``, ``retrain_day``,
        ``retrain_time``, ``job_timeout_minutes``); paths and modes from ``options``."""
        return cls(
            alerts=alerts,
            graph=graph,
            interval_minutes=settings.interval_minutes,
            retrain_day=settings.retrain_day,
            retrain_time=settings.retrain_time,
            job_timeout_seconds=settings.job_timeout_minutes * 60,
            settings=settings,
            **options,
        )

    @property
    def interval_seconds(self) -> float:
        return self.interval_minutes * 60

    @property
    def history_location(self) -> str:
        return self.history or self.alerts

    def describe_retrain(self) -> str:
        if not self.enable_retraining:
            return "retraining disabled"
        if self.retrain_every_seconds:
            return f"retrain every {self.retrain_every_seconds:g} seconds (test schedule)"
        return (
            f"retrain weekly on {self.retrain_day.capitalize()} at {self.retrain_time} (local time)"
        )

    def describe_interval(self) -> str:
        minutes = self.interval_minutes
        if minutes < 1:
            return f"classify every {self.interval_seconds:g} seconds"
        return f"classify every {minutes:g} minute" + ("" if minutes == 1 else "s")


@dataclass
class JobResult:
    """One run of one job, as recorded in the status file."""

    job: str
    outcome: str  # success | failed | timeout | interrupted
    started_at: str
    ended_at: str
    duration_seconds: float
    exit_code: int | None = None
    error: str | None = None
    error_tail: str | None = None
    log: str | None = None
    results_dir: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    overran_timeout: bool = False  # in-process only: finished, but after its timeout

    @property
    def ok(self) -> bool:
        return self.outcome == SUCCESS

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the lock -----------------------------------------------------------------------------
class SchedulerLock:
    """``<output>/.scheduler.lock``: one scheduler per output folder, crash-safe.

    The file appears complete and locked in one step (written under a private name that
    was created with ``O_CREAT|O_EXCL``, ``flock``-ed, then hard-linked into place, which
    fails if a lock exists). Its holder keeps the ``flock`` for its lifetime. A lock that
    nobody holds is stale when its pid is not alive on this host (or is another process
    that reuses the pid); it is removed while holding its ``flock``, so two schedulers
    that find the same stale lock cannot both take it over.
    """

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = output / LOCK_FILE
        self._fd: int | None = None
        self.taken_over: dict[str, Any] | None = None  # the stale lock we replaced

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        import fcntl  # POSIX only; imported here so that importing the module stays portable

        if self._fd is not None:
            return
        self.output.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            fd = self._publish(fcntl)
            if fd is not None:
                self._fd = fd
                return
            verdict, info = self._inspect(fcntl)
            if verdict == "live":
                raise SchedulerLockedError(self._refusal(info))
            if verdict == "stale":
                self.taken_over = info
                logger.warning(
                    "took over the stale lock %s of a scheduler that is gone (pid %s on %s, "
                    "started %s)",
                    self.path,
                    info.get("pid", "?"),
                    info.get("hostname", "?"),
                    info.get("started_at", "?"),
                )
            elif verdict == "young":
                time.sleep(0.1)  # another scheduler is writing its lock this instant
        raise SchedulerError(f"{self.path}: could not take the lock (it keeps changing)")

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            # Remove the name only if it is still ours (never another scheduler's lock).
            if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)

    # --- internals ------------------------------------------------------------------------
    def _publish(self, fcntl: Any) -> int | None:
        info = {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "started_at": _now_iso(),
            "process_created": _process_created(os.getpid()),
            "version": __version__,
        }
        private = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}.{threading.get_ident()}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(private)  # left by a dead process that had our pid: the name is ours
        fd = os.open(private, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh inode: never contended
            os.write(fd, (json.dumps(info) + "\n").encode())
            os.fsync(fd)
            try:
                os.link(private, self.path)
            except FileExistsError:
                os.close(fd)
                return None
            except OSError:
                # No hard links on this file system: create the name directly. Another
                # scheduler may see it empty for an instant; _inspect waits for that.
                os.close(fd)
                return self._publish_without_link(fcntl, info)
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        finally:
            with contextlib.suppress(OSError):
                os.unlink(private)

    def _publish_without_link(self, fcntl: Any, info: dict[str, Any]) -> int | None:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            return None
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, (json.dumps(info) + "\n").encode())
        os.fsync(fd)
        return fd

    def _inspect(self, fcntl: Any) -> tuple[str, dict[str, Any]]:
        """``live``, ``stale`` (and removed), ``young`` (being written) or ``gone``."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return "gone", {}
        try:
            info = _parse_lock(os.read(fd, 64 * 1024))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return "live", info
            try:
                if os.stat(self.path).st_ino != os.fstat(fd).st_ino:
                    return "gone", {}  # replaced meanwhile: look again
            except FileNotFoundError:
                return "gone", {}
            if not info:
                age = time.time() - os.fstat(fd).st_mtime
                if age < 5:
                    return "young", {}
            elif not self._holder_is_dead(info):
                # Nobody holds the flock, yet its process lives (a file system without
                # working flock, or another host): refuse rather than risk two schedulers.
                return "live", info
            os.unlink(self.path)  # still holding its flock: nobody else can race us here
            return "stale", info
        finally:
            os.close(fd)

    @staticmethod
    def _holder_is_dead(info: dict[str, Any]) -> bool:
        if info.get("hostname") != socket.gethostname():
            return False  # its pid means nothing here
        pid = info.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return True
        created = _process_created(pid)
        if created is None:
            return True
        if created < 0:
            return False  # alive, but we may not look at it
        recorded = info.get("process_created")
        # The pid is alive; it is the same process only if it was created when recorded.
        return isinstance(recorded, (int, float)) and abs(created - recorded) > 1.0

    def _refusal(self, info: dict[str, Any]) -> str:
        host = info.get("hostname")
        where = "" if not host or host == socket.gethostname() else f" on host {host}"
        return (
            f"another scheduler (pid {info.get('pid', '?')}{where}, started "
            f"{info.get('started_at', '?')}) is using {self.output}; stop it or use another "
            f"--output (if it is gone for good, delete {self.path})"
        )


def _parse_lock(data: bytes) -> dict[str, Any]:
    try:
        info = json.loads(data.decode("utf-8", "replace") or "{}")
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _process_created(pid: int) -> float | None:
    """When ``pid`` was created; None when no such process exists, -1 when it exists but
    may not be inspected."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.Error:
        return -1.0


# --- the scheduler ------------------------------------------------------------------------
class Scheduler:
    """Runs classify every ``interval_minutes`` and retrain weekly; see the module docstring.

    ``start()`` takes the lock and sets up the schedule; ``run()`` loops until stopped and
    cleans up. The command line runs both in its main thread (with signal handlers); the
    Python API runs ``start()`` in the caller and ``run()`` in a background thread.
    """

    def __init__(self, config: SchedulerConfig) -> None:
        from alertclf.settings import Settings

        self.config = config
        self.settings: Settings = config.settings or Settings()
        self.output = Path(config.output).expanduser().resolve()
        self.models = Path(config.models).expanduser().resolve()
        self.alerts = _absolute(config.alerts)
        self.graph = _absolute(config.graph)
        self.history = _absolute(config.history_location)
        self.status_path = self.output / STATUS_FILE
        self.tmp_root = self.output / TMP_DIR
        self.logs_dir = self.output / LOGS_DIR
        self.tracking_uri: str | None = None
        self.project_dir: Path | None = None
        self._mlflow = "mlflow"
        self._lock = SchedulerLock(self.output)
        self._settings_file: Path | None = None
        self._sched = schedule.Scheduler()
        self._jobs: dict[str, schedule.Job] = {}
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._state_lock = threading.RLock()
        self._status: dict[str, Any] = {}
        self._prepared = False
        self._closed = False

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Take the lock, check the project and the MLflow store, set up the schedule and
        write the first status. Raises :class:`SchedulerLockedError` if another scheduler
        uses the output folder."""
        self._prepare()
        if self._jobs:
            return
        interval = self.config.interval_seconds
        self._jobs[CLASSIFY] = self._sched.every(interval).seconds.do(self._job, CLASSIFY)
        # The first classify runs at once, as the seed did, not one interval later.
        self._jobs[CLASSIFY].next_run = datetime.now()
        if self.config.enable_retraining:
            if self.config.retrain_every_seconds:
                every = self._sched.every(self.config.retrain_every_seconds).seconds
            else:
                weekday = getattr(self._sched.every(), self.config.retrain_day)
                every = weekday.at(self.config.retrain_time)
            self._jobs[RETRAIN] = every.do(self._job, RETRAIN)
        self._set_scheduler(state="running")
        self._refresh_next_runs(force=True)

    def run(self, install_signal_handlers: bool = False) -> None:
        """Loop until :meth:`stop` (or SIGINT/SIGTERM with ``install_signal_handlers``),
        then release the lock and record ``stopped``."""
        if not self._jobs:
            self.start()
        previous = self._install_signal_handlers() if install_signal_handlers else {}
        try:
            while not self._stop.is_set():
                self.tick()
                if self._stop.is_set():
                    break
                self._stop.wait(self._sleep_seconds())
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.close()

    def run_once(self, job: str = CLASSIFY) -> JobResult:
        """One job now (classify bootstraps a first model when the registry has none),
        under the same lock and status file as the loop; then release the lock."""
        if job not in JOBS:
            raise SchedulerError(f"unknown job {job!r} (choose from {', '.join(JOBS)})")
        self._prepare()
        self._set_scheduler(state="running once")
        try:
            return self._execute(job)
        finally:
            self.close()

    def stop(self, abort: bool = False) -> None:
        """Stop after the current job; ``abort`` also terminates a running subprocess job."""
        self._stop.set()
        if abort:
            self._abort.set()

    def close(self) -> None:
        """Record ``stopped``, release the lock, remove the per-job temporary root."""
        if self._closed or not self._prepared:
            return
        self._closed = True
        with self._state_lock:
            for record in self._status.get("jobs", {}).values():
                record["running"] = False
                record["next_run"] = None
            self._set_scheduler(state="stopped", stopped_at=_now_iso())
        _remove_tree(self.tmp_root)
        self._lock.release()
        logger.info("scheduler stopped; lock %s released", self._lock.path)

    @property
    def jobs(self) -> dict[str, schedule.Job]:
        """The ``schedule`` jobs by name (tests move ``next_run`` to simulate missed slots)."""
        return dict(self._jobs)

    def tick(self) -> None:
        """One pass of the loop: run what is due (each job at most once), refresh status."""
        self._sched.run_pending()
        self._refresh_next_runs()

    # --- status and banner ------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """A copy of what the status file holds."""
        with self._state_lock:
            return json.loads(json.dumps(self._status, default=str))

    def banner(self) -> list[str]:
        """The start-up banner: what runs when, on what, and how to stop it."""
        cfg = self.config
        mode = (
            "in-process (no hard timeout: a hung job blocks the loop)"
            if cfg.in_process
            else f"mlflow run {self.project_dir} --env-manager local"
        )
        retrain = cfg.describe_retrain()
        next_retrain = self._jobs.get(RETRAIN)
        if next_retrain is not None and next_retrain.next_run is not None:
            retrain += f", next {_iso(next_retrain.next_run)}"
        history = _safe(self.history) + (" (same as alerts)" if not cfg.history else "")
        return [
            f"alertclf {__version__} scheduler (pid {os.getpid()})",
            f"  alerts:   {_safe(self.alerts)}",
            f"  graph:    {_safe(self.graph)}",
            f"  history:  {history}",
            f"  output:   {self.output}",
            f"  models:   {self.models}",
            f"  tracking: {_describe_uri(self.tracking_uri or '')}",
            f"  jobs:     {mode}; timeout {cfg.job_timeout_seconds / 60:g} min per job",
            f"  schedule: {cfg.describe_interval()} (first run now)",
            f"            {retrain}",
            f"  status:   {self.status_path}",
            f"  logs:     {self.logs_dir}/",
            "  stop:     Ctrl-C or `kill -TERM "
            f"{os.getpid()}` (stops after the current job; a second signal aborts it)",
        ]

    # --- preparation ------------------------------------------------------------------------
    def _prepare(self) -> None:
        if self._prepared:
            return
        if self._closed:
            raise SchedulerError("this scheduler was stopped; create a new one")
        self._lock.acquire()
        try:
            if not self.config.in_process:
                self.project_dir = self._find_project()
                self._mlflow = self._find_mlflow()
            self.tracking_uri = self._open_store()
            self._settings_file = self._write_settings_file()
            # Leftovers of a scheduler that died mid-job (we hold the lock: nobody uses them).
            _remove_tree(self.tmp_root)
            self._status = self._initial_status()
            self._prepared = True
            self._write_status()
        except BaseException:
            self._lock.release()
            raise

    def _find_project(self) -> Path:
        if self.config.project_dir is not None:
            project = Path(self.config.project_dir).expanduser().resolve()
            if not (project / "MLproject").is_file():
                raise SchedulerError(f"{project}: no MLproject file (--project)")
            return project
        here = Path(__file__).resolve()
        for folder in [*here.parents, Path.cwd().resolve(), *Path.cwd().resolve().parents]:
            if (folder / "MLproject").is_file() and (folder / "entrypoints").is_dir():
                return folder
        raise SchedulerError(
            "no MLproject found beside the alertclf package or the current folder; pass "
            "--project DIR (the alertclf checkout) or use --in-process"
        )

    @staticmethod
    def _find_mlflow() -> str:
        # The venv's own mlflow first: the jobs must run with this package's environment.
        beside = Path(sys.executable).parent / "mlflow"
        if beside.exists():
            return str(beside)
        found = shutil.which("mlflow")
        if found:
            return found
        raise SchedulerError("the `mlflow` command is not installed; use --in-process")

    def _open_store(self) -> str:
        """Create the store and both experiments now, so that the runs ``mlflow run``
        creates put their artifacts under the models folder (as ``alertclf store`` does)."""
        from alertclf import tracking

        try:
            config = tracking.configure_tracking(self.models)
            for name in (self.settings.classify_experiment, self.settings.retrain_experiment):
                tracking.ensure_experiment(name, config)
        except Exception as err:  # MLflow raises many types; all mean "store unusable"
            uri = os.environ.get("MLFLOW_TRACKING_URI", str(self.models))
            raise SchedulerError(
                f"cannot open the MLflow store {_describe_uri(uri)}: {err}"
            ) from None
        return config.tracking_uri

    def _write_settings_file(self) -> Path | None:
        """The settings given on the command line (``--config``/``--set``), as one YAML
        file for the jobs: the MLproject entry points take ``config`` but no ``--set``."""
        import yaml

        given = self.settings.model_dump(mode="json", exclude_unset=True)
        path = self.output / SETTINGS_FILE
        if not given:
            path.unlink(missing_ok=True)
            return None
        _atomic_write(path, yaml.safe_dump(given, sort_keys=True))
        return path

    def _initial_status(self) -> dict[str, Any]:
        previous = _read_json(self.status_path).get("jobs", {})
        jobs: dict[str, dict[str, Any]] = {}
        for name in JOBS:
            record = _empty_job_record()
            old = previous.get(name) if isinstance(previous, dict) else None
            if isinstance(old, dict):
                # The last run survives a restart; the counters start again with us.
                for key in _LAST_RUN_KEYS:
                    if key in old:
                        record[key] = old[key]
                if old.get("running"):
                    record["outcome"] = INTERRUPTED
                    record["error"] = "the scheduler stopped or died while this job ran"
            jobs[name] = record
        if not self.config.enable_retraining:
            jobs[RETRAIN]["enabled"] = False
        cfg = self.config
        return {
            "scheduler": {
                "state": "starting",
                "pid": os.getpid(),
                "hostname": socket.gethostname(),
                "version": __version__,
                "started_at": _now_iso(),
                "stopped_at": None,
                "updated_at": _now_iso(),
                "mode": "in-process" if cfg.in_process else "mlflow run",
                "project_dir": str(self.project_dir) if self.project_dir else None,
                "interval_minutes": cfg.interval_minutes,
                "retrain": cfg.describe_retrain(),
                "retraining_enabled": cfg.enable_retraining,
                "retrain_day": cfg.retrain_day,
                "retrain_time": cfg.retrain_time,
                "job_timeout_seconds": cfg.job_timeout_seconds,
                "alerts": _safe(self.alerts),
                "graph": _safe(self.graph),
                "history": _safe(self.history),
                "output": str(self.output),
                "models": str(self.models),
                "tracking_uri": _describe_uri(self.tracking_uri or ""),
                "lock": str(self._lock.path),
                "took_over_stale_lock": self._lock.taken_over,
            },
            "jobs": jobs,
        }

    # --- jobs -------------------------------------------------------------------------------
    def _job(self, name: str) -> None:
        """What ``schedule`` calls. Never raises: an exception here would end the loop."""
        if self._stop.is_set():
            return  # stopping: start nothing new
        try:
            self._execute(name)
        except Exception:
            logger.exception("scheduler: unexpected error around the %s job; carrying on", name)

    def _execute(self, name: str) -> JobResult:
        started_iso, started = _now_iso(), time.monotonic()
        with self._state_lock:
            record = self._status["jobs"][name]
            # outcome, duration and last_end stay those of the last finished run until
            # this one ends; running + last_start say that a run is under way.
            record.update(running=True, overdue=False, last_start=started_iso)
            self._write_status()
        logger.info("%s: started", name)

        def broken(outcome: str, error: str) -> JobResult:
            duration = round(time.monotonic() - started, 3)
            return JobResult(name, outcome, started_iso, _now_iso(), duration, error=error)

        try:
            if self.config.in_process and name not in (self.config.job_commands or {}):
                result = self._run_in_process(name)
            else:
                result = self._run_subprocess(name)
        except Exception as err:  # our own bug or the OS (fork failed, disk full)
            logger.exception("%s: could not be run", name)
            result = broken(FAILED, f"{type(err).__name__}: {err}")
        except BaseException as err:  # Ctrl-C in run_once: record it, then let it end us
            self._record(broken(INTERRUPTED, f"interrupted ({type(err).__name__})"))
            raise
        self._record(result)
        if self.config.on_job_end is not None:
            try:
                self.config.on_job_end(result)
            except Exception:
                logger.exception("%s: the on_job_end callback failed", name)
        return result

    def _record(self, result: JobResult) -> None:
        with self._state_lock:
            record = self._status["jobs"][result.job]
            record.update(
                running=False,
                overdue=False,
                last_start=result.started_at,
                last_end=result.ended_at,
                outcome=result.outcome,
                duration_seconds=result.duration_seconds,
                exit_code=result.exit_code,
                error=result.error,
                error_tail=result.error_tail,
                log=result.log,
                summary=result.summary,
                overran_timeout=result.overran_timeout,
            )
            if result.results_dir:
                record["results_dir"] = result.results_dir
            record["runs"] += 1
            if result.ok:
                record["successes"] += 1
                record["consecutive_failures"] = 0
                record["last_success"] = result.ended_at
            else:
                record["failures"] += 1
                record["consecutive_failures"] += 1
                if result.outcome == TIMEOUT:
                    record["timeouts"] += 1
            self._write_status()
        where = f" ({result.results_dir})" if result.results_dir else ""
        if result.ok:
            logger.info("%s: success in %.1f s%s", result.job, result.duration_seconds, where)
        else:
            logger.log(
                logging.ERROR if result.outcome == TIMEOUT else logging.WARNING,
                "%s: %s after %.1f s (exit code %s): %s%s; the loop carries on",
                result.job,
                result.outcome,
                result.duration_seconds,
                result.exit_code,
                result.error,
                f"; log {result.log}" if result.log else "",
            )

    def job_command(self, name: str) -> list[str]:
        """The command a job runs: ``mlflow run`` of the project's entry point."""
        hooks = self.config.job_commands or {}
        if name in hooks:
            return [str(part) for part in hooks[name]]
        if name == CLASSIFY:
            experiment = self.settings.classify_experiment
            params = {
                "alerts": self.alerts,
                "graph": self.graph,
                "output": str(self.output),
                "models": str(self.models),
            }
        else:
            experiment = self.settings.retrain_experiment
            params = {"history": self.history, "graph": self.graph, "models": str(self.models)}
        if self._settings_file is not None:
            params["config"] = str(self._settings_file)
        command = [
            self._mlflow,
            "run",
            str(self.project_dir),
            "-e",
            name,
            "--env-manager",
            "local",
            "--experiment-name",
            experiment,
        ]
        for key, value in params.items():
            command += ["-P", f"{key}={value}"]
        return command

    def job_environment(self, tmpdir: Path) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            # A scheduler started inside an MLflow run must not make its jobs join that run.
            if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
        }
        # `mlflow run` calls a bare `python`: it must be this environment's.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        if self.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        env["PYTHONUNBUFFERED"] = "1"
        # `mlflow run` leaves one tempfile.mkdtemp() folder per run behind; this catches it.
        env["TMPDIR"] = str(tmpdir)
        return env

    def _run_subprocess(self, name: str) -> JobResult:
        command = self.job_command(name)
        timeout = self.config.job_timeout_seconds
        self.tmp_root.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        tmpdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.tmp_root))
        started_iso, started = _now_iso(), time.monotonic()
        log_path = self.logs_dir / f"{name}-{datetime.now():%Y%m%d_%H%M%S}-{os.getpid()}.log"
        state_before = self._last_results_run() if name == CLASSIFY else None
        timed_out = aborted = False
        try:
            with open(log_path, "ab") as log:
                header = f"# {started_iso} {_redact(' '.join(command))} (timeout {timeout:g} s)\n"
                log.write(header.encode())
                log.flush()
                process = subprocess.Popen(
                    command,
                    cwd=str(self.project_dir) if self.project_dir else None,
                    env=self.job_environment(tmpdir),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Its own process group: terminal signals do not reach it (the job ends
                    # normally when we are told to stop), and a timeout kills all of it.
                    start_new_session=True,
                )
                deadline = started + timeout
                try:
                    while True:
                        try:
                            process.wait(timeout=min(0.25, max(0.01, deadline - time.monotonic())))
                            break
                        except subprocess.TimeoutExpired:
                            if self._abort.is_set():
                                aborted = True
                            elif time.monotonic() >= deadline:
                                timed_out = True
                            else:
                                continue
                            self._kill_group(process, name)
                            break
                except BaseException:
                    # Ctrl-C without our signal handlers (``run_once``): the job is in its
                    # own session and would not hear it; it must not outlive us.
                    self._kill_group(process, name)
                    raise
                finally:
                    self._reap_group(process, name)
        finally:
            _remove_tree(tmpdir)
            self._prune_logs(name)
        ended_iso, duration = _now_iso(), round(time.monotonic() - started, 3)
        code = process.returncode
        tail = _redact(_tail(log_path))
        if timed_out:
            outcome, error = TIMEOUT, f"killed after the {timeout:g} s timeout"
        elif aborted:
            outcome, error = INTERRUPTED, "aborted: the scheduler was told to stop twice"
        elif code == 0:
            outcome, error, tail = SUCCESS, None, None
        else:
            outcome, error = FAILED, _error_line(tail) or f"exit code {code}"
        result = JobResult(
            name,
            outcome,
            started_iso,
            ended_iso,
            duration,
            exit_code=code,
            error=error,
            error_tail=tail,
            log=str(log_path),
        )
        if outcome == SUCCESS:
            result.summary = _summary_lines(log_path)
            after = self._last_results_run() if name == CLASSIFY else None
            if after and after != state_before:
                result.results_dir = str(self.output / after)
        return result

    def _kill_group(self, process: subprocess.Popen[bytes], name: str) -> None:
        """SIGINT first: ``mlflow run`` then marks its run FAILED and the entry point ends
        its MLflow run; whatever is left after the grace period gets SIGKILL."""
        logger.warning("%s: terminating process group %d", name, process.pid)
        _signal_group(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=self.config.kill_grace_seconds)
        except subprocess.TimeoutExpired:
            logger.warning("%s: still running after SIGINT; SIGKILL", name)
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()

    @staticmethod
    def _reap_group(process: subprocess.Popen[bytes], name: str) -> None:
        # Anything the job left running in its group (it has ended) would pile up in a
        # scheduler that runs for months.
        if _signal_group(process.pid, signal.SIGKILL):
            logger.warning("%s: killed processes the job left behind", name)

    def _run_in_process(self, name: str) -> JobResult:
        """The flow in this thread. Python cannot kill a thread, so the timeout is only a
        watchdog: at the deadline it logs an error and marks the job ``overdue`` in the
        status file; the result says ``overran_timeout``. Use the default ``mlflow run``
        mode where a hard timeout matters."""
        from alertclf import flows

        timeout = self.config.job_timeout_seconds
        watchdog = threading.Timer(timeout, self._overdue, args=(name, timeout))
        watchdog.daemon = True
        started_iso, started = _now_iso(), time.monotonic()
        watchdog.start()
        summary: dict[str, Any] = {}
        results_dir = error = tail = None
        try:
            if name == CLASSIFY:
                outcome = flows.classify(
                    self.settings, self.alerts, self.graph, self.output, self.models
                )
                summary = _classify_summary(outcome)
                results_dir = str(outcome.results_dir)
            else:
                trained = flows.retrain(self.settings, self.history, self.graph, self.models)
                summary = _retrain_summary(trained)
            verdict = SUCCESS
        except AlertclfError as err:
            verdict, error = FAILED, str(err)
            logger.debug("%s failed", name, exc_info=True)
        except Exception as err:
            verdict, error = FAILED, f"{type(err).__name__}: {err}"
            tail = "".join(traceback.format_exc().splitlines(keepends=True)[-15:])
            logger.exception("%s: unexpected error", name)
        finally:
            watchdog.cancel()
        duration = round(time.monotonic() - started, 3)
        return JobResult(
            name,
            verdict,
            started_iso,
            _now_iso(),
            duration,
            exit_code=0 if verdict == SUCCESS else 1,
            error=_redact(error) if error else None,
            error_tail=_redact(tail) if tail else None,
            results_dir=results_dir,
            summary=summary,
            overran_timeout=duration > timeout,
        )

    def _overdue(self, name: str, timeout: float) -> None:
        logger.error(
            "%s: still running after its %g s timeout; an in-process job cannot be killed, "
            "so the loop waits for it",
            name,
            timeout,
        )
        with self._state_lock:
            self._status["jobs"][name]["overdue"] = True
            self._write_status()

    def _last_results_run(self) -> str | None:
        state = _read_json(self.output.joinpath(*STATE_PATH))
        value = state.get("last_run_id")
        return str(value) if value else None

    def _prune_logs(self, name: str) -> None:
        logs = sorted(self.logs_dir.glob(f"{name}-*.log"))
        for old in logs[:-LOG_KEEP]:
            old.unlink(missing_ok=True)

    # --- loop internals ---------------------------------------------------------------------
    def _sleep_seconds(self) -> float:
        poll = self.config.poll_seconds
        if poll is None:
            shortest = min(
                [self.config.interval_seconds, self.config.retrain_every_seconds or 3600.0]
            )
            poll = min(1.0, max(0.05, shortest / 20))
        idle = self._sched.idle_seconds
        return poll if idle is None else max(0.0, min(poll, idle))

    def _refresh_next_runs(self, force: bool = False) -> None:
        with self._state_lock:
            changed = force
            for name, job in self._jobs.items():
                value = _iso(job.next_run) if job.next_run else None
                record = self._status["jobs"][name]
                if record.get("next_run") != value:
                    record["next_run"] = value
                    changed = True
            if changed:
                self._write_status()

    def _set_scheduler(self, **values: Any) -> None:
        with self._state_lock:
            self._status["scheduler"].update(values)
            self._write_status()

    def _write_status(self) -> None:
        with self._state_lock:
            if not self._status:
                return
            self._status["scheduler"]["updated_at"] = _now_iso()
            try:
                _atomic_write(
                    self.status_path, json.dumps(self._status, indent=2, default=str) + "\n"
                )
            except OSError as err:  # a full disk must not stop the jobs
                logger.error("cannot write %s: %s", self.status_path, err)

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum: int, _frame: Any) -> None:
            name = signal.Signals(signum).name
            if self._stop.is_set():
                logger.warning("%s again: aborting the current job", name)
                self._abort.set()
            else:
                logger.warning(
                    "%s: stopping after the current job (send it again to abort the job)", name
                )
                self._stop.set()

        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, on_signal)
        return previous


# --- helpers ------------------------------------------------------------------------------
_LAST_RUN_KEYS = (
    "last_start",
    "last_end",
    "outcome",
    "duration_seconds",
    "exit_code",
    "error",
    "error_tail",
    "log",
    "results_dir",
    "summary",
    "last_success",
)


def _empty_job_record() -> dict[str, Any]:
    return {
        "enabled": True,
        "running": False,
        "overdue": False,
        "last_start": None,
        "last_end": None,
        "outcome": None,
        "duration_seconds": None,
        "exit_code": None,
        "error": None,
        "error_tail": None,
        "log": None,
        "results_dir": None,
        "summary": {},
        "overran_timeout": False,
        "last_success": None,
        "runs": 0,
        "successes": 0,
        "failures": 0,  # failed + timeout + interrupted
        "timeouts": 0,
        "consecutive_failures": 0,
        "next_run": None,
    }


def _now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _iso(moment: datetime) -> str:
    # schedule keeps naive local times.
    return moment.astimezone().isoformat(timespec="seconds")


def _absolute(location: str) -> str:
    """Local paths made absolute (``mlflow run`` runs in the project folder); URLs as given."""
    text = str(location).strip()
    if "://" in text:
        return text
    return os.path.abspath(os.path.expanduser(text))


def _safe(location: str) -> str:
    """A location as it may be shown: blob URLs without SAS tokens or keys."""
    if "://" not in location:
        return location
    from alertclf.io.azure import describe_location, is_azure_url

    return describe_location(location) if is_azure_url(location) else _redact(location)


def _redact(text: str) -> str:
    if "://" not in text and "AccountKey" not in text and "sig=" not in text:
        return text
    from alertclf.io.azure import redact

    return redact(text)


def _describe_uri(uri: str) -> str:
    from alertclf.tracking import describe_uri

    return describe_uri(uri)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_status(output: str | Path) -> dict[str, Any]:
    """The status file of an output folder (empty when there is none)."""
    return _read_json(Path(output) / STATUS_FILE)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to a process group; False when the group has no process left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        logger.warning("not allowed to signal process group %d", pgid)
        return False
    return True


def _tail(path: Path, lines: int = 20, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(kept)[-limit:]


def _error_line(tail: str) -> str | None:
    """The line that says what went wrong: our CLI's one-line error if there is one."""
    lines = tail.splitlines()
    for line in reversed(lines):
        found = _CLI_ERROR.search(line)
        if found:
            return found.group(0)
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line.strip()[-500:]
    return lines[-1].strip()[-500:] if lines else None


def _summary_lines(path: Path) -> dict[str, Any]:
    """The result lines the ``alertclf`` commands print (``Classified ...``, ``PROMOTED``...)."""
    found: dict[str, Any] = {}
    prefixes = {
        "Classified ": "classified",
        "Results: ": "results",
        "Trained ": "trained",
        "PROMOTED": "decision",
        "Left at staging": "decision",
        "MLflow run: ": "mlflow_run",
    }
    for line in _tail(path, lines=400, limit=100_000).splitlines():
        for prefix, key in prefixes.items():
            if line.startswith(prefix):
                found[key] = line.strip()
    return found


def _classify_summary(outcome: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "run_id": outcome.run_id,
        "results_dir": str(outcome.results_dir),
        "rows_read": int(outcome.rows_read),
        "rows_accepted": int(outcome.rows_accepted),
        "rows_rejected": int(outcome.rows_rejected),
        "rows_new": int(outcome.rows_new),
        "model_version": outcome.model_version,
        "bootstrapped": bool(outcome.bootstrapped),
        "mlflow_run_id": outcome.mlflow_run_id,
        "incidents": len(outcome.incidents),
    }
    with contextlib.suppress(Exception):  # a summary must never fail the job
        top = outcome.incidents.head(5)
        summary["top_incidents"] = [
            {
                "rank": int(row["rank"]),
                "name": str(row.get("name", "")),
                "root_cause_service": str(row["root_cause_service"]),
                "importance_score": float(row["importance_score"]),
                "n_alerts": int(row["n_alerts"]),
            }
            for _, row in top.iterrows()
        ]
    return summary


def _retrain_summary(outcome: Any) -> dict[str, Any]:
    return {
        "version": outcome.version,
        "promoted": bool(outcome.promoted),
        "reason": outcome.reason,
        "candidate_score": _number(outcome.candidate_score),
        "production_score": _number(outcome.production_score),
        "production_version": outcome.production_version,
        "mlflow_run_id": outcome.mlflow_run_id,
    }


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None


__all__ = [
    "CLASSIFY",
    "FAILED",
    "INTERRUPTED",
    "JOBS",
    "LOCK_FILE",
    "RETRAIN",
    "STATUS_FILE",
    "SUCCESS",
    "TIMEOUT",
    "JobResult",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerError",
    "SchedulerLock",
    "SchedulerLockedError",
    "read_status",
]
