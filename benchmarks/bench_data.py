"""Data: a large numpy argument and result (default 200 MB each): wall time and bytes on disk.

The task is ``double(a) = a * 2`` on a float64 array of ``--megabytes`` MB. Timed: the whole
round trip (submit, the job, the result back in the caller), and ``submit()`` alone. Bytes on
disk: everything the cache holds for the task once it is done.

Peak memory: one local round trip in a fresh process, as the peak resident set size (RSS) of the
caller during the round trip (it holds the argument before it starts) and of the job's worker
process (it reads the task, runs, writes the result).

Floors: ``np.save``/``np.load`` of argument and result through a file in-process (what a
hand-written file hand-over costs), and ``ProcessPoolExecutor`` (pickles through a pipe, nothing on
disk).

    python benchmarks/bench_data.py [--megabytes 200] [--slurm] [--peer-python /tmp/peers/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def double(a):
    return a * 2


def make_array(megabytes: int):
    import numpy as np

    # random floats: incompressible, like most simulation data (an arange would flatter gzip)
    return np.random.default_rng(0).random(megabytes * 1024 * 1024 // 8)


def check(a, result) -> None:
    assert result.shape == a.shape and result[-1] == 2 * a[-1] and result[1] == 2 * a[1]


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def median_run(run, repeat: int) -> dict:
    """The run with the median round-trip time of ``repeat`` runs."""
    rows = sorted((run() for _ in range(repeat)), key=lambda row: row["wall"])
    return rows[len(rows) // 2]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


# -- floors ----------------------------------------------------------------------------------------
def floor_files(a, fsync: bool = False) -> dict:
    import numpy as np

    def save(path: Path, array) -> None:
        with open(path, "wb") as f:
            np.save(f, array)
            if fsync:  # what the task store does before renaming a file into place
                f.flush()
                os.fsync(f.fileno())

    with C.scratch_dir("xlbench-data-floor") as folder:
        def roundtrip():
            save(folder / "arg.npy", a)
            result = double(np.load(folder / "arg.npy"))
            save(folder / "out.npy", result)
            return np.load(folder / "out.npy")

        wall, result = timed(roundtrip)
        check(a, result)
        return {"wall": wall, "submit": None, "bytes": disk_bytes(folder)}


def floor_pool(a) -> dict:
    with ProcessPoolExecutor(max_workers=1) as pool:
        pool.submit(int, 0).result()  # start the worker outside the timing
        wall, result = timed(lambda: pool.submit(double, a).result())
    check(a, result)
    return {"wall": wall, "submit": None, "bytes": 0}


# -- ours ------------------------------------------------------------------------------------------
def ours(a, backend: str) -> dict:
    from executorlib import Executor

    base = os.getcwd() if backend != "local" else None
    with C.scratch_dir("xlbench-data", base=base) as cache:
        options = {"resource_dict": {"job_name": f"{C.JOB_PREFIX}-data"}} if backend != "local" else {}
        with Executor(backend=backend, cache_directory=str(cache), **options) as exe:
            start = time.perf_counter()
            future = exe.submit(double, a)
            submit = time.perf_counter() - start
            submitted = time.time()
            resolved = []
            future.add_done_callback(lambda f: resolved.append(time.time()))
            result = future.result()
            wall = time.perf_counter() - start
            returned = time.time()
        check(a, result)
        files = {p.name: p.stat().st_size for p in Path(cache).rglob("*") if p.is_file()}
        import h5py

        result_file = next(Path(cache).rglob("result.h5"))
        with h5py.File(result_file, "r") as f:
            runtime, finished = float(f.attrs["runtime"]), float(f.attrs["finished"])
        phases = {"submit()": submit,
                  "to function start (job start, imports, read task.h5)": finished - runtime - submitted,
                  "run": runtime,
                  "result write (pickle, HDF5, fsync)": result_file.stat().st_mtime - finished,
                  "to resolved (poll, read result.h5)": resolved[0] - result_file.stat().st_mtime,
                  "result() returns": returned - resolved[0]}
        return {"wall": wall, "submit": submit, "bytes": disk_bytes(cache), "files": files, "phases": phases}


# -- peak memory -----------------------------------------------------------------------------------
def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # Linux: restarts VmHWM from the current RSS
        f.write("5")


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_child(megabytes: int) -> None:
    """Run in a fresh process: one local round trip; print the peaks as JSON."""
    a = make_array(megabytes)
    _reset_peak_rss()
    ours(a, "local")
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the job's worker: our only child
    print(json.dumps({"caller": _peak_rss_mb(), "worker": worker, "array": a.nbytes / 2**20}))


def peak_rss(megabytes: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--megabytes", str(megabytes), "--peak-child"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# -- peers -----------------------------------------------------------------------------------------
def original(a, backend: str) -> dict:
    import executorlib
    from executorlib.api import TestClusterExecutor

    with C.scratch_dir("xlbench-data-orig") as cache:
        if backend == "local":
            exe = TestClusterExecutor(cache_directory=str(cache))
        else:
            exe = executorlib.SlurmClusterExecutor(
                cache_directory=str(cache),
                resource_dict={"job_name": f"{C.JOB_PREFIX}-data", "partition": C.slurm_partition()})
        with exe:
            start = time.perf_counter()
            future = exe.submit(double, a)
            submit = time.perf_counter() - start
            result = future.result()
            wall = time.perf_counter() - start
        check(a, result)
        return {"wall": wall, "submit": submit, "bytes": disk_bytes(cache)}


def original_zmq(a) -> dict:
    import executorlib

    with executorlib.SingleNodeExecutor(max_workers=1) as exe:
        start = time.perf_counter()
        future = exe.submit(double, a)
        submit = time.perf_counter() - start
        result = future.result()
        wall = time.perf_counter() - start
    check(a, result)
    return {"wall": wall, "submit": submit, "bytes": 0}


def submitit_run(a, backend: str) -> dict:
    import submitit

    with C.scratch_dir("xlbench-data-submitit") as folder:
        exe = submitit.AutoExecutor(folder=str(folder), cluster="local" if backend == "local" else "slurm")
        if backend == "local":
            exe.update_parameters(timeout_min=10)
        else:
            exe.update_parameters(timeout_min=10, slurm_partition=C.slurm_partition(),
                                  slurm_job_name=f"{C.JOB_PREFIX}-data")
        start = time.perf_counter()
        job = exe.submit(double, a)
        submit = time.perf_counter() - start
        result = job.result()
        wall = time.perf_counter() - start
        check(a, result)
        return {"wall": wall, "submit": submit, "bytes": disk_bytes(folder)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200, help="size of the argument (and of the result)")
    parser.add_argument("--slurm", action="store_true", help="also run it as a SLURM job (one job)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per local variant (median reported)")
    parser.add_argument("--peak-child", action="store_true", help=argparse.SUPPRESS)
    C.add_peer_arguments(parser)
    options = parser.parse_args()
    if options.peak_child:
        peak_child(options.megabytes)
        return
    backends = ["local"] + (["slurm_submission"] if options.slurm and C.slurm_available() else [])
    a = make_array(options.megabytes)

    if options.as_peer:
        rows = []
        for backend in backends:
            if options.as_peer == "executorlib":
                name = "TestClusterExecutor (files)" if backend == "local" else "SlurmClusterExecutor"
                repeat = options.repeat if backend == "local" else 1
                rows.append(dict(median_run(lambda: original(a, backend), repeat), what=name, backend=backend))
                if backend == "local":
                    rows.append(dict(median_run(lambda: original_zmq(a), repeat), what="SingleNodeExecutor (zmq)",
                                     backend=backend))
            else:
                repeat = options.repeat if backend == "local" else 1
                rows.append(dict(median_run(lambda: submitit_run(a, backend), repeat), what="AutoExecutor",
                                 backend=backend))
            C.cancel_leftovers(f"{C.JOB_PREFIX}-data")
        C.report_to_parent(rows)
        return

    C.print_header(f"Data: a {options.megabytes} MB numpy argument and a {options.megabytes} MB result")
    print(f"median of {options.repeat} runs for every local variant, one run on SLURM")
    rows = [dict(median_run(lambda: floor_files(a), options.repeat), library="floor",
                 what="np.save/np.load via files", backend="-"),
            dict(median_run(lambda: floor_files(a, fsync=True), options.repeat), library="floor",
                 what="np.save+fsync/np.load via files", backend="-"),
            dict(median_run(lambda: floor_pool(a), options.repeat), library="floor",
                 what="ProcessPoolExecutor (pipe)", backend="-")]
    files, phases = {}, {}
    for backend in backends:
        mine = median_run(lambda: ours(a, backend), options.repeat if backend == "local" else 1)
        files[backend] = mine.pop("files")
        phases[backend] = mine.pop("phases")
        rows.append(dict(mine, library="ours", what="Executor", backend=backend))
        C.cancel_leftovers(f"{C.JOB_PREFIX}-data")
    if options.peer_python:
        passthrough = ["--megabytes", str(options.megabytes), "--repeat", str(options.repeat)] + (
            ["--slurm"] if options.slurm else [])
        for library in C.peer_libraries(options.peer_python):
            version = C.peer_version(options.peer_python, library)
            for row in C.run_peer(options.peer_python, __file__, library, passthrough) or []:
                rows.append(dict(row, library=f"{library} {version}"))
    reference = rows[0]["wall"]
    C.print_table(
        "Round trip, seconds and bytes on disk",
        ["library", "executor", "backend", "round trip s", "ratio to np.save floor", "submit() s", "MB on disk"],
        [[r["library"], r["what"], r["backend"], r["wall"], C.ratio(r["wall"], reference), r["submit"],
          r["bytes"] / 1e6] for r in rows],
    )
    C.print_table("Ours: where the time goes (s, the median run)", ["phase"] + list(phases),
                  [[name] + [phases[b][name] for b in phases] for name in next(iter(phases.values()))])
    peak = peak_rss(options.megabytes)
    C.print_table(f"Ours: peak RSS of one local round trip in a fresh process (MB; the argument is "
                  f"{peak['array']:.0f} MB)", ["process", "peak RSS MB"],
                  [["caller (holds the argument)", peak["caller"]], ["job worker", peak["worker"]]])
    for backend, sizes in files.items():
        print(f"\nours ({backend}) cache files: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(sizes.items())))


if __name__ == "__main__":
    main()
