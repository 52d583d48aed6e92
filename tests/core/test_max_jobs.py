"""``max_jobs``: a few worker jobs serve many calls, played here by local processes.

``Executor(backend="local", cache_directory=..., max_jobs=K)`` runs the file protocol of the HPC
submission mode's worker jobs (executorlib.packed_queue / packed_worker) with local processes as
the jobs, so every rule of a call can be checked without a cluster: results, dependencies, errors,
a crash that ends only its call, run_time_max, cancel, a killed worker, the per-call log, the
worker count, a client that leaves, and the cache tools. tests/slurm/test_max_jobs.py checks the
same on the real SLURM cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from executorlib import Executor, get_cache_data
from executorlib import packed_queue as pq
from executorlib.errors import JobFailedError
from executorlib.spawners.packed import worker_walltime
from tests.core import funcs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _short_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTORLIB_WORKER_IDLE", "2")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class _WorkerCounter(threading.Thread):
    """Samples how many worker processes of a cache are alive at once."""

    def __init__(self, cache: Path):
        super().__init__(daemon=True)
        self.cache = cache
        self.most = 0
        self.seen: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            alive = [w for w in pq.read_workers(self.cache) if _pid_alive(int(w))]
            self.seen.update(alive)
            self.most = max(self.most, len(alive))
            time.sleep(0.01)




def test_results_dependencies_and_the_worker_bound(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    counter = _WorkerCounter(cache)
    counter.start()
    with Executor(backend="local", cache_directory=cache, max_jobs=2) as exe:
        sums = [exe.submit(funcs.add_funct, i, 1) for i in range(30)]
        chain = exe.submit(funcs.add_funct, 100, 0)
        for _ in range(3):
            chain = exe.submit(funcs.add_funct, chain, 1)
        assert [f.result(timeout=60) for f in sums] == list(range(1, 31))
        assert chain.result(timeout=60) == 103
    counter.stop.set()
    counter.join()
    assert 1 <= counter.most <= 2
    served = pq.served_by(cache)
    assert len(served) == 34  # every call ran in a worker: a call is not a job
    assert len(set(served.values())) <= len(counter.seen) and len(counter.seen) <= 4


def test_a_second_run_reads_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    marks = tmp_path / "runs.txt"
    with Executor(backend="local", cache_directory=cache, max_jobs=1) as exe:
        assert exe.submit(funcs.record, str(marks), 7).result(timeout=60) == 7
    with Executor(backend="local", cache_directory=cache, max_jobs=1) as exe:
        assert exe.submit(funcs.record, str(marks), 7).result(timeout=60) == 7
    assert marks.read_text().count("\n") == 1


def test_errors_crashes_and_time_limits_end_only_their_call(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    marks = tmp_path / "runs.txt"
    with Executor(backend="local", cache_directory=cache, max_jobs=1) as exe:
        bad = exe.submit(funcs.raise_value_error, "no")
        child = exe.submit(funcs.record, str(marks), bad)
        crash = exe.submit(funcs.segfault)
        slow = exe.submit(funcs.sleep_return, 30, 1, resource_dict={"run_time_max": 1})
        fine = exe.submit(funcs.add_funct, 2, 2)
        with pytest.raises(ValueError, match="no"):
            bad.result(timeout=60)
        with pytest.raises(ValueError, match="no"):  # the parent's own type, the child never ran
            child.result(timeout=60)
        with pytest.raises(JobFailedError, match="SIGSEGV"):
            crash.result(timeout=60)
        with pytest.raises(JobFailedError, match="run_time_max") as timeout:
            slow.result(timeout=60)
        assert "TIMEOUT" in str(timeout.value)
        assert fine.result(timeout=60) == 4
    served = pq.served_by(cache)
    assert len(set(served.values())) == 1  # one worker went on after the crash and the kill
    assert not marks.exists()  # the child of the failed call never ran


def test_each_call_has_its_own_output(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with Executor(backend="local", cache_directory=cache, max_jobs=1) as exe:
        first = exe.submit(funcs.print_and_return, "first call says hello", 1)
        second = exe.submit(funcs.print_and_return, "second call says bye", 2)
        assert (first.result(timeout=60), second.result(timeout=60)) == (1, 2)
    one = (cache / first._executorlib_key / "job.out").read_text()
    two = (cache / second._executorlib_key / "job.out").read_text()
    assert "first call says hello" in one and "second" not in one
    assert "second call says bye" in two and "first" not in two


def test_a_queued_call_cancelled_never_runs(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    marks = tmp_path / "runs.txt"
    gate = tmp_path / "gate"
    with Executor(backend="local", cache_directory=cache, max_jobs=1) as exe:
        blocker = exe.submit(funcs.wait_for_file, str(gate))
        queued = exe.submit(funcs.record, str(marks), 1)
        deadline = time.monotonic() + 30
        while not blocker.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert queued.cancel()
        gate.write_text("go")
        blocker.result(timeout=60)
    with pytest.raises(CancelledError):
        queued.result()
    time.sleep(0.5)
    assert not marks.exists()


def test_a_running_call_is_killed_by_the_cache_tools(tmp_path: Path) -> None:
    from executorlib import terminate_tasks_in_cache

    cache = tmp_path / "cache"
    with Executor(backend="local", cache_directory=cache, max_jobs=1) as exe:
        slow = exe.submit(funcs.sleep_return, 60, 1)
        deadline = time.monotonic() + 30
        while not slow.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        while not pq.served_by(cache) and time.monotonic() < deadline:
            time.sleep(0.05)
        rows = {row["key"]: row for row in get_cache_data(cache)}
        assert rows[slow._executorlib_key]["job_state"] == "RUNNING"
        assert terminate_tasks_in_cache(cache) == [slow._executorlib_key]
        with pytest.raises(CancelledError, match="was cancelled"):  # as for a job of its own
            slow.result(timeout=30)
        after = exe.submit(funcs.add_funct, 1, 2)  # the worker serves on
        assert after.result(timeout=60) == 3


def test_a_killed_worker_fails_its_call_and_is_replaced(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with Executor(backend="local", cache_directory=cache, max_jobs=1) as exe:
        slow = exe.submit(funcs.sleep_return, 60, 1)
        deadline = time.monotonic() + 30
        while slow._executorlib_key not in pq.served_by(cache) and time.monotonic() < deadline:
            time.sleep(0.05)
        worker = pq.served_by(cache)[slow._executorlib_key]
        later = [exe.submit(funcs.add_funct, i, 1) for i in range(3)]
        os.kill(int(worker), signal.SIGKILL)
        with pytest.raises(JobFailedError, match="worker job"):
            slow.result(timeout=60)
        assert [f.result(timeout=60) for f in later] == [1, 2, 3]
    served = pq.served_by(cache)
    assert {served[f._executorlib_key] for f in later} != {worker}


def test_workers_serve_on_after_the_client_left(tmp_path: Path) -> None:
    """A client submits and exits at once; a later process finds every result, none ran twice,
    and the child of a failed parent ended without running (the worker saw the parent fail)."""
    cache = tmp_path / "cache"
    marks = tmp_path / "runs.txt"
    script = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from executorlib import Executor
from tests.core import funcs
exe = Executor(backend="local", cache_directory={str(cache)!r}, max_jobs=1)
a = exe.submit(funcs.record, {str(marks)!r}, 1)
b = exe.submit(funcs.add_funct, a, 1)
bad = exe.submit(funcs.raise_value_error, "parent failed")
child = exe.submit(funcs.record, {str(marks)!r}, bad)
print(a._executorlib_key, b._executorlib_key, child._executorlib_key, flush=True)
import json
import os
os._exit(0)  # gone without shutdown: only the worker jobs carry on
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, EXECUTORLIB_WORKER_IDLE="3"))
    assert done.returncode == 0, done.stderr
    with Executor(backend="local", cache_directory=cache, max_jobs=1) as exe:
        a = exe.submit(funcs.record, str(marks), 1)
        b = exe.submit(funcs.add_funct, a, 1)
        bad = exe.submit(funcs.raise_value_error, "parent failed")
        child = exe.submit(funcs.record, str(marks), bad)
        assert b.result(timeout=60) == 2
        with pytest.raises(ValueError, match="parent failed"):
            child.result(timeout=60)
    assert marks.read_text().splitlines() == ["1"]


def test_max_jobs_is_validated() -> None:
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="max_jobs must be None or an int >= 1"):
            Executor(backend="slurm_submission", cache_directory="unused", max_jobs=bad)
    with pytest.raises(ValueError, match="named cache_directory"):
        Executor(backend="local", max_jobs=2)
    with pytest.raises(ValueError, match="not available with backend='slurm_allocation'"):
        Executor(backend="slurm_allocation", max_jobs=2)


def test_shapes_separate_job_level_resources_only() -> None:
    from executorlib.resources import merge_resources

    base = merge_resources({}, None)
    assert pq.shape_of(base) == pq.shape_of(merge_resources({"run_time_max": 5, "cwd": "/tmp"}, None))
    assert pq.shape_of(base) != pq.shape_of(merge_resources({"threads_per_core": 2}, None))
    assert pq.shape_of(base) != pq.shape_of(merge_resources({"memory_max": 2}, None))
    assert pq.shape_of(merge_resources({"cores": 2}, None)).startswith("c2-")


def test_worker_walltime_comes_from_the_calls() -> None:
    assert worker_walltime([None, 10], idle=20) is None  # one call without a limit: the partition's
    assert worker_walltime([60, 60], idle=20) == 60 + 60 + 80
    assert worker_walltime([7200] * 10, idle=20) == 4 * 3600  # capped ...
    assert worker_walltime([5 * 3600], idle=20) == 5 * 3600 + 80  # ... never below the longest call


def test_call_ids_name_their_folder(tmp_path: Path) -> None:
    job_id = pq.call_id("abc123", tmp_path / "key")
    assert pq.parse_call_id(job_id) == ("abc123", tmp_path / "key")
    with pytest.raises(ValueError, match="not the id of a call"):
        pq.parse_call_id("12345")


def test_a_later_client_starts_workers_for_calls_an_earlier_one_queued(tmp_path: Path) -> None:
    """The first client leaves, and its only worker dies with it: the calls it queued are served by
    workers that the next client starts, although that client submitted none of them itself."""
    cache = tmp_path / "cache"
    gate = tmp_path / "gate"
    marks = tmp_path / "runs.txt"
    script = f"""
