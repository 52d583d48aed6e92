"""``clean_cache`` running again and again while another process submits: no call fails.

Issue 14 part 6: a clean beside a live Executor deleted the tasks it was handling (165 of 300
calls failed, many with "COMPLETED without writing a result"). Here one process submits quick
calls (half of them children of the other half, so parents' results are read by jobs) and this
process cleans the same cache in a loop with a short grace period, so that the other rules carry
the guarantee: live jobs, live claims, results of a live client, parents of kept tasks, folders
that change while clean looks. Every call must return the right value, each exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from executorlib import clean_cache, get_cache_data
from tests.faults.conftest import REPO_ROOT
from tests.faults.funcs import executions

#: a grace far below the run time of the whole submission: most folders are older while it runs
SHORT_GRACE = 2.0

SUBMITTER = """
    import json, sys
    from executorlib import Executor
    from tests.faults.funcs import record_add, record_square

    cache, runs, n, backend = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    errors, values = [], {{}}
    with Executor(backend=backend, cache_directory=cache{options}) as exe:
        squares = [exe.submit(record_square, runs, i) for i in range(n)]
        sums = [exe.submit(record_add, runs, squares[i], 1) for i in range(0, n, 2)]
        for name, futures in (("square", squares), ("sum", sums)):
            for i, future in enumerate(futures):
                try:
                    values[f"{{name}}{{i}}"] = future.result(timeout=600)
                except Exception as error:
                    errors.append(f"{{name}} {{i}}: {{type(error).__name__}}: {{error}}")
    print(json.dumps({{"values": values, "errors": errors[:10], "failed": len(errors)}}))
"""


def start_submitter(tmp_path: Path, cache: Path, runs: str, n: int, backend: str, options: str = "") -> subprocess.Popen:
    script = tmp_path / "submitter.py"
    script.write_text(textwrap.dedent(SUBMITTER.format(options=options)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return subprocess.Popen([sys.executable, str(script), str(cache), runs, str(n), backend], cwd=str(tmp_path),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def clean_while_running(process: subprocess.Popen, cache: Path, timeout: float) -> tuple[int, int, set[str]]:
    """clean_cache (a purge) in a loop until ``process`` ends: (passes, deleted, kept reasons)."""
    passes, deleted, reasons = 0, 0, set()
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the submitting process did not end within {timeout} s")
        if cache.is_dir():
            result = clean_cache(cache, grace=SHORT_GRACE)
            passes += 1
            deleted += len(result)
            reasons.update(record["kept"] for record in result.kept)
        time.sleep(0.05)
    return passes, deleted, reasons


def check(process: subprocess.Popen, runs: str, n: int) -> None:
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["failed"] == 0, report["errors"]
    assert report["values"] == {**{f"square{i}": i * i for i in range(n)},
                                **{f"sum{j}": (2 * j) ** 2 + 1 for j in range((n + 1) // 2)}}
    counts = executions(runs)
    assert len(counts) == n + (n + 1) // 2 and set(counts.values()) == {1}, \
        {line: c for line, c in counts.items() if c != 1}


def test_clean_in_a_loop_beside_a_local_executor(tmp_path, runs):
    cache, n = tmp_path / "cache", 150
    process = start_submitter(tmp_path, cache, runs, n, "local", options=", max_workers=2")
    passes, _, reasons = clean_while_running(process, cache, timeout=480)
    check(process, runs, n)
    assert passes >= 3, f"clean ran only {passes} time(s) while the calls ran"
    assert "client" in reasons  # results the live client had not read yet were kept

    # the client has ended: nothing holds its tasks any more
    final = clean_cache(cache, grace=0)
    assert len(final) == n + (n + 1) // 2 and final.kept == []
    assert get_cache_data(cache) == [] and sorted(p.name for p in cache.iterdir()) == []


@pytest.mark.slurm
def test_clean_in_a_loop_beside_a_slurm_executor(tmp_path, slurm_cache, runs):
    """About 10 SLURM jobs: queued and running jobs, and results not read yet, survive."""
    n = 6  # 6 squares + 3 sums: 9 jobs
    process = start_submitter(tmp_path, slurm_cache, runs, n, "slurm_submission")
    passes, _, reasons = clean_while_running(process, slurm_cache, timeout=480)
    check(process, runs, n)
    assert passes >= 3 and "job" in reasons, (passes, reasons)
    final = clean_cache(slurm_cache, grace=0)
    assert len(final) == n + n // 2 and final.kept == []
