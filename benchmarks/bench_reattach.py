"""Reattach: N calls whose results are already in the cache, submitted again from a new process.

For each N a cache holding the results of ``add(i, i)`` for ``i < N`` is written first (by a
separate process, through the task store's own write functions, exactly the files a finished job
leaves: task.h5, result.h5 and result.pkl), then a fresh interpreter runs::

    with Executor(backend=..., cache_directory=cache) as exe:
        futures = [exe.submit(add, i, i) for i in range(N)]
        values = [f.result() for f in futures]

and reports its import, Executor start, submit and result times. Then a second fresh interpreter
does the same: the first one read every result from its result.h5 and left a result pack
(executorlib.result_index) that the second reads instead, as the next session of a user would. The whole child (interpreter
start-up included) is timed from outside too. Nothing may run: the child checks that every
Future is already done when submit() returns and stops at the first one that is not.

Target (issue 4): 4,000 cached calls in a new process in under 2 s, growing linearly.

    python benchmarks/bench_reattach.py [--sizes 250,1000,4000] [--backend local|slurm_submission]
                                        [--peer-python /tmp/peers/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

_T0 = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def add(a, b):
    return a + b


# -- ours ------------------------------------------------------------------------------------------
def populate_ours(cache: str, n: int) -> None:
    from executorlib.resources import merge_resources
    from executorlib.store import TaskStore
    from executorlib.task import compute_key

    store = TaskStore(cache)
    resources = merge_resources(None, None)
    for i in range(n):
        key = compute_key(add, (i, i), {}, name="add")
        store.write_task(key, "add", store.pickle_call(add, (i, i), {}), resources, [])
        store.write_result(key, add(i, i), 0.0)


def resubmit_ours(cache: str, n: int, backend: str) -> dict:
    t_start = time.perf_counter()
    from executorlib import Executor

    t_import = time.perf_counter()
    exe = Executor(backend=backend, cache_directory=cache)
    t_created = time.perf_counter()
    futures = []
    try:
        for i in range(n):
            future = exe.submit(add, i, i)
            if not future.done():
                raise RuntimeError(f"add({i}, {i}) was not served from the cache: the benchmark is broken")
            futures.append(future)
        t_submitted = time.perf_counter()
        values = [f.result() for f in futures]
        t_results = time.perf_counter()
    except BaseException:
        exe.shutdown(wait=True, cancel_futures=True)
        raise
    exe.shutdown(wait=True)
    t_shutdown = time.perf_counter()
    assert values == [2 * i for i in range(n)]
    return {"interpreter_to_main": t_start - _T0, "import": t_import - t_start,
            "executor": t_created - t_import, "submit": t_submitted - t_created,
            "results": t_results - t_submitted, "shutdown": t_shutdown - t_results,
            "in_process": t_shutdown - t_start}


# -- the original executorlib ---------------------------------------------------------------------
def populate_original(cache: str, n: int) -> None:
    from executorlib.standalone.hdf import dump
    from executorlib.standalone.serialize import serialize_funct

    for i in range(n):
        # the key rule of its file scheduler: arguments as a list, resources not hashed
        key, data, _ = serialize_funct(fn=add, fn_args=[i, i], fn_kwargs={}, resource_dict={"cores": 1})
        # what its worker leaves: the input file renamed to <key>_o.h5 with output and runtime added
        dump(os.path.join(cache, key + "_o.h5"), {**data, "output": add(i, i), "runtime": 0.0})


def resubmit_original(cache: str, n: int, backend: str) -> dict:
    t_start = time.perf_counter()
    import executorlib
    from executorlib.api import TestClusterExecutor

    t_import = time.perf_counter()
    if backend == "slurm_submission":
        exe = executorlib.SlurmClusterExecutor(cache_directory=cache)
    else:  # its file-based scheduler with local subprocesses instead of SLURM jobs
        exe = TestClusterExecutor(cache_directory=cache)
    t_created = time.perf_counter()
    futures = [exe.submit(add, i, i) for i in range(n)]
    t_submitted = time.perf_counter()
    values = [f.result() for f in futures]
    t_results = time.perf_counter()
    exe.shutdown(wait=True)
    t_shutdown = time.perf_counter()
    ran = [f for f in os.listdir(cache) if f.endswith("_i.h5")]
    assert not ran, f"{len(ran)} calls were not served from the cache: the benchmark is broken"
    assert values == [2 * i for i in range(n)]
    return {"interpreter_to_main": t_start - _T0, "import": t_import - t_start,
            "executor": t_created - t_import, "submit": t_submitted - t_created,
            "results": t_results - t_submitted, "shutdown": t_shutdown - t_results,
            "in_process": t_shutdown - t_start}


# -- driver ----------------------------------------------------------------------------------------
def run_child(python: str, phase: str, cache: str, n: int, backend: str, library: str) -> tuple[dict, float]:
    command = [python, os.path.abspath(__file__), "--phase", phase, "--cache", cache, "--n", str(n),
               "--backend", backend, "--library", library]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd="/", env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    payload = {}
    for line in done.stdout.splitlines():
        if line.startswith(C.PEER_MARK):
            payload = json.loads(line[len(C.PEER_MARK):])
    return payload, wall


def measure(python: str, sizes: list[int], backend: str, library: str) -> list[dict]:
    rows = []
    for n in sizes:
        with C.scratch_dir(f"xlbench-reattach-{n}") as cache:
            _, populate_wall = run_child(python, "populate", str(cache), n, backend, library)
            payload, wall = run_child(python, "resubmit", str(cache), n, backend, library)
            # again, as the user's next session would: ours now finds the result packs that the
            # first reattach wrote (executorlib.result_index); the original has no such thing
            again, again_wall = run_child(python, "resubmit", str(cache), n, backend, library)
        payload.update(n=n, wall=wall, populate=populate_wall, again=again, again_wall=again_wall)
        rows.append(payload)
        print(f"  {library}: N={n}: {wall:.2f} s in a new process, {again_wall:.2f} s in the next one "
              f"(cache written in {populate_wall:.1f} s)")
        sys.stdout.flush()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="250,1000,4000", help="comma-separated numbers of cached calls")
    parser.add_argument("--backend", default="local", choices=["local", "slurm_submission"],
                        help="backend of the resubmitting Executor (nothing is submitted: all is cached)")
    parser.add_argument("--phase", choices=["populate", "resubmit"], help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--library", default="ours", help=argparse.SUPPRESS)
    C.add_peer_arguments(parser)
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]

    if options.phase:
        original = options.library == "executorlib"
        if options.phase == "populate":
            (populate_original if original else populate_ours)(options.cache, options.n)
            C.report_to_parent({})
        else:
            resubmit = resubmit_original if original else resubmit_ours
            C.report_to_parent(resubmit(options.cache, options.n, options.backend))
        return
    if options.as_peer:
        if options.as_peer != "executorlib":
            C.report_to_parent(None)  # submitit keeps no cache of results to reattach to
            return
        C.report_to_parent(measure(sys.executable, sizes, options.backend, "executorlib"))
        return

    C.print_header("Reattach: cached calls resubmitted from a new process")
    print(f"backend: {options.backend}; sizes: {sizes}")
    results = {"executorlib (ours)": measure(sys.executable, sizes, options.backend, "ours")}
    if options.peer_python:
        libraries = [lib for lib in C.peer_libraries(options.peer_python) if lib == "executorlib"]
        for library in libraries:
            version = C.peer_version(options.peer_python, library)
            payload = C.run_peer(options.peer_python, __file__, library,
                                 ["--sizes", options.sizes, "--backend", options.backend])
            if payload:
                results[f"[{library} {version}]"] = payload
    for name, rows in results.items():
        table = []
        previous = None
        for row in rows:
            growth = None
            if previous is not None:  # 1.0 = linear, 4.0 = quadratic for a 4x larger N
                growth = C.ratio(row["submit"] + row["results"], previous["submit"] + previous["results"]) / (
                    row["n"] / previous["n"])
            again = row.get("again") or {}
            table.append([row["n"], row["wall"], row["import"], row["executor"], row["submit"], row["results"],
                          row["shutdown"], (row["submit"] + row["results"]) / row["n"] * 1e6, growth,
                          row.get("again_wall"),
                          (again["submit"] + again["results"]) / row["n"] * 1e6 if again else None])
            previous = row
        C.print_table(f"{name}: seconds, backend={options.backend}",
                      ["N", "new process total", "import", "Executor()", "submit all", "results",
                       "shutdown", "us per call", "per-call growth vs previous N",
                       "next process total", "next: us per call"], table)
    mine = results["executorlib (ours)"]
    big = mine[-1]
    print(f"\nours: {big['n']} cached calls in a new process: {big['wall']:.2f} s from the jobs' files, "
          f"{big['again_wall']:.2f} s in the process after it (result packs) (target < 2 s for 4000)")
    for name, rows in results.items():
        if name != "executorlib (ours)" and rows:
            same = [r for r in rows if r["n"] == big["n"]]
            if same:
                print(f"{name}: {same[0]['wall']:.2f} s for N={big['n']}; "
                      f"ratio to ours {C.ratio(same[0]['wall'], big['wall']):.1f}x")


if __name__ == "__main__":
    main()
