"""The scheduler with real parts: real ``mlflow run`` jobs on a fast clock (seconds, not
minutes), a real SQLite MLflow store, real processes to kill and real signals.

Only two things are injected: a short ``interval_minutes`` / ``retrain_every_seconds``
(the clock) and, for the tests about timing and process groups, a job command that
sleeps instead of ``mlflow run`` (``SchedulerConfig.job_commands``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import psutil
import pytest

from alertclf import tracking
from alertclf.cli import main
from alertclf.scheduler import (
    CLASSIFY,
    LOCK_FILE,
    RETRAIN,
    STATE_PATH,
    STATUS_FILE,
    TMP_DIR,
    Scheduler,
    SchedulerConfig,
    SchedulerLock,
    SchedulerLockedError,
    read_status,
)
from alertclf.settings import Settings
from alertclf.simulate import SimulationConfig, simulate, write_simulation

ROOT = Path(__file__).resolve().parents[1]
FAST = {"algorithm": "kmeans", "kmeans_k_min": 4, "kmeans_k_max": 9}
SECOND = 1 / 60  # one second, in the scheduler's minutes

pytestmark = pytest.mark.usefixtures("isolated_tracking")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("scenario")
    return write_simulation(simulate(SimulationConfig(seed=5, days=0.5)), out)


def config(tmp_path: Path, scenario: dict[str, Path], **options) -> SchedulerConfig:
    values = {
        "alerts": str(scenario["alerts"]),
        "graph": str(scenario["graph"]),
        "output": tmp_path / "results",
        "models": tmp_path / "models",
        "interval_minutes": SECOND,
        "enable_retraining": False,
        "settings": Settings(**FAST),
        "poll_seconds": 0.05,
        **options,
    }
    return SchedulerConfig(**values)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Background:
    """The scheduler loop in a thread, as the Python API runs it."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        scheduler.start()
        self.thread = threading.Thread(target=scheduler.run, daemon=True)
        self.thread.start()

    def job(self, name: str = CLASSIFY) -> dict:
        return self.scheduler.status()["jobs"][name]

    def runs(self, name: str = CLASSIFY) -> int:
        return self.job(name)["runs"]

    def stop(self, timeout: float = 120) -> None:
        self.scheduler.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the loop did not stop"


def result_folders(output: Path) -> list[Path]:
    return sorted(p for p in output.iterdir() if p.is_dir() and p.name[:1].isdigit())


def leftover_temp_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("tmp"))


