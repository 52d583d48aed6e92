"""The allocation mode inside a real SLURM allocation of 2 CPUs.

tests/allocation/test_live.py runs this module with ``sbatch --wait -n 2``; run by hand it skips
itself unless ``SLURM_JOB_ID`` is set (e.g. ``salloc -n 2 python -m pytest tests/allocation/inside``).
"""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from executorlib import Executor
from tests.allocation import funcs

pytestmark = pytest.mark.skipif(not os.environ.get("SLURM_JOB_ID"),
                                reason="runs only inside a SLURM allocation (SLURM_JOB_ID is unset)")
JOB = os.environ.get("SLURM_JOB_ID")


def _wait_for(path: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was not written within {timeout} s"
        time.sleep(0.1)
    return path.read_text()


def test_each_task_is_a_step_of_this_allocation(tmp_path: Path) -> None:
    with Executor(backend="slurm_allocation", cache_directory=tmp_path / "cache") as exe:
        results = [f.result(timeout=120) for f in [exe.submit(funcs.step_ids, i) for i in range(3)]]
    assert [r["x"] for r in results] == [0, 1, 2]
    assert {r["job"] for r in results} == {JOB}
    steps = [r["step"] for r in results]
    assert None not in steps and len(set(steps)) == 3, steps


def test_threads_per_core_is_cpus_per_task(tmp_path: Path) -> None:
    with Executor(backend="slurm_allocation") as exe:
        result = exe.submit(funcs.step_ids, 0, resource_dict={"threads_per_core": 2}).result(timeout=120)
    assert result["cpus"] == "2" and result["omp"] == "2"


def test_two_cores_are_two_mpi_ranks(tmp_path: Path) -> None:
    with Executor(backend="slurm_allocation") as exe:
        ranks = exe.submit(funcs.mpi_rank, resource_dict={"cores": 2}).result(timeout=120)
    assert [r[:2] for r in ranks] == [(0, 2), (1, 2)]
    assert ranks[0][2] == ranks[1][2]  # one step


def test_dependencies(tmp_path: Path) -> None:
    with Executor(backend="slurm_allocation") as exe:
        a = exe.submit(funcs.add, 1, 2)
        b = exe.submit(funcs.add, a, 10)
        c = exe.submit(funcs.add, a, b)
        assert c.result(timeout=120) == 16


def test_output_reaches_the_caller(tmp_path: Path, capfd) -> None:
    with Executor(backend="slurm_allocation") as exe:
        assert exe.submit(funcs.say, "hello from a step").result(timeout=120) == "hello from a step"
    assert "hello from a step" in capfd.readouterr().out


def test_a_cancelled_step_fails_only_its_task(tmp_path: Path) -> None:
    marker = tmp_path / "step"
    with Executor(backend="slurm_allocation") as exe:
        doomed = exe.submit(funcs.sleep_and_record, str(marker), 120)
        other = exe.submit(funcs.sleep, 3)
        step = _wait_for(marker)
        assert step.startswith(f"{JOB}.")
        subprocess.run(["scancel", step], check=True, timeout=30)
        with pytest.raises(Exception) as caught:
            doomed.result(timeout=120)
        assert other.result(timeout=120) == 3
    message = str(caught.value)
    assert "CANCELLED" in message and step in message, message


def test_cancel_and_shutdown(tmp_path: Path) -> None:
    exe = Executor(backend="slurm_allocation")
    running = [exe.submit(funcs.sleep, 4 + i) for i in range(2)]  # both CPUs
    queued = exe.submit(funcs.sleep, 30)
    time.sleep(1.0)
    assert queued.cancel()
    exe.shutdown(wait=True)
    assert queued.cancelled()
    assert [f.result(timeout=1) for f in running] == [4, 5]
    with pytest.raises(RuntimeError):
        exe.submit(funcs.sleep, 0)


def test_shutdown_cancel_futures_cancels_the_queued_tasks(tmp_path: Path) -> None:
    exe = Executor(backend="slurm_allocation")
    running = [exe.submit(funcs.sleep, 3 + i) for i in range(2)]  # both CPUs
    queued = [exe.submit(funcs.sleep, 40 + i) for i in range(2)]
    time.sleep(1.0)
    start = time.monotonic()
    exe.shutdown(wait=True, cancel_futures=True)  # as the stdlib: running tasks finish
    assert time.monotonic() - start < 30
    assert all(f.cancelled() for f in queued)
    assert [f.result(timeout=1) for f in running] == [3, 4]


def test_a_request_larger_than_the_allocation(tmp_path: Path) -> None:
    with Executor(backend="slurm_allocation") as exe:
        with pytest.raises(ValueError, match=r"more than the SLURM allocation .*2 CPU"):
            exe.submit(funcs.add, 1, 2, resource_dict={"cores": 3})
        with pytest.raises(ValueError, match="partition"):
            exe.submit(funcs.add, 1, 2, resource_dict={"partition": "debug"})


def test_block_allocation_serves_several_tasks_per_worker(tmp_path: Path) -> None:
    with Executor(backend="slurm_allocation", block_allocation=True, max_workers=2,
                  init_function=funcs.init_model) as exe:
        results = [f.result(timeout=120) for f in [exe.submit(funcs.with_model, i) for i in range(8)]]
    assert [r[0] for r in results] == [100 + i for i in range(8)]
    pids = {r[1] for r in results}
    assert 1 <= len(pids) <= 2, pids  # eight tasks, at most two workers
    assert all(r[1] == r[2] for r in results)  # the init function ran in the worker that serves
    assert all(r[3] is not None for r in results)  # workers are job steps


def test_block_allocation_worker_death_fails_only_its_task(tmp_path: Path) -> None:
    with Executor(backend="slurm_allocation", block_allocation=True, max_workers=1) as exe:
        before = exe.submit(funcs.worker_pid, 0).result(timeout=120)
        dead = exe.submit(funcs.kill_worker)
        with pytest.raises(Exception) as caught:
            dead.result(timeout=120)
        after = exe.submit(funcs.worker_pid, 1).result(timeout=120)
    assert after != before  # a new worker step
    assert "exit code 3" in str(caught.value), str(caught.value)


def test_block_allocation_mpi_workers(tmp_path: Path) -> None:
    with Executor(backend="slurm_allocation", block_allocation=True,
                  resource_dict={"cores": 2}) as exe:
        first, second = (exe.submit(funcs.mpi_rank).result(timeout=120) for _ in range(2))
    assert [r[:2] for r in first] == [(0, 2), (1, 2)]
    assert first == second  # the same worker step served both


def test_a_step_over_its_time_limit_fails_with_timeout(tmp_path: Path) -> None:
    """run_time_max=1 s is srun --time=1 (minute): SLURM ends the step after about a minute."""
    with Executor(backend="slurm_allocation") as exe:
        slow = exe.submit(funcs.sleep, 400, resource_dict={"run_time_max": 1})
        quick = exe.submit(funcs.add, 2, 3)
        assert quick.result(timeout=120) == 5
        with pytest.raises(Exception) as caught:
            slow.result(timeout=240)
    assert "TIMEOUT" in str(caught.value), str(caught.value)


def test_block_allocation_run_time_max_kills_only_its_worker(tmp_path: Path) -> None:
    with Executor(backend="slurm_allocation", block_allocation=True, max_workers=1) as exe:
        slow = exe.submit(funcs.sleep, 300, resource_dict={"run_time_max": 2})
        with pytest.raises(Exception) as caught:
            slow.result(timeout=120)
        assert exe.submit(funcs.add, 20, 1).result(timeout=120) == 21
    assert "TIMEOUT" in str(caught.value), str(caught.value)


def test_restart_limit_stops_restarting_dead_workers(tmp_path: Path, monkeypatch) -> None:
    import executorlib.executor
    import tests.allocation.funcs

    monkeypatch.setattr(tests.allocation.funcs, "NoRestartPool", funcs.no_restart_pool(), raising=False)
    monkeypatch.setitem(executorlib.executor.BLOCK_ALLOCATION_SPAWNERS, "slurm_allocation",
                        ("tests.allocation.funcs", "NoRestartPool"))
    with Executor(backend="slurm_allocation", block_allocation=True, max_workers=1) as exe:
        with pytest.raises(Exception, match="exit code 3"):
            exe.submit(funcs.kill_worker).result(timeout=120)
        with pytest.raises(Exception, match=r"restart_limit = 0 allows no more restarts"):
            exe.submit(funcs.add, 1, 1).result(timeout=120)


def test_a_step_over_its_memory_fails_with_out_of_memory(tmp_path: Path) -> None:
    with Executor(backend="slurm_allocation") as exe:
        hog = exe.submit(funcs.hog_memory, 600, 20, resource_dict={"memory_max": "200M"})
        with pytest.raises(Exception) as caught:
            hog.result(timeout=120)
        assert exe.submit(funcs.hog_memory, 10, 0).result(timeout=120) == 10 * 1024 * 1024
    assert "OUT_OF_MEMORY" in str(caught.value) and "exceeded memory limit" in str(caught.value), str(caught.value)


def test_block_allocation_rejects_other_worker_resources(tmp_path: Path) -> None:
    with Executor(backend="slurm_allocation", block_allocation=True, max_workers=1) as exe:
        with pytest.raises(ValueError, match=r"resource_dict\['cores'\] = 2 cannot be used with block_allocation"):
            exe.submit(funcs.add, 1, 2, resource_dict={"cores": 2})
        assert exe.submit(funcs.add, 1, 2).result(timeout=120) == 3


def test_slurm_job_executor_of_the_1x_api(tmp_path: Path) -> None:
    """The original's SlurmJobExecutor: job steps of this allocation, a dependency chain, the
    parent's exception type at the end of it, and pmi_mode on the srun line of MPI calls."""
    from executorlib import SlurmJobExecutor

    with SlurmJobExecutor(cache_directory=str(tmp_path / "cache"), pmi_mode="pmi2") as exe:
        assert exe.info["pmi_mode"] == "pmi2" and len(exe) == 0
        first = exe.submit(funcs.step_ids, 0)
        total = exe.submit(funcs.add, exe.submit(funcs.add, 1, 2), 3)
        assert total.result(timeout=120) == 6
        assert first.result(timeout=120)["job"] == JOB
        with pytest.raises(ZeroDivisionError):
            exe.submit(funcs.add, exe.submit(divmod, 1, 0), 1).result(timeout=120)
        ranks = exe.submit(funcs.mpi_rank, resource_dict={"cores": 2}).result(timeout=120)
    assert [r[:2] for r in ranks] == [(0, 2), (1, 2)]
