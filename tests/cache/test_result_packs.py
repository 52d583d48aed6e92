"""Result packs (executorlib.result_index): a later process reads small results from a few pack
files instead of one HDF5 file per call, and never gets an answer that result.h5 does not hold."""

from __future__ import annotations

import shutil

import pytest

import executorlib.result_index as result_index
import executorlib.store as store_module
from executorlib import Executor, clean_cache, get_key
from executorlib.store import TaskStore
from tests.cache.conftest import store_outcome
from tests.cache.funcs import double, fail

N = result_index.MIN_NEW_ENTRIES


def _packs(cache) -> list:
    folder = cache / result_index.INDEX_DIR
    return sorted(folder.glob("pack-*.h5")) if folder.is_dir() else []


def _resubmit(cache, n: int = N) -> list:
    with Executor(cache_directory=cache) as exe:
        futures = [exe.submit(double, i) for i in range(n)]
        assert all(f.done() for f in futures)  # all cached: nothing runs
        return [f.result() for f in futures]


def _forbid_result_files(monkeypatch) -> None:
    """Make every read of a result.h5 fail, so that only packs can answer."""

    def refuse(*args, **kwargs):
        raise AssertionError("a result.h5 was opened although a pack holds the result")

    monkeypatch.setattr(store_module, "_read_output_fast", refuse)
    monkeypatch.setattr(TaskStore, "_open", refuse)


@pytest.fixture
def cache(tmp_path):
    store = TaskStore(tmp_path / "cache")
    for i in range(N):
        store_outcome(store, double, i, value=2 * i)
    return store.directory


def test_a_later_process_reads_the_results_from_the_pack(cache, monkeypatch):
    assert _resubmit(cache) == [2 * i for i in range(N)]  # read from result.h5, then packed
    assert len(_packs(cache)) == 1
    _forbid_result_files(monkeypatch)
    assert _resubmit(cache) == [2 * i for i in range(N)]
    assert len(_packs(cache)) == 1  # nothing new was read from files: no second pack


def test_a_recomputed_result_is_never_answered_from_a_stale_pack(cache):
    _resubmit(cache)
    store = TaskStore(cache)
    key = store_outcome(store, double, 3, value=6)
    shutil.rmtree(store.task_dir(key))
    store_outcome(store, double, 3, value="recomputed")  # a new result.h5 for the same key
    values = _resubmit(cache)
    assert values[3] == "recomputed" and values[4] == 8


def test_a_deleted_task_is_not_served_from_the_pack(cache):
    _resubmit(cache)
    store = TaskStore(cache)
    key = store_outcome(store, double, 5, value=10)
    shutil.rmtree(store.task_dir(key))
    with Executor(cache_directory=cache) as exe:
        future = exe.submit(double, 5)
        assert future.result(timeout=60) == 10  # ran again (the local job), not looked up
    assert store.has_result(key)


