"""A real, lean ``mlflow server`` for tests (one worker, no job runner), on 127.0.0.1.

Started in its own process group, so stopping it also stops the uvicorn worker it
spawns. Used by the browser test (a server to look at) and the fault suite (a server to
kill mid-run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from azurite import free_port


class MlflowServer:
    """``mlflow server`` over the SQLite store and artifacts in ``models``; ready (its
    ``/health`` answers) when the constructor returns."""

    def __init__(self, models: Path, log: Path, seconds: int = 120) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            str(Path(sys.executable).with_name("mlflow")), "server",
            "--backend-store-uri", f"sqlite:///{models / 'mlflow.db'}",
            "--default-artifact-root", str(models / "mlruns"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        # The server must not inherit a run, store or fault hook from the test process.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ALERTCLF_"))}
        env.update(
            {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        )
        with open(log, "wb") as handle:
            self.process = subprocess.Popen(
                command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"mlflow server exited ({self.process.returncode}):\n{log.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        self.kill()
        raise AssertionError(
            f"mlflow server not healthy after {seconds} s:\n{log.read_text()[-3000:]}"
        )

    def kill(self) -> None:
        """SIGKILL at once (a crash, for the fault tests)."""
        self._signal_group(((signal.SIGKILL, 30),))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop."""
        self._signal_group(((signal.SIGTERM, 15), (signal.SIGKILL, 5)))

    def _signal_group(self, steps: tuple[tuple[signal.Signals, int], ...]) -> None:
        for sig, wait in steps:
            if self.process.poll() is not None:
                return
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
