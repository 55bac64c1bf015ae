"""Fixtures shared by the whole suite."""

import sys
from pathlib import Path

# tests/ is not a package: make its helper modules importable by name whatever pytest's
# import mode (the default "prepend" mode already does this; "importlib" does not).
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from azurite import azurite, azurite_server, fresh_azurite  # noqa: E402, F401
from reliability import pytest_runtest_makereport, pytest_sessionfinish, reliability  # noqa: E402, F401
