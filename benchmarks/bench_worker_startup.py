"""Worker start-up: what every job pays before the user's function runs.

Runs the worker entry point on a stored trivial task (a fresh interpreter each time) and compares
its wall time and its ``python -X importtime`` total with bare interpreters: ``python -c pass`` and
``python -c "import cloudpickle"`` (the least any pickle-based worker must import).

    python benchmarks/bench_worker_startup.py [--repeat 10] [--peer-python /tmp/peers/bin/python]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def add(a, b):
    return a + b


# -- measuring one command -----------------------------------------------------------------------
def parse_importtime(stderr: str) -> tuple[float, list[tuple[str, float]]]:
    """Total import seconds (sum of 'self') and the top-level imports by cumulative seconds."""
    total_us = 0
    by_root: dict[str, int] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3:
            continue
        self_us, cumulative_us, name = int(parts[0]), int(parts[1]), parts[2].strip()
        total_us += self_us
        root = name.split(".")[0]  # a package's outermost import has the largest cumulative time
        by_root[root] = max(by_root.get(root, 0), cumulative_us)
    top = sorted(((name, us / 1e6) for name, us in by_root.items()), key=lambda item: -item[1])
    return total_us / 1e6, top


def measure(command: list[str], repeat: int, before=None, cwd: str = "/") -> dict:
    """Median wall time of ``command`` and the median import total under ``-X importtime``."""
    walls, imports, top = [], [], []
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for i in range(repeat):
        if before:
            before()
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env)
        walls.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(f"{command} failed: {done.stderr[-2000:]}")
    for i in range(max(3, repeat // 3)):
        if before:
            before()
        done = subprocess.run([command[0], "-X", "importtime", *command[1:]], capture_output=True,
                              text=True, cwd=cwd, env=env)
        total, top = parse_importtime(done.stderr)
        imports.append(total)
    return {"wall": C.median(walls), "wall_min": min(walls), "imports": C.median(imports),
            "top": top[:8]}


# -- the libraries -------------------------------------------------------------------------------
def ours(repeat: int, work: Path) -> dict:
    from executorlib.store import RESULT_FILE, TaskStore
    from executorlib.task import compute_key

    store = TaskStore(work / "cache")
    key = compute_key(add, (1, 2), {}, name="add")
    from executorlib.resources import merge_resources

    store.write_task(key, "add", store.pickle_call(add, (1, 2), {}), merge_resources(None, None), [])
    result = store.path(key, RESULT_FILE)
    command = [sys.executable, "-m", "executorlib.worker", str(store.task_dir(key))]
    row = measure(command, repeat, before=lambda: result.unlink(missing_ok=True))
    assert store.read_result(key).value == 3
    row["what"] = "python -m executorlib.worker TASK (runs add(1, 2))"
    return row


def original_executorlib(repeat: int, work: Path) -> dict:
    import executorlib.backend.cache_serial as entry
    from executorlib.standalone.hdf import dump, get_output

    input_file = work / "add_i.h5"
    output_file = work / "add_o.h5"

    def prepare() -> None:
        output_file.unlink(missing_ok=True)
        input_file.unlink(missing_ok=True)
        dump(str(input_file), {"fn": add, "args": (1, 2), "kwargs": {}, "resource_dict": {}})

    command = [sys.executable, entry.__file__, str(input_file)]
    row = measure(command, repeat, before=prepare)
    assert get_output(str(output_file))[2] == 3
    row["what"] = "python executorlib/backend/cache_serial.py TASK_i.h5 (runs add(1, 2))"
    return row


def submitit_entry(repeat: int, work: Path) -> dict:
    # submitit's job entry point needs a SLURM or local job environment to run a task;
    # this measures importing it, which is what every submitit job pays before loading the task
    command = [sys.executable, "-c", "import submitit.core._submit"]
    row = measure(command, repeat)
    row["what"] = "python -c 'import submitit.core._submit' (import only)"
    return row


def baselines(repeat: int) -> list[dict]:
    rows = []
    for label, code in [("python -c pass", "pass"),
                        ("python -c 'import cloudpickle'", "import cloudpickle"),
                        ("python -c 'import cloudpickle, numpy'", "import cloudpickle, numpy"),
                        ("python -c 'import cloudpickle, h5py'", "import cloudpickle, h5py")]:
        row = measure([sys.executable, "-c", code], repeat)
        row["what"] = label
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="runs per command (median reported)")
    C.add_peer_arguments(parser)
    options = parser.parse_args()

    if options.as_peer:
        with C.scratch_dir("xlbench-startup") as work:
            run = original_executorlib if options.as_peer == "executorlib" else submitit_entry
            C.report_to_parent(run(options.repeat, work))
        return

    C.print_header("Worker start-up")
    with C.scratch_dir("xlbench-startup") as work:
        rows = baselines(options.repeat)
        mine = ours(options.repeat, work)
    rows.append(mine)
    peers = []
    if options.peer_python:
        for library in C.peer_libraries(options.peer_python):
            version = C.peer_version(options.peer_python, library)
            payload = C.run_peer(options.peer_python, __file__, library, ["--repeat", str(options.repeat)])
            if payload:
                payload["what"] = f"[{library} {version}] {payload['what']}"
                peers.append(payload)
    rows += peers
    floor = rows[1]  # import cloudpickle
    C.print_table(
        f"Worker start-up, median of {options.repeat} runs (import total: median of -X importtime runs)",
        ["command", "wall s", "min s", "imports s", "wall / cloudpickle floor"],
        [[r["what"], r["wall"], r["wall_min"], r["imports"], C.ratio(r["wall"], floor["wall"])] for r in rows],
    )
    C.print_table("Largest packages imported by our worker (cumulative s, one -X importtime run)", ["package", "s"], mine["top"])
    for peer in peers:
        C.print_table(f"Largest packages imported: {peer['what']}", ["package", "s"], peer["top"])
    print(f"\nratio ours / 'import cloudpickle' floor: {C.ratio(mine['wall'], floor['wall']):.2f}x "
          f"(wall, {mine['wall']:.3f} s vs {floor['wall']:.3f} s)")


if __name__ == "__main__":
    main()
