"""The scheduler loop, driven through the Executor with in-process spawners (tests.core.spawner_double).

These cover the paths of the batch backends that need no cluster: submission with the parents' job
ids, failure cascades onto jobs the scheduler already holds, lost jobs, refused submissions,
status-query hiccups, and coordination with other processes through job.json claims.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

import executorlib.executor as executor_module
from executorlib import Executor
from executorlib.errors import DependencyError, JobFailedError, SubmissionError
from executorlib.store import TaskStore
from executorlib.task import compute_key
from tests.core import funcs


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


@pytest.fixture(autouse=True)
def thread_backends(monkeypatch):
    for name, cls in (("thread", "ThreadSpawner"), ("thread_deps", "DependencySpawner")):
        monkeypatch.setitem(executor_module.BACKENDS, name, ("tests.core.spawner_double", cls, False))


@pytest.fixture(params=["thread", "thread_deps"])
def backend(request) -> str:
    return request.param


def test_chain_and_fan_in_resolve(backend):
    with Executor(backend=backend) as exe:
        future = 0
        for i in range(4, 8):
            future = exe.submit(funcs.add_funct, i, future)
        fan_in = exe.submit(funcs.echo, [future, exe.submit(funcs.add_funct, 1, 1)])
        assert future.result(timeout=30) == 22
        assert fan_in.result(timeout=30) == (([22, 2],), {})


def test_batch_mode_submits_children_at_once_with_their_parents_job_ids():
    with Executor(backend="thread_deps") as exe:
        spawner = exe._spawner
        spawner.hold.clear()  # no job may start yet
        future = 0
        for i in range(4, 8):
            future = exe.submit(funcs.add_funct, i, future)
        wait_until(lambda: len(spawner.submitted) == 4)
        assert not future.done()
        assert spawner.submitted == [("add_funct", []), ("add_funct", ["j1"]), ("add_funct", ["j2"]),
                                     ("add_funct", ["j3"])]
        spawner.hold.set()
        assert future.result(timeout=30) == 22


def test_serial_mode_submits_a_child_only_after_its_parent_is_done():
    with Executor(backend="thread") as exe:
        parent = exe.submit(funcs.add_funct, 1, 1)
        child = exe.submit(funcs.add_funct, parent, 1)
        assert child.result(timeout=30) == 3
        assert exe._spawner.submitted == [("add_funct", []), ("add_funct", [])]


def test_batch_mode_a_failed_parent_fails_and_cancels_held_children():
    with Executor(backend="thread_deps") as exe:
        spawner = exe._spawner
        spawner.hold.clear()
        parent = exe.submit(funcs.raise_value_error, "no")
        child = exe.submit(funcs.add_funct, parent, 1)
        grandchild = exe.submit(funcs.add_funct, child, 1)
        wait_until(lambda: len(spawner.submitted) == 3)
        spawner.hold.set()
        with pytest.raises(ValueError):
            parent.result(timeout=30)
        with pytest.raises(ValueError, match=parent._executorlib_key):
            child.result(timeout=30)
        with pytest.raises(ValueError):
            grandchild.result(timeout=30)
    # the jobs held by the scheduler (afterok never satisfied) are cancelled, not left queued
    assert len(spawner.submitted) == 3
    assert {"j2", "j3"} <= set(spawner.cancelled)


def test_batch_mode_a_failed_parent_fails_children_that_wait_for_a_slot():
    with Executor(backend="thread_deps") as exe:
        spawner = exe._spawner
        spawner.capacity = lambda resources: resources["threads_per_core"] != 2
        parent = exe.submit(funcs.raise_value_error, "no")
        child = exe.submit(funcs.add_funct, parent, 1)
        # released for submission by the child's job id, but no slot for it yet
        grandchild = exe.submit(funcs.add_funct, child, 1, resource_dict={"threads_per_core": 2})
        try:
            with pytest.raises(ValueError):
                grandchild.result(timeout=10)
        finally:
            spawner.capacity = lambda resources: True
    assert [name for name, _ in spawner.submitted].count("add_funct") <= 1  # never the grandchild


def test_a_job_that_vanishes_without_a_result_fails_with_its_final_state(backend):
    with Executor(backend=backend) as exe:
        exe._spawner.lose.add("sleep_return")
        lost = exe.submit(funcs.sleep_return, 0, "x", resource_dict={"max_retries": 0})
        child = exe.submit(funcs.add_funct, lost, 1)
        with pytest.raises(JobFailedError) as info:
            lost.result(timeout=30)
        with pytest.raises(DependencyError):
            child.result(timeout=30)
        assert exe.submit(funcs.add_funct, 1, 2).result(timeout=30) == 3
    assert info.value.state == "NODE_FAIL" and info.value.job_id == "j1"


def test_a_refused_submission_fails_only_that_future_and_is_not_cached(backend, cache_dir):
    with Executor(backend=backend, cache_directory=cache_dir) as exe:
        exe._spawner.refuse.add("echo")
        refused = exe.submit(funcs.echo, 1)
        fine = exe.submit(funcs.add_funct, 1, 1)
        with pytest.raises(SubmissionError, match="invalid partition"):
            refused.result(timeout=30)
        assert fine.result(timeout=30) == 2
    key = refused._executorlib_key
    assert not (cache_dir / key / "job.json").exists()  # released: a corrected rerun may submit
    with Executor(backend=backend, cache_directory=cache_dir) as exe:
        assert exe.submit(funcs.echo, 1).result(timeout=30) == ((1,), {})


def test_status_query_failures_are_retried(backend):
    with Executor(backend=backend) as exe:
        exe._spawner.status_failures = 3
        assert exe.submit(funcs.add_funct, 2, 3).result(timeout=30) == 5


def test_the_same_call_twice_runs_once_in_a_named_cache(backend, cache_dir):
    with Executor(backend=backend, cache_directory=cache_dir) as exe:
        first = exe.submit(funcs.add_funct, 5, 5)
        second = exe.submit(funcs.add_funct, 5, 5)
        assert first.result(timeout=30) == second.result(timeout=30) == 10
        assert len(exe._spawner.submitted) == 1


def test_the_same_call_twice_runs_twice_without_a_named_cache(backend):
    """As in concurrent.futures: without a cache the user named, every submit() runs."""
    with Executor(backend=backend) as exe:
        first = exe.submit(funcs.add_funct, 5, 5)
        second = exe.submit(funcs.add_funct, 5, 5)
        assert first.result(timeout=30) == second.result(timeout=30) == 10
        assert len(exe._spawner.submitted) == 2


def test_a_task_claimed_by_another_live_process_is_followed_not_resubmitted(backend, cache_dir):
    key = compute_key(funcs.add_funct, (40, 2), {})
    store = TaskStore(cache_dir)
    store.task_dir(key).mkdir()
    assert store.claim(key, "thread")  # this process is alive: the claim is not stale
    with Executor(backend=backend, cache_directory=cache_dir) as exe:
        future = exe.submit(funcs.add_funct, 40, 2)
        assert future._executorlib_key == key
        assert not future.done()
        store.write_result(key, 42, runtime=0.0)  # the other process's job finished
        assert future.result(timeout=30) == 42
        assert exe._spawner.submitted == []


def test_a_claim_of_a_dead_process_is_taken_over(backend, cache_dir):
    key = compute_key(funcs.add_funct, (1, 2), {})
    store = TaskStore(cache_dir)
    store.task_dir(key).mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (store.task_dir(key) / "job.json").write_text(
        '{"state": "claimed", "backend": "thread", "host": "%s", "pid": %d, "time": 0}'
        % (socket.gethostname(), dead.pid)
    )
    with Executor(backend=backend, cache_directory=cache_dir) as exe:
        assert exe.submit(funcs.add_funct, 1, 2).result(timeout=30) == 3
        assert len(exe._spawner.submitted) == 1


def test_a_recorded_job_that_is_gone_without_result_is_submitted_again(backend, cache_dir):
    key = compute_key(funcs.add_funct, (2, 2), {})
    store = TaskStore(cache_dir)
    store.task_dir(key).mkdir()
    store.write_job(key, backend, "earlier-run-7")  # a job of an earlier run, no longer queued
    with Executor(backend=backend, cache_directory=cache_dir) as exe:
        assert exe.submit(funcs.add_funct, 2, 2).result(timeout=30) == 4
        assert len(exe._spawner.submitted) == 1
