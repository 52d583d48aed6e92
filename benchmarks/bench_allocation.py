"""The HPC allocation mode (``backend="slurm_allocation"``) inside one SLURM allocation.

1. Per-task overhead: one task at a time (submit, result) as a job step, against a bare
   ``srun --exact -n 1 python -c pass`` in the same allocation.
2. ``--tasks`` trivial tasks (default 100) with ``block_allocation=True`` (one long-lived srun
   step per worker) against ``ProcessPoolExecutor`` with as many workers on the node, and against
   the local backend's pool (the same protocol without srun), with the temporary cache (calls sent
   to the workers in memory) and with a named cache (task files); each timing covers the whole
   ``with`` block (start-up, submissions, results, shutdown).
3. The same tasks once every worker runs: from the first submit to the last result.

Outside an allocation the script runs itself in one: ``sbatch --wait -n 2`` (a few minutes at
most), and prints the job's output.

    python benchmarks/bench_allocation.py [--steps 5] [--tasks 100] [--workers 2] [--cpus 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

JOB_NAME = f"{C.JOB_PREFIX}-allocation"


def add(a: int, b: int) -> int:
    return a + b


def bare_steps(count: int) -> list[float]:
    times = []
    for _ in range(count):
        with C.timer() as t:
            subprocess.run(["srun", "--exact", "-n", "1", sys.executable, "-c", "pass"], check=True)
        times.append(t["seconds"])
    return times


def executor_steps(count: int, cache: Path) -> list[float]:
    from executorlib import Executor

    times = []
    with Executor(backend="slurm_allocation", cache_directory=cache) as exe:
        for i in range(count):
            with C.timer() as t:
                assert exe.submit(add, i, 1).result() == i + 1
            times.append(t["seconds"])
    return times


def block_allocation(tasks: int, workers: int, cache: Optional[Path], backend: str = "slurm_allocation") -> float:
    """``cache`` None: the temporary cache, whose calls go to the workers in memory."""
    from executorlib import Executor

    with C.timer() as t:
        with Executor(backend=backend, block_allocation=True, max_workers=workers,
                      cache_directory=cache) as exe:
            values = [f.result() for f in [exe.submit(add, i, i) for i in range(tasks)]]
    assert values == [2 * i for i in range(tasks)]
    return t["seconds"]


def warm_tasks(tasks: int, workers: int, backend: Optional[str] = "slurm_allocation") -> float:
    """Seconds for ``tasks`` trivial calls once the pool's workers run (their start not counted):
    ``backend`` None is ProcessPoolExecutor; the others use the temporary cache."""
    from executorlib import Executor

    exe = (ProcessPoolExecutor(max_workers=workers) if backend is None else
           Executor(backend=backend, block_allocation=True, max_workers=workers))
    with exe:
        [f.result() for f in [exe.submit(add, i, 0) for i in range(4 * workers)]]  # every worker up
        with C.timer() as t:
            values = [f.result() for f in [exe.submit(add, i, i) for i in range(tasks)]]
    assert values == [2 * i for i in range(tasks)]
    return t["seconds"]


def process_pool(tasks: int, workers: int) -> float:
    with C.timer() as t:
        with ProcessPoolExecutor(max_workers=workers) as exe:
            values = [f.result() for f in [exe.submit(add, i, i) for i in range(tasks)]]
    assert values == [2 * i for i in range(tasks)]
    return t["seconds"]


def inside(options: argparse.Namespace) -> None:
    C.print_header(f"allocation mode inside SLURM allocation {os.environ['SLURM_JOB_ID']} "
                   f"({os.environ.get('SLURM_JOB_CPUS_PER_NODE')} CPUs)")
    with C.scratch_dir("xlbench-allocation") as scratch:
        bare = bare_steps(options.steps)
        ours = executor_steps(options.steps, scratch / "steps")
        C.print_table("one task at a time: seconds per task", ["what", "median", "min", "max"], [
            ["srun --exact -n 1 python -c pass", C.median(bare), min(bare), max(bare)],
            ["Executor(backend='slurm_allocation') submit + result", C.median(ours), min(ours), max(ours)],
        ])
        print(f"\noverhead of a task over a bare step: "
              f"{C.fmt(C.median(ours) - C.median(bare))} s (x{C.fmt(C.ratio(C.median(ours), C.median(bare)))})")
        pool = [process_pool(options.tasks, options.workers) for _ in range(options.repeat)]
        block = [block_allocation(options.tasks, options.workers, None) for i in range(options.repeat)]
        named = [block_allocation(options.tasks, options.workers, scratch / f"block{i}")
                 for i in range(options.repeat)]
        block_allocation(2, options.workers, None, "local")  # warm: the local fork server starts once per process
        local = [block_allocation(options.tasks, options.workers, None, "local") for i in range(options.repeat)]
        local_named = [block_allocation(options.tasks, options.workers, scratch / f"local{i}", "local")
                       for i in range(options.repeat)]
        rows = [["ProcessPoolExecutor", pool],
                ["slurm_allocation, block_allocation=True (temporary cache: calls in memory)", block],
                ["slurm_allocation, block_allocation=True, named cache_directory (task files)", named],
                ["local, block_allocation=True (no srun; temporary cache)", local],
                ["local, block_allocation=True (no srun; named cache_directory)", local_named]]
        C.print_table(f"{options.tasks} trivial tasks, {options.workers} workers: seconds for the whole block",
                      ["what", "median", "ratio", "per task"],
                      [[name, C.median(times), C.ratio(C.median(times), C.median(pool)),
                        C.median(times) / options.tasks] for name, times in rows])
        warm = {name: [warm_tasks(options.tasks, options.workers, backend) for _ in range(options.repeat)]
                for name, backend in (("ProcessPoolExecutor", None),
                                      ("slurm_allocation, block_allocation=True (temporary cache)", "slurm_allocation"),
                                      ("local, block_allocation=True (temporary cache)", "local"))}
        floor = C.median(warm["ProcessPoolExecutor"])
        C.print_table(f"{options.tasks} trivial tasks, {options.workers} workers already running: seconds from the "
                      "first submit to the last result", ["what", "median", "ratio", "per task"],
                      [[name, C.median(times), C.ratio(C.median(times), floor), C.median(times) / options.tasks]
                       for name, times in warm.items()])
        print(f"\nblock_allocation / ProcessPoolExecutor: x{C.fmt(C.ratio(C.median(block), C.median(pool)))} "
              f"(temporary cache), x{C.fmt(C.ratio(C.median(named), C.median(pool)))} (named cache); "
              f"slurm_allocation / local pool: x{C.fmt(C.ratio(C.median(block), C.median(local)))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="tasks run one at a time (and bare steps)")
    parser.add_argument("--tasks", type=int, default=100, help="trivial tasks for the block allocation")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the allocation sbatch asks for")
    options = parser.parse_args()
    if os.environ.get("SLURM_JOB_ID"):
        inside(options)
        return
    if not C.slurm_available():
        sys.exit("no SLURM cluster answers (bash scripts/start_slurm.sh)")
    log = Path(f"/tmp/{JOB_NAME}-{os.getpid()}.out")
    argv = " ".join(sys.argv[1:])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    start = time.perf_counter()
    done = subprocess.run(["sbatch", "--wait", "-n", str(options.cpus), "-t", "10", "-J", JOB_NAME,
                           "-o", str(log), "--wrap",
                           f"cd {os.getcwd()} && {sys.executable} {os.path.abspath(__file__)} {argv}"],
                          env=env, capture_output=True, text=True)
    print(log.read_text() if log.exists() else "(no output)")
    print(f"(sbatch --wait: exit code {done.returncode}, {time.perf_counter() - start:.1f} s in all) "
          f"{done.stderr.strip()}")
    log.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
