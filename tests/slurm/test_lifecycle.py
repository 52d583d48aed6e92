"""Cancelling, detaching, reattaching and rerunning against the real cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from executorlib import Executor
from tests.slurm import funcs
from tests.slurm.slurm_tools import (active, job_ids_in, job_record, jobs_under, run,
                                     scontrol_job, squeue_states, wait_job_id, wait_state)

pytestmark = pytest.mark.slurm

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_script(tmp_path: Path, body: str, *args: str) -> str:
    """Run ``body`` as a script in a new Python process (cwd: the repository root); its stdout."""
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(body))
    done = subprocess.run([sys.executable, str(script), *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"the client script failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_cancel_a_pending_child_scancels_its_job(slurm_cache):
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        parent = exe.submit(funcs.sleep_add, 1, 1, 4)
        child = exe.submit(funcs.add_funct, 1, parent)
        child_id = wait_job_id(slurm_cache, child)
        assert squeue_states([child_id])[child_id][0] == "PENDING"
        assert child.cancel()
        assert wait_state(child_id, lambda s: not active(s), timeout=30) == "CANCELLED"
        assert parent.result(timeout=120) == 2  # the parent is not affected
    assert child.cancelled()


def test_shutdown_cancel_futures_scancels_the_queued_jobs_and_lets_running_ones_finish(slurm_cache):
    """As concurrent.futures defines it: every Future not started is cancelled (its queued job
    scancel'd); a call already running finishes, and shutdown(wait=True) waits for it."""
    exe = Executor(backend="slurm_submission", cache_directory=str(slurm_cache))
    parent = exe.submit(funcs.announce_and_sleep, "long", 12)
    child = exe.submit(funcs.add_funct, "x", parent)
    ids = [wait_job_id(slurm_cache, parent), wait_job_id(slurm_cache, child)]
    wait_state(ids[0], lambda s: s == "RUNNING")
    deadline = time.monotonic() + 60
    while not parent.running():  # the Executor saw the job start
        assert time.monotonic() < deadline, "the parent's Future never became running"
        time.sleep(0.1)
    exe.shutdown(wait=True, cancel_futures=True)
    assert wait_state(ids[1], lambda s: not active(s), timeout=30) == "CANCELLED"
    assert child.cancelled()
    assert parent.result(timeout=0) == "long"  # it ran to its end


DETACH_SCRIPT = """\
import sys
from executorlib import Executor
from tests.slurm import funcs

cache, marker = sys.argv[1], sys.argv[2]
exe = Executor(backend="slurm_submission", cache_directory=cache)
futures = [exe.submit(funcs.count_run, marker, i, 6) for i in range(2)]
exe.shutdown(wait=False)  # detach: the process ends, the jobs keep running
"""


def test_shutdown_without_wait_detaches_and_a_later_executor_reattaches(slurm_cache, tmp_path):
    marker = tmp_path / "runs.txt"
    run_script(tmp_path, DETACH_SCRIPT, str(slurm_cache), str(marker))
    records = {p.parent.name: json.loads(p.read_text()) for p in slurm_cache.glob("*/job.json")}
    assert len(records) == 2 and all(r["state"] == "submitted" for r in records.values())
    states = squeue_states(r["job_id"] for r in records.values())
    assert all(active(state) for state, _ in states.values()), states  # still queued or running

    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        futures = [exe.submit(funcs.count_run, str(marker), i, 6) for i in range(2)]
        assert [f.result(timeout=180) for f in futures] == [0, 1]
    for future in futures:  # reattached: the same jobs, no new submission
        assert job_record(slurm_cache, future) == records[future._executorlib_key]
    assert sorted(marker.read_text().split()) == sorted(r["job_id"] for r in records.values())


RERUN_SCRIPT = """\
import json, sys
from executorlib import Executor
from tests.slurm import funcs

with Executor(backend="slurm_submission", cache_directory=sys.argv[1]) as exe:
    first = exe.submit(sum, [20, 22])
    second = exe.submit(funcs.add_funct, 1, first)
    print(json.dumps([first.result(), second.result()]))
"""


def test_rerun_in_a_new_process_submits_nothing(slurm_cache, tmp_path):
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        first = exe.submit(sum, [20, 22])
        second = exe.submit(funcs.add_funct, 1, first)
        assert [first.result(), second.result()] == [42, 43]
    records = {p: p.read_text() for p in slurm_cache.glob("*/job.json")}
    ids = job_ids_in(slurm_cache)
    assert len(ids) == 2

    output = run_script(tmp_path, RERUN_SCRIPT, str(slurm_cache))
    assert json.loads(output) == [42, 43]
    assert {p: p.read_text() for p in slurm_cache.glob("*/job.json")} == records  # job.json unchanged
    assert jobs_under(slurm_cache) <= ids  # SLURM got no new job for this cache


ORPHAN_SCRIPT = """\
import sys
from executorlib import Executor
from tests.slurm import funcs

exe = Executor(backend="slurm_submission", cache_directory=sys.argv[1])
exe.submit(funcs.count_run, sys.argv[2], 5, float(sys.argv[3]))
exe.shutdown(wait=False)
"""


def test_reattached_job_that_was_killed_is_resubmitted_before_its_children(slurm_cache, tmp_path):
    """An earlier run's job was scancel'd: a rerun submits it again, and a new child must wait for
    the new job (not get afterok on the dead one, which SLURM would never satisfy)."""
    marker = tmp_path / "runs.txt"
    run_script(tmp_path, ORPHAN_SCRIPT, str(slurm_cache), str(marker), "600")
    (old_id,) = job_ids_in(slurm_cache)
    assert run(["scancel", old_id]).returncode == 0
    wait_state(old_id, lambda s: not active(s), timeout=30)

    exe = Executor(backend="slurm_submission", cache_directory=str(slurm_cache))
    try:
        parent = exe.submit(funcs.count_run, str(marker), 5, 600.0)  # the same call: same key
        child = exe.submit(funcs.add_funct, 1, parent)
        child_id = wait_job_id(slurm_cache, child)
        new_id = job_record(slurm_cache, parent)["job_id"]
        assert new_id != old_id  # the parent was submitted again before its child
        fields = scontrol_job(child_id)
        assert fields["Dependency"] == f"afterok:{new_id}(unfulfilled)", fields
        assert fields["JobState"] == "PENDING", fields
    finally:
        # a running parent would finish at shutdown (the stdlib's rule): the fixture scancels it
        exe.shutdown(wait=False, cancel_futures=True)
