"""Submit throughput: seconds per ``submit()`` call, on the local backend and on SLURM.

``submit()`` computes the call's key, checks the cache and writes the task file; the job itself is
started by the scheduler thread. So two numbers matter: how long ``submit()`` blocks the caller,
and (SLURM) how fast the tasks reach the queue, i.e. seconds per job until the last job id is
known, against a bare loop of ``sbatch --parsable --hold`` on a tiny script (the floor).

So that nothing runs and the numbers are not mixed with running jobs:
* local: ``max_workers=1`` and a first task that sleeps through the measurement;
* SLURM: the library's own job template plus ``#SBATCH --hold`` (the jobs stay PENDING and are
  cancelled at the end, as are the floor's).

    python benchmarks/bench_submit.py [--local-n 300] [--slurm-n 100] [--peer-python ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
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


def held_until(release: str, limit: float = 3600.0) -> None:
    """Occupy the only worker until the file ``release`` exists (at most ``limit`` seconds)."""
    import os
    import time

    deadline = time.monotonic() + limit
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def per_call(n: int, submit) -> tuple[list, list[float], float]:
    durations, futures = [], []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        futures.append(submit(i))
        durations.append(time.perf_counter() - t)
    return futures, durations, time.perf_counter() - start


def summary(durations: list[float]) -> dict:
    return {"median": C.median(durations), "p90": C.percentile(durations, 90), "max": max(durations),
            "mean": C.mean(durations)}


# -- ours ------------------------------------------------------------------------------------------
def ours_local(n: int) -> dict:
    from executorlib import Executor

    with C.scratch_dir("xlbench-submit") as cache:
        exe = Executor(backend="local", max_workers=1, cache_directory=str(cache))
        release = os.path.join(str(cache), "release")
        try:
            blocker = exe.submit(held_until, release)
            wait_until(blocker.running, 60, "the first task to start")
            _, durations, total = per_call(n, lambda i: exe.submit(add, i, i))
        finally:
            # running tasks finish at shutdown, as in concurrent.futures: release the blocker
            open(release, "w").close()
            exe.shutdown(wait=True, cancel_futures=True)
    return dict(summary(durations), total=total, n=n)


def ours_slurm(n: int) -> dict:
    import executorlib.spawners.batch as batch
    from executorlib import Executor

    template = C.held_template((batch.TEMPLATE_DIR / "slurm.sh.j2").read_text())
    calls: list[tuple[str, float]] = []
    original_run = batch.run_command

    def timed_run(command, *args, **kwargs):  # every sbatch goes through pysqa into this
        start = time.perf_counter()
        try:
            return original_run(command, *args, **kwargs)
        finally:
            calls.append((command[0], time.perf_counter() - start))

    batch.run_command = timed_run
    spawner_times: list[float] = []
    try:
        with C.scratch_dir("xlbench-submit") as cache:
            exe = Executor(backend="slurm_submission", cache_directory=str(cache),
                           resource_dict={"submission_template": template,
                                          "job_name": f"{C.JOB_PREFIX}-submit"})
            spawner_submit = exe._spawner.submit

            def timed_submit(*args, **kwargs):  # rendering + pysqa + sbatch, per job
                start = time.perf_counter()
                try:
                    return spawner_submit(*args, **kwargs)
                finally:
                    spawner_times.append(time.perf_counter() - start)

            exe._spawner.submit = timed_submit
            try:
                start = time.perf_counter()
                _, durations, total = per_call(n, lambda i: exe.submit(add, i, i))
                wait_until(lambda: exe._scheduler._inbox.empty() and len(exe._scheduler._by_job) == n,
                           3600, "every job id")
                queued = time.perf_counter() - start
            finally:
                exe.shutdown(wait=True, cancel_futures=True)
                C.cancel_leftovers()
    finally:
        batch.run_command = original_run
    sbatch = [d for name, d in calls if name == "sbatch"]
    return dict(summary(durations), total=total, n=n, queued=queued, per_job=queued / n,
                sbatch=C.median(sbatch), spawner=C.median(spawner_times))


def floor_slurm(n: int) -> dict:
    """A bare loop: write a tiny script, ``sbatch --parsable --hold`` it."""
    sbatch, ids = [], []
    with C.scratch_dir("xlbench-submit-floor") as folder:
        start = time.perf_counter()
        try:
            for i in range(n):
                script = folder / f"task{i}.sh"
                script.write_text(f"#!/bin/bash\n#SBATCH --job-name={C.JOB_PREFIX}-floor\n"
                                  f"#SBATCH --output={folder}/task{i}.out\n#SBATCH --hold\necho {2 * i}\n")
                t = time.perf_counter()
                out = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True,
                                     check=True, cwd=folder).stdout
                sbatch.append(time.perf_counter() - t)
                ids.append(out.strip().split(";")[0])
            queued = time.perf_counter() - start
        finally:
            C.scancel(ids)
    return {"n": n, "queued": queued, "per_job": queued / n, "sbatch": C.median(sbatch),
            "median": None, "p90": None, "max": None, "total": None}


# -- peers -----------------------------------------------------------------------------------------
ORIGINAL_HELD_TEMPLATE = """#!/bin/bash
#SBATCH --output=time.out
#SBATCH --job-name={{job_name}}
#SBATCH --chdir={{working_directory}}
#SBATCH --get-user-env=L
#SBATCH --hold
#SBATCH --cpus-per-task={{cores}}