import os, sys, time, json
sys.path.insert(0, {str(ROOT)!r})
from executorlib import Executor
from tests.core import funcs
exe = Executor(backend="local", cache_directory={str(cache)!r}, max_jobs=1)
blocker = exe.submit(funcs.wait_for_file, {str(gate)!r})
rest = [exe.submit(funcs.record, {str(marks)!r}, i) for i in range(3)]
deadline = time.monotonic() + 30
while not list(__import__("pathlib").Path({str(cache)!r}).glob("*/packed-*.taken")) and time.monotonic() < deadline:
    time.sleep(0.05)
os._exit(0)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, EXECUTORLIB_WORKER_IDLE="30"))
    assert done.returncode == 0, done.stderr
    for worker in pq.read_workers(cache):  # the first client's worker dies before serving the rest
        os.kill(int(worker), signal.SIGKILL)
    gate.write_text("go")
    with Executor(backend="local", cache_directory=cache, max_jobs=1) as exe:
        assert [exe.submit(funcs.record, str(marks), i).result(timeout=60) for i in range(3)] == [0, 1, 2]
        assert exe.submit(funcs.wait_for_file, str(gate)).result(timeout=60) is True
    assert sorted(marks.read_text().splitlines()) == ["0", "1", "2"]


def test_clean_removes_what_the_workers_left(tmp_path: Path) -> None:
    from executorlib import clean_cache

    cache = tmp_path / "cache"
    with Executor(backend="local", cache_directory=cache, max_jobs=1) as exe:
        assert exe.submit(funcs.add_funct, 1, 2).result(timeout=60) == 3
    deadline = time.monotonic() + 30
    while any(_pid_alive(int(w)) for w in pq.read_workers(cache)) and time.monotonic() < deadline:
        time.sleep(0.05)
    # a queue entry whose call folder is gone (a clean raced a submission) is swept
    orphan = pq.enqueue(cache, "c1-orphan", "gone_key", "n0", cache / "gone_key", [], None, ["true"], True)
    assert pq.sweep(cache, grace=0, now=time.time()) >= 1
    assert not orphan.exists()
    clean_cache(cache, grace=0)  # a purge: nothing is left to serve, the queues go too
    assert not (cache / pq.PACKED_DIR).exists()


