"""Functions the fault-injection tests submit; importable by the jobs (``tests.faults.funcs``)."""

from __future__ import annotations

import os
import time


def record_square(runs_file: str, value: int, delay: float = 0.0) -> int:
    """Append ``value`` to ``runs_file`` (one line per execution), sleep, return ``value ** 2``."""
    with open(runs_file, "a") as f:
        f.write(f"{value}\n")
    time.sleep(delay)
    return value * value


def record_add(runs_file: str, a: int, b: int) -> int:
    """``a + b``, recorded in ``runs_file`` like :func:`record_square` (as ``a+b``)."""
    with open(runs_file, "a") as f:
        f.write(f"{a}+{b}\n")
    return a + b


def executions(runs_file: str) -> dict[str, int]:
    """line -> how many times it was recorded."""
    counts: dict[str, int] = {}
    try:
        with open(runs_file) as f:
            for line in f:
                if line.strip():
                    counts[line.strip()] = counts.get(line.strip(), 0) + 1
    except FileNotFoundError:
        pass
    return counts


