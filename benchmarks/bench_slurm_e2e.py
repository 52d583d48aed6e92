"""SLURM end to end: N trivial tasks through ``backend="slurm_submission"`` against the floor.

The floor is what a hand-written loop costs: write a tiny job script per task (one ``python -c``
that prints ``i + i`` into a result file), ``sbatch --parsable`` it, then poll every
``--floor-poll`` seconds until every result file exists. The library run submits ``add(i, i)`` for
``i < N`` and waits for every Future.

Where the time goes, per task, from timestamps (wall clock of this one machine):

    submit()     the call, as the caller sees it (key, cache check, task.h5)
    to sbatch    submit() returned -> the scheduler thread starts the spawner for this task
    spawner      job script rendering + pysqa, without the sbatch command itself
    sbatch       the sbatch command (pysqa runs it through executorlib's run_command)
    dispatch     sbatch returned -> the job started (job.out created by slurmstepd)
    worker start job started -> the function starts (result.h5 'finished' - 'runtime'): Python
                 start-up, imports, reading task.h5
    run          the function itself (result.h5 'runtime')
    result write result.h5 'finished' -> result.h5 written (its mtime)
    to resolved  result.h5 written -> Future done (add_done_callback): job exit, SLURM reporting
                 the job as ended, and the client's polling interval

    python benchmarks/bench_slurm_e2e.py [--sizes 1,20] [--peer-python /tmp/peers/bin/python]
    python benchmarks/bench_slurm_e2e.py --sizes 200         # ~5 min per variant on this cluster
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

PHASES = ["submit()", "to sbatch", "spawner", "sbatch", "dispatch", "worker start", "run", "result write",
          "to resolved"]


def add(a, b):
    return a + b


def scontrol_times(job_id: str) -> dict:
    """SubmitTime/StartTime/EndTime of a job while SLURM remembers it (second resolution)."""
    out = subprocess.run(["scontrol", "show", "job", "--oneliner", str(job_id)], capture_output=True,
                         text=True).stdout
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    result = {}
    for name in ("SubmitTime", "StartTime", "EndTime"):
        value = fields.get(name)
        if value and value not in ("Unknown", "None"):
            result[name] = time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M:%S"))
    return result


# -- the floor -------------------------------------------------------------------------------------
def floor(n: int, poll: float, partition: str | None) -> dict:
    with C.scratch_dir("xlbench-e2e-floor") as folder:
        ids, tasks = [], []
        begin = time.time()
        try:
            for i in range(n):
                result = folder / f"task{i}.res"
                script = folder / f"task{i}.sh"
                lines = ["#!/bin/bash", f"#SBATCH --job-name={C.JOB_PREFIX}-floor",
                         f"#SBATCH --output={folder}/task{i}.out"]
                if partition:
                    lines.append(f"#SBATCH --partition={partition}")
                lines.append(f"{sys.executable} -c 'print({i} + {i})' > {result}.tmp && mv {result}.tmp {result}")
                t0 = time.time()
                script.write_text("\n".join(lines) + "\n")
                t1 = time.time()
                out = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True,
                                     check=True).stdout
                t2 = time.time()
                ids.append(out.strip().split(";")[0])
                tasks.append({"i": i, "t0": t0, "sbatch_start": t1, "sbatch_end": t2, "result": result,
                              "log": folder / f"task{i}.out"})
            pending = set(range(n))
            while pending:
                for i in list(pending):
                    if tasks[i]["result"].exists():
                        tasks[i]["seen"] = time.time()
                        pending.discard(i)
                if pending:
                    time.sleep(poll)
            end = time.time()
            for task in tasks:
                assert int(task["result"].read_text()) == 2 * task["i"]
                task["started"] = task["log"].stat().st_mtime
                task["written"] = task["result"].stat().st_mtime
        finally:
            C.scancel([j for j in ids])
    phases = {
        "sbatch": [t["sbatch_end"] - t["sbatch_start"] for t in tasks],
        "dispatch": [t["started"] - t["sbatch_end"] for t in tasks],
        "job (python -c)": [t["written"] - t["started"] for t in tasks],
        "to seen": [t["seen"] - t["written"] for t in tasks],
    }
    latency = [t["seen"] - t["t0"] for t in tasks]
    return {"n": n, "wall": end - begin, "latency": C.mean(latency),
            "phases": {k: C.mean(v) for k, v in phases.items()}}


# -- ours ------------------------------------------------------------------------------------------
def ours(n: int, refresh_rate: float | None = None) -> dict:
    import executorlib.spawners.batch as batch
    from executorlib import Executor
    from executorlib.store import RESULT_FILE, TaskStore

    sbatch_calls: list[dict] = []
    squeue_calls: list[float] = []
    original_run = batch.run_command

    def timed_run(command, *args, **kwargs):  # pysqa's sbatch goes through this
        start = time.time()
        out = original_run(command, *args, **kwargs)
        if command[0] == "sbatch":
            sbatch_calls.append({"start": start, "end": time.time(), "id": out.strip().split(";")[0]})
        return out

    import executorlib.spawners.slurm as slurm

    original_slurm_run = slurm.run_command

    def timed_slurm_run(command, *args, **kwargs):  # squeue / scontrol / sinfo
        start = time.perf_counter()
        try:
            return original_slurm_run(command, *args, **kwargs)
        finally:
            if command[0] == "squeue":
                squeue_calls.append(time.perf_counter() - start)

    batch.run_command, slurm.run_command = timed_run, timed_slurm_run
    spawner_calls: dict[str, dict] = {}
    done: dict[int, float] = {}
    try:
        with C.scratch_dir("xlbench-e2e") as cache:
            extra = {} if refresh_rate is None else {"refresh_rate": refresh_rate}
            exe = Executor(backend="slurm_submission", cache_directory=str(cache),
                           resource_dict={"job_name": f"{C.JOB_PREFIX}-e2e"}, **extra)
            spawner_submit = exe._spawner.submit

            def timed_submit(job, dependencies):
                start = time.time()
                job_id = spawner_submit(job, dependencies)
                spawner_calls[job.key] = {"start": start, "end": time.time(), "id": job_id}
                return job_id

            exe._spawner.submit = timed_submit
            exe._spawner.default_partition()  # asked once per Executor: not part of any task
            tasks = []
            begin = time.time()
            try:
                for i in range(n):
                    t0 = time.time()
                    future = exe.submit(add, i, i)
                    t1 = time.time()
                    future.add_done_callback(lambda f, i=i: done.__setitem__(i, time.time()))
                    tasks.append({"i": i, "t0": t0, "t1": t1, "future": future})
                values = [t["future"].result() for t in tasks]
                end = time.time()
            finally:
                exe.shutdown(wait=True, cancel_futures=True)
            assert values == [2 * i for i in range(n)]
            store = TaskStore(cache)
            import h5py

            by_id = {c["id"]: c for c in sbatch_calls}
            for task in tasks:
                key = task["future"]._executorlib_key
                spawn = spawner_calls[key]
                call = by_id[spawn["id"]]
                with h5py.File(store.path(key, RESULT_FILE), "r") as f:
                    runtime, finished = float(f.attrs["runtime"]), float(f.attrs["finished"])
                task.update(
                    spawn_start=spawn["start"], spawn_end=spawn["end"], sbatch_start=call["start"],
                    sbatch_end=call["end"], job_id=spawn["id"],
                    started=store.log_path(key).stat().st_mtime, fn_start=finished - runtime, runtime=runtime,
                    finished=finished, written=store.path(key, RESULT_FILE).stat().st_mtime, resolved=done[task["i"]],
                    slurm=scontrol_times(spawn["id"]))
    finally:
        batch.run_command, slurm.run_command = original_run, original_slurm_run
        C.cancel_leftovers(f"{C.JOB_PREFIX}-e2e")
    phases = {
        "submit()": [t["t1"] - t["t0"] for t in tasks],
        "to sbatch": [t["spawn_start"] - t["t1"] for t in tasks],
        "spawner": [(t["spawn_end"] - t["spawn_start"]) - (t["sbatch_end"] - t["sbatch_start"]) for t in tasks],
        "sbatch": [t["sbatch_end"] - t["sbatch_start"] for t in tasks],
        "dispatch": [t["started"] - t["sbatch_end"] for t in tasks],
        "worker start": [t["fn_start"] - t["started"] for t in tasks],
        "run": [t["runtime"] for t in tasks],
        "result write": [t["written"] - t["finished"] for t in tasks],
        "to resolved": [t["resolved"] - t["written"] for t in tasks],
    }
    ended = [t["resolved"] - t["slurm"]["EndTime"] for t in tasks if "EndTime" in t["slurm"]]
    latency = [t["resolved"] - t["t0"] for t in tasks]
    return {"n": n, "wall": end - begin, "latency": C.mean(latency),
            "phases": {k: C.mean(v) for k, v in phases.items()},
            "squeue_calls": len(squeue_calls), "squeue_median": C.median(squeue_calls),
            "resolved_after_slurm_end": C.mean(ended)}


# -- peers -----------------------------------------------------------------------------------------
def original(n: int) -> dict:
    import executorlib

    with C.scratch_dir("xlbench-e2e-orig") as cache:
        begin = time.time()
        with executorlib.SlurmClusterExecutor(
                cache_directory=str(cache),
                resource_dict={"job_name": f"{C.JOB_PREFIX}-e2e", "partition": C.slurm_partition()}) as exe:
            futures = [exe.submit(add, i, i) for i in range(n)]
            values = [future.result() for future in futures]
        end = time.time()
    assert values == [2 * i for i in range(n)]
    return {"n": n, "wall": end - begin, "latency": None}


def submitit_run(n: int) -> dict:
    import submitit

    with C.scratch_dir("xlbench-e2e-submitit") as folder:
        exe = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        exe.update_parameters(slurm_partition=C.slurm_partition(), timeout_min=5,
                              slurm_job_name=f"{C.JOB_PREFIX}-e2e")
        begin = time.time()
        jobs = [exe.submit(add, i, i) for i in range(n)]
        values = [job.result() for job in jobs]
        end = time.time()
    assert values == [2 * i for i in range(n)]
    return {"n": n, "wall": end - begin, "latency": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,20", help="comma-separated numbers of tasks (e.g. 1,20,200)")
    parser.add_argument("--floor-poll", type=float, default=0.1, help="poll interval of the floor loop, s")
    parser.add_argument("--refresh-rate", type=float, default=None,
                        help="refresh_rate of our Executor (default: the library's default)")
    parser.add_argument("--skip-floor", action="store_true", help="run ours only (and the peers)")
    C.add_peer_arguments(parser)
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    if not C.slurm_available():
        raise SystemExit("SLURM is not available here (sbatch/squeue missing or not answering)")

    if options.as_peer:
        run = original if options.as_peer == "executorlib" else submitit_run
        rows = []
        for n in sizes:
            rows.append(run(n))
            C.cancel_leftovers(f"{C.JOB_PREFIX}-e2e")
        C.report_to_parent(rows)
        return

    C.print_header("SLURM end to end")
    print(f"SLURM queue before: {C.slurm_queue_summary()}")
    partition = C.slurm_partition()
    results: dict[int, dict] = {}
    for n in sizes:
        C.wait_for_slurm_idle()
        if options.skip_floor:
            fl = {"n": n, "wall": None, "latency": None, "phases": {}}
        else:
            fl = floor(n, options.floor_poll, partition)
            print(f"  floor N={n}: {fl['wall']:.2f} s (queue: {C.slurm_queue_summary()})")
        C.wait_for_slurm_idle()
        mine = ours(n, options.refresh_rate)
        print(f"  ours  N={n}: {mine['wall']:.2f} s (queue: {C.slurm_queue_summary()})")
        sys.stdout.flush()
        results[n] = {"floor": fl, "ours": mine}
    peers: dict[str, list] = {}
    if options.peer_python:
        for library in C.peer_libraries(options.peer_python):
            version = C.peer_version(options.peer_python, library)
            payload = C.run_peer(options.peer_python, __file__, library, ["--sizes", options.sizes])
            if payload:
                peers[f"{library} {version}"] = payload

    headers = ["N", "floor s", "ours s", "ours / floor"] + [f"{p} s" for p in peers] + [
        f"{p} / floor" for p in peers]
    rows = []
    for index, n in enumerate(sizes):
        fl, mine = results[n]["floor"]["wall"], results[n]["ours"]["wall"]
        peer_walls = [peers[p][index]["wall"] for p in peers]
        rows.append([n, fl, mine, C.ratio(mine, fl)] + peer_walls + [C.ratio(w, fl) for w in peer_walls])
    C.print_table("Wall time, first submit to last result (s)", headers, rows)

    C.print_table(
        "Ours: where the time goes, mean seconds per task",
        ["N"] + PHASES + ["task latency", "squeue calls", "squeue median s", "resolved after SLURM EndTime"],
        [[n] + [results[n]["ours"]["phases"][p] for p in PHASES] +
         [results[n]["ours"]["latency"], results[n]["ours"]["squeue_calls"], results[n]["ours"]["squeue_median"],
          results[n]["ours"]["resolved_after_slurm_end"]] for n in sizes])
    floor_phases = list(results[sizes[0]]["floor"]["phases"])
    if floor_phases:
        C.print_table(
            f"Floor: mean seconds per task (poll every {options.floor_poll} s)",
            ["N"] + floor_phases + ["task latency"],
            [[n] + [results[n]["floor"]["phases"][p] for p in floor_phases] + [results[n]["floor"]["latency"]]
             for n in sizes])
        print("\nratios ours / floor: " + ", ".join(
            f"N={n}: {C.ratio(results[n]['ours']['wall'], results[n]['floor']['wall']):.2f}x" for n in sizes))
    if options.refresh_rate is not None:
        print(f"(our Executor ran with refresh_rate={options.refresh_rate})")
    print(json.dumps({str(n): {k: results[n][k]["wall"] for k in results[n]} for n in sizes}))


if __name__ == "__main__":
    main()
