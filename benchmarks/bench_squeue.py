"""squeue calls per hour while an Executor waits on long-running SLURM jobs, before and after the
polling cadence of issue 18.

One Executor (``slurm_submission``) submits ``--jobs`` calls of ``time.sleep(600)`` and then waits.
From the moment every call has its job, the benchmark counts, over ``--window`` seconds, the status
queries the Executor makes: the spawner's ``states()`` (one ``squeue`` each) and ``find_tagged()``
(also one ``squeue``), wrapped in this process, not in the library. Two runs:

* before: ``EXECUTORLIB_POLL_CEILING=2``, the fixed 2 s ceiling of the gap between two queries
  that the library had before the cadence change;
* after: the defaults (0.5 s floor; 30 s ceiling, reached after ~5 minutes without a change).

Reported per run: the queries in the window, that count per hour, and the steady rate at the end of
the window (3600 / the last gap between two queries), which is what a night of waiting costs.

By default the jobs are submitted held (``#SBATCH --hold``: PENDING with reason JobHeldUser), so
that 100 jobs of ten minutes do not take a shared cluster's cores; for the Executor nothing changes
while they wait, exactly as while long jobs run. ``--run`` lets them run (as far as the cluster has
room). Every job is scancel'd at the end (its name starts with ``xlbench-squeue``).

    python benchmarks/bench_squeue.py [--jobs 100] [--window 300] [--run] [--only before|after]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

JOB_NAME = f"{C.JOB_PREFIX}-squeue"
CEILING_VARIABLE = "EXECUTORLIB_POLL_CEILING"
#: the runs: label -> the value of EXECUTORLIB_POLL_CEILING (None = the defaults)
RUNS = {"before": "2", "after": None}


def long_sleep(seconds: float, index: int) -> int:
    """A long-running call (``index`` makes each call its own task)."""
    import time

    time.sleep(seconds)
    return index


class QueryCounter:
    """Wraps a spawner's ``states`` and ``find_tagged``: the times of the calls (time.monotonic)."""

    def __init__(self, spawner) -> None:
        self.times: list[float] = []
        self._lock = threading.Lock()
        for name in ("states", "find_tagged"):
            setattr(spawner, name, self._wrap(getattr(spawner, name)))

    def _wrap(self, method):
        def counted(*args, **kwargs):
            with self._lock:
                self.times.append(time.monotonic())
            return method(*args, **kwargs)
        return counted

    def between(self, start: float, end: float) -> list[float]:
        with self._lock:
            return [t for t in self.times if start <= t < end]


def measure(label: str, ceiling: Optional[str], jobs: int, window: float, run: bool, seconds: float) -> dict:
    from executorlib import Executor
    from executorlib.spawners.batch import TEMPLATE_DIR

    if ceiling is None:
        os.environ.pop(CEILING_VARIABLE, None)
    else:
        os.environ[CEILING_VARIABLE] = ceiling
    resources: dict = {"job_name": JOB_NAME}
    if not run:
        resources["submission_template"] = C.held_template((TEMPLATE_DIR / "slurm.sh.j2").read_text())
    with C.scratch_dir(f"xlbench-squeue-{label}") as cache:
        exe = Executor(backend="slurm_submission", cache_directory=str(cache), resource_dict=resources)
        counter = QueryCounter(exe._spawner)
        try:
            began = time.monotonic()
            futures = [exe.submit(long_sleep, seconds, i) for i in range(jobs)]
            scheduler = exe._scheduler
            deadline = time.monotonic() + 600
            while len(scheduler._jobs) < jobs:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {len(scheduler._jobs)} of {jobs} calls have a job after 600 s")
                time.sleep(0.2)
            start = time.monotonic()
            submitted = start - began
            print(f"[{label}] {jobs} jobs submitted in {submitted:.1f} s; counting squeue calls for {window:.0f} s",
                  flush=True)
            time.sleep(window)
            end = time.monotonic()
            calls = counter.between(start, end)
            failed = [f for f in futures if f.done()]
            if failed:
                print(f"[{label}] warning: {len(failed)} call(s) ended during the window", flush=True)
        finally:
            exe.shutdown(wait=False, cancel_futures=True)
            time.sleep(2)
            C.cancel_leftovers(JOB_NAME)
    os.environ.pop(CEILING_VARIABLE, None)
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    last_gap = gaps[-1] if gaps else None
    return {"label": label, "ceiling": ceiling or "default (30)", "calls": len(calls), "window": end - start,
            "per_hour": len(calls) * 3600 / (end - start), "last_gap": last_gap,
            "steady_per_hour": 3600 / last_gap if last_gap else None, "submitted": submitted}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100, help="long-running calls (default 100)")
    parser.add_argument("--window", type=float, default=300.0, help="seconds counted per run (default 300)")
    parser.add_argument("--seconds", type=float, default=600.0, help="how long each call sleeps (default 600)")
    parser.add_argument("--run", action="store_true", help="let the jobs run instead of holding them")
    parser.add_argument("--only", choices=sorted(RUNS), help="one run only")
    args = parser.parse_args(argv)
    if not C.slurm_available():
        print("bench_squeue: no SLURM cluster answers (start one with: bash scripts/start_slurm.sh)")
        return 1
    C.print_header("squeue calls per hour while waiting on long-running jobs")
    print(f"queue before the runs: {C.slurm_queue_summary()}; jobs {'running' if args.run else 'held'}", flush=True)
    rows = []
    for label, ceiling in RUNS.items():
        if args.only and label != args.only:
            continue
        rows.append(measure(label, ceiling, args.jobs, args.window, args.run, args.seconds))
    C.print_table(
        f"{args.jobs} long-running jobs, squeue calls counted over {args.window:.0f} s",
        ["run", "EXECUTORLIB_POLL_CEILING", "calls in window", "per hour (window)", "last gap (s)",
         "per hour (steady)"],
        [(r["label"], r["ceiling"], r["calls"], r["per_hour"], r["last_gap"], r["steady_per_hour"]) for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
