"""Fixtures shared by the whole suite."""

import os
import sys
from pathlib import Path

import pytest

# tests/ is not a package: make its helper modules importable by name whatever pytest's
# import mode (the default "prepend" mode already does this; "importlib" does not).
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from azurite import azurite, azurite_server, fresh_azurite  # noqa: E402, F401
from reliability import pytest_runtest_makereport, pytest_sessionfinish, reliability  # noqa: E402, F401

# `make test` runs the suite on two pytest-xdist workers, whole files at a time, handed
# out in collection order. The longest files go first (serial seconds on 2 Xeon cores:
# 265, 158, 92, 74, 57, 51, 21), so the short ones fill the end of both workers' time
# instead of one long file running alone at the end.
LONGEST_FIRST = (
    "test_reliability_faults.py",
    "test_spark.py",
    "test_flows.py",
    "test_scheduler.py",
    "test_reliability_security.py",
    "test_reliability_fuzz.py",
    "test_browser.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept


@pytest.fixture
def isolated_tracking(monkeypatch):
    """No MLflow store, run or fault hook leaks into a test through the environment,
    nor out of it (also not the HTTP retry caps ``configure_tracking`` sets for servers)."""
    from alertclf import tracking
    from alertclf.flows import FAULT_ENV

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", FAULT_ENV,
                 *tracking.HTTP_RETRY_DEFAULTS):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    tracking._SET_BY_US.clear()
    yield
    tracking._SET_BY_US.clear()
    for name in tracking.HTTP_RETRY_DEFAULTS:
        os.environ.pop(name, None)
