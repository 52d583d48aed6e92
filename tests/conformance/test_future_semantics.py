"""The Futures an Executor returns behave as concurrent.futures.Future: done callbacks, the
pending -> running -> finished states, result(timeout) and exception(timeout)."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FuturesTimeoutError

import pytest

from tests.conformance import funcs
from tests.conformance.conftest import ALL, flavours, release, wait_until


def _collect():
    calls: list[Future] = []
    done = threading.Event()

    def callback(future: Future) -> None:
        calls.append(future)
        done.set()

    return calls, done, callback


@flavours(*ALL)
def test_a_done_callback_runs_once_with_the_future(flavour):
    calls, done, callback = _collect()
    with flavour.executor() as exe:
        future = exe.submit(funcs.add, 20, 22)
        future.add_done_callback(callback)
        assert done.wait(flavour.timeout), "the done callback did not run"
    assert calls == [future] and future.result() == 42


def test_done_callbacks_run_for_exceptions_and_cancellation(flavour):
    failed_calls, failed_done, on_failed = _collect()
    cancelled_calls, cancelled_done, on_cancelled = _collect()
    started, gate = flavour.gate("started"), flavour.gate("release")
    with flavour.executor(max_workers=1) as exe:
        blocker = exe.submit(funcs.touch_and_wait, started, gate)
        wait_until(lambda: os.path.exists(started), flavour.timeout, "the blocker to start")
        pending = exe.submit(funcs.add, 1, 1)
        pending.add_done_callback(on_cancelled)
        assert pending.cancel()
        assert cancelled_done.wait(5) and cancelled_calls == [pending]
        failing = exe.submit(funcs.raise_custom, "callback sees me")
        failing.add_done_callback(on_failed)
        release(gate)
        assert failed_done.wait(flavour.timeout) and failed_calls == [failing]
        assert isinstance(failing.exception(), funcs.ConformanceError)
        blocker.result(timeout=flavour.timeout)


def test_a_callback_added_to_a_finished_future_runs_at_once(flavour):
    with flavour.executor() as exe:
        future = exe.submit(funcs.add, 1, 2)
        future.result(timeout=flavour.timeout)
        calls = []
        future.add_done_callback(calls.append)
        assert calls == [future]


def test_a_raising_callback_is_logged_and_the_others_still_run(flavour, caplog):
    calls, done, callback = _collect()

    def bad(future: Future) -> None:
        raise RuntimeError("a broken callback")

    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        with flavour.executor() as exe:
            future = exe.submit(funcs.sleep_return, 0.2, "ok")
            future.add_done_callback(bad)
            future.add_done_callback(callback)
            assert done.wait(flavour.timeout)
            assert future.result() == "ok"
    assert any("exception calling callback" in r.getMessage() for r in caplog.records)


def test_states_pending_running_finished(flavour):
    started, gate = flavour.gate("started"), flavour.gate("release")
    with flavour.executor(max_workers=1) as exe:
        running = exe.submit(funcs.touch_and_wait, started, gate, "first")
        queued = exe.submit(funcs.add, 1, 1)
        assert isinstance(running, Future)
        wait_until(lambda: os.path.exists(started), flavour.timeout, "the first task to start")
        wait_until(running.running, 5, "running() to become True while the task runs")
        assert not running.done()
        assert not queued.running() and not queued.done(), "a queued task is pending"
        assert "state=running" in repr(running) and "state=pending" in repr(queued)
        release(gate)
        assert running.result(timeout=flavour.timeout) == "first"
        assert running.done() and not running.running() and not running.cancelled()
        assert "state=finished returned str" in repr(running)
        assert queued.result(timeout=flavour.timeout) == 2


def test_result_and_exception_with_a_timeout(flavour):
    gate = flavour.gate("release")
    with flavour.executor() as exe:
        slow = exe.submit(funcs.wait_for_file, gate, "late")
        with pytest.raises(FuturesTimeoutError):
            slow.result(timeout=0.2)
        with pytest.raises(FuturesTimeoutError):
            slow.exception(timeout=0)
        assert not slow.done(), "a result() timeout does not cancel the task"
        release(gate)
        assert slow.result(timeout=flavour.timeout) == "late"
        assert slow.exception(timeout=0) is None


def test_result_of_a_cancelled_future_raises_cancelled_error(flavour):
    started, gate = flavour.gate("started"), flavour.gate("release")
    with flavour.executor(max_workers=1) as exe:
        exe.submit(funcs.touch_and_wait, started, gate)
        wait_until(lambda: os.path.exists(started), flavour.timeout, "the blocker to start")
        pending = exe.submit(funcs.add, 2, 2)
        assert pending.cancel()
        with pytest.raises(CancelledError):
            pending.result(timeout=1)
        with pytest.raises(CancelledError):
            pending.exception(timeout=1)
        release(gate)
