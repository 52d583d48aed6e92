"""The cluster's failures are retried, the code's never (with the in-process spawner double).

The double's NODE_FAIL is the cluster's failure (its ``final_status`` says so, as the SLURM
adapter does for NODE_FAIL, BOOT_FAIL, PREEMPTED and a job whose node went down); an exception, a
non-zero exit and a TIMEOUT are the call's own. The SLURM words are tested in
tests/slurm/test_classify.py, the real node failure in tests/slurm/test_retries.py.
"""

from __future__ import annotations

import json

import pytest

from executorlib import Executor
from executorlib.cli import main as cli_main
from executorlib.errors import JobFailedError
from executorlib.monitor import limit_hint
from tests.core import funcs


from tests.core.test_scheduler import backend, thread_backends  # noqa: E402,F401 - the same doubles


def jobs_of(spawner, name: str) -> int:
    return [n for n, _ in spawner.submitted].count(name)


def test_a_job_the_cluster_lost_is_submitted_again_and_the_record_keeps_the_attempt(backend, cache_dir, capsys):
    with Executor(backend=backend, cache_directory=str(cache_dir)) as exe:
        exe._spawner.lose_times["sleep_return"] = 1
        future = exe.submit(funcs.sleep_return, 0, "x")
        child = exe.submit(funcs.add_funct, future, "y")  # held on the lost job in batch mode
        assert future.result(timeout=30) == "x"
        assert child.result(timeout=30) == "xy"
        assert jobs_of(exe._spawner, "sleep_return") == 2
    key = future._executorlib_key
    record = json.loads((cache_dir / key / "job.json").read_text())
    assert [(a["job_id"], a["state"], a["reason"]) for a in record["attempts"]] == [("j1", "NODE_FAIL", "NodeDown")]
    assert record["job_id"] != "j1"  # the job that ran
    assert cli_main(["show", str(cache_dir), key]) == 0
    out = capsys.readouterr().out
    assert "attempt 1:  job j1 lost by the cluster: NODE_FAIL (reason NodeDown)" in out


def test_a_child_the_scheduler_removed_with_the_lost_parent_runs_after_the_new_job(cache_dir):
    """SLURM's --kill-on-invalid-dep ends a child held on a lost job: it goes again after the
    parent's new job, not as a failure."""
    with Executor(backend="thread_deps", cache_directory=str(cache_dir)) as exe:
        spawner = exe._spawner
        spawner.kill_on_invalid_dep = True
        spawner.lose_times["sleep_return"] = 1
        parent = exe.submit(funcs.sleep_return, 0.2, "x")
        child = exe.submit(funcs.add_funct, parent, "y")
        assert child.result(timeout=30) == "xy"
        assert jobs_of(spawner, "sleep_return") == 2 and jobs_of(spawner, "add_funct") == 2


def test_a_child_removed_with_a_failed_parent_fails_with_the_parents_error():
    with Executor(backend="thread_deps") as exe:
        exe._spawner.kill_on_invalid_dep = True
        parent = exe.submit(funcs.raise_value_error, "parent broke")
        child = exe.submit(funcs.add_funct, parent, 1)
        with pytest.raises(ValueError, match="parent broke"):
            child.result(timeout=30)
        assert jobs_of(exe._spawner, "raise_value_error") == 1


def test_after_max_retries_the_error_lists_every_attempt(backend, cache_dir):
    with Executor(backend=backend, cache_directory=str(cache_dir)) as exe:
        exe._spawner.lose.add("sleep_return")
        future = exe.submit(funcs.sleep_return, 0, "x", resource_dict={"max_retries": 2})
        with pytest.raises(JobFailedError) as info:
            future.result(timeout=30)
        assert jobs_of(exe._spawner, "sleep_return") == 3
    error = info.value
    message = str(error)
    assert "lost the job of task" in message and "3 time(s)" in message and "max_retries'] = 2" in message
    job_ids = [a["job_id"] for a in error.attempts]
    assert len(job_ids) == 3 and len(set(job_ids)) == 3
    for number, job_id in enumerate(job_ids, 1):
        assert f"  {number}. {backend} job {job_id}: NODE_FAIL (reason NodeDown)" in message
    assert error.job_id == job_ids[-1] and error.state == "NODE_FAIL"
    record = json.loads((cache_dir / future._executorlib_key / "job.json").read_text())
    assert [a["job_id"] for a in record["attempts"]] == job_ids


def test_max_retries_zero_fails_at_the_first_lost_job(backend):
    with Executor(backend=backend) as exe:
        exe._spawner.lose_times["sleep_return"] = 1
        future = exe.submit(funcs.sleep_return, 0, "x", resource_dict={"max_retries": 0})
        with pytest.raises(JobFailedError, match="max_retries'] = 0"):
            future.result(timeout=30)
        assert jobs_of(exe._spawner, "sleep_return") == 1


def test_the_calls_own_exception_runs_once(backend):
    """(A non-zero exit, a crash: FAILED without the cluster's reason, see test_classify.py; the
    double runs the worker in this process, which such a call would end.)"""
    with Executor(backend=backend) as exe:
        future = exe.submit(funcs.raise_value_error, "no")
        with pytest.raises(ValueError):
            future.result(timeout=30)
        assert jobs_of(exe._spawner, "raise_value_error") == 1


