"""The SLURM examples of the seed document (docs/submission-mode), run as written on the cluster."""

from __future__ import annotations

import pytest

import executorlib.spawners.slurm as slurm_module
from executorlib import Executor
from tests.slurm import funcs
from tests.slurm.conftest import skip_or_fail
from tests.slurm.slurm_tools import SEED_TEMPLATE, scontrol_job, squeue_states, wait_job_id, wait_state

pytestmark = pytest.mark.slurm


def test_sums_with_one_squeue_call_per_pass_for_our_jobs_only(slurm_cache, monkeypatch):
    calls = []
    real_run_command = slurm_module.run_command

    def recording_run_command(command, *args, **kwargs):
        calls.append(list(command))
        return real_run_command(command, *args, **kwargs)

    monkeypatch.setattr(slurm_module, "run_command", recording_run_command)
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        future_lst = [exe.submit(sum, [i, i]) for i in range(1, 4)]
        assert [f.result() for f in future_lst] == [2, 4, 6]
        ours = {wait_job_id(slurm_cache, f) for f in future_lst}

    queries = [c for c in calls if c[0] == "squeue"]
    assert queries, "the executor never asked squeue"
    for query in queries:  # never the whole queue: always this executor's job ids
        assert "--jobs" in query, query
        assert set(query[query.index("--jobs") + 1].split(",")) <= ours, query
    # one call covers all jobs that are in flight, not one call per job
    assert any(set(q[q.index("--jobs") + 1].split(",")) == ours for q in queries), queries


def test_seed_template_with_run_time_max_and_no_partition(slurm_cache):
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        future = exe.submit(
            sum, [4, 4],
            resource_dict={
                "submission_template": SEED_TEMPLATE,
                "run_time_max": 180,  # in seconds
            })
        assert future.result() == 8
    task_dir = slurm_cache / future._executorlib_key
    script = (task_dir / "run_queue.sh").read_text()
    assert "#SBATCH --time=3\n" in script
    default_partition = scontrol_job(wait_job_id(slurm_cache, future)).get("Partition")
    assert f"#SBATCH --partition={default_partition}\n" in script  # the cluster's default filled in
    assert (task_dir / "time.out").exists()  # the template's own output file


def test_add_funct_chain_uses_afterok_while_parents_run(slurm_cache):
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        future = exe.submit(funcs.sleep_add, 4, 0, 6)  # still running while the chain is submitted
        chain = [future]
        for i in range(5, 8):
            future = exe.submit(funcs.add_funct, i, future)
            chain.append(future)
        ids = [wait_job_id(slurm_cache, f) for f in chain]
        # right after submission SLURM holds every child on its parent
        for parent_id, child_id in zip(ids, ids[1:]):
            fields = scontrol_job(child_id)
            assert fields["Dependency"] == f"afterok:{parent_id}(unfulfilled)", fields
            assert fields["JobState"] == "PENDING"
        assert not chain[0].done()
        assert future.result() == 22
    # a Future resolves as soon as its result is written; SLURM marks the last job COMPLETED
    # a moment later, once its process has exited
    wait_state(ids[-1], lambda state: state != "RUNNING" and state != "COMPLETING")
    assert all(state == "COMPLETED" for state, _ in squeue_states(ids).values())


def test_calc_with_two_cores(slurm_cache):
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        skip_or_fail("mpi4py is not installed (pip install 'executorlib[mpi]')")
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        fs = exe.submit(funcs.calc, 3, resource_dict={"cores": 2})
        assert fs.result() == [(3, 2, 0), (3, 2, 1)]