{{command}}
"""


#: the original's executors run every queued task on shutdown() (also from __del__, and also with
#: cancel_futures=True): they are kept alive and the peer process exits with os._exit instead
_KEEP_ALIVE: list = []


def original_local(n: int) -> dict:
    import executorlib

    exe = executorlib.SingleNodeExecutor(max_workers=1)
    _KEEP_ALIVE.append(exe)
    blocker = exe.submit(sleeper, 3600)
    wait_until(blocker.running, 60, "the first task to start")
    _, durations, total = per_call(n, lambda i: exe.submit(add, i, i))
    return dict(summary(durations), total=total, n=n)


def original_slurm(n: int) -> dict:
    import executorlib

    with C.scratch_dir("xlbench-submit-orig") as cache:
        exe = executorlib.SlurmClusterExecutor(
            cache_directory=str(cache),
            resource_dict={"submission_template": ORIGINAL_HELD_TEMPLATE, "job_name": f"{C.JOB_PREFIX}-submit"})
        _KEEP_ALIVE.append(exe)
        try:
            start = time.perf_counter()
            _, durations, total = per_call(n, lambda i: exe.submit(add, i, i))
            wait_until(lambda: len(C.my_slurm_jobs()) >= n, 3600, "every job in the queue")
            queued = time.perf_counter() - start
        finally:
            C.cancel_leftovers()
    return dict(summary(durations), total=total, n=n, queued=queued, per_job=queued / n, sbatch=None)


def submitit_slurm(n: int) -> dict:
    import submitit

    with C.scratch_dir("xlbench-submit-submitit") as folder:
        exe = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        exe.update_parameters(slurm_partition=C.slurm_partition(), timeout_min=5,
                              slurm_job_name=f"{C.JOB_PREFIX}-submit",
                              slurm_additional_parameters={"hold": True})
        jobs: list = []
        try:
            start = time.perf_counter()
            jobs, durations, total = per_call(n, lambda i: exe.submit(add, i, i))
            queued = time.perf_counter() - start  # submit() returns after sbatch
        finally:
            C.scancel([job.job_id for job in jobs])
            C.cancel_leftovers()
    return dict(summary(durations), total=total, n=n, queued=queued, per_job=queued / n, sbatch=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local-n", type=int, default=300, help="submit() calls on the local backend")
    parser.add_argument("--slurm-n", type=int, default=100, help="submit() calls on SLURM (0 to skip)")
    C.add_peer_arguments(parser)
    options = parser.parse_args()
    slurm_n = options.slurm_n if options.slurm_n and C.slurm_available() else 0
    passthrough = ["--local-n", str(options.local_n), "--slurm-n", str(slurm_n)]

    if options.as_peer == "executorlib":  # one backend per peer process (see _KEEP_ALIVE)
        if options.local_n:
            rows = [dict(original_local(options.local_n), backend="local (SingleNodeExecutor)")]
        else:
            rows = [dict(original_slurm(slurm_n), backend="slurm (SlurmClusterExecutor)")] if slurm_n else []
        C.report_to_parent(rows)
        C.kill_descendants()
        os._exit(0)
    if options.as_peer == "submitit":
        C.report_to_parent([dict(submitit_slurm(slurm_n), backend="slurm")] if slurm_n else [])
        return

    C.print_header("Submit throughput")
    if slurm_n:
        print(f"SLURM queue before: {C.slurm_queue_summary()}")
    rows = [dict(ours_local(options.local_n), backend="local", library="ours")]
    if slurm_n:
        rows.append(dict(ours_slurm(slurm_n), backend="slurm_submission", library="ours"))
        rows.append(dict(floor_slurm(slurm_n), backend="slurm", library="floor: sbatch loop"))
    if options.peer_python:
        for library in C.peer_libraries(options.peer_python):
            version = C.peer_version(options.peer_python, library)
            runs = [passthrough]
            if library == "executorlib":
                runs = [["--local-n", str(options.local_n), "--slurm-n", "0"],
                        ["--local-n", "0", "--slurm-n", str(slurm_n)]]
            for arguments in runs:
                for row in C.run_peer(options.peer_python, __file__, library, arguments) or []:
                    rows.append(dict(row, library=f"{library} {version}"))
    C.print_table(
        "submit(): seconds per call as the caller sees it",
        ["library", "backend", "calls", "median s", "p90 s", "max s", "all submit() calls s"],
        [[r["library"], r["backend"], r["n"], r["median"], r["p90"], r["max"], r["total"]] for r in rows],
    )
    slurm_rows = [r for r in rows if "queued" in r]
    if slurm_rows:
        floor = next(r for r in slurm_rows if r["library"].startswith("floor"))
        C.print_table(
            "SLURM: seconds per job until every job is in the queue",
            ["library", "jobs", "all queued s", "s per job", "ratio to floor", "median sbatch s",
             "median spawner.submit s"],
            [[r["library"], r["n"], r["queued"], r["per_job"], C.ratio(r["per_job"], floor["per_job"]),
              r.get("sbatch"), r.get("spawner")] for r in slurm_rows],
        )


if __name__ == "__main__":
    main()
