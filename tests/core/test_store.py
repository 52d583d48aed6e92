"""The task store: round trips, atomic writes, and damaged files reported as CacheCorruptedError."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import pytest

from executorlib.errors import CacheCorruptedError, RemoteError
from executorlib.store import FORMAT_VERSION, TaskStore, write_atomic
from tests.core import funcs


@pytest.fixture
def store(cache_dir: Path) -> TaskStore:
    return TaskStore(cache_dir)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.name.endswith(".tmp"))


def test_task_round_trip_and_write_once(store):
    assert store.write_task("k1", "add_funct", store.pickle_call(funcs.add_funct, (1, [2]), {"b": 3}), {"cores": 1}, ["p"])
    fn, args, kwargs = store.read_task("k1")
    assert fn is funcs.add_funct and args == (1, [2]) and kwargs == {"b": 3}
    info = store.read_task_info("k1")
    assert info["function_name"] == "add_funct"
    assert info["resources"] == {"cores": 1} and info["parents"] == ["p"]
    assert info["format_version"] == FORMAT_VERSION
    # a task file is written once and never replaced
    assert not store.write_task("k1", "echo", store.pickle_call(funcs.echo, (), {}), {}, [])
    assert store.read_task("k1")[0] is funcs.add_funct
    assert store.keys() == ["k1"] and store.has_task("k1") and not store.has_task("k2")
    assert leftovers(store.directory) == []


def test_result_and_error_round_trip(store):
    assert not store.has_result("k") and store.read_result_info("k") is None
    store.write_result("k", {"value": [1, 2]}, runtime=1.5)
    outcome = store.read_result("k")
    assert outcome.ok and outcome.value == {"value": [1, 2]} and store.read_result_info("k")["runtime"] == 1.5

    store.write_error("e", funcs.CustomError("boom"), "Traceback: line 1", runtime=0.1)
    outcome = store.read_result("e")
    assert not outcome.ok and type(outcome.error) is funcs.CustomError
    assert str(outcome.error) == "boom" and outcome.traceback == "Traceback: line 1"
    info = store.read_result_info("e")
    assert info["ok"] is False and info["error_type"] == "tests.core.funcs.CustomError"
    assert info["error_message"] == "boom"


def test_an_error_that_cannot_be_pickled_keeps_its_type_name_and_message(store):
    store.write_error("e", funcs.UnpicklableError("held a lock"), "tb", runtime=0.0)
    error = store.read_result("e").error
    assert isinstance(error, RemoteError)
    assert error.remote_type == "tests.core.funcs.UnpicklableError"
    assert "held a lock" in str(error)


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "result.h5"

    def fill(path: Path) -> None:
        path.write_bytes(b"half a file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, fill)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_or_keeps_as_asked(tmp_path):
    target = tmp_path / "job.json"
    assert write_atomic(target, lambda p: p.write_text("first"))
    assert not write_atomic(target, lambda p: p.write_text("second"), exclusive=True)
    assert target.read_text() == "first"
    assert write_atomic(target, lambda p: p.write_text("third"))
    assert target.read_text() == "third"
    assert [p.name for p in tmp_path.iterdir()] == ["job.json"]


# -- damaged files ---------------------------------------------------------------------------------

def truncated_copies(path: Path) -> list[bytes]:
    data = path.read_bytes()
    cuts = sorted({0, 1, 8, 100, 512, 2048, len(data) // 2, len(data) - 100, len(data) - 1})
    return [data[:n] for n in cuts if 0 <= n < len(data)]


def test_truncated_result_file_is_reported_as_corrupted_never_as_a_value(store):
    store.write_result("k", list(range(1000)), runtime=0.0)
    path = store.path("k", "result.h5")
    for damaged in truncated_copies(path):
        path.write_bytes(damaged)
        with pytest.raises(CacheCorruptedError) as info:
            store.read_result("k")
        assert str(path) in str(info.value)
        assert "Delete the task folder" in str(info.value)


def test_truncated_task_file_is_reported_as_corrupted(store):
    store.write_task("k", "echo", store.pickle_call(funcs.echo, (list(range(1000)),), {}), {"cores": 1}, [])
    path = store.path("k", "task.h5")
    for damaged in truncated_copies(path):
        path.write_bytes(damaged)
        for read in (store.read_task, store.read_task_info):
            with pytest.raises(CacheCorruptedError, match=str(path)):
                read("k")


def test_foreign_hdf5_files_and_other_format_versions_are_rejected(store):
    path = store.path("k", "result.h5")
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        f["something"] = [1, 2, 3]
    with pytest.raises(CacheCorruptedError, match="result.h5"):
        store.read_result("k")
    with h5py.File(path, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION
    with pytest.raises(CacheCorruptedError, match="result.h5"):
        store.read_result("k")
    with h5py.File(path, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(CacheCorruptedError, match="format version"):
        store.read_result("k")


def test_a_payload_that_does_not_unpickle_is_reported_as_corrupted(store):
    store.write_result("k", 42, runtime=0.0)
    path = store.path("k", "result.h5")
    with h5py.File(path, "a") as f:
        del f["output"]
        f["output"] = [1, 2, 3]  # not a pickle
    with pytest.raises(CacheCorruptedError, match="result.h5"):
        store.read_result("k")


def test_missing_files_are_not_corruption(store):
    with pytest.raises(FileNotFoundError):
        store.read_result("absent")
    with pytest.raises(FileNotFoundError):
        store.read_task("absent")


def test_a_world_writable_cache_directory_warns(tmp_path):
    directory = tmp_path / "shared"
    directory.mkdir()
    os.chmod(directory, 0o777)
    with pytest.warns(UserWarning, match="writable by other users"):
        TaskStore(directory)


# -- leftovers of killed writers ------------------------------------------------------------------------
def _temporary(folder: Path, name: str, host: str, pid: int, age: float = 0.0) -> Path:
    path = folder / f".{name}.{host}.{pid}.abcdef12.tmp"
    path.write_bytes(b"partial")
    if age:
        stamp = path.stat().st_mtime - age
        os.utime(path, (stamp, stamp))
    return path


def test_stale_temporaries_of_dead_writers_go_live_writers_stay(store, tmp_path):
    import socket
    import subprocess
    import sys

    store.write_task("k", "echo", store.pickle_call(funcs.echo, (1,), {}), {}, [])
    folder, host = store.task_dir("k"), socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        gone = {_temporary(folder, "result.h5", host, dead.pid),  # killed writer on this host
                _temporary(folder, "job.json", "otherhost", 99, age=2 * 3600)}  # abandoned elsewhere
        kept = {_temporary(folder, "result.h5", host, alive.pid),  # a live writer right now
                _temporary(folder, "result.pkl", host, os.getpid()),  # this process's own
                _temporary(folder, "job.json", "otherhost", 98)}  # another host's, recent: may be live
        assert set(store.remove_stale_temporaries("k")) == gone
        assert {p for p in folder.iterdir() if p.name.endswith(".tmp")} == kept
        again = _temporary(folder, "result.h5", host, dead.pid)
        store.write_result("k", 1, runtime=0.0)  # the next write to the folder cleans up too
        assert not again.exists() and all(p.exists() for p in kept)
    finally:
        alive.kill()
        alive.wait()


# -- setup errors -------------------------------------------------------------------------------------
def test_setup_error_record_is_read_cleared_and_never_a_result(store):
    store.write_task("k", "echo", store.pickle_call(funcs.echo, (1,), {}), {}, [])
    assert store.read_setup_error("k") is None
    store.write_setup_error("k", {"message": "fix PYTHONPATH", "error_type": "builtins.ModuleNotFoundError"})
    record = store.read_setup_error("k")
    assert record["message"] == "fix PYTHONPATH" and record["pid"] == os.getpid()
    assert store.read_setup_error("k", since=record["time"] + 1) is None  # an earlier attempt's
    assert not store.has_result("k")
    store.path("k", "setup_error.json").write_text("{junk")
    assert store.read_setup_error("k") is None
    store.write_setup_error("k", {"message": "again"})
    store.write_result("k", 5, runtime=0.0)  # a result supersedes it
    assert store.read_setup_error("k") is None and store.read_result("k").value == 5
