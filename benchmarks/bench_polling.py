"""Polling load: the client's CPU while it waits on many pending tasks.

Measured: ``time.process_time()`` of the client process (every thread, including the scheduler
loop) and ``resource.getrusage(RUSAGE_CHILDREN)`` (the squeue/sbatch commands it ran and waited
for), over ``--window`` seconds of waiting once every task has been handed to the backend. The
main thread sleeps during the window. Target (issue 6): 10,000 pending tasks cost the client
under 5 % of one core.

How tasks are kept pending:

* local: ``max_workers=1`` and a first task that sleeps longer than the measurement, so the other
  N tasks wait for a slot in the client (they are stored in the cache, not yet started);
* slurm_submission: every task is a real ``sbatch`` job, submitted with the library's own job
  template plus ``#SBATCH --hold``, so SLURM keeps it PENDING (JobHeldUser) and the client polls
  squeue for all of them; everything is cancelled at the end (shutdown(cancel_futures=True),
  then an scancel of any leftover job named ``xlbench*``). 10k SLURM jobs exceed this cluster's
  MaxJobCount, so SLURM uses --slurm-sizes (default 1000).

    python benchmarks/bench_polling.py [--local-sizes 0,1000,10000] [--slurm-sizes 1000]
                                       [--window 20] [--peer-python /tmp/peers/bin/python]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def add(a, b):
    return a + b


def sleeper(seconds):
    import time

    time.sleep(seconds)
    return seconds


def wait_for_file(path):
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.2)
    return path


def measure_window(window: float) -> dict:
    """CPU seconds of this process and of its waited-for children over ``window`` seconds."""
    cpu0 = time.process_time()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall0 = time.perf_counter()
    time.sleep(window)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    children = (children1.ru_utime - children0.ru_utime) + (children1.ru_stime - children0.ru_stime)
    return {"wall": wall, "cpu": cpu, "children": children,
            "cpu_percent": 100 * cpu / wall, "total_percent": 100 * (cpu + children) / wall}


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


# -- ours ------------------------------------------------------------------------------------------
def ours_local(n: int, window: float) -> dict:
    from executorlib import Executor

    with C.scratch_dir("xlbench-poll") as cache:
        exe = Executor(backend="local", max_workers=1, cache_directory=str(cache))
        try:
            blocker = exe.submit(sleeper, 10 * window + 600)
            start = time.perf_counter()
            futures = [exe.submit(add, i, i) for i in range(n)]
            submit = time.perf_counter() - start
            wait_until(lambda: blocker.running(), 60, "the first task to start")
            wait_until(lambda: exe._scheduler._inbox.empty(), 600, "the scheduler to register every task")
            time.sleep(1.0)  # let the loop's back-off settle at its idle interval
            row = measure_window(window)
            assert not any(f.done() for f in futures)
        finally:
            start = time.perf_counter()
            exe.shutdown(wait=True, cancel_futures=True)
            row_shutdown = time.perf_counter() - start
    row.update(n=n, submit=submit, shutdown=row_shutdown)
    return row


def ours_slurm(n: int, window: float) -> dict:
    from executorlib import Executor
    from executorlib.spawners.batch import TEMPLATE_DIR

    template = C.held_template((TEMPLATE_DIR / "slurm.sh.j2").read_text())
    with C.scratch_dir("xlbench-poll") as cache:
        exe = Executor(backend="slurm_submission", cache_directory=str(cache),
                       resource_dict={"submission_template": template, "job_name": f"{C.JOB_PREFIX}-poll"})
        try:
            start = time.perf_counter()
            futures = [exe.submit(add, i, i) for i in range(n)]
            submit = time.perf_counter() - start
            wait_until(lambda: exe._scheduler._inbox.empty() and len(exe._scheduler._by_job) == n,
                       3600, "every task to be submitted to SLURM")
            all_submitted = time.perf_counter() - start
            time.sleep(5.0)  # let the loop's back-off settle at its idle interval
            row = measure_window(window)
            assert not any(f.done() for f in futures), [f.exception() for f in futures if f.done()][:3]
        finally:
            start = time.perf_counter()
            exe.shutdown(wait=True, cancel_futures=True)
            row_shutdown = time.perf_counter() - start
            C.cancel_leftovers()
    row.update(n=n, submit=submit, all_submitted=all_submitted, shutdown=row_shutdown)
    return row


# -- the original executorlib ---------------------------------------------------------------------
#: its executors' __del__ calls shutdown(), which runs every queued task: keep them until os._exit
_KEEP_ALIVE: list = []

def original_local(n: int, window: float) -> dict:
    import executorlib

    with C.scratch_dir("xlbench-poll-orig") as folder:
        release = str(folder / "release")
        exe = executorlib.SingleNodeExecutor(max_workers=1)
        _KEEP_ALIVE.append(exe)
        try:
            # its shutdown waits for a running task: the first one ends when told to
            exe.submit(wait_for_file, release)
            start = time.perf_counter()
            futures = [exe.submit(add, i, i) for i in range(n)]
            submit = time.perf_counter() - start
            time.sleep(3.0)
            row = measure_window(window)
            assert not any(f.done() for f in futures)
        finally:
            # its shutdown() joins its scheduler thread, which runs every queued task even with
            # cancel_futures=True (1000 trivial tasks took 262 s here): no shutdown; the peer
            # process kills its workers and exits once it has reported (one size per process)
            open(release, "w").close()
    row.update(n=n, submit=submit, shutdown=None)
    return row


ORIGINAL_HELD_TEMPLATE = """#!/bin/bash
#SBATCH --output=time.out
#SBATCH --job-name={{job_name}}
#SBATCH --chdir={{working_directory}}
#SBATCH --get-user-env=L
#SBATCH --hold
#SBATCH --cpus-per-task={{cores}}

