"""Run a Python script that SIGKILLs itself at a named step (test code only, never the library).

Usage (the ``kill_client`` fixture in conftest.py builds this for you)::

    EXECUTORLIB_TEST_KILL_AT="executorlib.store:TaskStore.write_task:after" \
        python -m tests.faults.kill_at script.py

The step is ``module:qualified.name[:before|after][@N]`` (e.g. ``executorlib.spawners.slurm:
SlurmSpawner.submit`` works though ``submit`` is inherited): the callable is replaced by a wrapper
that kills the whole process with SIGKILL before or after (the default) its N-th call (default
1). When ``EXECUTORLIB_TEST_KILL_MARK`` names a file, the wrapper appends the step to it just
before the kill, so a test can tell "killed at the step" from "died some other way". Both
variables are removed from the environment before the script runs, so the processes it starts
(local jobs, sbatch) never see them.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import runpy
import signal
import sys
import threading
from typing import Any, Callable

KILL_AT = "EXECUTORLIB_TEST_KILL_AT"
KILL_MARK = "EXECUTORLIB_TEST_KILL_MARK"


def parse_step(step: str) -> tuple[str, str, str, int]:
    """``module:qual.name[:before|after][@N]`` -> (module, qualname, when, nth)."""
    nth = 1
    if "@" in step:
        step, count = step.rsplit("@", 1)
        nth = int(count)
    parts = step.split(":")
    if len(parts) == 2:
        parts.append("after")
    if len(parts) != 3 or parts[2] not in ("before", "after") or nth < 1:
        raise ValueError(f"{KILL_AT}={step!r}: expected 'module:qualified.name[:before|after][@N]' (N >= 1)")
    return parts[0], parts[1], parts[2], nth


def _die(step: str, mark: str) -> None:
    if mark:
        with open(mark, "a") as handle:
            handle.write(step + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def install(step: str, mark: str = "") -> None:
    """Replace the callable named by ``step`` with one that SIGKILLs the process at that step."""
    module_name, qualname, when, nth = parse_step(step)
    owner: Any = importlib.import_module(module_name)
    *path, attribute = qualname.split(".")
    for name in path:
        owner = getattr(owner, name)
    # on a class, the attribute as defined (also when inherited): the wrapper is set on ``owner``
    # itself, so that it shadows an inherited method for this class only
    raw = inspect.getattr_static(owner, attribute) if isinstance(owner, type) else getattr(owner, attribute)
    wrapper_kind = type(raw) if isinstance(raw, (staticmethod, classmethod)) else None
    original: Callable = raw.__func__ if wrapper_kind else raw
    calls = [0]
    lock = threading.Lock()

    @functools.wraps(original)
    def killing(*args: Any, **kwargs: Any) -> Any:
        with lock:
            calls[0] += 1
            due = calls[0] == nth
        if due and when == "before":
            _die(step, mark)
        result = original(*args, **kwargs)
        if due:
            _die(step, mark)
        return result

    setattr(owner, attribute, wrapper_kind(killing) if wrapper_kind else killing)


def main(argv: list[str]) -> None:
    if len(argv) < 1:
        raise SystemExit("usage: python -m tests.faults.kill_at script.py [args...]")
    step = os.environ.pop(KILL_AT, "")
    mark = os.environ.pop(KILL_MARK, "")
    if step:
        install(step, mark)
    sys.argv = list(argv)
    runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
