"""A client SIGKILLed at each step of a submission; a second process with the same cache must
get the right result, with exactly one execution (and on SLURM exactly one job) per call.

The steps, in the order a submission takes them: the task file is written, the task is claimed
(job.json names the claimant and a tag), the job is submitted (sbatch accepted it: the tag is in
the job's name), the job is recorded (job.json names the job id). The kill comes right after a
step returned (tests/faults/kill_at.py patches the step in the client process only). The function
records each execution in a file; it sleeps a little, so that the second process mostly finds
the first job still queued or running and must attach to it instead of submitting another.
"""

from __future__ import annotations

import pytest

from tests.faults.funcs import executions

CLIENT = """
    from executorlib import Executor
    from tests.faults.funcs import record_square

    with Executor(backend={backend!r}, cache_directory={cache!r}) as exe:
        print(exe.submit(record_square, {runs!r}, 7, {delay!r}).result(timeout=300))
"""

TASK_WRITTEN = "executorlib.store:TaskStore.write_task"
CLAIMED = "executorlib.claims:claim"
JOB_RECORDED = "executorlib.claims:write_job"
SBATCH_ACCEPTED = "executorlib.spawners.slurm:SlurmSpawner.submit"  # returns once sbatch printed the id


def kill_then_rerun(kill_client, run_client, step: str, backend: str, cache, runs: str, delay: float) -> None:
    code = CLIENT.format(backend=backend, cache=str(cache), runs=runs, delay=delay)
    first = kill_client(code, step, timeout=300)
    assert first.killed and first.returncode == -9, (first.returncode, first.stderr[-2000:])
    second = run_client(code, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.strip() == "49"
    assert executions(runs) == {"7": 1}, executions(runs)


@pytest.mark.parametrize("step", [TASK_WRITTEN, CLAIMED, JOB_RECORDED],
                         ids=["after-task-write", "after-claim", "after-job-record"])
def test_local_client_killed_at_a_step(kill_client, run_client, tmp_path, runs, step):
    kill_then_rerun(kill_client, run_client, step, "local", tmp_path / "cache", runs, delay=2.0)


@pytest.mark.slurm
@pytest.mark.parametrize("step", [TASK_WRITTEN, CLAIMED, SBATCH_ACCEPTED, JOB_RECORDED],
                         ids=["after-task-write", "after-claim", "after-sbatch-before-record", "after-job-record"])
def test_slurm_client_killed_at_a_step(kill_client, run_client, slurm_cache, runs, step):
    """After sbatch accepted the job but before its id was recorded, only the tag in the job's
    name links the job to the task: the second process finds it with one squeue and attaches."""
    from tests.slurm.slurm_tools import jobs_under

    kill_then_rerun(kill_client, run_client, step, "slurm_submission", slurm_cache, runs, delay=3.0)
    assert len(jobs_under(slurm_cache)) == 1, f"SLURM jobs of the call: {sorted(jobs_under(slurm_cache))}"
