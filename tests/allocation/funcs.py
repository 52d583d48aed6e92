"""Task functions of the allocation tests (importable by the workers through the client's cwd)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def step_ids(x: int) -> dict:
    time.sleep(0.5)
    return {"x": x, "job": os.environ.get("SLURM_JOB_ID"), "step": os.environ.get("SLURM_STEP_ID"),
            "cpus": os.environ.get("SLURM_CPUS_PER_TASK"), "omp": os.environ.get("OMP_NUM_THREADS")}


def mpi_rank() -> tuple:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    return comm.Get_rank(), comm.Get_size(), os.environ.get("SLURM_STEP_ID")


def add(a: int, b: int) -> int:
    return a + b


def init_model() -> dict:
    return {"offset": 100, "started": os.getpid()}


def with_model(x: int, offset: int = 0, started: int = 0) -> tuple:
    return x + offset, os.getpid(), started, os.environ.get("SLURM_STEP_ID")


def sleep_and_record(path: str, seconds: float) -> str:
    """Write '<job>.<step>' to ``path`` (for scancel), then sleep."""
    Path(path + ".tmp").write_text(f"{os.environ['SLURM_JOB_ID']}.{os.environ['SLURM_STEP_ID']}")
    os.replace(path + ".tmp", path)
    time.sleep(seconds)
    return "not killed"


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def kill_worker() -> None:
    os._exit(3)


def worker_pid(tag: int) -> int:
    return os.getpid()


def say(text: str) -> str:
    print(text, flush=True)
    return text


def no_restart_pool():
    """A block-allocation spawner class whose dead workers are not restarted (restart_limit=0)."""
    from executorlib.spawners.srun import SrunPoolSpawner

    class NoRestartPool(SrunPoolSpawner):
        def __init__(self, **options):
            super().__init__(restart_limit=0, **options)

    return NoRestartPool


def hog_memory(megabytes: int, seconds: float) -> int:
    """Hold ``megabytes`` of touched memory for ``seconds``."""
    block = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(seconds)
    return len(block)
