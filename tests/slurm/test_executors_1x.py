"""The original executorlib 1.x cluster class :class:`SlurmClusterExecutor` against the real cluster.

About eight SLURM jobs in all (the one-node test cluster starts ~2 jobs every 3 s). Each test runs
in its own working directory (``slurm_cache``, which the fixture scancels below at teardown), so
the default cache ``executorlib_cache`` of the class lands there; the jobs import
``tests.slurm.funcs`` through ``PYTHONPATH`` (sbatch exports the client's environment).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from executorlib import SlurmClusterExecutor, get_cache_data, terminate_tasks_in_cache
from tests.slurm import funcs
from tests.slurm.slurm_tools import active, scontrol_job, squeue_states, wait_job_id, wait_state

pytestmark = pytest.mark.slurm

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir(slurm_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory below ``slurm_cache`` (so its jobs are scancelled at teardown),
    with the repository on PYTHONPATH for the jobs."""
    slurm_cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(slurm_cache)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    return slurm_cache


def test_default_cache_resources_and_a_dependency_chain(workdir: Path) -> None:
    """No cache_directory: ``executorlib_cache`` in the working directory; resource_dict's
    run_time_max is the job's time limit; a child runs after its parent (afterok)."""
    with SlurmClusterExecutor(resource_dict={"cores": 1, "run_time_max": 180}) as exe:
        assert exe.info["cache_directory"] == str(workdir / "executorlib_cache")
        parent = exe.submit(funcs.sleep_add, 1, 2, 2)
        child = exe.submit(funcs.add_funct, parent, 10)
        cache = workdir / "executorlib_cache"
        parent_id, child_id = wait_job_id(cache, parent), wait_job_id(cache, child)
        fields = scontrol_job(child_id)
        if fields:  # SLURM may have forgotten a finished job already
            assert fields.get("TimeLimit") == "00:03:00", fields
            assert parent_id in fields.get("Dependency", "") or fields.get("JobState") != "PENDING"
        assert child.result(timeout=240) == 13
    keys = {record["key"] for record in get_cache_data(cache, query=False)}
    assert keys == {parent._executorlib_key, child._executorlib_key}


def test_a_dependent_of_a_failed_job_raises_the_parents_exception_type(workdir: Path) -> None:
    with SlurmClusterExecutor() as exe:
        parent = exe.submit(funcs.raise_error, "boom")
        child = exe.submit(funcs.add_funct, parent, 1)
        with pytest.raises(funcs.SlurmTestError, match="boom"):
            parent.result(timeout=240)
        with pytest.raises(funcs.SlurmTestError, match="boom") as caught:
            child.result(timeout=240)
    notes = "\n".join(getattr(caught.value, "__notes__", ()))
    assert parent._executorlib_key in notes


def test_priority_is_nice_and_terminate_tasks_in_cache_cancels_queued_jobs(workdir: Path) -> None:
    """priority -> ``--nice`` seen by ``scontrol show job``; terminate_tasks_in_cache scancels the
    running parent and its queued child."""
    cache = workdir / "cache_terminate"
    exe = SlurmClusterExecutor(cache_directory=str(cache))
    try:
        parent = exe.submit(funcs.announce_and_sleep, "long", 120)
        child = exe.submit(funcs.add_funct, parent, "x", resource_dict={"priority": 7})
        parent_id, child_id = wait_job_id(cache, parent), wait_job_id(cache, child)
        assert squeue_states([child_id])[child_id][0] == "PENDING"  # waits for its parent
        assert scontrol_job(child_id).get("Nice") == "7"
        assert len(exe) == 2
        cancelled = terminate_tasks_in_cache(str(cache))
        assert set(cancelled) == {parent._executorlib_key, child._executorlib_key}
        for job_id in (parent_id, child_id):
            assert wait_state(job_id, lambda s: not active(s), timeout=60) == "CANCELLED"
        deadline = time.monotonic() + 120
        while not (parent.done() and child.done()):  # the Executor sees the jobs gone
            assert time.monotonic() < deadline, "the Futures of the cancelled jobs never finished"
            time.sleep(0.2)
        assert parent.cancelled() or parent.exception() is not None
        assert len(exe) == 0
    finally:
        exe.shutdown(wait=False, cancel_futures=True)


def test_a_cache_directory_per_call(workdir: Path) -> None:
    """resource_dict={"cache_directory": ...}: the call's task goes to that directory, and a
    second executor finds its result there without submitting a job."""
    other = workdir / "other_cache"
    with SlurmClusterExecutor() as exe:
        here = exe.submit(funcs.add_funct, 1, 1)
        there = exe.submit(funcs.add_funct, here, 5, resource_dict={"cache_directory": str(other)})
        assert there.result(timeout=240) == 7
    assert (other / there._executorlib_key).is_dir()
    assert not (workdir / "executorlib_cache" / there._executorlib_key).exists()
    with SlurmClusterExecutor(cache_directory=str(other)) as again:
        rerun = again.submit(funcs.add_funct, here, 5)
        assert rerun._executorlib_key == there._executorlib_key
        assert rerun.done() and rerun.result() == 7  # from the cache, no job