def test_a_client_killed_before_its_job_record_leaves_a_call_the_next_one_adopts(tmp_path: Path) -> None:
    """The first client dies right after queueing the call, before job.json names it: the next
    client finds the call by its claim's tag and follows it instead of queueing it again."""
    cache = tmp_path / "cache"
    gate = tmp_path / "gate"
    marks = tmp_path / "runs.txt"
    script = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
from executorlib import Executor, claims
from tests.core import funcs
claims.write_job = lambda *args, **kwargs: os._exit(0)  # killed between the queue and job.json
exe = Executor(backend="local", cache_directory={str(cache)!r}, max_jobs=2)
exe.submit(funcs.record_after_gate, {str(marks)!r}, {str(gate)!r}, 1).result(timeout=60)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, EXECUTORLIB_WORKER_IDLE="10"))
    assert done.returncode == 0, done.stderr
    record = json.loads(next(cache.glob("*/job.json")).read_text())
    assert record["state"] == "claimed" and record["tag"]  # no job id was recorded
    with Executor(backend="local", cache_directory=cache, max_jobs=2) as exe:
        future = exe.submit(funcs.record_after_gate, str(marks), str(gate), 1)
        time.sleep(1.0)  # a second submission would be taken by the second worker by now
        gate.write_text("go")
        assert future.result(timeout=60) == 1
    assert marks.read_text().splitlines() == ["1"]  # ran once


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def test_workers_killed_at_random_moments_never_lose_or_repeat_a_call(tmp_path: Path) -> None:
    """SIGKILL of worker processes at random moments (while they list, take, fork, wait, record):
    every Future still ends, a call that reports success ran exactly once and its value is right,
    and a second run completes what the kills failed, without running a finished call again."""
    import random

    cache = tmp_path / "cache"
    marks = tmp_path / "marks"
    marks.mkdir()
    rng = random.Random(1234)
    stop = threading.Event()
    kills = []

    def killer() -> None:
        while not stop.is_set():
            time.sleep(rng.uniform(0.02, 0.25))
            alive = [int(w) for w in pq.read_workers(cache) if _pid_alive(int(w))]
            if alive:
                victim = rng.choice(alive)
                # half of the time with its forked call too (as scancel kills the job's processes)
                doomed = [victim] + (_children(victim) if rng.random() < 0.5 else [])
                for pid in doomed:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kills.append(pid)
                    except ProcessLookupError:
                        pass

    calls = list(range(40))
    thread = threading.Thread(target=killer, daemon=True)
    with Executor(backend="local", cache_directory=cache, max_jobs=2, resource_dict={"max_retries": 0}) as exe:
        thread.start()
        futures = [exe.submit(funcs.mark_once, str(marks / f"{i}"), i, 0.05) for i in calls]
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=120))
            except JobFailedError:
                outcomes.append(None)
        stop.set()
    thread.join()
    assert kills, "the killer never found a worker to kill"
    time.sleep(0.5)  # a call's process dies with its worker: none may finish after its Future failed
    for i, outcome in zip(calls, outcomes):
        if outcome is not None:
            assert outcome == i
            assert (marks / f"{i}").read_text() == "x"  # ran exactly once
        else:
            assert not (cache / futures[i]._executorlib_key / "result.h5").exists()
    with Executor(backend="local", cache_directory=cache, max_jobs=2) as exe:  # no kills now
        again = [exe.submit(funcs.mark_once, str(marks / f"{i}"), i, 0.05) for i in calls]
        assert [f.result(timeout=120) for f in again] == calls
    for i, outcome in zip(calls, outcomes):
        if outcome is not None:
            assert (marks / f"{i}").read_text() == "x"  # a finished call was not run again


