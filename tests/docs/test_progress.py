"""executorlib.progress: as_completed with a tqdm bar; repr() of an Executor shows its state."""

from __future__ import annotations

import io
import re
import sys
import time
from concurrent.futures import Future

import pytest

from executorlib import Executor, progress


def slow_identity(x, delay):
    time.sleep(delay)
    return x


def fail(x):
    raise ValueError(x)


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def test_progress_yields_every_future_once_and_counts_them() -> None:
    first, second = _done(1), _done(2)
    out = io.StringIO()
    seen = list(progress([first, second, first], file=out, desc="sums", mininterval=0))
    assert sorted(f.result() for f in seen) == [1, 2]
    text = out.getvalue()
    assert "sums" in text and "2/2" in text


def test_progress_with_executor_futures_yields_in_completion_order() -> None:
    with Executor(max_workers=2) as exe:
        slow = exe.submit(slow_identity, "slow", 1.5)
        fast = exe.submit(slow_identity, "fast", 0.0)
        order = [f.result() for f in progress([slow, fast], file=io.StringIO())]
    assert order == ["fast", "slow"]


def test_progress_counts_failures_in_the_postfix() -> None:
    with Executor() as exe:
        futures = [exe.submit(fail, 1), exe.submit(slow_identity, 2, 0)]
        out = io.StringIO()
        done = list(progress(futures, file=out, mininterval=0))
    assert len(done) == 2
    assert "failed=1" in out.getvalue()


def test_progress_timeout_raises_and_closes_the_bar() -> None:
    pending: Future = Future()
    out = io.StringIO()
    with pytest.raises(TimeoutError):
        list(progress([pending], timeout=0.2, file=out))
    assert "0/1" in out.getvalue()


def test_progress_without_tqdm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "tqdm" or m.startswith("tqdm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes "import tqdm" fail like a missing package
    with pytest.raises(ImportError, match=r"pip install 'executorlib\[progress\]'"):
        progress([_done(1)])  # raised at the call, not at the first next()


def test_executor_repr_counts_tasks_by_state(tmp_path) -> None:
    exe = Executor(cache_directory=tmp_path / "cache")
    exe.submit(slow_identity, 1, 3.0)  # the Futures are not kept: they are counted all the same
    exe.submit(fail, 2)
    text = repr(exe)
    assert "backend='local'" in text and repr(str(tmp_path / "cache")) in text
    counts = re.search(r"running: (\d+) pending, (\d+) running, (\d+) done, (\d+) failed>$", text)
    assert counts is not None and sum(map(int, counts.groups())) == 2, text
    deadline = time.monotonic() + 10
    while "0 pending, 1 running, 0 done, 1 failed" not in repr(exe) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "running: 0 pending, 1 running, 0 done, 1 failed>" in repr(exe)
    exe.shutdown()
    assert repr(exe).endswith("shut down: 0 pending, 0 running, 1 done, 1 failed>")
