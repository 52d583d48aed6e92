"""block_allocation=True with a temporary cache: calls go to the workers in memory.

Without a named cache_directory nobody reads the task records later, so the pool sends the pickled
call over the worker's input and takes the outcome back over its output (executorlib.spawners.pool,
executorlib.worker._serve_call): no task.h5, result.h5, job.json or job.out. These tests check that
everything the file path does still holds on this path (behaviour, not timings).
"""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from executorlib import Executor, SingleNodeExecutor
from executorlib.errors import JobFailedError, RemoteError, TaskExitError
from tests.conformance import funcs as cfuncs
from tests.core import funcs, pool_funcs
from tests.core.test_block_allocation import pid_alive, wait_for, wait_until_dead


def pool(**options) -> Executor:
    return Executor(backend="local", block_allocation=True, **{"max_workers": 1, **options})


def task_files(cache: str) -> list[str]:
    """The files of the temporary cache outside the workers' working directories."""
    found = []
    for root, dirs, files in os.walk(cache):
        dirs[:] = [d for d in dirs if d != ".work"]
        found += [os.path.relpath(os.path.join(root, f), cache) for f in files]
    return found


def worker_ids(executorlib_worker_id: int = -1, pause: float = 0.0) -> tuple[int, int]:
    time.sleep(pause)
    return executorlib_worker_id, os.getpid()


def test_calls_of_a_temporary_cache_write_no_task_records():
    with pool(max_workers=2) as exe:
        assert exe._spawner.direct  # the fast path is on
        futures = [exe.submit(funcs.add_funct, i, i) for i in range(20)]
        assert [f.result(timeout=60) for f in futures] == [2 * i for i in range(20)]
        assert task_files(exe.cache_directory) == []
        cache = exe.cache_directory
    assert not os.path.exists(cache)  # removed at shutdown


def test_a_named_cache_keeps_its_records(tmp_path):
    with pool(cache_directory=tmp_path / "cache") as exe:
        assert not exe._spawner.direct
        future = exe.submit(funcs.add_funct, 1, 2)
        assert future.result(timeout=60) == 3
        folder = Path(exe.cache_directory, future._executorlib_key)
    assert (folder / "task.h5").is_file() and (folder / "result.h5").is_file()


def test_errors_keep_their_type_and_the_remote_traceback():
    with pool() as exe:
        with pytest.raises(ValueError, match="boom") as info:
            exe.submit(funcs.raise_value_error, "boom").result(timeout=60)
        notes = "".join(getattr(info.value, "__notes__", []) or info.value.args[1:])
        assert "Traceback of the remote task" in notes and "raise_value_error" in notes
        with pytest.raises(TaskExitError) as exited:
            exe.submit(cfuncs.call_exit, 3).result(timeout=60)
        assert exited.value.code == 3
        with pytest.raises(TypeError, match="cannot be stored"):
            exe.submit(funcs.return_lock).result(timeout=60)
        with pytest.raises(RemoteError, match="cannot travel"):
            exe.submit(funcs.raise_unpicklable, "cannot travel").result(timeout=60)
        assert exe.submit(funcs.add_funct, 1, 1).result(timeout=60) == 2  # the worker goes on


def test_error_log_file_gets_the_failed_calls(tmp_path):
    log = tmp_path / "errors.log"
    with pool() as exe:
        failed = exe.submit(funcs.raise_value_error, "logged", resource_dict={"error_log_file": str(log)})
        with pytest.raises(ValueError):
            failed.result(timeout=60)
        assert exe.submit(funcs.add_funct, 1, 1, resource_dict={"error_log_file": str(log)}).result(timeout=60) == 2
    text = log.read_text()
    assert "ValueError: logged" in text and "raise_value_error" in text and text.count("===") == 1