{{command}}
"""


def original_slurm(n: int, window: float) -> dict:
    import executorlib

    with C.scratch_dir("xlbench-poll-orig") as cache:
        exe = executorlib.SlurmClusterExecutor(
            cache_directory=str(cache),
            resource_dict={"submission_template": ORIGINAL_HELD_TEMPLATE, "job_name": f"{C.JOB_PREFIX}-poll"})
        _KEEP_ALIVE.append(exe)
        try:
            start = time.perf_counter()
            futures = [exe.submit(add, i, i) for i in range(n)]
            submit = time.perf_counter() - start
            wait_until(lambda: len(C.my_slurm_jobs()) >= n, 3600, "every task to be submitted to SLURM")
            all_submitted = time.perf_counter() - start
            time.sleep(5.0)
            row = measure_window(window)
            assert not any(f.done() for f in futures)
        finally:
            C.cancel_leftovers()  # no shutdown(): see original_local; scancel by job name instead
    row.update(n=n, submit=submit, all_submitted=all_submitted, shutdown=None)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local-sizes", default="0,1000,10000", help="pending tasks on the local backend")
    parser.add_argument("--slurm-sizes", default="1000", help="held SLURM jobs ('' to skip SLURM)")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of waiting measured")
    C.add_peer_arguments(parser)
    options = parser.parse_args()
    local_sizes = [int(s) for s in options.local_sizes.split(",") if s]
    slurm_sizes = [int(s) for s in options.slurm_sizes.split(",") if s]
    if slurm_sizes and not C.slurm_available():
        print("SLURM is not available here: skipping the SLURM sizes")
        slurm_sizes = []

    if options.as_peer:
        if options.as_peer != "executorlib":
            C.report_to_parent(None)
            return
        rows = [dict(original_local(n, options.window), backend="local (SingleNodeExecutor)")
                for n in local_sizes]
        rows += [dict(original_slurm(n, options.window), backend="slurm (SlurmClusterExecutor)")
                 for n in slurm_sizes]
        C.report_to_parent(rows)
        C.kill_descendants()
        os._exit(0)  # its scheduler threads would go on working through the queued tasks

    C.print_header("Polling load while tasks are pending")
    if slurm_sizes:
        print(f"SLURM queue before: {C.slurm_queue_summary()}")
    rows: list[dict] = []
    for n in local_sizes:
        rows.append(dict(ours_local(n, options.window), backend="local", library="ours"))
        print(f"  ours local N={n}: {rows[-1]['cpu_percent']:.2f} % of a core")
    for n in slurm_sizes:
        rows.append(dict(ours_slurm(n, options.window), backend="slurm_submission (held jobs)", library="ours"))
        print(f"  ours slurm N={n}: {rows[-1]['total_percent']:.2f} % of a core (with squeue)")
    if options.peer_python and "executorlib" in C.peer_libraries(options.peer_python):
        version = C.peer_version(options.peer_python, "executorlib")
        # one size per peer process: the original cannot be shut down without running its queue
        runs = [["--local-sizes", str(n), "--slurm-sizes", ""] for n in local_sizes]
        runs += [["--local-sizes", "", "--slurm-sizes", str(n)] for n in slurm_sizes]
        for sizes in runs:
            for row in C.run_peer(options.peer_python, __file__, "executorlib",
                                  sizes + ["--window", str(options.window)]) or []:
                rows.append(dict(row, library=f"executorlib {version}"))
    C.print_table(
        f"Client CPU while waiting ({options.window:.0f} s window)",
        ["library", "backend", "pending", "submit() all, s", "client CPU %", "+ children (squeue) %",
         "shutdown(cancel) s"],
        [[r["library"], r["backend"], r["n"], r["submit"], r["cpu_percent"], r["total_percent"],
          r["shutdown"]] for r in rows],
    )
    if slurm_sizes:
        print(f"\nSLURM: all {slurm_sizes[-1]} jobs in the queue after "
              f"{[r for r in rows if r['library'] == 'ours' and 'slurm' in r['backend']][-1]['all_submitted']:.1f} s")


if __name__ == "__main__":
    main()
