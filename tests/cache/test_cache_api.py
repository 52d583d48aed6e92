"""get_cache_data, get_future_from_cache, cancel_cache_jobs and clean_cache on the local backend."""

from __future__ import annotations

import datetime
import json
import os
import socket
import time
from concurrent.futures import CancelledError, Future
from pathlib import Path

import pytest

from executorlib import Executor, cancel_cache_jobs, clean_cache, get_cache_data, get_future_from_cache, get_key
from executorlib.errors import JobFailedError
from executorlib.store import TaskStore
from tests.cache.conftest import dead_pid, key_of, store_call, store_outcome, wait_for
from tests.cache.funcs import count_runs, double, fail, record_and_hold

FIELDS = {"key", "function", "state", "job_id", "job_state", "backend", "created", "submitted",
          "finished", "runtime", "error", "size", "path",
          # the original executorlib's names (tests/cache/test_cache_api_1x.py); the last three lazy
          "filename", "queue_id", "input_args", "input_kwargs", "output"}
LAZY = {"input_args", "input_kwargs", "output"}


def _by_key(records: list[dict]) -> dict[str, dict]:
    return {r["key"]: r for r in records}


def _write_job(store: TaskStore, key: str, **record) -> None:
    base = {"backend": "local", "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
    (store.task_dir(key) / "job.json").write_text(json.dumps({**base, **record}))


@pytest.fixture
def held(tmp_path, runs):
    """An Executor running record_and_hold(runs, 1, hold) until the test removes the hold file."""
    hold = tmp_path / "hold"
    hold.touch()
    exe = Executor(cache_directory=tmp_path / "cache")
    future = exe.submit(record_and_hold, runs, 1, str(hold))
    wait_for(lambda: count_runs(runs) == 1, what="the held task to start")
    yield exe, future, key_of(record_and_hold, runs, 1, str(hold)), hold
    hold.unlink(missing_ok=True)
    exe.shutdown(wait=True, cancel_futures=True)


# -- get_cache_data --------------------------------------------------------------------------------
def test_cache_data_has_one_flat_record_per_task_in_every_state(held, monkeypatch):
    exe, running, running_key, hold = held
    store = TaskStore(exe.cache_directory)
    assert exe.submit(double, 21).result(timeout=30) == 42
    assert isinstance(exe.submit(fail, "broken").exception(timeout=30), ValueError)
    never = store_call(store, double, 1)  # written, never submitted
    gone = store_call(store, double, 2)
    _write_job(store, gone, state="submitted", job_id=str(dead_pid()))
    cancelled = store_call(store, double, 3)
    _write_job(store, cancelled, state="cancelled", job_id=str(dead_pid()))

    import cloudpickle

    monkeypatch.setattr(cloudpickle, "loads", lambda *a, **k: pytest.fail("get_cache_data unpickled"))
    records = get_cache_data(exe.cache_directory)
    monkeypatch.undo()

    assert all(set(r) == FIELDS for r in records)
    assert all(isinstance(v, (str, int, float, type(None)))
               for r in records for k, v in dict.items(r) if k not in LAZY)
    by_key = _by_key(records)
    done, failed = by_key[key_of(double, 21)], by_key[key_of(fail, "broken")]
    assert (done["state"], done["function"], done["backend"], done["error"]) == ("done", "double", "local", None)
    assert done["created"] <= done["submitted"] <= done["finished"] and done["runtime"] >= 0
    assert done["size"] > 0 and done["job_id"]
    assert failed["state"] == "failed" and failed["error"] == "ValueError: broken"
    assert by_key[running_key]["state"] == "running" and by_key[running_key]["job_state"] == "RUNNING"
    assert by_key[never]["state"] == "pending" and by_key[never]["job_id"] is None
    assert by_key[gone]["state"] == "failed" and by_key[gone]["error"].startswith("JobFailedError")
    assert by_key[cancelled]["state"] == "cancelled"
    assert [r["key"] for r in records][:1] == [running_key]  # in order of creation

    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(records)
    assert len(frame) == 6 and set(frame.columns) == FIELDS


def test_cache_data_of_a_missing_directory_is_an_error(tmp_path):
    from executorlib.errors import CacheError

    with pytest.raises(CacheError, match="does not exist"):
        get_cache_data(tmp_path / "nothing")


# -- get_future_from_cache ---------------------------------------------------------------------------
def test_future_of_a_finished_task_resolves_at_once(tmp_path):
    store = TaskStore(tmp_path / "cache")
    done = store_outcome(store, double, 4, value=8)
    failed = store_outcome(store, fail, "stored", error=ValueError("stored"))
    future = get_future_from_cache(store.directory, done)
    assert future.done() and future.result() == 8
    with pytest.raises(ValueError, match="stored"):
        get_future_from_cache(store.directory, failed).result(timeout=0)


def test_get_key_names_the_task_folder_of_a_future(held):
    exe, future, key, _ = held
    assert get_key(future) == key
    assert (Path(exe.cache_directory) / get_key(future) / "task.h5").is_file()
    with pytest.raises(TypeError, match="returned by an executorlib Executor"):
        get_key(Future())


def test_future_of_a_running_task_resolves_when_its_result_appears(held):
    exe, _, key, hold = held
    future = get_future_from_cache(exe.cache_directory, key)
    time.sleep(0.3)
    assert not future.done()
    assert future.running()  # the job runs
    hold.unlink()
    assert future.result(timeout=30) == 2
    # and it can be a dependency of a new call, like a Future of an Executor
    assert exe.submit(double, future).result(timeout=30) == 4


def test_future_fails_when_its_job_is_gone_without_result(tmp_path):
    store = TaskStore(tmp_path / "cache")
    key = store_call(store, double, 5)
    _write_job(store, key, state="submitted", job_id=str(dead_pid()))
    future = get_future_from_cache(store.directory, key)
    with pytest.raises(JobFailedError, match="without writing a result"):
        future.result(timeout=10)


def test_future_fails_when_nothing_will_run_the_task(tmp_path):
    store = TaskStore(tmp_path / "cache")
    never = store_call(store, double, 6)  # written, never claimed or submitted
    claimed = store_call(store, double, 7)
    _write_job(store, claimed, state="claimed", pid=dead_pid())
    never_future = get_future_from_cache(store.directory, never)
    claimed_future = get_future_from_cache(store.directory, claimed)
    with pytest.raises(JobFailedError, match="no job was submitted for it. Submit the call again"):
        never_future.result(timeout=10)
    with pytest.raises(JobFailedError, match="ended before submitting"):
        claimed_future.result(timeout=10)


def test_future_of_an_unknown_key_or_backend_is_an_error(tmp_path):
    store = TaskStore(tmp_path / "cache")
    key = store_call(store, double, 8)
    with pytest.raises(KeyError, match="not in cache directory.*Did you mean"):
        get_future_from_cache(store.directory, "double_")
    with pytest.raises(ValueError, match="backend 'pbs' is not known"):
        get_future_from_cache(store.directory, key, backend="pbs")


# -- cancel_cache_jobs -------------------------------------------------------------------------------
def test_cancel_cache_jobs_stops_running_jobs_and_a_new_submission_reruns(held, runs):
    exe, future, key, hold = held
    assert cancel_cache_jobs(exe.cache_directory, keys=["someone_else"]) == []
    assert cancel_cache_jobs(exe.cache_directory) == [key]
    with pytest.raises(CancelledError, match="was cancelled"):
        future.result(timeout=10)  # the Executor that submitted it learns of it
    (record,) = get_cache_data(exe.cache_directory)
    assert record["state"] == "cancelled" and record["finished"] is None
    assert cancel_cache_jobs(exe.cache_directory) == []  # nothing left to cancel

    hold.unlink()
    with Executor(cache_directory=exe.cache_directory) as again:
        assert again.submit(record_and_hold, runs, 1, str(hold)).result(timeout=30) == 2
    assert count_runs(runs) == 2
    assert get_cache_data(exe.cache_directory)[0]["state"] == "done"


def test_cancel_reaches_a_job_another_process_submitted(run_script, tmp_path, runs):
    cache, hold = tmp_path / "cache", tmp_path / "hold"
    hold.touch()
    process = run_script(f"""
        from executorlib import Executor
        from tests.cache.funcs import count_runs, record_and_hold

        exe = Executor(cache_directory={str(cache)!r})
        future = exe.submit(record_and_hold, {runs!r}, 3, {str(hold)!r})
        print(type(future.exception()).__name__)
    """)
    wait_for(lambda: count_runs(runs) == 1, what="the other process's task to start")
    key = key_of(record_and_hold, runs, 3, str(hold))
    future = get_future_from_cache(cache, key)
    assert cancel_cache_jobs(cache, [key]) == [key]
    with pytest.raises(CancelledError):
        future.result(timeout=10)
    out, err = process.communicate(timeout=30)  # the submitting process learns it too
    assert process.returncode == 0 and out.strip() == "CancelledError", err
    job_id = int(get_cache_data(cache)[0]["job_id"])
    wait_for(lambda: not os.path.exists(f"/proc/{job_id}"), what="the cancelled job to end")


# -- clean_cache ---------------------------------------------------------------------------------------
def test_clean_cache_by_state_key_and_age(tmp_path):
    store = TaskStore(tmp_path / "cache")
    done_keys = {store_outcome(store, double, i, value=2 * i) for i in range(3)}
    failed_key = store_outcome(store, fail, "x", error=ValueError("x"))
    cache = store.directory

    preview = clean_cache(cache, states=["failed"], dry_run=True, grace=0)
    assert [r["key"] for r in preview] == [failed_key] and len(get_cache_data(cache)) == 4
    assert [r["key"] for r in clean_cache(cache, states="failed", grace=0)] == [failed_key]
    assert {r["key"] for r in get_cache_data(cache)} == done_keys

    assert clean_cache(cache, older_than=datetime.timedelta(days=1), grace=0) == []  # all are recent
    assert [r["key"] for r in clean_cache(cache, keys=[key_of(double, 0)], older_than=0, grace=0)] == [key_of(double, 0)]
    with Executor(cache_directory=cache) as exe:  # a deleted task is computed again
        assert exe.submit(double, 0).result(timeout=30) == 0

    deleted = clean_cache(cache, grace=0)  # no filter: purge
    assert {r["key"] for r in deleted} == done_keys and get_cache_data(cache) == []
    assert [p.name for p in cache.iterdir()] == []


def test_clean_cache_keeps_running_tasks_unless_forced(held):
    exe, future, key, _ = held
    assert exe.submit(double, 1).result(timeout=30) == 2
    deleted = clean_cache(exe.cache_directory)
    assert [r["key"] for r in deleted] == [key_of(double, 1)]
    assert [r["key"] for r in get_cache_data(exe.cache_directory)] == [key]

    assert [r["key"] for r in clean_cache(exe.cache_directory, force=True)] == [key]
    # its folder is gone too: the Executor reports the job as cancelled or killed
    assert isinstance(future.exception(timeout=10), (CancelledError, JobFailedError))
    assert get_cache_data(exe.cache_directory) == []


def test_clean_cache_rejects_unknown_states_and_ages(tmp_path):
    TaskStore(tmp_path / "cache")
    with pytest.raises(ValueError, match="unknown state.*'finished'.*valid states are: pending"):
        clean_cache(tmp_path / "cache", states=["finished"])
    with pytest.raises(ValueError, match="must not be negative"):
        clean_cache(tmp_path / "cache", older_than=-1)
    with pytest.raises(TypeError, match="older_than must be seconds"):
        clean_cache(tmp_path / "cache", older_than="2d")
