"""SLURM's own requeue of a running job (``scontrol requeue``, ``requeuehold`` + ``release``).

The job keeps its id and runs again from the start; the call ends with the right result, in one
Future and one cached result, without a resubmission by the library (no ``attempts`` in job.json).
A requeued job is eligible again only after SLURM's requeue delay (two minutes); the tests shorten it
with ``scontrol update jobid=<id> StartTime=now`` after 5 s (at once, slurmctld kills the job for its
revoked credential: FAILED, a failure of the test, not of the library). One SLURM job per test.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from executorlib import Executor
from tests.slurm import funcs
from tests.slurm.slurm_tools import (job_ids_in, job_record, jobs_under, run, scontrol_job, squeue_states,
                                     wait_job_id, wait_state)

pytestmark = pytest.mark.slurm

#: the call sleeps this long: long enough to be requeued while it runs
SECONDS = 6
#: how long a requeued job stays pending before the test makes it eligible
CREDENTIAL_SECONDS = 5


def wait_first_run(counter: Path, timeout: float = 120.0) -> None:
    """Wait until the call has started (it wrote its line to ``counter``)."""
    deadline = time.monotonic() + timeout
    while not counter.exists() or not counter.read_text().strip():
        assert time.monotonic() < deadline, "the job never ran"
        time.sleep(0.2)


def scontrol(*args: str) -> None:
    done = run(["scontrol", *args])
    assert done.returncode == 0, f"scontrol {' '.join(args)} failed: {done.stderr.strip()}"


def start_now(job_id: str) -> None:
    """Skip most of SLURM's requeue delay: the job is eligible now, once it has been pending for a
    few seconds (started at once, it would be killed: "Job credential revoked")."""
    wait_state(job_id, lambda s: s == "PENDING", timeout=60)
    time.sleep(CREDENTIAL_SECONDS)
    scontrol("update", f"jobid={job_id}", "StartTime=now")


def assert_one_job_one_result(cache: Path, future, job_id: str, counter: Path, value: str) -> None:
    """Ran twice in the same job; one task in the cache, with its result; no resubmission."""
    assert counter.read_text().split() == [job_id, job_id]  # the first run and the requeued one
    assert job_ids_in(cache) | jobs_under(cache) == {job_id}
    record = job_record(cache, future)
    assert record["job_id"] == job_id and "attempts" not in record, record
    tasks = [path for path in cache.iterdir() if path.is_dir() and (path / "job.json").exists()]
    assert len(tasks) == 1, tasks
    with Executor(backend="slurm_submission", cache_directory=str(cache)) as again:  # from the cache
        assert again.submit(funcs.count_run, str(counter), value, SECONDS).result(timeout=60) == value
    assert counter.read_text().split() == [job_id, job_id]


def test_a_requeued_running_job_ends_with_the_right_result(slurm_cache, tmp_path):
    counter = tmp_path / "runs.txt"
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        future = exe.submit(funcs.count_run, str(counter), "requeued", SECONDS)
        job_id = wait_job_id(slurm_cache, future)
        wait_first_run(counter)
        scontrol("requeue", job_id)
        start_now(job_id)
        assert future.result(timeout=180) == "requeued"
        assert not future.cancelled() and future.exception() is None
    assert scontrol_job(job_id).get("Restarts") == "1"
    assert_one_job_one_result(slurm_cache, future, job_id, counter, "requeued")


def test_a_requeued_held_job_runs_once_released(slurm_cache, tmp_path):
    counter = tmp_path / "runs.txt"
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        future = exe.submit(funcs.count_run, str(counter), "released", SECONDS)
        job_id = wait_job_id(slurm_cache, future)
        wait_first_run(counter)
        scontrol("requeuehold", job_id)
        try:
            wait_state(job_id, lambda s: s == "PENDING", timeout=60)
            time.sleep(3)  # held: the Executor keeps following it, no result, no failure
            state, reason = squeue_states([job_id])[job_id]
            assert state == "PENDING" and "held" in reason.lower(), (state, reason)
            assert not future.done()
        finally:  # else the Executor would wait for the held job forever
            scontrol("release", job_id)
            start_now(job_id)
        assert future.result(timeout=180) == "released"
    assert_one_job_one_result(slurm_cache, future, job_id, counter, "released")
