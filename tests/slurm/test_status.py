"""Status queries against the real squeue/scontrol: exactly what SlurmSpawner relies on."""

from __future__ import annotations

import pytest

from executorlib import Executor
from tests.slurm import funcs
from tests.slurm.slurm_tools import run, wait_job_id, wait_state

pytestmark = pytest.mark.slurm


def unknown_job_id() -> str:
    """An id far above every job SLURM knows."""
    known = [int(i.split("_")[0]) for i in run(["squeue", "--noheader", "--states=all",
                                                 "--format", "%i"]).stdout.split()]
    return str(max(known, default=0) + 1_000_000)


def test_squeue_answer_for_unknown_ids():
    """One unknown id is an error (exit 1); several unknown ids are an empty answer (exit 0)."""
    unknown = unknown_job_id()
    base = ["squeue", "--noheader", "--states=all", "--format", "%i|%T|%r", "--jobs"]
    single = run(base + [unknown])
    assert single.returncode == 1 and "Invalid job id specified" in single.stderr, single
    several = run(base + [f"{unknown},{int(unknown) + 1}"])
    assert several.returncode == 0 and several.stdout.strip() == "", several


def test_states_of_known_unknown_and_finished_jobs(slurm_cache):
    from executorlib.spawners.slurm import SlurmSpawner

    spawner = SlurmSpawner()
    exe = Executor(backend="slurm_submission", cache_directory=str(slurm_cache))
    try:
        finished = exe.submit(sum, [1, 2])
        running = exe.submit(funcs.announce_and_sleep, "status", 120)
        assert finished.result(timeout=120) == 3
        done_id, running_id = wait_job_id(slurm_cache, finished), wait_job_id(slurm_cache, running)
        wait_state(running_id, lambda s: s == "RUNNING")
        # the Future resolves once the result is written; the job ends a moment later
        wait_state(done_id, lambda s: s not in ("RUNNING", "COMPLETING"))
        unknown = unknown_job_id()

        states = spawner.states([done_id, running_id, unknown])
        assert set(states) == {done_id, running_id}  # an unknown id is simply absent
        assert states[done_id].state == "COMPLETED" and not states[done_id].active
        assert states[running_id].state == "RUNNING" and states[running_id].active
        assert states[running_id].running
        assert spawner.states([unknown]) == {}  # squeue exits 1 for one unknown id
        assert spawner.states([unknown, str(int(unknown) + 1)]) == {}  # and 0 for several
        assert spawner.states([]) == {}

        assert SlurmSpawner().final_state(done_id) == "COMPLETED"  # asked from scontrol
        assert SlurmSpawner().final_state(unknown) is None
    finally:
        # running jobs finish at shutdown (the stdlib's rule): the fixture scancels the sleeper
        exe.shutdown(wait=False, cancel_futures=True)


def test_many_ids_are_one_query_for_the_users_jobs(monkeypatch):
    """Above MAX_IDS_PER_QUERY ids the command line would grow long: one query for the user's
    jobs, filtered to the ids asked for."""
    import executorlib.spawners.slurm as slurm_module

    calls = []
    real_run_command = slurm_module.run_command
    monkeypatch.setattr(slurm_module, "run_command",
                        lambda command, *a, **k: calls.append(command) or real_run_command(command, *a, **k))
    start = int(unknown_job_id())
    ids = [str(start + i) for i in range(slurm_module.MAX_IDS_PER_QUERY + 1)]
    assert slurm_module.SlurmSpawner().states(ids) == {}
    assert len(calls) == 1 and "--user" in calls[0] and "--jobs" not in calls[0]


def test_find_tagged_finds_a_job_by_the_tag_in_its_name_in_one_query(slurm_cache, monkeypatch):
    """What a later process does when a client died after sbatch accepted the job but before the
    job id was recorded: the claim's tag finds the job (also once it ended), one squeue call."""
    import sys
    import uuid

    import executorlib.spawners.slurm as slurm_module
    from executorlib.resources import merge_resources
    from executorlib.spawners.base import JobSpec

    task_dir = slurm_cache / "sleepy_0123"
    task_dir.mkdir(parents=True)
    tag, other = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    spec = JobSpec(key=task_dir.name, task_dir=task_dir, function_name="sleepy",
                   resources=merge_resources(None, {}), tag=tag,
                   command=[sys.executable, "-c", "import time; time.sleep(60)"],
                   log_path=task_dir / "job.out")
    spawner = slurm_module.SlurmSpawner()
    job_id = spawner.submit(spec, [])

    calls = []
    real_run_command = slurm_module.run_command
    monkeypatch.setattr(slurm_module, "run_command",
                        lambda command, *a, **k: calls.append(command) or real_run_command(command, *a, **k))
    assert spawner.find_tagged([tag, other]) == {tag: job_id}
    assert len(calls) == 1 and calls[0][0] == "squeue"
    assert spawner.find_tagged([other]) == {}
    assert spawner.find_tagged([]) == {} and len(calls) == 2  # no tag: no query

    spawner.cancel([job_id])
    wait_state(job_id, lambda s: s == "CANCELLED")
    assert spawner.find_tagged([tag]) == {tag: job_id}  # ended jobs SLURM still lists count too