def test_prints_reach_the_callers_streams_and_cannot_disturb_the_protocol(monkeypatch):
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    with pool() as exe:
        assert exe.submit(pool_funcs.print_protocol_lookalikes, 2).result(timeout=60) == 2
        big = exe.submit(funcs.print_and_return, "large value", b"x" * 3_000_000).result(timeout=60)
        assert exe.submit(funcs.add_funct, 1, 2).result(timeout=60) == 3
    assert big == b"x" * 3_000_000  # sent back in many frames
    assert "done /not/a/task 1\n" in out.getvalue() and "done /neither 0\n" in out.getvalue()
    assert "large value\n" in out.getvalue() and "to stderr\n" in err.getvalue()
    assert "to stderr" not in out.getvalue()


def test_dependencies_pass_values_in_memory_and_failures_reach_the_children():
    with pool(max_workers=2) as exe:
        future = 0
        for i in range(4, 8):
            future = exe.submit(funcs.add_funct, i, future)
        nested = exe.submit(funcs.echo, [future, {"k": future}])
        failed = exe.submit(funcs.raise_value_error, "parent failed")
        orphan = exe.submit(funcs.add_funct, failed, 1)
        assert future.result(timeout=60) == 22
        assert nested.result(timeout=60) == (([22, {"k": 22}],), {})
        with pytest.raises(ValueError, match="parent failed"):
            orphan.result(timeout=60)
    with Executor(backend="local") as other, pool() as exe:  # a parent of another Executor
        parent = other.submit(funcs.add_funct, 1, 1)
        assert exe.submit(funcs.add_funct, parent, 1).result(timeout=60) == 3


def test_init_function_and_worker_ids():
    with pool(max_workers=2, init_function=pool_funcs.init_model) as exe:
        assert exe.submit(pool_funcs.predict, 2).result(timeout=60) == (20, "expensive model")
        assert exe.submit(pool_funcs.predict, 3, model="given").result(timeout=60) == (30, "given")
        ids = {exe.submit(worker_ids, pause=0.2).result(timeout=60)[0] for _ in range(1)}
        both = [exe.submit(worker_ids, pause=0.3) for _ in range(2)]
        ids |= {f.result(timeout=60)[0] for f in both}
    assert ids == {0, 1}
    with pool(init_function=pool_funcs.init_raises) as exe:
        with pytest.raises(RuntimeError, match="init_function .* ValueError: cannot load the model"):
            exe.submit(pool_funcs.predict, 1).result(timeout=60)


def test_a_worker_that_dies_fails_only_its_task_and_is_replaced():
    with pool() as exe:
        before = exe.submit(pool_funcs.pid_after, 0.0).result(timeout=60)
        crashed = exe.submit(funcs.exit_hard, 3)
        waiting = exe.submit(funcs.add_funct, 2, 2)
        with pytest.raises(JobFailedError) as info:
            crashed.result(timeout=60)
        assert waiting.result(timeout=60) == 4
        after = exe.submit(pool_funcs.pid_after, 0.001).result(timeout=60)
    assert info.value.state == "FAILED (exit code 3)"
    assert "exit_hard: leaving without a result" in str(info.value)  # its output, kept in memory
    assert before != after and not pid_alive(before)


def test_a_worker_killed_from_outside_and_run_time_max(tmp_path):
    pid_file = tmp_path / "pid"
    with pool(max_workers=2) as exe:
        victim = exe.submit(funcs.pid_then_wait, str(pid_file), str(tmp_path / "never"))
        wait_for(pid_file)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        with pytest.raises(JobFailedError, match="SIGKILL"):
            victim.result(timeout=60)
        slow_pid = tmp_path / "slow"
        slow = exe.submit(funcs.pid_then_wait, str(slow_pid), str(tmp_path / "never"),
                          resource_dict={"run_time_max": 1})
        with pytest.raises(JobFailedError) as info:
            slow.result(timeout=60)
        assert info.value.state == "TIMEOUT"
        assert exe.submit(funcs.add_funct, 1, 1).result(timeout=60) == 2
    assert wait_until_dead(int(slow_pid.read_text()))


