"""submit(): a Future whose result is the direct call's; every submit runs; the constructor's checks."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from concurrent.futures import Future

import pytest

from executorlib import Executor
from tests.conformance import funcs
from tests.conformance.conftest import ALL, flavours


@flavours(*ALL)
def test_submit_returns_a_future_with_the_direct_calls_result(flavour):
    with flavour.executor() as exe:
        positional = exe.submit(funcs.add, 2, 3)
        keywords = exe.submit(funcs.capture, 1, fn="f", self="s", resource="r")
        assert isinstance(positional, Future)
        assert positional.result(timeout=flavour.timeout) == funcs.add(2, 3)
        # fn is positional-only in submit(): keywords named fn or self reach the function
        assert keywords.result(timeout=flavour.timeout) == ((1,), {"fn": "f", "self": "s", "resource": "r"})


@flavours(*ALL)
def test_it_is_a_concurrent_futures_executor(flavour):
    import concurrent.futures

    exe = flavour.executor()
    assert isinstance(exe, concurrent.futures.Executor)
    exe.shutdown()


def test_submit_builtins_and_keyword_arguments(flavour):
    with flavour.executor() as exe:
        power = exe.submit(pow, 2, 8)
        ordered = exe.submit(sorted, ["bb", "a", "ccc"], key=len, reverse=True)
        assert power.result(timeout=flavour.timeout) == 256
        assert ordered.result(timeout=flavour.timeout) == ["ccc", "bb", "a"]


@flavours(*ALL)
def test_a_future_argument_is_replaced_by_its_result(flavour):
    with flavour.executor() as exe:
        first = exe.submit(funcs.add, 1, 2)
        second = exe.submit(funcs.add, first, 10)
        assert second.result(timeout=flavour.timeout) == 13
        assert first.result(timeout=flavour.timeout) == 3


@flavours(*ALL)
def test_every_submit_runs_unless_the_user_named_a_cache(flavour):
    """Three identical calls are three executions, as in concurrent.futures. Only with a
    cache_directory the user named are identical calls merged (documented cache semantics: a
    call whose key is in the cache is served from it), yet each still gets its own Future."""
    with flavour.executor() as exe:
        draws = [exe.submit(funcs.draw) for _ in range(3)]
        values = [f.result(timeout=flavour.timeout) for f in draws]
    assert len({id(f) for f in draws}) == 3
    if flavour.named_cache:
        assert len(set(values)) == 1, f"a named cache merges identical calls, got {values}"
    else:
        assert len(set(values)) == 3, f"every submit() must run once, got the values {values}"


def test_a_named_cache_serves_a_call_again_from_a_new_executor(flavour):
    """The other half of the cache semantics: a second Executor on the same named cache returns
    the stored value instead of running again; a temporary cache starts empty every time."""
    with flavour.executor() as exe:
        first = exe.submit(funcs.draw, "again").result(timeout=flavour.timeout)
    with flavour.executor() as exe:
        second = exe.submit(funcs.draw, "again").result(timeout=flavour.timeout)
    if flavour.named_cache:
        assert second == first
    else:
        assert second != first


def test_the_executor_keeps_no_reference_to_a_finished_call(flavour):
    """After CPython's test_no_stale_references: once the call ran, neither the Executor nor a
    discarded Future keeps the submitted callable alive."""
    holder = funcs.Holder()
    collected = threading.Event()
    watcher = weakref.ref(holder, lambda _: collected.set())
    with flavour.executor() as exe:
        exe.submit(holder.method)  # the Future is discarded at once
        del holder
        deadline = time.monotonic() + flavour.timeout
        while not collected.is_set() and time.monotonic() < deadline:
            gc.collect()
            collected.wait(0.05)
        assert collected.is_set(), f"the submitted object is still referenced: {watcher()!r}"


def test_what_a_task_prints_reaches_the_callers_stdout_and_stderr(flavour, capfd):
    """As with ProcessPoolExecutor, print debugging shows in the caller's terminal (issue 13
    part 6; the submission backends write it to the job's output file instead)."""
    with flavour.executor() as exe:
        assert exe.submit(funcs.say, "printed by the task").result(timeout=flavour.timeout)
    captured = capfd.readouterr()
    assert "out: printed by the task" in captured.out, captured
    assert "err: printed by the task" in captured.err, captured


def test_submit_needs_a_callable(flavour):
    with flavour.executor() as exe:
        with pytest.raises(TypeError):
            exe.submit(42)


@pytest.mark.parametrize("kwargs", [{}, {"block_allocation": True}], ids=["local", "local_pool"])
@pytest.mark.parametrize("value", [0, -1])
def test_max_workers_must_be_positive(kwargs, value):
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        Executor(max_workers=value, **kwargs)
