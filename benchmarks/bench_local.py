"""Local backend: a chain of dependent trivial tasks and many independent ones, against
``concurrent.futures.ProcessPoolExecutor`` doing the same work.

Every timing covers the whole ``with Executor(...)`` block: start-up, submissions, waiting for
every result, shutdown. Each measured run uses a fresh, empty cache (nothing is served from it).
ProcessPoolExecutor reuses its worker processes and keeps nothing on disk; the local backend
runs every task in a fresh process (forked by its fork server, executorlib.spawners.forkserver,
which is started once per client process: the first Executor of the run pays its start) and
stores every call and result in the cache, so the ratio is the price of per-task processes plus
the on-disk cache. With ``block_allocation=True`` (when the installed version has it) the local
backend keeps persistent workers too (forked by the same fork server).

Then one call is followed step by step (``--parts`` sequential calls, median): submit, task
write, start, run, result write, noticed (see :func:`measure_parts`), so that the table shows
where the time of a call goes.

The script measures the executorlib of the working tree it lives in (it puts the repository first
on ``sys.path`` and ``PYTHONPATH``, for the workers too); peers run in their own interpreter.

    python benchmarks/bench_local.py [--chain 10] [--independent 100] [--workers 2] [--repeat 1]
                                     [--parts 20] [--peer-python /tmp/peers/bin/python]
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def add(a, b):
    return a + b


def check(chain_value: int, values: list, options) -> None:
    assert chain_value == options.chain, chain_value
    assert values == [2 * i for i in range(options.independent)], values[:5]


# -- one implementation = a function (chain, independent) -> None, timed by the caller -----------
def run_ours(options, kind: str, block_allocation: bool = False) -> None:
    from executorlib import Executor

    extra = {"block_allocation": True} if block_allocation else {}
    with Executor(backend="local", max_workers=options.workers, **extra) as exe:
        if kind == "chain":
            future = exe.submit(add, 0, 1)
            for _ in range(options.chain - 1):
                future = exe.submit(add, future, 1)
            check(future.result(), [2 * i for i in range(options.independent)], options)
        else:
            futures = [exe.submit(add, i, i) for i in range(options.independent)]
            check(options.chain, [f.result() for f in futures], options)


def run_pool(options, kind: str) -> None:
    with ProcessPoolExecutor(max_workers=options.workers) as pool:
        if kind == "chain":
            value = 0
            for _ in range(options.chain):  # a Future cannot be an argument: wait for each step
                value = pool.submit(add, value, 1).result()
            check(value, [2 * i for i in range(options.independent)], options)
        else:
            futures = [pool.submit(add, i, i) for i in range(options.independent)]
            check(options.chain, [f.result() for f in futures], options)


def run_original(options, kind: str, file_based: bool = False) -> None:
    import executorlib

    with C.scratch_dir("xlbench-local-orig") as cache:
        if file_based:  # the file-based (cache) scheduler of the submission mode, run locally
            from executorlib.api import TestClusterExecutor

            exe = TestClusterExecutor(cache_directory=str(cache), resource_dict={"cores": 1})
        else:  # the default local executor: one zmq-connected worker process per task
            exe = executorlib.SingleNodeExecutor(max_workers=options.workers)
        with exe:
            if kind == "chain":
                future = exe.submit(add, 0, 1)
                for _ in range(options.chain - 1):
                    future = exe.submit(add, future, 1)
                check(future.result(), [2 * i for i in range(options.independent)], options)
            else:
                futures = [exe.submit(add, i, i) for i in range(options.independent)]
                check(options.chain, [f.result() for f in futures], options)


def run_submitit(options, kind: str) -> None:
    import submitit

    with C.scratch_dir("xlbench-local-submitit") as folder:
        exe = submitit.AutoExecutor(folder=str(folder), cluster="local")
        exe.update_parameters(timeout_min=10)
        if kind == "chain":
            value = 0
            for _ in range(options.chain):  # no dependencies between jobs: wait for each step
                value = exe.submit(add, value, 1).result()
            check(value, [2 * i for i in range(options.independent)], options)
        else:
            # submitit's local executor has no worker limit: it starts every job at once
            jobs = [exe.submit(add, i, i) for i in range(options.independent)]
            check(options.chain, [j.result() for j in jobs], options)


def stamped_add(a, b):
    """add(), and when it started (time.time(): the clocks of this machine's processes agree)."""
    import time as _time

    return a + b, _time.time()


def stamped_add_run(a, b):
    """add(), when it started and when it ended (for the in-memory path: no result.h5 runtime)."""
    import time as _time

    start = _time.time()
    value = a + b
    return value, start, _time.time()


def measure_parts_memory(options) -> dict:
    """Where the time of one call goes on the in-memory path of ``block_allocation=True`` with a
    temporary cache (no task or result file): ``options.parts`` sequential calls, median.

    submit: inside ``exe.submit()``; hand-over: from the end of submit() until the spawner wrote
    the pickled call to an idle worker's input (the scheduler thread wakes, registers the task,
    the spawner pickles the request); start: from there to the first line of the function (the
    worker reads and unpickles the call); run: the function; answer: from the function's end until
    the spawner parsed the outcome from the worker's output (pickling, the pipe, the watch thread
    waking the scheduler loop); noticed: from there until the Future is done (unpickling, the
    Future's callbacks). total: from the submit() call to the Future done.
    """
    from executorlib import Executor, get_key
    from executorlib.spawners.pool import WorkerPoolSpawner

    stamps: dict[str, dict] = {}
    original_submit, original_update = WorkerPoolSpawner.submit, WorkerPoolSpawner._update

    def submit(self, job, dependencies):
        try:
            return original_submit(self, job, dependencies)
        finally:
            stamps.setdefault(job.key, {})["handed"] = time.time()

    def update(self, worker, now):
        key = worker.key
        original_update(self, worker, now)
        if key is not None and key in self._outcomes and "answered" not in stamps.get(key, {}):
            stamps.setdefault(key, {})["answered"] = time.time()

    rows = []
    WorkerPoolSpawner.submit, WorkerPoolSpawner._update = submit, update
    try:
        with Executor(backend="local", max_workers=options.workers, block_allocation=True) as exe:
            assert exe._spawner.direct, "the in-memory path is off"
            exe.submit(stamped_add_run, -1, 1).result()  # warm: workers started
            for i in range(options.parts):
                done_at: list[float] = []
                begin = time.time()
                future = exe.submit(stamped_add_run, i, 1)
                submitted = time.time()
                future.add_done_callback(lambda _f: done_at.append(time.time()))
                value, started, ended = future.result()
                while not done_at:
                    time.sleep(0.0001)
                assert value == i + 1
                s = stamps.get(get_key(future), {})
                handed, answered = s.get("handed", submitted), s.get("answered", ended)
                rows.append({"submit": submitted - begin, "hand-over": handed - submitted,
                             "start": started - handed, "run": ended - started,
                             "answer": answered - ended, "noticed": done_at[0] - answered,
                             "total": done_at[0] - begin})
    finally:
        WorkerPoolSpawner.submit, WorkerPoolSpawner._update = original_submit, original_update
    return {name: C.median([r[name] for r in rows]) for name in rows[0]}


def measure_parts(options, block_allocation: bool = False, cache_directory=None) -> dict:
    """Where the time of one call goes: ``options.parts`` calls one after the other (each waits
    for the previous result), every step stamped with ``time.time()`` and the median reported.

    submit: inside ``exe.submit()``; task write: ``TaskStore.write_task`` (pickles into task.h5,
    in the scheduler thread); start: from the end of the task write to the first line of the
    function (the scheduler hands the task to the spawner, the process starts or the persistent
    worker takes it, task.h5 is read); run: the function (result.h5's runtime); result write:
    from the function's end to result.h5's mtime; noticed: from result.h5's mtime until the
    Future is done (the scheduler loop's look at the disk or its status query, reading the
    result). total: from the submit() call to the Future done.
    """
    from executorlib import Executor, get_key
    from executorlib.store import TaskStore

    stamps: dict[str, dict] = {}
    original_write = TaskStore.write_task

    def write_task(self, key, *args, **kwargs):
        begin = time.time()
        try:
            return original_write(self, key, *args, **kwargs)
        finally:
            stamps.setdefault(key, {}).update(write_begin=begin, write_end=time.time())

    rows = []
    TaskStore.write_task = write_task
    try:
        extra = {"block_allocation": True} if block_allocation else {}
        if cache_directory is not None:  # a named cache: the file path of the block allocation too
            extra["cache_directory"] = cache_directory
        with Executor(backend="local", max_workers=options.workers, **extra) as exe:
            exe.submit(stamped_add, -1, 1).result()  # warm: workers or fork server started
            store = TaskStore(exe._store.directory, create=False, use_index=False)
            for i in range(options.parts):
                done_at: list[float] = []
                begin = time.time()
                future = exe.submit(stamped_add, i, 1)
                submitted = time.time()
                future.add_done_callback(lambda _f: done_at.append(time.time()))
                value, started = future.result()
                while not done_at:  # the callback runs right after result() wakes up
                    time.sleep(0.0001)
                assert value == i + 1
                key = get_key(future)
                info = store.read_result_info(key)
                written = os.stat(store.path(key, "result.h5")).st_mtime_ns / 1e9
                s = stamps.get(key, {})
                rows.append({
                    "submit": submitted - begin,
                    "task write": s.get("write_end", begin) - s.get("write_begin", begin),
                    "start": started - s.get("write_end", begin),
                    "run": info["runtime"],
                    "result write": written - (started + info["runtime"]),
                    "noticed": done_at[0] - written,
                    "total": done_at[0] - begin,
                })
    finally:
        TaskStore.write_task = original_write
    return {name: C.median([r[name] for r in rows]) for name in rows[0]}


def measure(run, options, repeat: int) -> dict:
    result = {}
    for kind in ("chain", "independent"):
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            run(options, kind)
            times.append(time.perf_counter() - start)
        result[kind] = C.median(times)
    return result


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=int, default=10, help="length of the chain of dependent tasks")
    parser.add_argument("--independent", type=int, default=100, help="number of independent tasks")
    parser.add_argument("--workers", type=int, default=2, help="max_workers of every executor")
    parser.add_argument("--repeat", type=int, default=1, help="runs per workload (median reported)")
    parser.add_argument("--parts", type=int, default=20,
                        help="sequential calls timed step by step for the cost breakdown (0: none)")
    C.add_peer_arguments(parser)
    options = parser.parse_args()
    if not options.as_peer:  # measure this working tree (and its workers), not another install
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        sys.path.insert(0, root)
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    sizes = ["--chain", str(options.chain), "--independent", str(options.independent),
             "--workers", str(options.workers), "--repeat", str(options.repeat)]

    if options.as_peer == "executorlib":
        C.report_to_parent({
            "SingleNodeExecutor": measure(run_original, options, options.repeat),
            "TestClusterExecutor": measure(lambda o, k: run_original(o, k, file_based=True), options,
                                           options.repeat),
        })
        return
    if options.as_peer == "submitit":
        C.report_to_parent({"AutoExecutor(cluster='local')": measure(run_submitit, options, options.repeat)})
        return

    C.print_header("Local backend")
    import executorlib

    print(f"executorlib from {os.path.dirname(executorlib.__file__)}")
    print(f"workload: a chain of {options.chain} add() calls, {options.independent} independent add() "
          f"calls; max_workers={options.workers}; median of {options.repeat} run(s)")
    # warm up imports and the OS file cache so that neither side pays them in the first run
    run_pool(options, "chain")
    rows = {"ProcessPoolExecutor": measure(run_pool, options, options.repeat),
            "executorlib (ours), backend='local'": measure(run_ours, options, options.repeat)}
    try:  # persistent workers, when this version of the library has them
        rows["executorlib (ours), backend='local', block_allocation=True"] = measure(
            lambda o, k: run_ours(o, k, block_allocation=True), options, options.repeat)
    except (NotImplementedError, TypeError) as error:
        print(f"block_allocation=True not measured: {error}")
    if options.peer_python:
        for library in C.peer_libraries(options.peer_python):
            version = C.peer_version(options.peer_python, library)
            payload = C.run_peer(options.peer_python, __file__, library, sizes) or {}
            for name, row in payload.items():
                rows[f"[{library} {version}] {name}"] = row
    floor = rows["ProcessPoolExecutor"]
    C.print_table(
        "Local backend, wall seconds (whole with-block)",
        ["executor", f"chain of {options.chain}", "ratio", f"{options.independent} independent", "ratio",
         "s per independent task"],
        [[name, row["chain"], C.ratio(row["chain"], floor["chain"]), row["independent"],
          C.ratio(row["independent"], floor["independent"]), row["independent"] / options.independent]
         for name, row in rows.items()],
    )
    if options.parts:
        parts = {"backend='local'": measure_parts(options)}
        memory = {}
        try:
            with C.scratch_dir("xlbench-local-parts") as scratch:
                parts["block_allocation=True, named cache_directory"] = measure_parts(
                    options, block_allocation=True, cache_directory=scratch / "cache")
            memory["block_allocation=True, temporary cache"] = measure_parts_memory(options)
        except (NotImplementedError, TypeError, ImportError, AttributeError) as error:
            print(f"block_allocation=True steps not measured: {error!r}")
        names = list(next(iter(parts.values())))
        C.print_table(
            f"One call, step by step, through the cache files (median of {options.parts} sequential "
            "calls), milliseconds",
            ["executor"] + names,
            [[label] + [1000 * row[n] for n in names] for label, row in parts.items()],
        )
        if memory:
            names = list(next(iter(memory.values())))
            C.print_table(
                f"One call, step by step, in memory (no task or result file; median of {options.parts} "
                "sequential calls), milliseconds",
                ["executor"] + names,
                [[label] + [1000 * row[n] for n in names] for label, row in memory.items()],
            )
    for label in ("executorlib (ours), backend='local'", "executorlib (ours), backend='local', block_allocation=True"):
        mine = rows.get(label)
        if mine is not None:
            print(f"\n{label}: ratios to ProcessPoolExecutor: chain {C.ratio(mine['chain'], floor['chain']):.1f}x, "
                  f"independent {C.ratio(mine['independent'], floor['independent']):.1f}x")


if __name__ == "__main__":
    main()
