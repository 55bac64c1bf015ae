"""A real Azurite (Azure Blob emulator) for tests: start, stop mid-test, restart, clean up.

Fixtures (registered for the whole suite by ``tests/conftest.py``):

- ``azurite_server`` (per module): a running :class:`AzuriteServer`; tests may stop and
  restart it (same port, same data folder), and should leave it running;
- ``azurite`` (per module): that server's connection string;
- ``fresh_azurite`` (per test): a server of its own, for tests that stop it for good.

Azurite comes from npm (``make tools`` puts it in ``.tools/``); ``AZURITE_BIN`` points
elsewhere. Without it the tests that need it are skipped, with the reason shown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key (not a secret: it only opens the emulator).
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def azurite_executable() -> str | None:
    """The ``azurite-blob`` command: ``$AZURITE_BIN``, the project's ``.tools``, or PATH."""
    candidates = [
        os.environ.get("AZURITE_BIN", ""),
        str(ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"),
        shutil.which("azurite-blob") or "",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    # The OS picks a port no one listens on; there is a small window before Azurite binds
    # it, which start() covers by failing loudly (with Azurite's log) if it was taken.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AzuriteServer:
    """One ``azurite-blob`` process on 127.0.0.1, restartable on the same port and data."""

    def __init__(self, location: Path, port: int | None = None, executable: str | None = None):
        self.executable = executable or azurite_executable()
        if self.executable is None:
            raise FileNotFoundError("azurite-blob not found: run `make tools` or set AZURITE_BIN")
        self.location = Path(location)
        self.location.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # start/stop may come from a helper thread
        self._closed = False  # after close(), a late restart_later() thread starts nothing

    # --- addresses ----------------------------------------------------------------------
    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    @property
    def log_path(self) -> Path:
        return self.location / "azurite.log"

    # --- life cycle ---------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("this Azurite server has been closed")
            if self.is_running():
                return
            command = [
                str(self.executable),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--location",
                str(self.location),
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ]
            # Output goes to a file: a pipe nobody reads would block Azurite once full.
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            self._wait_ready(timeout)
            logger.info("Azurite up on port %d (pid %d)", self.port, self.process.pid)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Terminate (Azurite saves its metadata on SIGTERM), then kill if it lingers."""
        with self._lock:
            process, self.process = self.process, None
            if process is None or process.poll() is not None:
                return
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
            logger.info("Azurite on port %d stopped", self.port)

    def close(self) -> None:
        """Stop for good: the end of the fixture."""
        self._closed = True
        self.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def restart_later(self, delay: float) -> threading.Thread:
        """Start the (stopped) server again after ``delay`` seconds, from a helper thread.

        For outage tests: stop the server where the client is mid-way, then let this bring
        it back while the client is busy retrying. Join the thread before asserting.
        """

        def run() -> None:
            time.sleep(delay)
            self.start()

        thread = threading.Thread(target=run, name="azurite-restart", daemon=True)
        thread.start()
        return thread

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.blob_endpoint}?comp=list"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"Azurite exited at start-up:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # any HTTP answer (403 for an unsigned request) means it serves
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.process.kill()
        raise RuntimeError(f"Azurite did not answer within {timeout:.0f} s:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


def _started(location: Path) -> Iterator[AzuriteServer]:
    if azurite_executable() is None:
        pytest.skip("Azurite not installed: run `make tools` (or set AZURITE_BIN)")
    server = AzuriteServer(location)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """A running Azurite shared by a test module."""
    yield from _started(tmp_path_factory.mktemp("azurite"))


@pytest.fixture(scope="module")
def azurite(azurite_server: AzuriteServer) -> str:
    """The connection string of the module's Azurite."""
    return azurite_server.connection_string


@pytest.fixture
def fresh_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """An Azurite of this test's own (it may stop it for good)."""
    yield from _started(tmp_path_factory.mktemp("azurite-own"))
