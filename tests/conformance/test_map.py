"""map(): results in input order, the timeout, chunksize validation, exceptions raised lazily."""

from __future__ import annotations

import os
import time
from concurrent.futures import TimeoutError as FuturesTimeoutError

import pytest

from tests.conformance import funcs
from tests.conformance.conftest import ALL, flavours


@flavours(*ALL)
def test_map_yields_results_in_input_order(flavour):
    # the first call is the slowest: the order is still the input order
    seconds = [1.5, 0.5, 0.0] if flavour.submission else [0.6, 0.2, 0.0]
    with flavour.executor() as exe:
        results = exe.map(funcs.sleep_return, seconds, ["a", "b", "c"], timeout=flavour.timeout)
        assert list(results) == ["a", "b", "c"]


def test_map_stops_at_the_shortest_iterable(flavour):
    with flavour.executor() as exe:
        assert list(exe.map(funcs.add, [1, 2, 3], [10, 20])) == [11, 22]
        assert list(exe.map(abs, [])) == []


def test_map_submits_without_iteration(flavour):
    paths = [str(flavour.tmp_path / f"ran-{i}") for i in range(3)]
    exe = flavour.executor()
    exe.map(funcs.touch, paths)  # never iterated
    exe.shutdown(wait=True)
    assert [os.path.exists(p) for p in paths] == [True, True, True]


def test_map_timeout_raises_while_iterating(flavour):
    gate = flavour.gate("map")
    with flavour.executor(max_workers=2) as exe:
        start = time.monotonic()
        results = exe.map(funcs.wait_for_file, [gate, gate], ["first", "second"], timeout=0.5)
        with pytest.raises(FuturesTimeoutError):
            list(results)
        assert time.monotonic() - start < 5.0, "the timeout counts from the map() call"
        open(gate, "w").close()


@pytest.mark.parametrize("chunksize", [0, -1])
def test_map_rejects_a_chunksize_below_one(flavour, chunksize):
    with flavour.executor() as exe:
        with pytest.raises(ValueError):
            exe.map(abs, [1, 2], chunksize=chunksize)


def test_map_accepts_a_chunksize(flavour):
    with flavour.executor() as exe:
        assert list(exe.map(funcs.add, range(5), range(5), chunksize=2)) == [0, 2, 4, 6, 8]


@flavours(*ALL)
def test_map_raises_the_tasks_exception_lazily_at_its_position(flavour):
    with flavour.executor() as exe:
        results = exe.map(funcs.fail_if_negative, [1, -1, 2], timeout=flavour.timeout)  # no raise here
        assert next(results) == 10
        with pytest.raises(ValueError, match="negative: -1"):
            next(results)