def test_a_damaged_pack_only_costs_speed(cache):
    _resubmit(cache)
    (pack,) = _packs(cache)
    data = bytearray(pack.read_bytes())
    pack.write_bytes(bytes(data[: len(data) // 2]))  # cut short, as by a full disk
    assert _resubmit(cache) == [2 * i for i in range(N)]
    pack.write_bytes(b"\0" * len(data))  # not HDF5 at all
    assert _resubmit(cache) == [2 * i for i in range(N)]


def test_errors_and_large_results_stay_in_their_result_files(tmp_path):
    store = TaskStore(tmp_path / "cache")
    big = "x" * (result_index.MAX_ENTRY_BYTES + 1)
    store_outcome(store, fail, "boom", error=ValueError("boom"))
    store_outcome(store, double, "big", value=big)
    for i in range(N):
        store_outcome(store, double, i, value=2 * i)
    with Executor(cache_directory=store.directory) as exe:
        error = exe.submit(fail, "boom").exception()
        assert isinstance(error, ValueError) and str(error) == "boom"
        assert exe.submit(double, "big").result() == big
        assert [exe.submit(double, i).result() for i in range(N)] == [2 * i for i in range(N)]
    (pack,) = _packs(store.directory)
    packed = result_index._Pack(pack).entries
    assert len(packed) == N  # the error and the large value are not copied


def test_few_results_write_no_pack(tmp_path):
    store = TaskStore(tmp_path / "cache")
    for i in range(N - 1):
        store_outcome(store, double, i, value=2 * i)
    _resubmit(store.directory, N - 1)
    assert _packs(store.directory) == []


def test_packs_are_merged_and_stale_entries_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(result_index, "MIN_NEW_ENTRIES", 1)
    store = TaskStore(tmp_path / "cache")
    keys = [store_outcome(store, double, i, value=2 * i) for i in range(result_index.MAX_PACKS + 1)]
    for i in range(result_index.MAX_PACKS):  # one process, one new result, one pack each
        with Executor(cache_directory=store.directory) as exe:
            assert exe.submit(double, i).result() == 2 * i
    assert len(_packs(store.directory)) == result_index.MAX_PACKS
    shutil.rmtree(store.task_dir(keys[0]))
    with Executor(cache_directory=store.directory) as exe:
        assert exe.submit(double, result_index.MAX_PACKS).result() == 2 * result_index.MAX_PACKS
    (merged,) = _packs(store.directory)
    assert sorted(result_index._Pack(merged).entries) == sorted(keys[1:])


def test_purging_the_cache_removes_the_packs(cache):
    _resubmit(cache)
    assert _packs(cache)
    clean_cache(cache, grace=0)  # the folders were just written: without grace=0 they are kept
    assert not (cache / result_index.INDEX_DIR).exists()


def test_a_long_session_does_not_pack_the_same_results_twice(cache):
    with Executor(cache_directory=cache) as exe:
        assert [exe.submit(double, i).result() for i in range(N)] == [2 * i for i in range(N)]
        exe._store.flush_index()  # what the idle scheduler does two seconds later
        assert len(_packs(cache)) == 1
        assert [exe.submit(double, i).result() for i in range(N)] == [2 * i for i in range(N)]
    assert len(_packs(cache)) == 1  # the second round was answered from the pack just written


# -- result.pkl: the job's own copy of a small result ------------------------------------------------
def test_a_job_leaves_a_copy_of_a_small_result_that_a_new_process_reads(tmp_path, monkeypatch):
    with Executor(cache_directory=tmp_path / "cache") as exe:
        small, big = exe.submit(double, 21), exe.submit(double, "x" * result_index.MAX_ENTRY_BYTES)
        assert small.result() == 42 and len(big.result()) == 2 * result_index.MAX_ENTRY_BYTES
    folder = tmp_path / "cache"
    assert (folder / get_key(small) / "result.pkl").is_file()
    assert not (folder / get_key(big) / "result.pkl").exists()  # large values: result.h5 only
    _forbid_result_files(monkeypatch)
    assert TaskStore(folder, use_index=False).read_result(get_key(small)).value == 42


def test_a_stale_or_damaged_copy_is_never_used(tmp_path):
    store = TaskStore(tmp_path / "cache", use_index=False)
    key = store_outcome(store, double, 1, value="first")
    first_copy = store.path(key, "result.pkl").read_bytes()
    store.write_result(key, "second", runtime=0.1)
    store.path(key, "result.pkl").write_bytes(first_copy)  # a copy of the previous result.h5
    assert store.read_result(key).value == "second"
    store.write_result(key, "third", runtime=0.1)
    damaged = bytearray(store.path(key, "result.pkl").read_bytes())
    damaged[-3] ^= 0xFF  # one flipped byte in the pickle
    store.path(key, "result.pkl").write_bytes(bytes(damaged))
    assert store.read_result(key).value == "third"
    store.write_error(key, ValueError("now it fails"), "", runtime=0.1)
    assert not store.path(key, "result.pkl").exists()
    assert isinstance(store.read_result(key).error, ValueError)


def test_a_long_session_writes_packs_as_it_goes(cache, monkeypatch):
    monkeypatch.setattr(result_index, "MAX_PENDING_BYTES", 100)  # a dozen or two small pickles
    with Executor(cache_directory=cache) as exe:
        assert [exe.submit(double, i).result() for i in range(N)] == [2 * i for i in range(N)]
        written = _packs(cache)
        assert written  # before the session ends: the values it holds stay bounded
    _forbid_result_files(monkeypatch)
    assert _resubmit(cache) == [2 * i for i in range(N)]


def test_large_packs_are_not_merged(tmp_path, monkeypatch):
    monkeypatch.setattr(result_index, "MIN_NEW_ENTRIES", 1)
    monkeypatch.setattr(result_index, "MERGE_BELOW", 1)  # every pack counts as large
    store = TaskStore(tmp_path / "cache")
    for i in range(result_index.MAX_PACKS + 1):
        store_outcome(store, double, i, value=2 * i)
        with Executor(cache_directory=store.directory) as exe:
            assert exe.submit(double, i).result() == 2 * i
    assert len(_packs(store.directory)) == result_index.MAX_PACKS + 1  # merging would hold them all in memory
