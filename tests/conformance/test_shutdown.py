"""shutdown(): wait=True waits, wait=False returns, cancel_futures=True cancels everything not
started (dependents included), submit() after shutdown raises RuntimeError, the context manager."""

from __future__ import annotations

import threading
import time

import pytest

from tests.conformance import funcs
from tests.conformance.conftest import ALL, SLURM, flavours, release, wait_until


@flavours(*ALL)
def test_shutdown_wait_true_waits_for_every_future(flavour):
    exe = flavour.executor(max_workers=2)
    values = ["a"] if flavour.submission else ["a", "b"]  # SLURM: one job (the cluster is shared)
    futures = [exe.submit(funcs.sleep_return, 0.5, value) for value in values]
    exe.shutdown(wait=True)
    assert [f.done() for f in futures] == [True] * len(values)
    assert [f.result(timeout=0) for f in futures] == values


def test_shutdown_wait_false_returns_and_the_tasks_still_finish(flavour):
    gate = flavour.gate("running")
    exe = flavour.executor(max_workers=2)
    future = exe.submit(funcs.wait_for_file, gate, "finished later")
    start = time.monotonic()
    exe.shutdown(wait=False)
    assert time.monotonic() - start < 1.0
    assert not future.done()
    release(gate)
    assert future.result(timeout=flavour.timeout) == "finished later"


@flavours(*SLURM)
def test_shutdown_wait_false_leaves_the_job_for_a_later_executor(flavour):
    from tests.slurm.slurm_tools import active, job_ids_in, squeue_states, wait_job_id

    gate = flavour.gate("job")
    exe = flavour.executor()
    future = exe.submit(funcs.wait_for_file, gate, "reattached")
    job_id = wait_job_id(flavour.cache, future)
    start = time.monotonic()
    exe.shutdown(wait=False)
    assert time.monotonic() - start < 2.0
    time.sleep(1.0)
    assert active(squeue_states([job_id])[job_id][0]), "shutdown(wait=False) must leave the job"
    release(gate)
    with flavour.executor() as later:
        again = later.submit(funcs.wait_for_file, gate, "reattached")
        assert again.result(timeout=flavour.timeout) == "reattached"
    assert job_ids_in(flavour.cache) == {job_id}, "the later Executor must attach, not resubmit"


def test_shutdown_cancel_futures_cancels_everything_not_started(flavour):
    started, gate = flavour.gate("started"), flavour.gate("release")
    exe = flavour.executor(max_workers=1)
    running = exe.submit(funcs.touch_and_wait, started, gate, "ran")
    wait_until(lambda: running.running() and __import__("os").path.exists(started),
               flavour.timeout, "the first task to start")
    pending = [exe.submit(funcs.touch, str(flavour.tmp_path / f"never-{i}"), i) for i in range(4)]
    dependents = [exe.submit(funcs.add, pending[0], 1), exe.submit(funcs.add, running, "!"),
                  exe.submit(funcs.add, pending[1], pending[2])]
    threading.Timer(0.5, release, (gate,)).start()
    exe.shutdown(wait=True, cancel_futures=True)
    assert running.result(timeout=0) == "ran", "a task already running finishes"
    not_cancelled = [f for f in pending + dependents if not f.cancelled()]
    assert not_cancelled == [], f"not cancelled: {[repr(f) for f in not_cancelled]} " \
                                f"{[f.exception(timeout=0) for f in not_cancelled if f.done()]}"
    assert not list(flavour.tmp_path.glob("never-*")), "a cancelled task ran"


def test_shutdown_wait_false_cancel_futures_cancels_at_once(flavour):
    started, gate = flavour.gate("started"), flavour.gate("release")
    exe = flavour.executor(max_workers=1)
    running = exe.submit(funcs.touch_and_wait, started, gate, "ran")
    wait_until(lambda: __import__("os").path.exists(started), flavour.timeout, "the first task to start")
    pending = [exe.submit(funcs.add, i, 1) for i in range(3)]
    exe.shutdown(wait=False, cancel_futures=True)
    assert [f.cancelled() for f in pending] == [True, True, True]
    release(gate)
    assert running.result(timeout=flavour.timeout) == "ran"


def test_shutdown_cancel_futures_many_small_tasks(flavour):
    """After CPython's test_cancel_futures: with one worker most of 30 queued calls are cancelled,
    the others finish without an error."""
    exe = flavour.executor(max_workers=1)
    futures = [exe.submit(funcs.sleep_return, 0.1, i) for i in range(30)]
    exe.shutdown(cancel_futures=True)
    cancelled = [f for f in futures if f.cancelled()]
    others = [f for f in futures if not f.cancelled()]
    assert len(cancelled) > 20
    assert all(f.done() and f.exception() is None for f in others)


@flavours(*SLURM)
def test_shutdown_cancel_futures_scancels_queued_jobs_and_keeps_running_ones(flavour):
    from tests.slurm.slurm_tools import active, job_record, squeue_states, wait_job_id

    started, gate = flavour.gate("started"), flavour.gate("release")
    exe = flavour.executor()
    parent = exe.submit(funcs.touch_and_wait, started, gate, 1)
    children = [exe.submit(funcs.add, parent, 1)]
    grandchild = exe.submit(funcs.add, children[0], parent)
    parent_job = wait_job_id(flavour.cache, parent)
    wait_until(lambda: __import__("os").path.exists(started), flavour.timeout, "the parent job to start")
    exe.shutdown(wait=False, cancel_futures=True)
    queued = children + [grandchild]
    assert [f.cancelled() for f in queued] == [True, True], \
        [f.exception(timeout=0) if f.done() and not f.cancelled() else f for f in queued]
    ids = [str(r["job_id"]) for r in (job_record(flavour.cache, f) for f in queued) if r and r.get("job_id")]
    wait_until(lambda: not any(active(s) for s, _ in squeue_states(ids).values()), 30.0,
               f"the queued jobs {ids} to be scancel'd")
    assert active(squeue_states([parent_job])[parent_job][0]), "a running job keeps running"
    release(gate)


@flavours(*ALL)
def test_submit_and_map_after_shutdown_raise_runtime_error(flavour):
    exe = flavour.executor()
    exe.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        exe.submit(pow, 2, 5)
    with pytest.raises(RuntimeError):
        exe.map(abs, [1])
    exe.shutdown()  # a second shutdown is harmless


def test_context_manager_returns_the_executor_and_waits(flavour):
    exe = flavour.executor(max_workers=2)
    with exe as entered:
        assert entered is exe
        futures = [exe.submit(funcs.sleep_return, 0.3, i) for i in range(3)]
    assert [f.done() for f in futures] == [True, True, True]
    assert [f.result() for f in futures] == [0, 1, 2]
    with pytest.raises(RuntimeError):
        exe.submit(pow, 2, 2)
