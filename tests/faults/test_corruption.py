"""A damaged byte never becomes a value (issue 14 part 2).

One byte flipped (XOR 0xFF) or the file cut short, at many offsets, in every kind of file the
cache holds: task.h5, result.h5 (a small int, a large array, an error), result.pkl, the result
packs in .index, job.json. Every read gives the right value or a CacheCorruptedError that names
the file and what to do; never another value. Offsets: every byte of the stored pickles (where a
flip used to turn 1000003 into 1000002) plus offsets across the whole file drawn by hypothesis.

The counterpart: an exception that the user's own object raises while intact bytes are
unpickled is that exception, not a CacheCorruptedError.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executorlib import Executor
from executorlib.errors import CacheCorruptedError
from executorlib.files import COPY_FILE, INDEX_DIR, JOB_FILE, RESULT_FILE, TASK_FILE
from executorlib.result_index import MIN_NEW_ENTRIES
from executorlib.store import TaskStore
from tests.cache.conftest import key_of, store_call
from tests.cache.funcs import double
from tests.faults.conftest import flip_byte, truncate

VALUE = 1000003
ARRAY = np.arange(20_000, dtype=np.float64) * 1.5
FEW = settings(max_examples=150, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Pristine:
    """One file of a task folder and its intact bytes: damage it, then put it back."""

    def __init__(self, store: TaskStore, key: str, name: str):
        self.store, self.key, self.path = store, key, store.path(key, name)
        self.data = self.path.read_bytes()

    def restore(self) -> None:
        with open(self.path, "r+b") as f:  # in place: the same inode, as a bit rot would leave it
            f.truncate(0)
            f.write(self.data)

    def flip(self, offset: int) -> None:
        self.restore()
        flip_byte(self.path, offset)

    def cut(self, size: int) -> None:
        self.restore()
        truncate(self.path, size)

    def dataset_span(self, name: str) -> range:
        self.restore()
        with h5py.File(self.path, "r") as f:
            start, size = f[name].id.get_offset(), f[name].shape[0]
        return range(start, start + size)


def _fresh(store: TaskStore, use_index: bool = False) -> TaskStore:
    return TaskStore(store.directory, create=False, use_index=use_index)


def _same(value, expected) -> bool:
    if isinstance(expected, np.ndarray):
        return isinstance(value, np.ndarray) and value.dtype == expected.dtype and np.array_equal(value, expected)
    return type(value) is type(expected) and value == expected


def _right_or_corrupted(read, expected, path: Path) -> str:
    """Read; the right value -> "right", a CacheCorruptedError naming ``path`` -> "corrupted"."""
    try:
        value = read()
    except CacheCorruptedError as error:
        text = str(error)
        assert str(path) in text, text
        assert "Delete the task folder" in text and "executorlib clean" in text, text
        return "corrupted"
    assert _same(value, expected), f"a damaged {path.name} gave {value!r}, not {expected!r}"
    return "right"


def _value_of(store: TaskStore, key: str):
    outcome = _fresh(store).read_result(key)
    assert outcome.ok, f"a damaged file turned a value into the error {outcome.error!r}"
    return outcome.value


@pytest.fixture
def int_result(tmp_path) -> Pristine:
    store = TaskStore(tmp_path / "cache", use_index=False)
    key = store_call(store, double, 5)
    store.write_result(key, VALUE, runtime=0.1)
    store.path(key, COPY_FILE).unlink()  # result.h5 alone (result.pkl has its own test)
    return Pristine(store, key, RESULT_FILE)


# -- result.h5 ---------------------------------------------------------------------------------------
def test_every_byte_of_a_stored_int_is_checked(int_result):
    """The reported case: a flipped byte of the pickle gave 1000002 instead of 1000003."""
    for offset in int_result.dataset_span("output"):
        int_result.flip(offset)
        assert _right_or_corrupted(lambda: _value_of(int_result.store, int_result.key), VALUE,
                                   int_result.path) == "corrupted", f"offset {offset}"


@FEW
@given(fraction=st.floats(0, 1, exclude_max=True))
def test_a_flip_anywhere_in_result_h5_of_an_int(int_result, fraction):
    int_result.flip(int(fraction * len(int_result.data)))
    _right_or_corrupted(lambda: _value_of(int_result.store, int_result.key), VALUE, int_result.path)


@FEW
@given(fraction=st.floats(0, 1, exclude_max=True))
def test_result_h5_cut_short(int_result, fraction):
    int_result.cut(int(fraction * len(int_result.data)))
    _right_or_corrupted(lambda: _value_of(int_result.store, int_result.key), VALUE, int_result.path)


@pytest.fixture
def array_result(tmp_path) -> Pristine:
    store = TaskStore(tmp_path / "cache", use_index=False)
    key = store_call(store, double, ARRAY)
    store.write_result(key, ARRAY, runtime=0.1)
    assert not store.path(key, COPY_FILE).exists()  # too big for a copy: result.h5 is read
    return Pristine(store, key, RESULT_FILE)


def test_a_flip_in_the_data_of_a_large_array_is_corruption(array_result):
    span = array_result.dataset_span("output")
    for offset in [span.start, span.start + 1, span.stop - 1, *span[100::4999]]:
        array_result.flip(offset)
        assert _right_or_corrupted(lambda: _value_of(array_result.store, array_result.key), ARRAY,
                                   array_result.path) == "corrupted", f"offset {offset}"


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fraction=st.floats(0, 1, exclude_max=True))
def test_a_flip_in_the_metadata_of_a_large_array(array_result, fraction):
    span = array_result.dataset_span("output")
    outside = len(array_result.data) - len(span)  # the HDF5 structure and the attributes
    offset = int(fraction * outside)
    array_result.flip(offset if offset < span.start else offset + len(span))
    _right_or_corrupted(lambda: _value_of(array_result.store, array_result.key), ARRAY, array_result.path)


def test_a_stored_error_is_checked_too(tmp_path):
    store = TaskStore(tmp_path / "cache", use_index=False)
    key = store_call(store, double, 5)
    store.write_error(key, ValueError("the remote message"), "Traceback ...\n", runtime=0.1)
    pristine = Pristine(store, key, RESULT_FILE)

    def read_error():
        outcome = _fresh(store).read_result(key)
        assert not outcome.ok
        return (type(outcome.error), str(outcome.error))

    for offset in [*pristine.dataset_span("error")]:
        pristine.flip(offset)
        assert _right_or_corrupted(read_error, (ValueError, "the remote message"), pristine.path) == "corrupted"


# -- task.h5 -----------------------------------------------------------------------------------------
@pytest.fixture
def task_file(tmp_path) -> Pristine:
    store = TaskStore(tmp_path / "cache", use_index=False)
    return Pristine(store, store_call(store, double, 5), TASK_FILE)


def _read_call(pristine: Pristine):
    fn, args, kwargs = _fresh(pristine.store).read_task(pristine.key)
    return (fn is double, args, kwargs)


def test_every_byte_of_the_pickled_call_is_checked(task_file):
    for name in ("function", "args", "kwargs"):
        span = task_file.dataset_span(name)
        for offset in [*span[:64], *span[64::7], span.stop - 1]:  # function: ~100 bytes
            task_file.flip(offset)
            assert _right_or_corrupted(lambda: _read_call(task_file), (True, (5,), {}),
                                       task_file.path) == "corrupted", f"{name} offset {offset}"


@FEW
@given(fraction=st.floats(0, 1, exclude_max=True), cut=st.booleans())
def test_damage_anywhere_in_task_h5(task_file, fraction, cut):
    task_file.restore()
    expected_info = _fresh(task_file.store).read_task_info(task_file.key)
    offset = int(fraction * len(task_file.data))
    task_file.cut(offset) if cut else task_file.flip(offset)
    _right_or_corrupted(lambda: _read_call(task_file), (True, (5,), {}), task_file.path)
    _right_or_corrupted(lambda: _fresh(task_file.store).read_task_info(task_file.key), expected_info,
                        task_file.path)


# -- result.pkl --------------------------------------------------------------------------------------
def test_a_damaged_result_pkl_is_never_used(tmp_path, monkeypatch):
    store = TaskStore(tmp_path / "cache", use_index=False)
    key = store_call(store, double, 5)
    store.write_result(key, VALUE, runtime=0.1)
    copy = Pristine(store, key, COPY_FILE)
    with monkeypatch.context() as patch:  # the intact copy is what answers
        patch.setattr("executorlib.store._read_output_fast", lambda path: pytest.fail("result.h5 read"))
        assert _value_of(store, key) == VALUE
    for offset in range(len(copy.data)):  # header (magic, stamp of result.h5, crc32) and pickle
        copy.flip(offset)
        assert _same(_value_of(store, key), VALUE), f"offset {offset}"
    for size in range(len(copy.data)):
        copy.cut(size)
        assert _same(_value_of(store, key), VALUE), f"cut to {size}"


# -- result packs ------------------------------------------------------------------------------------
@pytest.fixture
def packed(tmp_path):
    """MIN_NEW_ENTRIES small results in one pack; no result.pkl, so that a damaged pack entry
    can only be answered by its result.h5."""
    store = TaskStore(tmp_path / "cache", use_index=False)
    keys = []
    for i in range(MIN_NEW_ENTRIES):
        key = store_call(store, double, i)
        store.write_result(key, VALUE + i, runtime=0.1)
        keys.append(key)
    reader = _fresh(store, use_index=True)
    for key in keys:
        reader.read_result(key)
    reader.flush_index()
    (pack,) = (store.directory / INDEX_DIR).glob("pack-*.h5")
    for key in keys:
        store.path(key, COPY_FILE).unlink()
    check = _fresh(store, use_index=True)  # the intact pack answers every key
    assert all(check.index.get(key, _stamp(store, key)) is not None for key in keys)
    return store, keys, pack, pack.read_bytes()


def _stamp(store: TaskStore, key: str):
    from executorlib.files import stamp_of

    return stamp_of(os.stat(store.path(key, RESULT_FILE)))


def _all_right(store: TaskStore, keys: list[str]) -> None:
    reader = _fresh(store, use_index=True)
    for i, key in enumerate(keys):
        assert _same(reader.read_result(key).value, VALUE + i), f"{key} read from a damaged pack"


def test_every_byte_of_the_packed_values_is_checked(packed):
    store, keys, pack, data = packed
    with h5py.File(pack, "r") as f:
        start, size = f["blob"].id.get_offset(), f["blob"].shape[0]
    for offset in range(start, start + size):
        pack.write_bytes(data)
        flip_byte(pack, offset)
        _all_right(store, keys)


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fraction=st.floats(0, 1, exclude_max=True), cut=st.booleans())
def test_damage_anywhere_in_a_pack(packed, fraction, cut):
    store, keys, pack, data = packed
    pack.write_bytes(data)
    offset = int(fraction * len(data))
    truncate(pack, offset) if cut else flip_byte(pack, offset)
    _all_right(store, keys)


def test_a_damaged_pack_through_the_executor_in_a_new_process(packed, run_client):
    """The reported case end to end: a new process resubmits the calls over a damaged pack."""
    store, keys, pack, data = packed
    with h5py.File(pack, "r") as f:
        start = f["blob"].id.get_offset()
    flip_byte(pack, start + 5)  # inside the first value's pickle
    done = run_client(f"""
        from executorlib import Executor
        from tests.cache.funcs import double
        with Executor(cache_directory={str(store.directory)!r}) as exe:
            print([f.result(timeout=60) for f in [exe.submit(double, i) for i in range({len(keys)})]])
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([VALUE + i for i in range(len(keys))])


