"""A later process that submits the same calls to the same cache reuses what exists: finished
results, jobs that still run (attached, no new job), and resubmits jobs that vanished."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from executorlib import Executor, get_future_from_cache
from executorlib.store import TaskStore
from tests.cache.conftest import dead_pid, key_of, store_call, wait_for
from tests.cache.funcs import add_recorded, count_runs, record_and_fail, record_and_hold, record_run

# A local task outlives its client only when the client dies: a client that ends normally waits
# for its local tasks at interpreter exit, as concurrent.futures does. So the client is killed.
SUBMIT_AND_LEAVE = """
    import os, signal, sys
    from executorlib import Executor
    from tests.cache.funcs import count_runs, record_run

    cache, runs = sys.argv[1:] if len(sys.argv) > 1 else ({cache!r}, {runs!r})
    exe = Executor(cache_directory=cache)
    future = exe.submit(record_run, runs, 21, delay={delay})
    while count_runs(runs) < 1:  # the job has started
        pass
    print("left", future.running(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _job(cache: Path, key: str) -> dict:
    return json.loads((cache / key / "job.json").read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _leave_running_job(run_script, cache: Path, runs: str, delay: float) -> tuple[str, dict]:
    """Process A submits record_run(runs, 21, delay) and is killed while the task runs."""
    process = run_script(SUBMIT_AND_LEAVE.format(cache=str(cache), runs=runs, delay=delay))
    out, err = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, err
    assert "left True" in out
    key = key_of(record_run, runs, 21, delay=delay)
    job = _job(cache, key)
    assert job["state"] == "submitted" and job["backend"] == "local"
    return key, job


def test_new_process_attaches_to_the_running_job(run_script, tmp_path, runs):
    cache = tmp_path / "cache"
    key, job = _leave_running_job(run_script, cache, runs, delay=3)
    assert _alive(int(job["job_id"])), "the job must outlive the process that submitted it"

    with Executor(cache_directory=cache) as exe:
        future = exe.submit(record_run, runs, 21, delay=3)
        assert future.result(timeout=30) == 42
    assert count_runs(runs) == 1  # attached: the function ran once
    assert _job(cache, key)["job_id"] == job["job_id"]  # and no new job was started


def test_finished_tasks_return_their_outcome_without_running_again(tmp_path, runs):
    cache = tmp_path / "cache"
    with Executor(cache_directory=cache) as exe:
        assert exe.submit(record_run, runs, 5).result(timeout=30) == 10
        with pytest.raises(ValueError, match="stored failure"):
            exe.submit(record_and_fail, runs, "stored failure").result(timeout=30)
    assert count_runs(runs) == 2

    with Executor(cache_directory=cache) as exe:
        done = exe.submit(record_run, runs, 5)
        failed = exe.submit(record_and_fail, runs, "stored failure")
        assert done.done() and failed.done()  # resolved inside submit, no job
        assert done.result() == 10
        with pytest.raises(ValueError, match="stored failure") as raised:
            failed.result()
    assert "Traceback of the remote task" in "\n".join(getattr(raised.value, "__notes__", []))
    assert count_runs(runs) == 2


def test_job_that_died_without_result_is_submitted_again(run_script, tmp_path, runs):
    cache = tmp_path / "cache"
    hold = tmp_path / "hold"
    hold.touch()
    process = run_script(f"""
        import os, signal
        from executorlib import Executor
        from tests.cache.funcs import count_runs, record_and_hold

        exe = Executor(cache_directory={str(cache)!r})
        exe.submit(record_and_hold, {runs!r}, 7, {str(hold)!r})
        while count_runs({runs!r}) < 1:
            pass
        os.kill(os.getpid(), signal.SIGKILL)  # the client dies; its task goes on
    """)
    _, err = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, err
    key = key_of(record_and_hold, runs, 7, str(hold))
    job = _job(cache, key)
    os.killpg(int(job["job_id"]), signal.SIGKILL)  # the node crashed: no result
    wait_for(lambda: not _alive(int(job["job_id"])), what="the job to die")
    hold.unlink()

    with Executor(cache_directory=cache) as exe:
        assert exe.submit(record_and_hold, runs, 7, str(hold)).result(timeout=30) == 14
    assert count_runs(runs) == 2  # the killed run and the new one
    assert _job(cache, key)["job_id"] != job["job_id"]


def test_record_naming_a_dead_pid_is_resubmitted(tmp_path, runs):
    store = TaskStore(tmp_path / "cache")
    key = store_call(store, record_run, runs, 4)
    gone = str(dead_pid())
    (store.task_dir(key) / "job.json").write_text(json.dumps(
        {"state": "submitted", "backend": "local", "job_id": gone, "host": socket.gethostname(),
         "pid": dead_pid(), "time": time.time()}))

    with Executor(cache_directory=store.directory) as exe:
        assert exe.submit(record_run, runs, 4).result(timeout=30) == 8
    assert count_runs(runs) == 1
    assert store.read_job(key)["job_id"] != gone


def test_claim_of_a_dead_submitter_is_taken_over(tmp_path, runs):
    store = TaskStore(tmp_path / "cache")
    key = store_call(store, record_run, runs, 6)
    (store.task_dir(key) / "job.json").write_text(json.dumps(
        {"state": "claimed", "backend": "local", "host": socket.gethostname(), "pid": dead_pid(),
         "time": time.time()}))

    with Executor(cache_directory=store.directory) as exe:
        assert exe.submit(record_run, runs, 6).result(timeout=30) == 12
    assert count_runs(runs) == 1
    assert store.read_job(key)["state"] == "submitted"


def test_a_chain_reattaches(run_script, tmp_path, runs):
    cache = tmp_path / "cache"
    chain_runs = str(tmp_path / "chain_runs.txt")
    process = run_script(f"""
        from executorlib import Executor
        from tests.cache.funcs import add_recorded, count_runs, record_run

        exe = Executor(cache_directory={str(cache)!r})
        first = exe.submit(record_run, {runs!r}, 1, delay=2.5)
        second = exe.submit(add_recorded, {chain_runs!r}, first, 1)
        third = exe.submit(add_recorded, {chain_runs!r}, second, 1)
        while count_runs({runs!r}) < 1:
            pass
        exe.shutdown(wait=False)
    """)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    first_key = key_of(record_run, runs, 1, delay=2.5)
    first_job = _job(cache, first_key)["job_id"]

    with Executor(cache_directory=cache) as exe:
        first = exe.submit(record_run, runs, 1, delay=2.5)
        second = exe.submit(add_recorded, chain_runs, first, 1)
        third = exe.submit(add_recorded, chain_runs, second, 1)
        assert third.result(timeout=30) == 4
        assert first.result() == 2 and second.result() == 3
    assert count_runs(runs) == 1 and count_runs(chain_runs) == 2
    assert _job(cache, first_key)["job_id"] == first_job

    with Executor(cache_directory=cache) as exe:  # and all of it is cached now
        first = exe.submit(record_run, runs, 1, delay=2.5)
        third = exe.submit(add_recorded, chain_runs, exe.submit(add_recorded, chain_runs, first, 1), 1)
        assert third.done() and third.result() == 4


def test_tasks_submitted_before_shutdown_without_wait_still_run(run_script, tmp_path, runs):
    cache = tmp_path / "cache"
    process = run_script(f"""
        from executorlib import Executor
        from tests.cache.funcs import record_run

        exe = Executor(cache_directory={str(cache)!r})
        exe.submit(record_run, {runs!r}, 1)
        exe.submit(record_run, {runs!r}, 2)
        exe.shutdown(wait=False)  # and the process ends at once
    """)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    futures = [get_future_from_cache(cache, key_of(record_run, runs, i)) for i in (1, 2)]
    assert [f.result(timeout=30) for f in futures] == [2, 4]  # their jobs were handed over
    assert count_runs(runs) == 2
