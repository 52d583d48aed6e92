"""Future.cancel(): a pending Future is cancelled for good, a running or finished one is not; a
cancelled Future leaves an identical one alone; on SLURM the queued job is scancel'd."""

from __future__ import annotations

import os
import time
from concurrent.futures import CancelledError

import pytest

from tests.conformance import funcs
from tests.conformance.conftest import ALL, SLURM, flavours, release, wait_until


def _occupy_the_only_worker(flavour, exe):
    started, gate = flavour.gate("started"), flavour.gate("release")
    blocker = exe.submit(funcs.touch_and_wait, started, gate, "blocker")
    wait_until(lambda: os.path.exists(started), flavour.timeout, "the blocking task to start")
    return blocker, gate


def test_cancel_a_pending_future(flavour):
    exe = flavour.executor(max_workers=1)
    blocker, gate = _occupy_the_only_worker(flavour, exe)
    ran = flavour.tmp_path / "pending-ran"
    pending = exe.submit(funcs.touch, str(ran), "pending")
    assert not pending.running()
    assert pending.cancel() is True
    assert pending.cancelled() and pending.done()
    release(gate)
    exe.shutdown(wait=True)
    assert blocker.result() == "blocker"
    assert pending.cancelled(), "a cancelled Future stays cancelled"
    with pytest.raises(CancelledError):
        pending.result(timeout=0)
    assert not ran.exists(), "the cancelled task ran"


def test_cancel_a_running_future_returns_false(flavour):
    started, gate = flavour.gate("started"), flavour.gate("release")
    with flavour.executor(max_workers=1) as exe:
        future = exe.submit(funcs.touch_and_wait, started, gate, "kept")
        wait_until(lambda: os.path.exists(started) and future.running(), flavour.timeout,
                   "the task to run")
        assert future.cancel() is False
        assert not future.cancelled()
        release(gate)
        assert future.result(timeout=flavour.timeout) == "kept"


def test_cancel_a_finished_future_returns_false(flavour):
    with flavour.executor() as exe:
        future = exe.submit(funcs.add, 1, 1)
        assert future.result(timeout=flavour.timeout) == 2
        assert future.cancel() is False
        assert not future.cancelled() and future.result() == 2


def test_cancelling_one_of_two_identical_calls_leaves_the_other(flavour):
    """With a named cache the two calls share one task (same key); without one they are two
    tasks. Either way the second Future must be unaffected by cancelling the first."""
    exe = flavour.executor(max_workers=1)
    blocker, gate = _occupy_the_only_worker(flavour, exe)
    path = str(flavour.tmp_path / "shared")
    first = exe.submit(funcs.touch, path, "value")
    second = exe.submit(funcs.touch, path, "value")
    time.sleep(0.5)  # the scheduler has taken both calls (task written, queued for the worker)
    assert not first.running()
    assert first.cancel() is True
    release(gate)
    assert second.result(timeout=flavour.timeout) == "value"
    assert first.cancelled() and not second.cancelled()
    exe.shutdown(wait=True)


@flavours(*SLURM)
def test_cancel_a_queued_job(flavour):
    from tests.slurm.slurm_tools import active, squeue_states, wait_job_id

    started, gate = flavour.gate("started"), flavour.gate("release")
    exe = flavour.executor()
    parent = exe.submit(funcs.touch_and_wait, started, gate, 1)
    child = exe.submit(funcs.add, parent, 1)  # queued behind its parent's job
    child_job = wait_job_id(flavour.cache, child)
    assert child.cancel() is True
    wait_until(lambda: not active(squeue_states([child_job]).get(child_job, ("GONE", ""))[0]), 30.0,
               f"the cancelled Future's job {child_job} to be scancel'd")
    release(gate)
    assert parent.result(timeout=flavour.timeout) == 1
    assert child.cancelled()
    exe.shutdown(wait=True)
