"""A full disk under the cache (issue "Cache integrity under faults", local backend).

The cache lives on a small tmpfs. A call whose task file or result does not fit fails its own
Future, with a message naming the path and ENOSPC ("No space left on device"); the other calls of
the same Executor are not touched, and once space is freed (the filler file deleted) new calls on
the same Executor succeed. Nothing hangs (every wait has a timeout), and what a failed write left
behind is never read back as a value: a later Executor on the same cache recomputes the call.
"""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np

from executorlib import Executor, get_key
from executorlib.errors import JobFailedError
from executorlib.files import RESULT_FILE
from executorlib.store import TaskStore
from tests.faults.funcs import executions, record_square

TIMEOUT = 30


def record_ones(runs_file: str, n: int) -> np.ndarray:
    """``np.ones(n)``, recorded in ``runs_file`` (one line ``ones<n>`` per execution)."""
    with open(runs_file, "a") as f:
        f.write(f"ones{n}\n")
    return np.ones(n)


def fill_then_return(filler: str, runs_file: str, n: int) -> list[int]:
    """Fill the disk of ``filler`` completely from inside the job, then return a value."""
    with open(runs_file, "a") as f:
        f.write(f"fill{n}\n")
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return list(range(n))


def fill(path: Path, limit: int | None = None) -> Path:
    """Write ``path`` until the disk is full (or ``limit`` bytes are written); returns it."""
    written = 0
    with open(path, "wb") as f:
        try:
            while limit is None or written < limit:
                f.write(b"\0" * 65536)
                written += 65536
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
    return path


def assert_names_enospc(error: BaseException, path: Path) -> None:
    text = str(error)
    assert str(path) in text, text
    assert "No space left on device" in text or "ENOSPC" in text, text


def test_task_file_too_big_for_the_disk_fails_only_its_future(tmpfs, runs):
    """A call whose argument does not fit on the disk fails its Future with ENOSPC and the path
    of its task file; a call submitted next to it, and calls after it, run normally."""
    cache = tmpfs("2m") / "cache"
    with Executor(backend="local", cache_directory=cache) as exe:
        doomed = exe.submit(np.sum, np.ones(400_000))  # 3.2 MB of float64: more than the disk
        fine = exe.submit(record_square, runs, 3)
        error = doomed.exception(timeout=TIMEOUT)
        assert isinstance(error, OSError), repr(error)
        assert error.errno == errno.ENOSPC
        assert_names_enospc(error, TaskStore(cache).task_dir(get_key(doomed)))
        assert fine.result(timeout=TIMEOUT) == 9
        assert exe.submit(record_square, runs, 4).result(timeout=TIMEOUT) == 16
    assert executions(runs) == {"3": 1, "4": 1}


def test_full_disk_fails_new_calls_until_space_is_freed(tmpfs, runs):
    """With the disk full, a new call fails at once with ENOSPC naming its task file, a finished
    call still gives its cached value; after the filler is deleted the same Executor runs the
    failed call again and gets its value (the function ran once per success, never half-way)."""
    disk = tmpfs("2m")
    cache = disk / "cache"
    with Executor(backend="local", cache_directory=cache) as exe:
        assert exe.submit(record_square, runs, 3).result(timeout=TIMEOUT) == 9
        filler = fill(disk / "filler")
        failed = exe.submit(record_square, runs, 5)
        error = failed.exception(timeout=TIMEOUT)
        assert isinstance(error, OSError), repr(error)
        assert error.errno == errno.ENOSPC
        assert_names_enospc(error, TaskStore(cache).task_dir(get_key(failed)))
        assert exe.submit(record_square, runs, 3).result(timeout=TIMEOUT) == 9  # from the cache
        filler.unlink()
        assert exe.submit(record_square, runs, 5).result(timeout=TIMEOUT) == 25
        assert exe.submit(record_square, runs, 6).result(timeout=TIMEOUT) == 36
    assert executions(runs) == {"3": 1, "5": 1, "6": 1}


def test_result_too_big_for_the_disk_fails_its_future_and_is_recomputed_later(tmpfs, runs):
    """A result that does not fit fails its Future with ENOSPC and the task folder in the message,
    and leaves no result file; after space is freed, the same Executor runs new calls, and a
    later Executor on the same cache recomputes the call and returns the right value."""
    disk = tmpfs("2m")
    cache = disk / "cache"
    n = 131_072  # 1 MB of float64
    with Executor(backend="local", cache_directory=cache) as exe:
        assert exe.submit(record_square, runs, 3).result(timeout=TIMEOUT) == 9
        filler = fill(disk / "filler", limit=1_200_000)  # leaves ~0.8 MB: the task fits, not its result
        failed = exe.submit(record_ones, runs, n)
        error = failed.exception(timeout=TIMEOUT)
        assert isinstance(error, JobFailedError), repr(error)
        store = TaskStore(cache)
        key = get_key(failed)
        assert_names_enospc(error, store.task_dir(key))
        assert not store.has_result(key)
        assert not (store.task_dir(key) / RESULT_FILE).exists()
        filler.unlink()
        assert exe.submit(record_square, runs, 4).result(timeout=TIMEOUT) == 16  # the same Executor
    with Executor(backend="local", cache_directory=cache) as exe:
        value = exe.submit(record_ones, runs, n).result(timeout=TIMEOUT)
        assert value.shape == (n,) and np.all(value == 1.0)
    with Executor(backend="local", cache_directory=cache) as exe:  # now it is cached
        assert np.all(exe.submit(record_ones, runs, n).result(timeout=TIMEOUT) == 1.0)
    assert executions(runs) == {"3": 1, f"ones{n}": 2, "4": 1}  # failed once, recomputed once


def test_result_write_on_a_completely_full_disk_names_the_path_and_errno(tmpfs, runs):
    """The function itself fills the disk, so neither result.h5 nor job.out can be written: the
    Future still fails (no hang, no value) and its message names the task folder and ENOSPC."""
    disk = tmpfs("2m")
    cache = disk / "cache"
    filler = disk / "filler"
    with Executor(backend="local", cache_directory=cache) as exe:
        failed = exe.submit(fill_then_return, str(filler), runs, 5)
        error = failed.exception(timeout=TIMEOUT)
        filler.unlink()
        assert isinstance(error, JobFailedError), repr(error)
        assert not TaskStore(cache).has_result(get_key(failed))
        assert exe.submit(record_square, runs, 4).result(timeout=TIMEOUT) == 16
        assert_names_enospc(error, TaskStore(cache).task_dir(get_key(failed)))
