"""Future.cancel(), shutdown(wait=...), shutdown(cancel_futures=True) on the local backend."""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
import time
from pathlib import Path

import pytest

from executorlib import Executor
from tests.core import funcs


def wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has ended
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_cancel_of_a_waiting_task_returns_true_and_it_never_runs(tmp_path):
    release, marker = tmp_path / "release", tmp_path / "ran.txt"
    with Executor(backend="local", max_workers=1) as exe:
        first = exe.submit(funcs.wait_for_file, str(release))
        waiting = exe.submit(funcs.record, str(marker), "waiting")
        assert waiting.cancel() is True
        assert waiting.cancelled()
        with pytest.raises(cf.CancelledError):
            waiting.result()
        release.touch()
        assert first.result(timeout=60) is True
        after = exe.submit(funcs.record, str(marker), "after")
        assert after.result(timeout=60) == "after"
    assert marker.read_text() == "after\n"  # the cancelled task never ran


def test_cancel_of_a_running_task_returns_false(tmp_path):
    release = tmp_path / "release"
    with Executor(backend="local") as exe:
        running = exe.submit(funcs.wait_for_file, str(release))
        deadline = time.monotonic() + 60
        while not running.running():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert running.cancel() is False
        release.touch()
        assert running.result(timeout=60) is True


def test_shutdown_cancel_futures_lets_running_tasks_finish_and_cancels_every_other(tmp_path):
    pid_file, release, marker = tmp_path / "pid", tmp_path / "release", tmp_path / "ran.txt"
    exe = Executor(backend="local", max_workers=1)
    running = exe.submit(funcs.pid_then_wait, str(pid_file), str(release))
    pending = exe.submit(funcs.record, str(marker), "pending")
    child = exe.submit(funcs.add_funct, running, 1)  # not started: its parent runs
    grandchild = exe.submit(funcs.add_funct, child, 1)
    wait_for(pid_file)
    pid = int(pid_file.read_text())
    timer = threading.Timer(0.5, release.touch)
    timer.start()
    exe.shutdown(wait=True, cancel_futures=True)
    timer.join()
    assert running.result(timeout=0) == pid  # as concurrent.futures: a running task finishes
    for future in (pending, child, grandchild):  # never a DependencyError: cancelled, not failed
        assert future.cancelled()
    assert not marker.exists()


def test_shutdown_without_wait_returns_at_once_and_futures_resolve_later(tmp_path):
    release = tmp_path / "release"
    exe = Executor(backend="local", cache_directory=tmp_path / "cache")
    blocked = exe.submit(funcs.wait_for_file, str(release))
    follower = exe.submit(funcs.add_funct, 1, 1)
    caller = threading.Thread(target=exe.shutdown, kwargs={"wait": False})
    caller.start()
    caller.join(timeout=30)
    assert not caller.is_alive(), "shutdown(wait=False) blocked"
    assert not blocked.done()  # it cannot finish before the release file exists
    with pytest.raises(RuntimeError):
        exe.submit(funcs.add_funct, 2, 2)
    release.touch()
    assert blocked.result(timeout=60) is True
    assert follower.result(timeout=60) == 2
    exe.shutdown(wait=True)


def test_shutdown_wait_waits_for_every_future(tmp_path):
    exe = Executor(backend="local")
    futures = [exe.submit(funcs.sleep_return, 0.1, i) for i in range(3)]
    exe.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result(timeout=0) for f in futures] == [0, 1, 2]


def test_leaving_the_with_block_waits_for_the_futures():
    with Executor(backend="local") as exe:
        future = exe.submit(funcs.sleep_return, 0.2, "done")
    assert future.done() and future.result(timeout=0) == "done"


def test_a_dropped_executor_still_resolves_its_futures_then_removes_its_temporary_cache(tmp_path):
    import gc

    release = tmp_path / "release"
    exe = Executor(backend="local")
    directory = exe.cache_directory
    future = exe.submit(funcs.wait_for_file, str(release))
    del exe
    gc.collect()
    assert os.path.isdir(directory)  # the running task still needs it
    release.touch()
    assert future.result(timeout=60) is True
    deadline = time.monotonic() + 30
    while os.path.exists(directory):
        assert time.monotonic() < deadline, "temporary cache left behind"
        time.sleep(0.02)


def test_interpreter_exit_waits_for_unfinished_tasks_and_removes_the_temporary_cache(tmp_path):
    import subprocess
    import sys

    marker = tmp_path / "ran.txt"
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\n"
        "from executorlib import Executor\n"
        "from tests.core import funcs\n"
        "exe = Executor(backend='local')\n"
        "print(exe.cache_directory)\n"
        "exe.submit(funcs.record, sys.argv[1], 'ran')\n"
    )
    out = subprocess.run([sys.executable, str(script), str(marker)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert marker.read_text() == "ran\n"
    assert not os.path.exists(out.stdout.strip())