def test_cancel_and_shutdown_cancel_futures(tmp_path):
    pid_file, marker, release = tmp_path / "pid", tmp_path / "ran.txt", tmp_path / "release"
    exe = pool()
    running = exe.submit(funcs.pid_then_wait, str(pid_file), str(release))
    cancelled = exe.submit(funcs.record, str(marker), "cancelled")
    pending = exe.submit(funcs.record, str(marker), "pending")
    child = exe.submit(funcs.add_funct, running, 1)
    assert cancelled.cancel() is True
    wait_for(pid_file)
    timer = threading.Timer(0.5, release.touch)
    timer.start()
    try:
        exe.shutdown(wait=True, cancel_futures=True)
    finally:
        timer.cancel()
    assert running.result(timeout=0) == int(pid_file.read_text())
    assert all(f.cancelled() for f in (cancelled, pending, child))
    assert not marker.exists()


def test_cwd_and_a_relative_file_of_a_call(tmp_path):
    with pool() as exe:
        moved = exe.submit(funcs.get_cwd, resource_dict={"cwd": str(tmp_path)})
        own = exe.submit(funcs.get_cwd)
        assert moved.result(timeout=60) == str(tmp_path)
        assert own.result(timeout=60).startswith(exe.cache_directory)  # inside the temporary cache


# -- restart_limit and resizing (both paths share them) ---------------------------------------------

@pytest.mark.parametrize("cache", [False, True], ids=["temporary", "named"])
def test_restart_limit_of_the_local_pool(tmp_path, cache):
    options = {"cache_directory": str(tmp_path / "c")} if cache else {}
    with SingleNodeExecutor(max_workers=1, block_allocation=True, restart_limit=1, **options) as exe:
        assert exe.info["restart_limit"] == 1
        for code in (3, 4):
            with pytest.raises(JobFailedError):
                exe.submit(funcs.exit_hard, code).result(timeout=60)
            if code == 3:  # one restart allowed: the pool goes on
                assert exe.submit(funcs.add_funct, 1, 1).result(timeout=60) == 2
        with pytest.raises(Exception, match=r"restart_limit = 1 allows no more restarts"):
            exe.submit(funcs.add_funct, 1, 2).result(timeout=60)
    with SingleNodeExecutor(max_workers=1, block_allocation=True) as exe:  # the original's default: 0
        with pytest.raises(JobFailedError):
            exe.submit(funcs.exit_hard, 3).result(timeout=60)
        with pytest.raises(Exception, match=r"restart_limit = 0 allows no more restarts"):
            exe.submit(funcs.add_funct, 1, 2).result(timeout=60)
    with pytest.raises(ValueError, match="needs block_allocation=True"):
        SingleNodeExecutor(restart_limit=2)


def test_setting_max_workers_resizes_the_pool(tmp_path):
    def busy_pids(exe, n):
        return {f.result(timeout=60) for f in [exe.submit(pool_funcs.pid_after, 0.3 + i / 1000) for i in range(n)]}

    with SingleNodeExecutor(max_workers=1, block_allocation=True, restart_limit=0) as exe:
        assert len(busy_pids(exe, 3)) == 1
        exe.max_workers = 3
        assert exe.max_workers == 3 == exe.info["max_workers"]
        grown = busy_pids(exe, 3)
        assert len(grown) == 3  # growing is not a restart: restart_limit=0 allows it
        exe.max_workers = 1
        assert exe.max_workers == 1
        deadline = time.monotonic() + 30
        while sum(pid_alive(p) for p in grown) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(pid_alive(p) for p in grown) == 1  # the idle extra workers ended
        assert len(busy_pids(exe, 2)) == 1
        with pytest.raises(ValueError, match="int >= 1"):
            exe.max_workers = 0
    with SingleNodeExecutor(max_workers=1) as exe:  # a process per call: nothing to resize
        with pytest.raises(NotImplementedError, match="max_workers"):
            exe.max_workers = 2
