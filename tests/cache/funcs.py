"""Functions submitted by the cache tests; importable by the jobs (``tests.cache.funcs``)."""

from __future__ import annotations

import os
import time


def record_run(runs_file: str, value: int, delay: float = 0.0) -> int:
    """Append one line per run to ``runs_file``, sleep ``delay`` seconds, return ``2 * value``."""
    with open(runs_file, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(delay)
    return 2 * value


def add_recorded(runs_file: str, a: int, b: int, delay: float = 0.0) -> int:
    """``a + b``, recorded in ``runs_file`` like :func:`record_run`."""
    with open(runs_file, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(delay)
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


def double(x: int) -> int:
    return 2 * x


def count_runs(runs_file: str) -> int:
    """How many runs ``runs_file`` recorded (0 when it does not exist)."""
    try:
        with open(runs_file) as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


def record_and_fail(runs_file: str, message: str) -> None:
    """Record the run in ``runs_file``, then raise ValueError(message)."""
    with open(runs_file, "a") as f:
        f.write(f"{os.getpid()}\n")
    raise ValueError(message)


def record_and_hold(runs_file: str, value: int, hold_file: str) -> int:
    """Record the run, wait while ``hold_file`` exists (at most 60 s), return ``2 * value``."""
    with open(runs_file, "a") as f:
        f.write(f"{os.getpid()}\n")
    deadline = time.monotonic() + 60
    while os.path.exists(hold_file) and time.monotonic() < deadline:
        time.sleep(0.02)
    return 2 * value
