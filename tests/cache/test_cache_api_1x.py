"""The original executorlib 1.x's cache functions on the local backend: terminate_tasks_in_cache,
terminate_task_in_cache, the extra get_cache_data fields (read on demand) and
get_future_from_cache(cache_key=...)."""

from __future__ import annotations

import os
from concurrent.futures import CancelledError

import cloudpickle
import pytest

from executorlib import (
    Executor,
    get_cache_data,
    get_future_from_cache,
    get_key,
    terminate_task_in_cache,
    terminate_tasks_in_cache,
)
from executorlib.task import FutureRef
from tests.cache.test_cache_api import held  # noqa: F401 - the same held task
from tests.cache.funcs import double, fail


def test_terminate_tasks_in_cache_cancels_the_running_jobs(held):
    exe, future, key, _ = held
    assert terminate_tasks_in_cache(exe.cache_directory) == [key]
    with pytest.raises(CancelledError):
        future.result(timeout=10)
    assert get_cache_data(exe.cache_directory)[0]["state"] == "cancelled"
    assert terminate_tasks_in_cache(exe.cache_directory, backend="local") == []  # nothing left


def test_terminate_task_in_cache_cancels_only_that_task(held):
    exe, future, key, _ = held
    done = exe.submit(double, 4)
    assert done.result(timeout=30) == 8
    assert terminate_task_in_cache(exe.cache_directory, cache_key=get_key(done)) == []  # finished
    assert not future.done()
    assert terminate_task_in_cache(exe.cache_directory, key) == [key]
    with pytest.raises(CancelledError):
        future.result(timeout=10)
    with pytest.raises(KeyError, match="nope"):
        terminate_task_in_cache(exe.cache_directory, "nope")


def test_terminate_arguments_are_checked(tmp_path):
    with Executor(cache_directory=tmp_path) as exe:
        exe.submit(double, 1).result(timeout=30)
    with pytest.raises(ValueError, match="not known"):
        terminate_tasks_in_cache(tmp_path, backend="pbs")
    with pytest.raises(TypeError, match="not both"):
        terminate_tasks_in_cache(tmp_path, "a", config_directory="b")
    assert terminate_tasks_in_cache(tmp_path, config_directory=None) == []


def test_cache_data_has_the_original_fields_read_on_demand(tmp_path, monkeypatch):
    with Executor(cache_directory=tmp_path) as exe:
        parent = exe.submit(double, 21)
        child = exe.submit(double, x=parent)
        failed = exe.submit(fail, "no")
        assert child.result(timeout=30) == 84 and failed.exception(timeout=30) is not None
    real_loads = cloudpickle.loads
    monkeypatch.setattr(cloudpickle, "loads", lambda *a, **k: pytest.fail("listing unpickled"))
    records = {r["key"]: r for r in get_cache_data(tmp_path, query=False)}
    assert len(records) == 3
    for record in records.values():
        assert {"input_args", "input_kwargs", "output", "filename", "queue_id"} <= set(record)
        assert os.path.isfile(record["filename"]) and record["filename"].endswith("task.h5")
        assert isinstance(record["queue_id"], int)  # the local process id
        assert "not loaded" in repr(dict.__getitem__(record, "output"))
    monkeypatch.setattr(cloudpickle, "loads", real_loads)
    first = records[get_key(parent)]
    assert first["input_args"] == (21,) and first["input_kwargs"] == {} and first["output"] == 42
    second = records[get_key(child)]
    assert second["input_args"] == () and second["input_kwargs"] == {"x": FutureRef(get_key(parent))}
    assert second.get("output") == 84
    third = records[get_key(failed)]
    assert third["output"] is None and third["state"] == "failed" and "ValueError" in third["error"]
    assert third.loaded()["input_args"] == ("no",)


def test_get_future_from_cache_takes_the_original_keyword(tmp_path):
    with Executor(cache_directory=tmp_path) as exe:
        key = get_key(exe.submit(double, 5))
    assert get_future_from_cache(cache_directory=tmp_path, cache_key=key).result(timeout=10) == 10
    assert get_future_from_cache(tmp_path, key).result(timeout=10) == 10
    with pytest.raises(TypeError, match="not both"):
        get_future_from_cache(tmp_path, key, cache_key=key)
    with pytest.raises(TypeError, match="cache_key"):
        get_future_from_cache(tmp_path)