# -- end to end: a job's result.h5 damaged, read by the Executor -----------------------------------------
def test_a_damaged_result_fails_its_future_with_the_path(tmp_path):
    cache = tmp_path / "cache"
    with Executor(cache_directory=cache) as exe:
        assert np.array_equal(exe.submit(double, ARRAY).result(timeout=60), 2 * ARRAY)
    path = cache / key_of(double, ARRAY) / RESULT_FILE
    with h5py.File(path, "r") as f:
        middle = f["output"].id.get_offset() + f["output"].shape[0] // 2
    flip_byte(path, middle)
    with Executor(cache_directory=cache) as exe:
        error = exe.submit(double, ARRAY).exception(timeout=60)
    assert isinstance(error, CacheCorruptedError), repr(error)
    assert str(path) in str(error) and "checksum" in str(error) and "executorlib clean" in str(error)


# -- job.json ----------------------------------------------------------------------------------------
def test_a_damaged_job_record_reads_as_absent_or_intact(tmp_path):
    store = TaskStore(tmp_path / "cache", use_index=False)
    key = store_call(store, double, 5)
    store.write_job(key, "local", "12345")
    record = store.read_job(key)
    pristine = Pristine(store, key, JOB_FILE)
    for offset in range(len(pristine.data)):
        pristine.flip(offset)
        assert store.read_job(key) in (None, record), f"offset {offset}"
        pristine.cut(offset)
        assert store.read_job(key) in (None, record), f"cut to {offset}"


