"""Functions submitted by the block-allocation tests (importable, so pickled by reference).

``init_*`` functions are ``init_function`` candidates: they run once in each persistent worker.
Those that take a path are given to the Executor as ``functools.partial(init_..., path)``.
"""

from __future__ import annotations

import os
import time
from typing import Any

_CALLS = 0  # module state: survives between the tasks of one persistent worker


def count_calls(tag: Any = None) -> tuple[int, int]:
    """(this worker's pid, how many times this function ran in this process so far); ``tag``
    only makes otherwise identical calls distinct (not cache hits of each other)."""
    global _CALLS
    _CALLS += 1
    return os.getpid(), _CALLS


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def init_model() -> dict:
    return {"model": "expensive model", "scale": 10, "unused": object()}


def init_other_model() -> dict:
    return {"model": "another model", "scale": 10}


def predict(x: int, model: Any = None, scale: int = 1) -> tuple[int, Any]:
    return x * scale, model


def predict_keyword_only(x: int, *, model: Any) -> tuple[int, Any]:
    return x, model


def init_record(path: str) -> dict:
    """Append this worker's pid to ``path``: one line per init."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return {"init_pid": os.getpid()}


def init_pid(init_pid: int = 0) -> tuple[int, int]:
    """(the pid recorded by init_record in this worker, this process's pid)."""
    return init_pid, os.getpid()


def init_raises() -> dict:
    raise ValueError("cannot load the model")


def init_not_a_dict() -> list:
    return ["model"]


def print_protocol_lookalikes(n: int) -> int:
    """Print lines that look like the worker protocol, on stdout and at the fd level."""
    for i in range(n):
        print(f"done /not/a/task {i}", flush=True)
    os.write(1, b"done /neither 0\n")
    os.write(2, b"to stderr\n")
    return n