# --- the lock -----------------------------------------------------------------------------
def test_a_second_scheduler_on_the_same_output_is_refused_with_a_clear_message(tmp_path):
    out = tmp_path / "results"
    first = SchedulerLock(out)
    first.acquire()
    holder = json.loads((out / LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["hostname"] and holder["started_at"]
    with pytest.raises(SchedulerLockedError) as refused:
        SchedulerLock(out).acquire()
    message = str(refused.value)
    assert f"another scheduler (pid {os.getpid()}, started {holder['started_at']})" in message
    assert f"is using {out}; stop it or use another --output" in message
    first.release()
    assert not (out / LOCK_FILE).exists()
    second = SchedulerLock(out)
    second.acquire()  # free again
    second.release()


def test_the_lock_of_a_killed_scheduler_is_stale_and_taken_over(tmp_path, caplog):
    out = tmp_path / "results"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from alertclf.scheduler import SchedulerLock; "
            "SchedulerLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); "
            "time.sleep(120)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SchedulerLockedError, match=f"pid {holder.pid}"):
            SchedulerLock(out).acquire()
        holder.kill()  # kill -9: no chance to clean up
        holder.wait()
    finally:
        holder.kill()
    assert (out / LOCK_FILE).exists(), "a crash leaves the lock file behind"
    lock = SchedulerLock(out)
    with caplog.at_level("WARNING", logger="alertclf.scheduler"):
        lock.acquire()
    assert lock.taken_over["pid"] == holder.pid
    assert "took over the stale lock" in caplog.text and str(holder.pid) in caplog.text
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def _write_lock(out: Path, **info) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK_FILE).write_text(json.dumps(info))


def test_a_lock_naming_a_pid_that_does_not_exist_is_taken_over(tmp_path):
    out = tmp_path / "results"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _write_lock(out, pid=gone.pid, hostname=socket.gethostname(), started_at="yesterday")
    lock = SchedulerLock(out)
    lock.acquire()
    assert lock.taken_over["started_at"] == "yesterday"
    lock.release()


def test_a_lock_whose_process_lives_is_refused_even_without_flock(tmp_path):
    # A file system whose flock does not work must not let two schedulers in: the pid
    # (same host, same process start time) decides then.
    out = tmp_path / "results"
    me = psutil.Process()
    _write_lock(
        out,
        pid=me.pid,
        hostname=socket.gethostname(),
        started_at="now",
        process_created=me.create_time(),
    )
    with pytest.raises(SchedulerLockedError, match=f"pid {me.pid}, started now"):
        SchedulerLock(out).acquire()
    # The same pid, reused by another process (another start time): stale.
    _write_lock(
        out,
        pid=me.pid,
        hostname=socket.gethostname(),
        started_at="long ago",
        process_created=me.create_time() - 3600,
    )
    lock = SchedulerLock(out)
    lock.acquire()
    lock.release()
    # Another host's pid means nothing here: refused, with the host and a way out.
    _write_lock(out, pid=1, hostname="elsewhere", started_at="then")
    with pytest.raises(SchedulerLockedError) as refused:
        SchedulerLock(out).acquire()
    assert "on host elsewhere" in str(refused.value)
    assert f"delete {out / LOCK_FILE}" in str(refused.value)


# --- the schedule: missed slots and long jobs ----------------------------------------------
RECORD = (
    "import sys, time; start = time.time(); time.sleep(float(sys.argv[2])); "
    "open(sys.argv[1], 'a').write(f'{start} {time.time()}\\n')"
)


def recorder(path: Path, seconds: float = 0.0) -> list[str]:
    return [sys.executable, "-c", RECORD, str(path), str(seconds)]


def recorded(path: Path) -> list[tuple[float, float]]:
    if not path.exists():
        return []
    return [tuple(map(float, line.split())) for line in path.read_text().splitlines()]


def test_missed_slots_run_each_job_once_not_a_burst_of_catch_up_runs(tmp_path, scenario):
    classify_log, retrain_log = tmp_path / "classify.txt", tmp_path / "retrain.txt"
    scheduler = Scheduler(
        config(
            tmp_path,
            scenario,
            interval_minutes=15,
            enable_retraining=True,
            job_commands={CLASSIFY: recorder(classify_log), RETRAIN: recorder(retrain_log)},
        )
    )
    scheduler.start()
    try:
        scheduler.tick()  # the first classify runs at once
        assert len(recorded(classify_log)) == 1 and not recorded(retrain_log)
        # The machine slept: eight classify slots and three weekly retrains went by.
        now = datetime.now()
        scheduler.jobs[CLASSIFY].next_run = now - timedelta(hours=2)
        scheduler.jobs[RETRAIN].next_run = now - timedelta(weeks=3)
        scheduler.tick()
        assert len(recorded(classify_log)) == 2, "one classify, not eight"
        assert len(recorded(retrain_log)) == 1, "one retrain, not three"
        scheduler.tick()
        assert len(recorded(classify_log)) == 2 and len(recorded(retrain_log)) == 1
        after = datetime.now()
        classify_next = scheduler.jobs[CLASSIFY].next_run
        retrain_next = scheduler.jobs[RETRAIN].next_run
        assert timedelta(minutes=14) < classify_next - after <= timedelta(minutes=15)
        assert retrain_next > after and retrain_next.weekday() == 0
        assert (retrain_next.hour, retrain_next.minute) == (7, 0)
        status = scheduler.status()["jobs"]
        assert status[CLASSIFY]["runs"] == 2 and status[RETRAIN]["runs"] == 1
        assert status[RETRAIN]["next_run"].startswith(retrain_next.strftime("%Y-%m-%dT07:00"))
    finally:
        scheduler.close()


def test_a_job_longer_than_several_intervals_is_followed_by_one_run_then_the_cadence(
    tmp_path, scenario
):
    log = tmp_path / "classify.txt"
    interval = 0.3
    background = Background(
        Scheduler(
            config(
                tmp_path,
                scenario,
                interval_minutes=interval / 60,
                job_commands={CLASSIFY: recorder(log, seconds=1.5)},  # five intervals long
            )
        )
    )
    time.sleep(6)
    background.stop()
    runs = recorded(log)
    assert 2 <= len(runs) <= 4, runs  # a burst would have run again right after each job
    for (_, end), (start, _) in itertools.pairwise(runs):
        assert start - end >= interval * 0.9, f"a run started {start - end:.2f} s after the last"
    assert background.runs() == len(runs)


# --- failing and hanging jobs ---------------------------------------------------------------
def test_a_hung_job_is_killed_with_its_whole_process_group_at_the_timeout(tmp_path, scenario):
    # The job leaves a grandchild that ignores SIGINT (a background job of a shell does).
    pid_file = tmp_path / "grandchild.pid"
    hang = ["bash", "-c", f"sleep 300 & echo $! > {pid_file}; wait"]
    background = Background(
        Scheduler(
            config(
                tmp_path,
                scenario,
                interval_minutes=0.5 * SECOND,
                job_timeout_seconds=1.0,
                kill_grace_seconds=1.0,
                job_commands={CLASSIFY: hang},
            )
        )
    )
    wait_for(lambda: background.runs() >= 2, 30, "two timed-out runs")
    background.stop()
    job = background.job()
    assert job["outcome"] == "timeout" and job["timeouts"] >= 2 and job["failures"] >= 2
    assert job["error"] == "killed after the 1 s timeout"
    assert 1.0 <= job["duration_seconds"] < 10
    grandchild = int(pid_file.read_text())
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == "zombie"


def test_an_in_process_job_that_fails_is_recorded_and_the_loop_carries_on(tmp_path, scenario):
    missing = tmp_path / "missing.json"
    background = Background(
        Scheduler(
            config(tmp_path, scenario, graph=str(missing), in_process=True, interval_minutes=0.01)
        )
    )
    wait_for(lambda: background.runs() >= 2, 60, "two failed runs")
    background.stop()
    job = background.job()
    assert job["outcome"] == "failed" and job["failures"] >= 2 and job["successes"] == 0
    assert "missing.json" in job["error"] and "cannot read graph file" in job["error"]
    assert job["consecutive_failures"] == job["runs"]


def stop_after(runs: dict[str, int]) -> tuple[Callable, Callable[[Scheduler], None]]:
    """An ``on_job_end`` hook that stops the loop as soon as each job has run ``runs``
    times (or at the first failure when none are expected), so a test waits for no
    extra job."""
    holder: dict[str, Scheduler] = {}

    def on_job_end(_result) -> None:
        jobs = holder["scheduler"].status()["jobs"]
        if all(jobs[name]["runs"] >= count for name, count in runs.items()):
            holder["scheduler"].stop()

    return on_job_end, lambda scheduler: holder.setdefault("scheduler", scheduler)


def looping(cfg: SchedulerConfig, runs: dict[str, int]) -> Background:
    hook, bind = stop_after(runs)
    cfg.on_job_end = hook
    scheduler = Scheduler(cfg)
    bind(scheduler)
    return Background(scheduler)


@pytest.mark.slow
def test_hanging_then_failing_mlflow_run_jobs_are_recorded_and_the_loop_carries_on(
    tmp_path, scenario
):
    # First a graph "file" that never delivers (a FIFO without writer): the job blocks in
    # its read, like a read from a hung network share. Then no graph file at all.
    graph = tmp_path / "graph.json"
    os.mkfifo(graph)
    hook, bind = stop_after({CLASSIFY: 2})
    seen: list[dict] = []

    def on_job_end(result) -> None:
        seen.append(result.as_dict())
        graph.unlink(missing_ok=True)  # the next run fails on a missing graph...
        scheduler.config.job_timeout_seconds = 300  # ...however slow `mlflow run` starts
        hook(result)

    cfg = config(
        tmp_path, scenario, graph=str(graph), job_timeout_seconds=6.0, kill_grace_seconds=5.0
    )
    cfg.on_job_end = on_job_end
    scheduler = Scheduler(cfg)
    bind(scheduler)
    background = Background(scheduler)
    background.thread.join(180)
    background.stop()
    hung, failed = seen
    # The hung job: killed at its timeout with everything it started.
    assert hung["outcome"] == "timeout" and hung["error"] == "killed after the 6 s timeout"
    assert 6 <= hung["duration_seconds"] < 6 + 5 + 5
    leftovers = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if str(graph) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == [], "no process of a killed job is left"
    # The failed job: the loop went on, and its one-line error is recorded.
    assert failed["outcome"] == "failed" and failed["exit_code"] not in (0, None)
    assert failed["error"].startswith("alertclf classify: error: ")
    assert "graph.json: cannot read graph file" in failed["error"]
    assert Path(failed["log"]).exists() and "Traceback" not in failed["error"]
    job = background.job()
    assert job["runs"] == 2 and job["failures"] == 2 and job["timeouts"] == 1
    assert job["outcome"] == "failed" and job["consecutive_failures"] == 2
    assert result_folders(tmp_path / "results") == []
    # `mlflow run` was interrupted, not shot: its runs are closed, not left RUNNING.
    import mlflow

    tracking.configure_tracking(tmp_path / "models")
    runs = mlflow.search_runs(experiment_names=["alertclf-classify"], output_format="list")
    assert len(runs) == 2 and {r.info.status for r in runs} <= {"FAILED", "KILLED"}


# --- real mlflow run jobs on a fast clock ---------------------------------------------------
@pytest.mark.slow
def test_run_once_then_the_loop_with_real_mlflow_run_jobs_leaving_no_temp_folders(
    tmp_path, scenario, monkeypatch, capsys
):
    # What `mlflow run` would use as its temp folder without our per-job TMPDIR.
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))
    out, models = tmp_path / "results", tmp_path / "models"

    # 1. The seed's `--run-once` on an empty registry: bootstrap a model, then classify.
    argv = ["run", "--run-once", "--alerts", str(scenario["alerts"])]
    argv += ["--graph", str(scenario["graph"]), "--output", str(out), "--models", str(models)]
    assert main([*argv, "--set", "algorithm=kmeans"]) == 0
    printed = capsys.readouterr().out
    folders = result_folders(out)
    assert len(folders) == 1 and f"Results: {folders[0]}" in printed
    assert "with alert-clustering v1 (bootstrapped now)" in printed
    once = read_status(out)
    assert once["scheduler"]["state"] == "stopped"
    assert once["jobs"][CLASSIFY]["outcome"] == "success" and not (out / LOCK_FILE).exists()

    # 2. The loop: classify every second, retrain every 3 s: classify at once, then the
    # retrain that fell due meanwhile.
    cfg = config(tmp_path, scenario, enable_retraining=True, retrain_every_seconds=3)
    background = looping(cfg, {CLASSIFY: 1, RETRAIN: 1})
    background.thread.join(240)
    background.stop()
    status = read_status(out)
    classify, retrain = status["jobs"][CLASSIFY], status["jobs"][RETRAIN]
    assert status["scheduler"]["state"] == "stopped" and status["scheduler"]["stopped_at"]
    assert status["scheduler"]["mode"] == "mlflow run"
    assert classify["runs"] == 1 and retrain["runs"] == 1  # counters restart with a scheduler
    assert retrain["last_start"] >= classify["last_end"]
    assert classify["failures"] == 0 and retrain["failures"] == 0, (classify, retrain)
    assert classify["outcome"] == retrain["outcome"] == "success"
    assert classify["running"] is False and classify["next_run"] is None
    for record in (classify, retrain):
        for key in ("last_start", "last_end", "duration_seconds", "exit_code", "log"):
            assert record[key] is not None, key
    assert retrain["summary"]["decision"].startswith(("PROMOTED", "Left at staging"))
    # Every classify wrote one results folder; the newest is recorded.
    folders = result_folders(out)
    assert len(folders) == 2
    assert classify["results_dir"] == str(folders[-1])
    state = json.loads(out.joinpath(*STATE_PATH).read_text())
    assert state["last_run_id"] == folders[-1].name
    # The jobs ran as `mlflow run` projects, in our store, artifacts under --models.
    import mlflow

    tracking.configure_tracking(models)
    for name, count in (("alertclf-classify", 2), ("alertclf-retrain", 1)):
        runs = mlflow.search_runs(experiment_names=[name], output_format="list")
        assert len(runs) == count, name
        assert {r.info.status for r in runs} == {"FINISHED"}
        assert all(r.data.tags.get("mlflow.project.entryPoint") == name[9:] for r in runs)
        assert all(str(models) in r.info.artifact_uri for r in runs)
        # The settings given to the scheduler reached the jobs (through -P config=...).
        assert all(r.data.params["setting.algorithm"] == "kmeans" for r in runs)
    versions = mlflow.MlflowClient().search_model_versions("name='alert-clustering'")
    assert len(versions) == 2  # the bootstrap, then the retrain
    # Temp folders: `mlflow run` made one in each job's TMPDIR, and it is gone; nothing
    # in the would-be system temp folder either.
    made = re.findall(r"Created directory (\S+) for downloading", Path(classify["log"]).read_text())
    assert made and made[0].startswith(str(out / TMP_DIR / "classify-"))
    assert not Path(made[0]).exists() and not (out / TMP_DIR).exists()
    assert leftover_temp_folders(system_tmp) == []
    assert not (out / LOCK_FILE).exists()


