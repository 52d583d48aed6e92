"""Functions submitted by the core tests.

They live in an importable module (``tests.core.funcs``) because cloudpickle pickles them by
reference: the worker process imports this module to run them. Functions that must coordinate
with the test (block, record what ran) do it through files whose paths are passed as arguments,
since a task runs in its own process and working directory.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any


def add_funct(a: Any, b: Any) -> Any:
    """The seed's dependency example."""
    return a + b


def calc(i: int) -> tuple[int, int, int]:
    """The seed's MPI example: (i, size, rank) of MPI.COMM_WORLD."""
    from mpi4py import MPI

    size = MPI.COMM_WORLD.Get_size()
    rank = MPI.COMM_WORLD.Get_rank()
    return i, size, rank


def echo(*args: Any, **kwargs: Any) -> tuple[tuple, dict]:
    """Return the arguments as the function received them."""
    return args, kwargs


def record(path: str, value: Any) -> Any:
    """Append one line to ``path`` each time it runs, then return ``value``."""
    with open(path, "a") as f:
        f.write(f"{value}\n")
    return value


def wait_for_file(path: str, timeout: float = 60.0) -> bool:
    """Block until ``path`` exists (the test's release signal); False after ``timeout``."""
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def pid_then_wait(pid_file: str, release_file: str, timeout: float = 60.0) -> int:
    """Write this process's pid, then block until ``release_file`` exists; return the pid."""
    tmp = pid_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, pid_file)
    wait_for_file(release_file, timeout)
    return os.getpid()


def timed(directory: str, label: str, seconds: float, cores: int = 1) -> str:
    """Sleep ``seconds`` and record wall-clock start and end in ``directory/label.json``.

    Under MPI every rank writes its own file (``label.rank<N>.json``), so the test sees every
    process that was alive at the same time.
    """
    start = time.time()
    time.sleep(seconds)
    end = time.time()
    name = label
    if cores > 1:
        from mpi4py import MPI

        name = f"{label}.rank{MPI.COMM_WORLD.Get_rank()}"
    Path(directory, f"{name}.json").write_text(json.dumps({"start": start, "end": end, "cores": cores}))
    return label


def sleep_return(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


def get_env(name: str, tag: Any = None) -> str | None:
    """``os.environ[name]``; ``tag`` only makes otherwise identical calls distinct."""
    return os.environ.get(name)


def get_cwd() -> str:
    return os.getcwd()


class CustomError(Exception):
    """An exception class of the user's own, importable by the client."""


def raise_value_error(message: str) -> None:
    raise ValueError(message)


def raise_custom(message: str) -> None:
    raise CustomError(message)


class UnpicklableError(Exception):
    """An exception that cannot travel back: it holds a lock."""

    def __init__(self, message: str):
        super().__init__(message)
        self.lock = threading.Lock()

    def __reduce__(self):
        return (UnpicklableError, (str(self), self.lock))


def raise_unpicklable(message: str) -> None:
    raise UnpicklableError(message)


def return_lock() -> Any:
    return threading.Lock()


def exit_hard(code: int) -> None:
    """Print, then end the process without writing a result (like a segfaulting library)."""
    print("exit_hard: leaving without a result", flush=True)
    os._exit(code)


def kill_self() -> None:
    """Die from SIGKILL, as under the out-of-memory killer."""
    import signal

    print("kill_self: sending SIGKILL to myself", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def mpi_rank_raises(rank_to_fail: int) -> int:
    """Raise ValueError on one MPI rank, return the rank on the others."""
    from mpi4py import MPI

    rank = MPI.COMM_WORLD.Get_rank()
    if rank == rank_to_fail:
        raise ValueError(f"rank {rank} failed on purpose")
    return rank


def segfault() -> None:
    """Crash the interpreter with SIGSEGV (a bug in compiled code)."""
    import ctypes

    ctypes.string_at(0)


def print_and_return(text: str, value: Any) -> Any:
    """Print ``text`` (the call's output), then return ``value``."""
    print(text, flush=True)
    return value


def record_after_gate(path: str, gate: str, value: Any, timeout: float = 60.0) -> Any:
    """Wait until the file ``gate`` exists, then append a line to ``path`` and return ``value``."""
    wait_for_file(gate, timeout)
    with open(path, "a") as f:
        f.write(f"{value}\n")
    return value


def mark_once(path: str, value: Any, seconds: float = 0.0) -> Any:
    """Sleep, append an ``x`` to ``path`` (a file per call: how often it ran), return ``value``."""
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write("x")
    return value