def test_a_call_with_a_junk_job_record_still_runs(tmp_path):
    """A task folder whose job.json is junk (and no result): the call is run, not waited on."""
    store = TaskStore(tmp_path / "cache", use_index=False)
    key = store_call(store, double, 21)
    store.claim(key, "local")
    truncate(store.path(key, JOB_FILE), 7)
    exe = Executor(cache_directory=store.directory)
    try:
        assert exe.submit(double, 21).result(timeout=15) == 42
    finally:
        exe.shutdown(wait=False, cancel_futures=True)


# -- not corruption: the user's object fails while intact bytes are unpickled -------------------------------
class RefusesToLoad:
    """A value whose own __setstate__ raises (a version check of the user's class, say)."""

    def __init__(self):
        self.version = 1  # some state: pickle calls __setstate__ only for a non-empty one

    def __setstate__(self, state):
        raise pickle.UnpicklingError("RefusesToLoad: stored by an incompatible version")


@pytest.mark.parametrize("copy", ["result.pkl", "result.h5 only", "result pack"])
def test_an_error_of_the_users_object_is_not_corruption(tmp_path, copy):
    store = TaskStore(tmp_path / "cache", use_index=False)
    key = store_call(store, double, 5)
    store.write_result(key, RefusesToLoad(), runtime=0.1)
    if copy != "result.pkl":
        store.path(key, COPY_FILE).unlink()
    if copy == "result pack":
        from executorlib.result_index import ResultIndex

        index = ResultIndex(store.directory)
        with h5py.File(store.path(key, RESULT_FILE), "r") as f:
            index.remember(key, _stamp(store, key), f["output"][()].tobytes())
        index.flush(minimum=1)
    with Executor(cache_directory=store.directory) as exe:
        error = exe.submit(double, 5).exception(timeout=30)
    assert type(error) is pickle.UnpicklingError, repr(error)
    assert "incompatible version" in str(error)
    notes = "\n".join(getattr(error, "__notes__", []))
    assert key in notes and "intact" in notes, notes
    assert "cut short" not in str(error) + notes


def test_a_version_1_cache_without_checksums_is_still_read(tmp_path):
    store = TaskStore(tmp_path / "cache", use_index=False)
    key = store_call(store, double, 5)
    with h5py.File(store.path(key, RESULT_FILE), "w") as f:  # as executorlib wrote it before checksums
        f.attrs["format_version"] = 1
        f.attrs["runtime"] = 0.5
        f.create_dataset("output", data=np.frombuffer(pickle.dumps(VALUE), dtype=np.uint8))
    assert _value_of(store, key) == VALUE
