"""Damaged files give clear errors; a failed write never reads as a success; the cache is private."""

from __future__ import annotations

import errno
import os
import stat
import warnings

import h5py
import pytest

import executorlib.files as files_module
from executorlib import Executor, get_cache_data, get_key
from executorlib.errors import CacheCorruptedError, JobFailedError
from executorlib.store import RESULT_FILE, TASK_FILE, TaskStore
from tests.cache.conftest import key_of, store_call
from tests.cache.funcs import double


def _assert_actionable(error: BaseException, path) -> None:
    text = str(error)
    assert str(path) in text  # names the file
    assert "Delete the task folder" in text and "executorlib clean" in text  # says what to do


def test_garbage_task_file_fails_the_future_with_a_clear_error(tmp_path):
    cache = tmp_path / "cache"
    key = key_of(double, 5)
    (cache / key).mkdir(parents=True)
    (cache / key / TASK_FILE).write_bytes(b"this is not HDF5" * 10)

    with Executor(cache_directory=cache) as exe:
        error = exe.submit(double, 5).exception(timeout=30)
    # the job could not set up the call: its error (not a cached result) names the damaged file
    assert isinstance(error, (CacheCorruptedError, JobFailedError)), repr(error)
    _assert_actionable(error, cache / key / TASK_FILE)
    assert not (cache / key / RESULT_FILE).exists()


def test_truncated_task_file_is_reported_by_the_store_and_the_listing(tmp_path):
    store = TaskStore(tmp_path / "cache")
    key = store_call(store, double, 6)
    path = store.path(key, TASK_FILE)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(CacheCorruptedError) as raised:
        store.read_task(key)
    _assert_actionable(raised.value, path)
    (record,) = get_cache_data(store.directory)
    assert record["state"] == "failed"
    assert record["error"].startswith("CacheCorruptedError:") and key in record["error"]


def test_corrupt_result_file_is_an_error_not_a_result(tmp_path):
    store = TaskStore(tmp_path / "cache")
    key = store_call(store, double, 7)
    store.path(key, RESULT_FILE).write_bytes(b"\x00" * 100)

    with Executor(cache_directory=store.directory) as exe:
        future = exe.submit(double, 7)
        assert isinstance(future.exception(timeout=5), CacheCorruptedError)
    _assert_actionable(future.exception(), store.path(key, RESULT_FILE))


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["mid-way through the file", "at the final sync"])
def test_disk_full_while_writing_a_result_leaves_no_result(tmp_path, monkeypatch, where):
    store = TaskStore(tmp_path / "cache")
    key = store_call(store, double, 8)
    if where == "mid-way through the file":  # the data is written, the attributes fail
        real = h5py.AttributeManager.__setitem__
        written = []

        def fill_then_fail(self, name, value):
            if written:
                _disk_full()
            written.append(name)
            real(self, name, value)

        monkeypatch.setattr(h5py.AttributeManager, "__setitem__", fill_then_fail)
    else:
        monkeypatch.setattr(files_module, "fsync", _disk_full)

    with pytest.raises(OSError, match="No space left"):
        store.write_result(key, list(range(10_000)), 1.0)
    monkeypatch.undo()
    assert not store.has_result(key)
    assert sorted(p.name for p in store.task_dir(key).iterdir()) == [TASK_FILE]  # no temporary left
    assert get_cache_data(store.directory)[0]["state"] == "pending"


def test_disk_full_while_writing_a_task_file_fails_only_that_future(tmp_path, monkeypatch):
    with Executor(cache_directory=tmp_path / "cache") as exe:
        monkeypatch.setattr(files_module, "fsync", _disk_full)  # task.h5 is written, then synced
        doomed = exe.submit(double, 9)
        child = exe.submit(double, doomed)
        assert isinstance(doomed.exception(timeout=30), OSError)
        assert "No space left" in str(doomed.exception())
        assert child.exception(timeout=30) is not None  # its parent failed: it never runs
        monkeypatch.undo()
        assert exe.submit(double, 10).result(timeout=60) == 20  # the Executor goes on
    store = TaskStore(tmp_path / "cache")
    folder = store.task_dir(get_key(doomed))
    assert not store.has_task(get_key(doomed))
    assert not folder.exists() or list(folder.iterdir()) == []  # no temporary file left behind


def test_cache_directory_is_created_private(tmp_path):
    cache = tmp_path / "deep" / "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning for a fresh private cache
        Executor(cache_directory=cache).shutdown()
        get_cache_data(cache)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_loading_from_a_cache_others_can_write_to_warns(tmp_path, mode):
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(cache, mode)
    with pytest.warns(UserWarning, match="writable by other users.*chmod 700"):
        Executor(cache_directory=cache).shutdown()
    with pytest.warns(UserWarning, match="writable by other users"):
        get_cache_data(cache)


def test_no_warning_for_a_cache_only_its_owner_writes(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(cache, 0o755)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TaskStore(cache, create=False)
