"""The cluster's failures are retried, the code's never (with the in-process spawner double).

The double's NODE_FAIL is the cluster's failure (its ``final_status`` says so, as the SLURM
adapter does for NODE_FAIL, BOOT_FAIL, PREEMPTED and a job whose node went down); an exception, a
non-zero exit and a TIMEOUT are the call's own. The SLURM words are tested in
tests/slurm/test_classify.py, the real node failure in tests/slurm/test_retries.py. Also here: the
attempts of a call survive a later process attaching to its retried job, and the SLURM adapter's
``sacct`` fallback for jobs that scontrol forgot (real accounting: tests/slurm/test_accounting.py).
"""

from __future__ import annotations

import json
import time
from typing import Optional

import pytest

import executorlib.executor as executor_module

from executorlib import Executor
from executorlib.cli import main as cli_main
from executorlib.errors import JobFailedError
from executorlib.monitor import limit_hint
from tests.core import funcs
from tests.core.spawner_double import DependencySpawner


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
    """sbatch's stderr decides (the real QOS limit, with slurmdbd: tests/slurm/test_accounting.py)."""
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


# -- a later process attaches to a call being retried ---------------------------------------------------

class _SharedSpawner(DependencySpawner):
    """One spawner for every Executor of a test, like one cluster for two processes: a later
    Executor attaches to the jobs of an earlier one. With ``hold_second`` the second job waits
    for ``hold`` (so that the retry is still queued when the test hands it over to the later
    Executor)."""

    name = "shared"
    current: Optional["_SharedSpawner"] = None
    hold_second = False

    def __new__(cls, *args, **kwargs):
        if cls.current is None:
            cls.current = object.__new__(cls)
            DependencySpawner.__init__(cls.current, *args, **kwargs)
        return cls.current

    def __init__(self, *args, **kwargs):
        pass  # made once, in __new__

    def submit(self, job, dependencies):
        if self.hold_second and len(self.submitted) == 1:
            self.hold.clear()
        return super().submit(job, dependencies)


@pytest.fixture
def shared_backend(monkeypatch):
    monkeypatch.setattr(_SharedSpawner, "current", None)
    monkeypatch.setitem(executor_module.BACKENDS, "shared", (__name__, "_SharedSpawner", False))
    return "shared"


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


@pytest.mark.parametrize("max_retries", [2, 1])
def test_a_later_process_attached_to_a_retried_job_keeps_the_attempts(shared_backend, cache_dir, max_retries):
    resources = {"max_retries": max_retries}
    first = Executor(backend=shared_backend, cache_directory=str(cache_dir))
    spawner = first._spawner
    spawner.hold_second = True
    spawner.lose_times["sleep_return"] = 1
    key = first.submit(funcs.sleep_return, 0, "x", resource_dict=resources)._executorlib_key
    job_file = cache_dir / key / "job.json"

    def retried() -> bool:  # job.json names the retry j2 and keeps the lost j1
        try:
            record = json.loads(job_file.read_text())
        except (OSError, ValueError):
            return False
        return record.get("job_id") == "j2" and [a["job_id"] for a in record.get("attempts", [])] == ["j1"]

    wait_for(retried)
    first._scheduler.detach(timeout=30)  # the first process ends; j2 stays queued
    spawner.lose_times["sleep_return"] = 1  # the cluster loses j2 too
    with Executor(backend=shared_backend, cache_directory=str(cache_dir)) as later:
        assert later._spawner is spawner
        future = later.submit(funcs.sleep_return, 0, "x", resource_dict=resources)
        wait_for(lambda: later._scheduler._entries.get(key) is not None
                 and later._scheduler._entries[key].job_id == "j2")  # attached, not submitted
        spawner.hold.set()
        if max_retries == 2:  # j1 and j2 lost: the third job is the last retry allowed
            assert future.result(timeout=30) == "x"
            assert jobs_of(spawner, "sleep_return") == 3
        else:  # j1 and j2 lost: that was one retry already
            with pytest.raises(JobFailedError) as info:
                future.result(timeout=30)
            assert "2 time(s)" in str(info.value) and [a["job_id"] for a in info.value.attempts] == ["j1", "j2"]
            assert jobs_of(spawner, "sleep_return") == 2
    record = json.loads(job_file.read_text())
    assert [a["job_id"] for a in record["attempts"]] == ["j1", "j2"]
    assert record["job_id"] == ("j3" if max_retries == 2 else "j2")


