"""The end of the interpreter without shutdown(), as many scripts end: nothing is lost, nothing
crashes or hangs (issue 13, part 3).

Every case runs a small script in a fresh Python process: what matters happens while that
interpreter finalizes. As with ``concurrent.futures``, the local backends finish their unfinished
tasks before the interpreter ends; the submission backends hand every task to the job scheduler
and leave the jobs running, so that a later process reattaches to the cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.slurm.conftest import _slurm_available, slurm_cache  # noqa: F401 - fixtures for the slurm case

#: a script that does not finish within this many seconds hangs
SCRIPT_TIMEOUT = 300


def run_script(source: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = cwd / "script.py"
    script.write_text(textwrap.dedent(source))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=SCRIPT_TIMEOUT, env=env)
    assert "Segmentation fault" not in done.stderr and done.returncode >= 0, done.stderr
    assert done.returncode == 0, f"exit code {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def results_in(cache: Path) -> int:
    return sum(1 for folder in cache.iterdir() if (folder / "result.h5").exists())


@pytest.mark.parametrize("block_allocation", [False, True], ids=["local", "block_allocation"])
def test_the_local_backend_finishes_every_task_before_the_interpreter_ends(tmp_path, block_allocation):
    cache = tmp_path / "cache"
    done = run_script(f"""
        import sys
        from executorlib import Executor

        def square(x):
            return x * x

        exe = Executor(backend="local", cache_directory=sys.argv[1], max_workers=2,
                       block_allocation={block_allocation})
        futures = [exe.submit(square, i) for i in range(30)]
        print("submitted", sum(f.done() for f in futures), flush=True)
        # no shutdown(), no with: the script ends here
    """, str(cache), cwd=tmp_path)
    assert "submitted" in done.stdout
    assert results_in(cache) == 30


def test_a_temporary_cache_is_removed_after_the_tasks_finished_at_exit(tmp_path):
    done = run_script("""
        from executorlib import Executor

        exe = Executor(backend="local")
        futures = [exe.submit(pow, i, 2) for i in range(5)]
        print(exe.cache_directory, flush=True)
        futures[-1].add_done_callback(lambda f: print("last result", f.result(), flush=True))
    """, cwd=tmp_path)
    directory, *rest = done.stdout.split("\n")
    assert "last result 16" in done.stdout
    assert not os.path.exists(directory)


def test_dropped_executors_release_their_threads(tmp_path):
    done = run_script("""
        import sys, threading, time
        from executorlib import Executor

        baseline = threading.active_count()
        futures = []
        for i in range(12):  # half with a cache directory, half with a temporary one
            exe = Executor(backend="local", cache_directory=f"{sys.argv[1]}/c{i}" if i % 2 else None)
            futures.append(exe.submit(sum, [i, 1]))
            del exe  # dropped without shutdown(): its Future still resolves
        print("sum", sum(f.result(timeout=120) for f in futures))
        deadline = time.monotonic() + 60
        while threading.active_count() > baseline and time.monotonic() < deadline:
            time.sleep(0.05)
        print("threads", baseline, threading.active_count(), [t.name for t in threading.enumerate()])
    """, str(tmp_path), cwd=tmp_path)
    assert "sum 78" in done.stdout
    line = next(l for l in done.stdout.splitlines() if l.startswith("threads"))
    _, baseline, after, *_ = line.split(" ", 3)
    assert after == baseline, line


def test_submit_from_an_atexit_handler_raises_runtime_error_as_the_stdlib_does(tmp_path):
    done = run_script("""
        import atexit
        from concurrent.futures import ThreadPoolExecutor
        from executorlib import Executor

        exe = Executor(backend="local")
        threads = ThreadPoolExecutor(1)

        def late():
            for name, executor in (("executorlib", exe), ("stdlib", threads)):
                try:
                    executor.submit(sum, [1, 2])
                except RuntimeError as error:
                    print(name, "RuntimeError:", error, flush=True)

        atexit.register(late)
        print("first", exe.submit(sum, [1, 1]).result(), flush=True)
    """, cwd=tmp_path)
    assert "first 2" in done.stdout
    stdlib = next(l for l in done.stdout.splitlines() if l.startswith("stdlib"))
    ours = next(l for l in done.stdout.splitlines() if l.startswith("executorlib"))
    assert ours.split("RuntimeError: ")[1] == stdlib.split("RuntimeError: ")[1]
    assert "after interpreter shutdown" in ours


CHAIN_SCRIPT = """
    import sys
    from executorlib import Executor

    def add(a, b):
        return a + b

    exe = Executor(backend="slurm_submission", cache_directory=sys.argv[1])
    chain = exe.submit(add, 1, 1)
    chain = exe.submit(add, chain, 1)
    chain = exe.submit(add, chain, 1)
    independent = [exe.submit(add, i, 10) for i in range(2)]
    if len(sys.argv) > 2:  # the later process: reattach and read
        print("results", chain.result(timeout=600), [f.result(timeout=600) for f in independent])
        exe.shutdown()
    # the first process ends without shutdown(): every job must be in the queue
"""


@pytest.mark.slurm
def test_slurm_submission_hands_every_call_over_before_the_interpreter_ends(tmp_path, slurm_cache):
    run_script(CHAIN_SCRIPT, str(slurm_cache), cwd=tmp_path)
    records = [json.loads((folder / "job.json").read_text()) for folder in slurm_cache.iterdir()
               if (folder / "job.json").exists()]
    assert len(records) == 5, records
    assert all(r["state"] == "submitted" and r["job_id"] for r in records), records
    # a later process with the same cache reattaches to these jobs and gets every result
    later = run_script(CHAIN_SCRIPT, str(slurm_cache), "read", cwd=tmp_path)
    assert "results 4 [10, 11]" in later.stdout
    again = [json.loads((folder / "job.json").read_text())["job_id"] for folder in slurm_cache.iterdir()
             if (folder / "job.json").exists()]
    assert sorted(again) == sorted(r["job_id"] for r in records)  # no job was submitted twice