def test_an_mpi_call_gets_its_ranks_from_the_worker(tmp_path: Path) -> None:
    """cores=2: the worker (one process) launches the call under mpiexec -n 2."""
    pytest.importorskip("mpi4py")
    from executorlib.spawners.local import find_mpiexec

    if find_mpiexec() is None:
        pytest.skip("no mpiexec on PATH")
    cache = tmp_path / "cache"
    with Executor(backend="local", cache_directory=cache, max_jobs=1) as exe:
        assert exe.submit(funcs.calc, 3, resource_dict={"cores": 2}).result(timeout=120) == [(3, 2, 0), (3, 2, 1)]
    assert len(pq.read_workers(cache)) <= 1


def test_a_script_that_dropped_max_jobs_takes_queued_calls_back_instead_of_running_them_twice(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    gate = tmp_path / "gate"
    marks = tmp_path / "marks"
    marks.mkdir()
    script = f"""
import os, sys, time
sys.path.insert(0, {str(ROOT)!r})
from executorlib import Executor
from tests.core import funcs
exe = Executor(backend="local", cache_directory={str(cache)!r}, max_jobs=1)
blocker = exe.submit(funcs.record_after_gate, {str(marks / "blocker")!r}, {str(gate)!r}, 0)
queued = exe.submit(funcs.mark_once, {str(marks / "queued")!r}, 1)
time.sleep(1.0)
os._exit(0)  # its worker runs the blocker; the second call waits in the queue
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, EXECUTORLIB_WORKER_IDLE="30"))
    assert done.returncode == 0, done.stderr
    with Executor(backend="local", cache_directory=cache) as exe:  # no max_jobs any more
        again = exe.submit(funcs.mark_once, str(marks / "queued"), 1)
        assert again.result(timeout=60) == 1
        gate.write_text("go")  # the old worker is free now: the call must not be in its queue
        time.sleep(1.5)
    assert (marks / "queued").read_text() == "x"  # ran once, as a job of its own