# --- the command line -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--interval", "0"], "--interval"),
        (["--interval", "soon"], "--interval"),
        (["--retrain-day", "someday"], "--retrain-day: invalid weekday 'someday'"),
        (["--retrain-time", "25:00"], "--retrain-time"),
        (["--job-timeout", "-1"], "--job-timeout"),
        (["--run-once", "--interval", "5"], "not allowed with argument"),
    ],
)
def test_run_refuses_ill_typed_options(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--alerts", "a.csv", "--graph", "g.json", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_scheduler_script_is_alertclf_run():
    script = ROOT / "entrypoints" / "scheduler.py"
    assert 'main(["run", *sys.argv[1:]])' in script.read_text()
    shown = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0 and "--run-once" in shown.stdout and "--in-process" in shown.stdout


def test_state_path_is_classifys():
    from alertclf.io import state

    assert (state.STATE_DIR, state.STATE_FILE) == STATE_PATH


@pytest.mark.slow
def test_cli_scheduler_refuses_a_second_instance_and_stops_cleanly_on_sigterm(tmp_path, scenario):
    out, models = tmp_path / "results", tmp_path / "models"
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["TMPDIR"] = str(system_tmp)
    argv = [sys.executable, "-m", "alertclf.cli", "run", "--alerts", str(scenario["alerts"])]
    argv += ["--graph", str(scenario["graph"]), "--output", str(out), "--models", str(models)]
    # --in-process, with a timeout it cannot enforce: the watchdog only reports it.
    argv += ["--set", "algorithm=kmeans", "--in-process", "--job-timeout", "0.001"]
    first = subprocess.Popen(
        [*argv, "--interval", "0.05", "--retrain-day", "Sunday", "--retrain-time", "6:30"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (out / LOCK_FILE).exists() and (out / STATUS_FILE).exists(), 60, "lock")
        second = subprocess.run(
            [*argv, "--interval", "15"], env=env, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 2, second.stderr
        assert f"alertclf run: error: another scheduler (pid {first.pid}, started " in second.stderr
        assert f"is using {out}; stop it or use another --output" in second.stderr
        # SIGTERM while a job runs: the job finishes, then the scheduler stops.
        wait_for(lambda: read_status(out)["jobs"][CLASSIFY]["running"], 60, "a running job")
        runs_before = read_status(out)["jobs"][CLASSIFY]["runs"]
        first.send_signal(signal.SIGTERM)
        stdout, stderr = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, stderr[-3000:]
    status = read_status(out)
    classify = status["jobs"][CLASSIFY]
    assert status["scheduler"]["state"] == "stopped"
    assert classify["runs"] == runs_before + 1 and classify["outcome"] == "success"
    assert not (out / LOCK_FILE).exists()
    assert "SIGTERM: stopping after the current job" in stderr
    assert "an in-process job cannot be killed" in stderr and classify["overran_timeout"]
    # The banner tells the truth about the schedule.
    assert f"alertclf 0.1.0 scheduler (pid {first.pid})" in stdout
    assert "classify every 3 seconds (first run now)" in stdout
    assert "retrain weekly on Sunday at 06:30 (local time)" in stdout
    assert "in-process" in stdout and str(out / STATUS_FILE) in stdout
    assert "alertclf scheduler stopped" in stdout
    assert leftover_temp_folders(system_tmp) == []


def test_a_sas_token_in_a_location_is_refused_before_any_job_runs() -> None:
    from alertclf.scheduler import SchedulerConfig, SchedulerError

    url = "https://acct.blob.core.windows.net/alerts/prefix?sv=2024&sig=SECRETSIG"
    with pytest.raises(SchedulerError, match="AZURE_STORAGE_SAS_TOKEN") as err:
        SchedulerConfig(alerts=url, graph="g.json")
    assert "SECRETSIG" not in str(err.value)
