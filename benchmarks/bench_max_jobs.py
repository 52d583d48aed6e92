"""Many small calls on SLURM: ``max_jobs=K`` worker jobs against one job per call and bare sbatch.

Measured side by side in one run, on the real cluster (each phase waits for the queue to empty,
so that no phase runs on another's cores):

    one job per call   ``Executor(backend="slurm_submission")``, N_single trivial calls
    max_jobs=K         the same Executor with ``max_jobs=K``, N_many trivial calls; the most jobs
                       under its cache in squeue at once (sampled every 0.2 s), the worker jobs
                       submitted (sbatch calls), status queries (squeue) and scheduler passes
    one plain job      one sbatch job whose Python runs N_loop calls in a plain loop: wall from
                       sbatch to its result file, so the floor includes one dispatch
    max_jobs=K         N_loop trivial calls
    seed shapes        the seed's three sums and its chain of four add_funct, with max_jobs=K,
                       against the bare-sbatch floor of 3 and of 4 chained one-line jobs

    python benchmarks/bench_max_jobs.py [--jobs 2] [--single 30] [--many 200] [--loop 1000]

Worker jobs end after EXECUTORLIB_WORKER_IDLE seconds without a runnable call (3 s here).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

os.environ.setdefault("EXECUTORLIB_WORKER_IDLE", "3")


def add(a, b):
    return a + b


class QueueWatch(threading.Thread):
    """The most jobs whose working directory is under ``folder`` queued or running at once."""

    def __init__(self, folder: Path):
        super().__init__(daemon=True)
        self.folder = str(folder)
        self.most = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            out = subprocess.run(["squeue", "-h", "-o", "%T|%Z"], capture_output=True, text=True).stdout
            mine = [line for line in out.splitlines() if line.split("|", 1)[-1].startswith(self.folder)
                    and line.split("|", 1)[0] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")]
            self.most = max(self.most, len(mine))
            time.sleep(0.2)


def wait_queue_empty(folder: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-o", "%Z"], capture_output=True, text=True).stdout
        if not any(line.startswith(str(folder)) for line in out.splitlines()):
            return
        time.sleep(0.5)


def run_executor(n: int, max_jobs: int | None, workload: str = "independent") -> dict:
    from executorlib import Executor

    with C.scratch_dir("xlbench-maxjobs", base=os.getcwd()) as folder:
        cache = folder / "cache"
        watch = QueueWatch(folder)
        watch.start()
        begin = time.time()
        exe = Executor(backend="slurm_submission", cache_directory=str(cache), max_jobs=max_jobs)
        counts = {"states": 0}
        spawner = exe._spawner
        inner = getattr(spawner, "inner", spawner)
        query = inner.states

        def counted(job_ids):  # one squeue per call of states()
            counts["states"] += 1
            return query(job_ids)

        inner.states = counted
        try:
            if workload == "chain":
                future = exe.submit(add, 1, 1)
                for _ in range(n - 1):
                    future = exe.submit(add, future, 1)
                assert future.result() == n + 1
            else:
                futures = [exe.submit(add, i, i) for i in range(n)]
                assert [f.result() for f in futures] == [2 * i for i in range(n)]
            wall = time.time() - begin
        finally:
            exe.shutdown(wait=True, cancel_futures=True)
        watch.stop.set()
        watch.join()
        workers = getattr(spawner, "sbatch_calls", None)
        wait_queue_empty(folder)
    return {"n": n, "wall": wall, "per_call": wall / n, "most_in_queue": watch.most,
            "sbatch": workers if workers is not None else n, "squeue": counts["states"]}


def plain_job(n: int) -> float:
    """One sbatch job that runs ``n`` calls in a plain Python loop; wall from sbatch to its result."""
    with C.scratch_dir("xlbench-maxjobs-plain", base=os.getcwd()) as folder:
        result = folder / "result.txt"
        script = folder / "job.sh"
        code = (f"def add(a, b):\n    return a + b\nout = [add(i, i) for i in range({n})]\n"
                f"open('{result}.tmp', 'w').write(str(len(out)))\n")
        (folder / "loop.py").write_text(code)
        script.write_text("\n".join([
            "#!/bin/bash", f"#SBATCH --job-name={C.JOB_PREFIX}-plain", f"#SBATCH --output={folder}/job.out",
            f"{sys.executable} {folder}/loop.py && mv {result}.tmp {result}", ""]))
        begin = time.time()
        subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, check=True)
        while not result.exists():
            time.sleep(0.05)
        return time.time() - begin


def bare_chain(n: int) -> float:
    """``n`` one-line sbatch jobs chained with afterok (the seed's chain by hand)."""
    with C.scratch_dir("xlbench-maxjobs-bare", base=os.getcwd()) as folder:
        begin = time.time()
        previous = None
        last = folder / f"r{n - 1}"
        for i in range(n):
            script = folder / f"s{i}.sh"
            script.write_text(f"#!/bin/bash\n#SBATCH --job-name={C.JOB_PREFIX}-bare\n"
                              f"#SBATCH --output={folder}/o{i}\n{sys.executable} -c 'print({i})' > {folder}/r{i}\n")
            command = ["sbatch", "--parsable"]
            if previous:
                command.append(f"--dependency=afterok:{previous}")
            previous = subprocess.run(command + [str(script)], capture_output=True, text=True,
                                      check=True).stdout.strip().split(";")[0]
        while not last.exists() or not last.read_text().strip():
            time.sleep(0.05)
        return time.time() - begin


def bare_independent(n: int) -> float:
    with C.scratch_dir("xlbench-maxjobs-bare", base=os.getcwd()) as folder:
        begin = time.time()
        for i in range(n):
            script = folder / f"s{i}.sh"
            script.write_text(f"#!/bin/bash\n#SBATCH --job-name={C.JOB_PREFIX}-bare\n"
                              f"#SBATCH --output={folder}/o{i}\n{sys.executable} -c 'print({i})' > {folder}/r{i}.tmp "
                              f"&& mv {folder}/r{i}.tmp {folder}/r{i}\n")
            subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, check=True)
        while not all((folder / f"r{i}").exists() for i in range(n)):
            time.sleep(0.05)
        return time.time() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="max_jobs (default 2)")
    parser.add_argument("--single", type=int, default=30, help="calls with one job each (default 30)")
    parser.add_argument("--many", type=int, default=200, help="calls with max_jobs (default 200)")
    parser.add_argument("--loop", type=int, default=1000, help="calls against one plain job (default 1000)")
    args = parser.parse_args()
    if not C.slurm_available():
        print("no SLURM cluster answers (bash scripts/start_slurm.sh): nothing to measure")
        return
    C.print_header("max_jobs: many small calls on SLURM")
    print(f"cluster: {C.slurm_queue_summary()}; EXECUTORLIB_WORKER_IDLE={os.environ['EXECUTORLIB_WORKER_IDLE']} s")
    k = args.jobs

    single = run_executor(args.single, None)
    many = run_executor(args.many, k)
    rows = [[f"one job per call, {single['n']} calls", C.fmt(single["wall"]), C.fmt(single["per_call"]), 1,
             single["most_in_queue"], single["sbatch"], single["squeue"]],
            [f"max_jobs={k}, {many['n']} calls", C.fmt(many["wall"]), C.fmt(many["per_call"]),
             C.fmt(C.ratio(single["per_call"], many["per_call"]), 1), many["most_in_queue"], many["sbatch"],
             many["squeue"]]]
    C.print_table("Trivial calls, wall seconds (target: max_jobs at least 20x faster per call, never more than K "
                  "jobs in the queue)",
                  ["run", "wall", "s per call", "speed-up per call", "most jobs in queue", "sbatch calls",
                   "squeue calls"], rows)

    floor = plain_job(args.loop)
    loop = run_executor(args.loop, k)
    C.print_table(f"{args.loop} trivial calls (target: at most 1.5x one plain job, its dispatch included)",
                  ["run", "wall", "ratio"],
                  [["one sbatch job, plain loop", C.fmt(floor), 1],
                   [f"max_jobs={k}", C.fmt(loop["wall"]), C.fmt(C.ratio(loop["wall"], floor), 2)]])

    sums_floor, chain_floor = bare_independent(3), bare_chain(4)
    sums, chain = run_executor(3, k), run_executor(4, k, workload="chain")
    C.print_table("The seed's shapes (target: faster than the bare-sbatch floor)",
                  ["workload", "bare sbatch", f"max_jobs={k}", "ratio"],
                  [["three sums", C.fmt(sums_floor), C.fmt(sums["wall"]), C.fmt(C.ratio(sums["wall"], sums_floor), 2)],
                   ["chain of four add_funct", C.fmt(chain_floor), C.fmt(chain["wall"]),
                    C.fmt(C.ratio(chain["wall"], chain_floor), 2)]])
    C.cancel_leftovers()


if __name__ == "__main__":
    main()
