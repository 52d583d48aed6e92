"""How failures on the cluster reach the Future: remote errors, killed jobs, refused submissions."""

from __future__ import annotations

import time

import pytest

from executorlib import Executor
from executorlib.errors import JobFailedError, SubmissionError
from tests.slurm import funcs
from tests.slurm.slurm_tools import (SEED_TEMPLATE, active, job_record, run, scontrol_job,
                                     wait_job_id, wait_state)

pytestmark = pytest.mark.slurm


def wait_for_output(path, text: str, timeout: float = 120.0) -> None:
    """Wait until the job wrote ``text`` to its output file (its Python is up and running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} did not appear in {path} within {timeout} s")


def test_remote_exception_keeps_type_message_and_traceback(slurm_cache):
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        future = exe.submit(funcs.raise_error, "bad value 42")
        with pytest.raises(funcs.SlurmTestError) as info:
            future.result(timeout=120)
    assert str(info.value) == "bad value 42" and info.value.args == ("bad value 42",)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert f"Traceback of the remote task {future._executorlib_key}" in notes
    assert "in raise_error" in notes and "SlurmTestError: bad value 42" in notes


def test_scancel_from_outside_is_a_job_failure(slurm_cache):
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        future = exe.submit(funcs.announce_and_sleep, "victim", 600)
        job_id = wait_job_id(slurm_cache, future)
        wait_for_output(slurm_cache / future._executorlib_key / "job.out", "started victim")
        assert run(["scancel", job_id]).returncode == 0
        with pytest.raises(JobFailedError) as info:
            future.result(timeout=120)
    error = info.value
    assert error.state.startswith("CANCELLED") and error.job_id == job_id
    message = str(error)
    assert f"SLURM job {job_id}" in message and "CANCELLED" in message
    assert "started victim" in message  # the last lines of the job's output file
    assert f"JOB {job_id} ON" in message  # slurmstepd's own line about the cancellation


@pytest.mark.slow
def test_time_limit_is_a_timeout_failure(slurm_cache):
    """run_time_max=5 s: SLURM rounds the limit up to a minute and enforces it on its next tick."""
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        future = exe.submit(funcs.announce_and_sleep, "sleeper", 600, resource_dict={"run_time_max": 5})
        job_id = wait_job_id(slurm_cache, future)
        assert scontrol_job(job_id)["TimeLimit"] == "00:01:00"
        with pytest.raises(JobFailedError) as info:
            future.result(timeout=240)
    assert info.value.state == "TIMEOUT" and info.value.job_id == job_id
    assert "TIMEOUT" in str(info.value) and "TIME LIMIT" in str(info.value)
    # what to raise, with the value used; a time limit is the call's own failure: never retried
    assert "raise resource_dict['run_time_max'] (it was 5 s)" in str(info.value)
    assert "lost the job" not in str(info.value)


def memory_enforced() -> bool:
    """SLURM kills jobs over --mem with cgroups, or with jobacct_gather's OverMemoryKill."""
    config = run(["scontrol", "show", "config"]).stdout
    fields = {line.split("=", 1)[0].strip(): line.split("=", 1)[1].strip()
              for line in config.splitlines() if "=" in line}
    return ("cgroup" in fields.get("TaskPlugin", "")
            or ("OverMemoryKill" in fields.get("JobAcctGatherParams", "")
                and fields.get("JobAcctGatherType", "none") != "jobacct_gather/none"))


def test_memory_max_is_enforced(slurm_cache):
    if not memory_enforced():
        pytest.skip("this cluster does not enforce --mem (no task/cgroup, no JobAcctGatherParams="
                    "OverMemoryKill), so memory_max cannot be tested here")
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        future = exe.submit(funcs.allocate, 1024, 30, resource_dict={"memory_max": 0.2})
        with pytest.raises(JobFailedError) as info:
            future.result(timeout=180)
    # cgroups report OUT_OF_MEMORY; OverMemoryKill cancels the step and the job ends FAILED
    assert info.value.state.split()[0] in {"OUT_OF_MEMORY", "FAILED", "CANCELLED"}, info.value.state
    assert "memory limit" in str(info.value), str(info.value)


@pytest.mark.parametrize("template", [None, SEED_TEMPLATE], ids=["default-template", "seed-template"])
def test_failed_parent_fails_and_cancels_its_dependent(slurm_cache, template):
    """The seed template has no --kill-on-invalid-dep: executorlib must scancel the held child."""
    resources = {"submission_template": template} if template else {}
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache),
                  resource_dict=resources) as exe:
        parent = exe.submit(funcs.raise_error, "parent broke", 3)
        child = exe.submit(funcs.add_funct, 1, parent)
        parent_id, child_id = wait_job_id(slurm_cache, parent), wait_job_id(slurm_cache, child)
        assert scontrol_job(child_id)["Dependency"].startswith(f"afterok:{parent_id}")
        with pytest.raises(funcs.SlurmTestError, match="parent broke"):  # the parent's own type
            child.result(timeout=120)
        with pytest.raises(funcs.SlurmTestError):
            parent.result()
    state = wait_state(child_id, lambda s: not active(s), timeout=30)
    assert state == "CANCELLED"
    assert not (slurm_cache / child._executorlib_key / "result.h5").exists()


def test_sbatch_refusing_a_partition_is_a_submission_error_and_not_cached(slurm_cache):
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        future = exe.submit(sum, [5, 5], resource_dict={"partition": "nonexistent"})
        with pytest.raises(SubmissionError) as info:
            future.result(timeout=60)
        assert "Invalid partition name specified" in str(info.value)
        assert "nonexistent" in str(info.value)
        assert job_record(slurm_cache, future) is None  # not cached: nothing to reattach to
        again = exe.submit(sum, [5, 5])  # corrected: the cluster's default partition
        assert again.result(timeout=120) == 10
        assert job_record(slurm_cache, again)["state"] == "submitted"


def test_sbatch_refusing_a_template_is_a_submission_error_and_not_cached(slurm_cache):
    bad = SEED_TEMPLATE.replace("#SBATCH --get-user-env=L\n", "#SBATCH --no-such-option=1\n")
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        future = exe.submit(sum, [6, 6], resource_dict={"submission_template": bad})
        with pytest.raises(SubmissionError, match="unrecognized option '--no-such-option=1'"):
            future.result(timeout=60)
    assert job_record(slurm_cache, future) is None
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        again = exe.submit(sum, [6, 6], resource_dict={"submission_template": SEED_TEMPLATE})
        assert again.result(timeout=120) == 12
    assert job_record(slurm_cache, again)["state"] == "submitted"