def test_a_call_whose_retries_ran_out_starts_afresh_when_run_again(shared_backend, cache_dir):
    with Executor(backend=shared_backend, cache_directory=str(cache_dir)) as exe:
        exe._spawner.lose_times["sleep_return"] = 2
        with pytest.raises(JobFailedError):
            exe.submit(funcs.sleep_return, 0, "x", resource_dict={"max_retries": 1}).result(timeout=30)
    with Executor(backend=shared_backend, cache_directory=str(cache_dir)) as again:
        again._spawner.lose_times["sleep_return"] = 1  # one more loss: the new run's one retry
        assert again.submit(funcs.sleep_return, 0, "x", resource_dict={"max_retries": 1}).result(timeout=30) == "x"


# -- sacct: the final state of a job scontrol forgot, on a cluster with accounting ----------------------

def test_parse_sacct():
    pytest.importorskip("pysqa")
    from executorlib.spawners.slurm import parse_sacct

    assert parse_sacct("") is None
    done = parse_sacct("COMPLETED|0:0|None\n")
    assert (done.state, done.active, done.cluster_failure) == ("COMPLETED", False, False)
    failed = parse_sacct("FAILED|3:0|None")
    assert (failed.state, failed.reason, failed.cluster_failure) == ("FAILED", "NonZeroExitCode", False)
    assert parse_sacct("CANCELLED by 0|0:15|None").state == "CANCELLED"
    assert parse_sacct("NODE_FAIL|0:0|None").cluster_failure
    assert parse_sacct("FAILED|0:0|NodeDown").cluster_failure
    assert parse_sacct("TIMEOUT|0:0|TimeLimit").exceeded == "run_time_max"
    assert parse_sacct("REQUEUED|0:0|None\nRUNNING|0:0|None").running  # the latest run


def _scontrol_forgot(answers: dict, calls: list):
    from executorlib.errors import SubmissionError

    def run_command(command, cwd=None, what=""):
        calls.append(command[0])
        if command[0] == "scontrol":
            raise SubmissionError("'scontrol show job' failed with exit code 1: slurm_load_jobs error: "
                                  "Invalid job id specified")
        answer = answers[command[0]]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return run_command


def test_final_status_asks_sacct_when_scontrol_forgot_the_job(monkeypatch):
    pytest.importorskip("pysqa")
    import executorlib.spawners.slurm as slurm

    calls: list = []
    monkeypatch.setattr(slurm, "run_command", _scontrol_forgot({"sacct": "NODE_FAIL|0:0|None\n"}, calls))
    spawner = slurm.SlurmSpawner()
    status = spawner.final_status("42")
    assert status.state == "NODE_FAIL" and status.cluster_failure and calls == ["scontrol", "sacct"]
    assert spawner.final_state("42") == "NODE_FAIL" and calls == ["scontrol", "sacct"]  # remembered


def test_without_accounting_sacct_is_asked_once_and_nothing_fails(monkeypatch):
    pytest.importorskip("pysqa")
    import executorlib.spawners.slurm as slurm
    from executorlib.errors import SubmissionError

    calls: list = []
    disabled = SubmissionError("'sacct -j 42' failed with exit code 1: Slurm accounting storage is disabled")
    monkeypatch.setattr(slurm, "run_command", _scontrol_forgot({"sacct": disabled}, calls))
    spawner = slurm.SlurmSpawner()
    assert spawner.final_status("42") is None and spawner.final_state("43") is None
    assert calls == ["scontrol", "sacct", "scontrol"]
