"""executorlib: up-scale Python functions from a laptop to an HPC cluster with the
``concurrent.futures.Executor`` API.

The public names are imported lazily, so that a job's worker (``python -m executorlib.worker``)
pays only for what it uses.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Executor": "executorlib.executor",
    "get_cache_data": "executorlib.cache",
    "get_future_from_cache": "executorlib.cache",
    "get_key": "executorlib.cache",
    "cancel_cache_jobs": "executorlib.cache",
    "clean_cache": "executorlib.cache",
    "terminate_tasks_in_cache": "executorlib.cache",
    "terminate_task_in_cache": "executorlib.cache",
    "progress": "executorlib.progress",
    # the original executorlib 1.x's API (docs/migration.md)
    "SingleNodeExecutor": "executorlib.executors",
    "SlurmClusterExecutor": "executorlib.executors",
    "SlurmJobExecutor": "executorlib.executors",
    "FluxClusterExecutor": "executorlib.executors",
    "FluxJobExecutor": "executorlib.executors",
    "split_future": "executorlib.future_tools",
    "get_item_from_future": "executorlib.future_tools",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'executorlib' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
