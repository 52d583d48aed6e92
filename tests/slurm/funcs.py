"""Functions submitted as SLURM jobs by the tests in ``tests/slurm``.

They live in an importable module because cloudpickle pickles them by reference: the job's Python
imports ``tests.slurm.funcs`` (the worker puts the client's working directory, the repository
root, on ``sys.path``). A job runs in its own process, so functions that must tell the test what
happened do it through their output file (``print(..., flush=True)``) or files passed by path.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def add_funct(a: Any, b: Any) -> Any:
    """The seed's dependency example."""
    return a + b


def sleep_add(a: Any, b: Any, seconds: float) -> Any:
    """``a + b`` after ``seconds``: a parent that is still running when its children are submitted."""
    time.sleep(seconds)
    return a + b


def calc(i: int) -> tuple[int, int, int]:
    """The seed's MPI example: (i, size, rank) of MPI.COMM_WORLD."""
    from mpi4py import MPI

    size = MPI.COMM_WORLD.Get_size()
    rank = MPI.COMM_WORLD.Get_rank()
    return i, size, rank


class SlurmTestError(ValueError):
    """A user-defined exception type: it must come back as itself, not as a generic error."""


def raise_error(message: str, seconds: float = 0.0) -> None:
    """Fail with ``SlurmTestError(message)``, after ``seconds``."""
    time.sleep(seconds)
    raise SlurmTestError(message)


def announce_and_sleep(marker: str, seconds: float) -> str:
    """Print ``marker`` to the job's output, then sleep (a job to be killed from outside)."""
    print(f"started {marker}", flush=True)
    time.sleep(seconds)
    return marker


def count_run(path: str, value: Any, seconds: float = 0.0) -> Any:
    """Append a line to ``path`` (one per execution), sleep, return ``value``."""
    with open(path, "a") as f:
        f.write(f"{os.environ.get('SLURM_JOB_ID', '?')}\n")
    time.sleep(seconds)
    return value


def job_environment(tag: Any = None) -> dict:
    """What the job sees of the resources it asked for (``tag`` tells identical calls apart)."""
    print("environment checked", flush=True)
    return {
        "cwd": os.getcwd(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "SLURM_CPUS_PER_TASK": os.environ.get("SLURM_CPUS_PER_TASK"),
        "SLURM_JOB_NAME": os.environ.get("SLURM_JOB_NAME"),
        "SLURM_JOB_PARTITION": os.environ.get("SLURM_JOB_PARTITION"),
        "SLURM_JOB_ID": os.environ.get("SLURM_JOB_ID"),
        "SLURM_NTASKS": os.environ.get("SLURM_NTASKS"),
    }


def allocate(megabytes: int, hold: float) -> int:
    """Touch ``megabytes`` of memory and hold it for ``hold`` seconds (for memory_max)."""
    block = bytearray(megabytes * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])
    print(f"allocated {megabytes} MB", flush=True)
    time.sleep(hold)
    return len(block)


def write_cwd_file(name: str) -> str:
    """Create ``name`` in the working directory and return its absolute path."""
    Path(name).write_text("here\n")
    return str(Path(name).absolute())
