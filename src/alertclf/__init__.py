"""alertclf: alert storms in, a short ranked list of incidents out."""

from typing import Any

__version__ = "0.1.0"

__all__ = ["AlertWorkflowScheduler", "__version__"]

# Loaded on first use (PEP 562), so that `import alertclf` stays cheap and starts nothing.
_LAZY = {"AlertWorkflowScheduler": "alertclf.api"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'alertclf' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
