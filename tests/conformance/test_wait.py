"""concurrent.futures.wait(): FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED and timeouts.

A task blocked on a gate is submitted after the quick one it waits for: the test cluster has two
CPUs shared by everyone, and a blocked job holding the last free one would starve the quick job."""

from __future__ import annotations

import time
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, wait

from tests.conformance import funcs
from tests.conformance.conftest import ALL, flavours, release


@flavours(*ALL)
def test_first_completed_returns_with_the_finished_one(flavour):
    gate = flavour.gate("slow")
    with flavour.executor(max_workers=2) as exe:
        fast = exe.submit(funcs.add, 21, 21)  # first: it takes the first free slot (SLURM)
        slow = exe.submit(funcs.wait_for_file, gate, "slow")
        done, not_done = wait([slow, fast], timeout=flavour.timeout, return_when=FIRST_COMPLETED)
        assert (done, not_done) == ({fast}, {slow})
        release(gate)
        assert slow.result(timeout=flavour.timeout) == "slow"


def test_first_completed_with_one_already_done(flavour):
    gate = flavour.gate("slow")
    with flavour.executor(max_workers=2) as exe:
        fast = exe.submit(funcs.add, 1, 1)
        fast.result(timeout=flavour.timeout)
        slow = exe.submit(funcs.wait_for_file, gate)
        start = time.monotonic()
        done, not_done = wait([fast, slow], timeout=flavour.timeout, return_when=FIRST_COMPLETED)
        assert time.monotonic() - start < 1.0
        assert (done, not_done) == ({fast}, {slow})
        release(gate)


@flavours(*ALL)
def test_first_exception_returns_at_the_first_failure(flavour):
    gate = flavour.gate("slow")
    with flavour.executor(max_workers=2) as exe:
        failing = exe.submit(funcs.sleep_raise, 0.1, "first failure")
        slow = exe.submit(funcs.wait_for_file, gate)
        done, not_done = wait([slow, failing], timeout=flavour.timeout, return_when=FIRST_EXCEPTION)
        assert (done, not_done) == ({failing}, {slow})
        assert isinstance(failing.exception(), funcs.ConformanceError)
        release(gate)


def test_first_exception_without_a_failure_waits_for_all(flavour):
    with flavour.executor(max_workers=2) as exe:
        futures = [exe.submit(funcs.sleep_return, 0.2, i) for i in range(3)]
        done, not_done = wait(futures, timeout=flavour.timeout, return_when=FIRST_EXCEPTION)
        assert (done, not_done) == (set(futures), set())


def test_all_completed_waits_for_every_future(flavour):
    with flavour.executor(max_workers=2) as exe:
        futures = [exe.submit(funcs.sleep_return, 0.1 * i, i) for i in range(4)]
        futures.append(exe.submit(funcs.raise_custom, "one fails"))
        done, not_done = wait(futures, timeout=flavour.timeout, return_when=ALL_COMPLETED)
        assert (done, not_done) == (set(futures), set())
        assert [f.result() for f in futures[:4]] == [0, 1, 2, 3]


def test_wait_timeout_returns_the_unfinished(flavour):
    gate = flavour.gate("slow")
    with flavour.executor(max_workers=2) as exe:
        fast = exe.submit(funcs.add, 1, 2)
        slow = exe.submit(funcs.wait_for_file, gate)
        fast.result(timeout=flavour.timeout)
        start = time.monotonic()
        done, not_done = wait([fast, slow], timeout=0.5)
        elapsed = time.monotonic() - start
        assert (done, not_done) == ({fast}, {slow})
        assert 0.4 <= elapsed < 3.0, f"wait(timeout=0.5) took {elapsed:.2f} s"
        release(gate)
        done, not_done = wait([fast, slow], timeout=flavour.timeout)
        assert not_done == set()
