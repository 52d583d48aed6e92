"""A read-only cache (issue "Cache integrity under faults", local backend).

New calls fail their own Futures at once with EROFS ("Read-only file system") and the path of the
task file they could not write; the Executor stays usable, and after the cache is writable again
new calls on the same Executor run. Finished results can still be read from a read-only cache,
also by a new Executor (nothing needs to be written to give back a cached value).

The cache is made read-only with a read-only bind mount of itself (the ``read_only`` fixture):
``mount -o remount,ro`` of a whole tmpfs is refused while a live Executor holds its claim lock
file open for writing.
"""

from __future__ import annotations

import errno

from executorlib import Executor, get_key
from executorlib.store import TaskStore
from tests.faults.funcs import executions, record_square

TIMEOUT = 30


def assert_names_erofs(error: BaseException, path) -> None:
    assert isinstance(error, OSError), repr(error)
    assert error.errno == errno.EROFS, repr(error)
    text = str(error)
    assert str(path) in text, text
    assert "Read-only file system" in text or "EROFS" in text, text


def test_read_only_cache_fails_new_calls_and_the_executor_recovers(tmp_path, read_only, runs):
    """On a read-only cache a new call fails its Future with EROFS naming its task file, a cached
    call still gives its value; once writable again, the same Executor runs the failed call."""
    cache = tmp_path / "cache"
    with Executor(backend="local", cache_directory=cache) as exe:
        assert exe.submit(record_square, runs, 3).result(timeout=TIMEOUT) == 9
        writable = read_only(cache)
        failed = exe.submit(record_square, runs, 4)
        child = exe.submit(record_square, runs, failed)  # depends on the failed call
        assert_names_erofs(failed.exception(timeout=TIMEOUT), TaskStore(cache).task_dir(get_key(failed)))
        assert child.exception(timeout=TIMEOUT) is not None
        assert exe.submit(record_square, runs, 3).result(timeout=TIMEOUT) == 9  # cached: no write needed
        writable()
        assert exe.submit(record_square, runs, 4).result(timeout=TIMEOUT) == 16
        assert exe.submit(record_square, runs, 5).result(timeout=TIMEOUT) == 25
    assert executions(runs) == {"3": 1, "4": 1, "5": 1}


def test_new_executor_reads_finished_results_from_a_read_only_cache(tmp_path, read_only, runs):
    """A new Executor on a read-only cache returns the finished values without running them
    again, fails uncached calls with EROFS, and works normally once the cache is writable."""
    cache = tmp_path / "cache"
    with Executor(backend="local", cache_directory=cache) as exe:
        assert [exe.submit(record_square, runs, v).result(timeout=TIMEOUT) for v in (3, 4)] == [9, 16]
    writable = read_only(cache)
    with Executor(backend="local", cache_directory=cache) as exe:
        assert exe.submit(record_square, runs, 3).result(timeout=TIMEOUT) == 9
        assert exe.submit(record_square, runs, 4).result(timeout=TIMEOUT) == 16
        uncached = exe.submit(record_square, runs, 6)
        assert_names_erofs(uncached.exception(timeout=TIMEOUT), TaskStore(cache).task_dir(get_key(uncached)))
        writable()
        assert exe.submit(record_square, runs, 6).result(timeout=TIMEOUT) == 36
    assert executions(runs) == {"3": 1, "4": 1, "6": 1}
