"""Which SLURM endings are the cluster's failures (retried) and which the call's (never retried),
from the words squeue and ``scontrol show job`` give; no cluster needed. The real node failure is
in tests/slurm/test_retries.py.
"""

from __future__ import annotations

import pytest

from executorlib.spawners.slurm import SlurmSpawner, parse_scontrol_job, parse_squeue, slurm_status


@pytest.mark.parametrize("state, reason", [
    ("NODE_FAIL", "NodeDown"), ("NODE_FAIL", "None"), ("BOOT_FAIL", "None"), ("PREEMPTED", "None"),
    ("FAILED", "NodeDown"),  # --no-requeue: the batch step killed when its node was set DOWN
    ("CANCELLED", "NodeDown"), ("FAILED", "SystemFailure"),
])
def test_the_clusters_failures(state, reason):
    status = slurm_status(state, reason)
    assert status.cluster_failure and not status.active and status.exceeded == ""


@pytest.mark.parametrize("state, reason", [
    ("FAILED", "NonZeroExitCode"),  # an exception the worker could not store, a non-zero exit
    ("FAILED", "RaisedSignal"),  # a segfault
    ("TIMEOUT", "TimeLimit"), ("OUT_OF_MEMORY", "OutOfMemory"),
    ("CANCELLED", "None"),  # scancel by the user
    ("COMPLETED", "None"),
    ("RUNNING", "None"), ("PENDING", "Priority"),
])
def test_the_calls_own_endings_and_active_jobs_are_not(state, reason):
    assert not slurm_status(state, reason).cluster_failure


def test_a_requeued_job_counts_as_lost_if_it_vanishes():
    status = slurm_status("REQUEUED", "BeginTime")
    assert status.active and status.cluster_failure  # only read when the job left the queue


def test_the_limit_a_job_ran_into():
    assert slurm_status("TIMEOUT", "TimeLimit").exceeded == "run_time_max"
    assert slurm_status("OUT_OF_MEMORY", "OutOfMemory").exceeded == "memory_max"
    assert slurm_status("FAILED", "NonZeroExitCode").exceeded == ""


def test_scontrol_and_squeue_lines():
    line = ("JobId=41 JobName=sleepy-ab12 UserId=root(0) JobState=FAILED Reason=NodeDown "
            "Dependency=(null) Requeue=0 ExitCode=0:0 NodeList=vm BatchHost=vm")
    status = parse_scontrol_job(line)
    assert (status.state, status.reason, status.cluster_failure) == ("FAILED", "NodeDown", True)
    assert parse_scontrol_job("slurm_load_jobs error: Invalid job id specified") is None
    states = parse_squeue("7|NODE_FAIL|NodeDown\n8|COMPLETED|None\n")
    assert states["7"].cluster_failure and states["7"].reason == "NodeDown"
    assert not states["8"].cluster_failure and states["8"].reason == ""


def test_final_state_shows_a_reason_that_says_more_than_the_state(monkeypatch):
    import executorlib.spawners.slurm as slurm_module

    answers = {"1": "JobId=1 JobState=FAILED Reason=NodeDown", "2": "JobId=2 JobState=TIMEOUT Reason=TimeLimit",
               "3": "JobId=3 JobState=FAILED Reason=NonZeroExitCode"}
    monkeypatch.setattr(slurm_module, "run_command", lambda command, *a, **k: answers[command[-1]])
    spawner = SlurmSpawner.__new__(SlurmSpawner)
    spawner._final = {}
    assert spawner.final_state("1") == "FAILED (reason NodeDown)"
    assert spawner.final_state("2") == "TIMEOUT"
    assert spawner.final_state("3") == "FAILED"
    assert spawner.final_status("1").cluster_failure