def test_a_timeout_is_not_retried_and_says_what_to_raise(backend):
    with Executor(backend=backend) as exe:
        exe._spawner.time_out.add("sleep_return")
        limited = exe.submit(funcs.sleep_return, 0, "x", resource_dict={"run_time_max": 7})
        with pytest.raises(JobFailedError) as info:
            limited.result(timeout=30)
        unlimited = exe.submit(funcs.sleep_return, 0, "y")
        with pytest.raises(JobFailedError) as info_unlimited:
            unlimited.result(timeout=30)
        assert jobs_of(exe._spawner, "sleep_return") == 2  # one job each
    assert info.value.state == "TIMEOUT"
    assert "raise resource_dict['run_time_max'] (it was 7 s)" in str(info.value)
    assert "raise resource_dict['run_time_max'] (none was set" in str(info_unlimited.value)


def test_limit_hint_names_the_key_and_the_value():
    assert limit_hint("memory_max", {"memory_max": "500M"}) == (
        "The job ran into its memory limit: raise resource_dict['memory_max'] (it was '500M').")
    assert "(none was set: the partition's default memory applied)" in limit_hint("memory_max", {"memory_max": None})
    assert limit_hint("run_time_max", None) == "The job ran into its run time limit: raise resource_dict['run_time_max']."
    assert limit_hint("", {"run_time_max": 5}) == ""


@pytest.mark.parametrize("value", [-1, 1.5, True, "2", None])
def test_max_retries_is_validated(value):
    with Executor(backend="thread") as exe:
        with pytest.raises(ValueError, match="max_retries"):
            exe.submit(funcs.add_funct, 1, 1, resource_dict={"max_retries": value})


def test_max_retries_is_accepted_by_the_local_backend():
    """The client acts on it: the local backend never reports a failure as the cluster's, so it
    never retries, but a script keeps working when it moves between backends."""
    with Executor(backend="local") as exe:
        assert exe.submit(funcs.add_funct, 1, 1, resource_dict={"max_retries": 5}).result(timeout=60) == 2


# -- refusals that pass by themselves (a full queue, slurmctld busy) ------------------------------------

@pytest.fixture
def quick_refusals(monkeypatch):
    import executorlib.scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "REFUSAL_BACKOFF", 0.05)


def test_a_refusal_that_passes_holds_the_call_and_submits_it_later(backend, quick_refusals):
    with Executor(backend=backend) as exe:
        spawner = exe._spawner
        spawner.refuse_for_now["sleep_return"] = 3
        first = exe.submit(funcs.sleep_return, 0, "a")
        second = exe.submit(funcs.sleep_return, 0, "b")
        assert (first.result(timeout=30), second.result(timeout=30)) == ("a", "b")
        assert spawner.refusals == 3
        assert jobs_of(spawner, "sleep_return") == 2  # one job each, no failure


def test_a_refusal_that_is_not_transient_still_fails_the_future(backend, quick_refusals):
    from executorlib.errors import SubmissionError

    with Executor(backend=backend) as exe:
        exe._spawner.refuse.add("echo")
        with pytest.raises(SubmissionError, match="invalid partition"):
            exe.submit(funcs.echo, 1).result(timeout=30)


def test_a_job_accepted_despite_a_timeout_is_found_by_its_tag_not_submitted_twice(backend, quick_refusals):
    with Executor(backend=backend) as exe:
        spawner = exe._spawner
        spawner.accept_then_time_out["sleep_return"] = 1
        assert exe.submit(funcs.sleep_return, 0, "once").result(timeout=30) == "once"
        assert spawner.refusals == 1 and jobs_of(spawner, "sleep_return") == 1


def test_the_slurm_adapter_marks_site_limits_and_timeouts_transient(monkeypatch, tmp_path):
    """sbatch's stderr decides; the real QOS limit needs accounting (slurmdbd), which the test
    cluster lacks."""
    pytest.importorskip("pysqa")
    from executorlib.errors import SubmissionError
    from executorlib.spawners.batch import BatchSpawner
    from executorlib.spawners.slurm import SlurmSpawner, transient_refusal

    for message in ("sbatch: error: QOSMaxSubmitJobPerUserLimit",
                    "sbatch: error: AssocMaxSubmitJobLimit",
                    "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
                    "(job submit limit, user's size and/or time limits)",
                    "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
                    "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"):
        assert transient_refusal(message), message
    for message in ("sbatch: error: Batch job submission failed: Invalid partition name specified",
                    "sbatch: error: invalid dependency", "the submission_template of task x cannot be rendered"):
        assert not transient_refusal(message), message

    answers = iter(["'sbatch run_queue.sh' failed with exit code 1: sbatch: error: QOSMaxSubmitJobPerUserLimit",
                    "'sbatch run_queue.sh' failed with exit code 1: sbatch: error: Invalid partition name specified"])

    def refuse(self, job, dependencies):
        raise SubmissionError(next(answers))

    monkeypatch.setattr(BatchSpawner, "submit", refuse)
    spawner = SlurmSpawner()
    with pytest.raises(SubmissionError) as limit:
        spawner.submit(None, [])
    with pytest.raises(SubmissionError) as partition:
        spawner.submit(None, [])
    assert limit.value.transient and not partition.value.transient
