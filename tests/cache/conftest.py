"""Helpers of the cache tests: scripts run as separate processes, calls stored by hand."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from executorlib.resources import merge_resources
from executorlib.store import TaskStore
from executorlib.task import compute_key, function_name

REPO_ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def key_of(fn: Callable, *args: Any, **kwargs: Any) -> str:
    """The cache key Executor.submit gives ``fn(*args, **kwargs)`` (no Future arguments)."""
    return compute_key(fn, args, kwargs, name=function_name(fn))


def store_call(store: TaskStore, fn: Callable, *args: Any, **kwargs: Any) -> str:
    """Write the task file of ``fn(*args, **kwargs)`` as Executor.submit would; return its key."""
    key = key_of(fn, *args, **kwargs)
    store.write_task(key, function_name(fn), store.pickle_call(fn, args, kwargs), merge_resources({}, None), [])
    return key


def store_outcome(store: TaskStore, fn: Callable, *args: Any, value: Any = None,
                  error: BaseException | None = None) -> str:
    """Store ``fn(*args)`` with a finished outcome, as its job would (no process runs)."""
    key = store_call(store, fn, *args)
    if error is None:
        store.write_result(key, value, runtime=0.5)
    else:
        store.write_error(key, error, "Traceback (most recent call last):\n  ...\n", runtime=0.5)
    return key


def dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def run_script(tmp_path: Path) -> Callable[..., subprocess.Popen]:
    """Start ``code`` (dedented) as ``python script.py`` in ``tmp_path``; stdout/stderr piped."""
    started: list[subprocess.Popen] = []

    def start(code: str, name: str = "script.py") -> subprocess.Popen:
        path = tmp_path / name
        path.write_text(textwrap.dedent(code))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        process = subprocess.Popen([sys.executable, str(path)], cwd=str(tmp_path), env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def runs(tmp_path: Path) -> str:
    """A file the submitted functions append one line per run to."""
    return str(tmp_path / "runs.txt")
