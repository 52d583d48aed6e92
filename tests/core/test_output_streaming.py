"""What a task prints on the local backend reaches the caller's sys.stdout / sys.stderr, as with
ProcessPoolExecutor, while it runs; job.out keeps a copy for the cache tools (issue 13, part 6).

The copy goes through the caller's *current* ``sys.stdout``/``sys.stderr`` objects (not file
descriptors), so a replaced stream, as Jupyter's, gets it: the tests swap in ``io.StringIO``.
"""

from __future__ import annotations

import io
import sys
import time

import pytest

from executorlib import Executor


def chatty(value: int) -> int:
    print(f"to stdout {value}")
    print(f"to stderr {value}", file=sys.stderr)
    return value


def print_then_wait(release_file: str, timeout: float = 60.0) -> str:
    import os

    print("started, waiting for the release file")
    deadline = time.monotonic() + timeout
    while not os.path.exists(release_file):
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.02)
    return "released"


def wait_for_text(stream: io.StringIO, text: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while text not in stream.getvalue():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("block_allocation", [False, True], ids=["local", "block_allocation"])
def test_stdout_and_stderr_of_a_task_reach_the_callers_streams_and_job_out(
        monkeypatch, cache_dir, block_allocation):
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)  # as Jupyter does: another object, not another fd
    monkeypatch.setattr(sys, "stderr", err)
    with Executor(backend="local", cache_directory=cache_dir, block_allocation=block_allocation,
                  max_workers=2) as exe:
        futures = [exe.submit(chatty, i) for i in range(3)]
        assert [f.result(timeout=60) for f in futures] == [0, 1, 2]
        keys = [f._executorlib_key for f in futures]
    for i in range(3):
        assert f"to stdout {i}\n" in out.getvalue() and f"to stdout {i}" not in err.getvalue()
        assert f"to stderr {i}\n" in err.getvalue() and f"to stderr {i}" not in out.getvalue()
    for i, key in enumerate(keys):  # the cache tools still find the output
        log = (cache_dir / key / "job.out").read_text()
        assert f"to stdout {i}" in log and f"to stderr {i}" in log


def test_output_arrives_while_the_task_still_runs(monkeypatch, tmp_path):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    release = tmp_path / "release"
    with Executor(backend="local") as exe:
        future = exe.submit(print_then_wait, str(release))
        try:
            assert wait_for_text(out, "started, waiting for the release file")
            assert not future.done()
        finally:
            release.touch()
        assert future.result(timeout=60) == "released"


def test_non_utf8_bytes_and_output_without_newline_do_not_stop_the_copy(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    with Executor(backend="local") as exe:
        raw = exe.submit(exec, "import sys; sys.stdout.buffer.write(b'bad \\xff byte'); sys.stdout.flush()")
        assert raw.result(timeout=60) is None
        assert exe.submit(chatty, 7).result(timeout=60) == 7
    assert "bad \ufffd byte" in out.getvalue()
    assert "to stdout 7" in out.getvalue()
