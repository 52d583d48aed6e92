"""concurrent.futures.as_completed(): completion order, timeout, duplicates, finished first."""

from __future__ import annotations

from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures import as_completed

import pytest

from tests.conformance import funcs
from tests.conformance.conftest import ALL, flavours, release


@flavours(*ALL)
def test_as_completed_yields_in_completion_order(flavour):
    gate = flavour.gate("slow")
    with flavour.executor(max_workers=2) as exe:
        fast = exe.submit(funcs.add, 1, 2)  # first: a blocked job must not starve it (SLURM, 2 CPUs)
        slow = exe.submit(funcs.wait_for_file, gate, "slow")
        iterator = as_completed([slow, fast], timeout=flavour.timeout)
        assert next(iterator) is fast
        release(gate)
        assert next(iterator) is slow
        with pytest.raises(StopIteration):
            next(iterator)
        assert (fast.result(), slow.result()) == (3, "slow")


def test_as_completed_yields_finished_futures_first(flavour):
    gate = flavour.gate("slow")
    with flavour.executor(max_workers=2) as exe:
        finished = exe.submit(funcs.add, 2, 2)
        finished.result(timeout=flavour.timeout)
        slow = exe.submit(funcs.wait_for_file, gate)
        iterator = as_completed([slow, finished], timeout=flavour.timeout)
        assert next(iterator) is finished
        release(gate)
        assert next(iterator) is slow


def test_as_completed_timeout(flavour):
    gate = flavour.gate("slow")
    with flavour.executor(max_workers=2) as exe:
        fast = exe.submit(funcs.add, 1, 1)
        slow = exe.submit(funcs.wait_for_file, gate)
        fast.result(timeout=flavour.timeout)
        seen = []
        with pytest.raises(FuturesTimeoutError, match=r"1 \(of 2\) futures unfinished"):
            for future in as_completed([fast, slow], timeout=0.5):
                seen.append(future)
        assert seen == [fast]
        release(gate)


def test_as_completed_yields_a_duplicate_once(flavour):
    with flavour.executor(max_workers=2) as exe:
        first = exe.submit(funcs.add, 1, 1)
        second = exe.submit(funcs.add, 2, 2)
        yielded = list(as_completed([first, second, first, second, first], timeout=flavour.timeout))
        assert sorted(yielded, key=id) == sorted([first, second], key=id)
