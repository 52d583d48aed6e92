"""block_allocation=True and init_function on the local backend: a pool of persistent workers."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import os
import threading
import time
from pathlib import Path

import pytest

from executorlib import Executor
from executorlib.errors import JobFailedError
from executorlib.task import compute_key
from tests.core import funcs, pool_funcs
from tests.core.test_limits import intervals, peak


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:  # a zombie has ended
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


def wait_until_dead(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- persistent workers ----------------------------------------------------------------------------

def test_tasks_run_in_one_persistent_process_that_keeps_its_state():
    with Executor(backend="local", block_allocation=True, max_workers=1) as exe:
        results = [exe.submit(pool_funcs.count_calls, i).result(timeout=60) for i in range(4)]
        other = exe.submit(funcs.echo, 1).result(timeout=60)
        last = exe.submit(pool_funcs.count_calls, "last").result(timeout=60)
    pids = {pid for pid, _ in results}
    assert len(pids) == 1 and os.getpid() not in pids
    assert [count for _, count in results] == [1, 2, 3, 4]  # module state survived each task
    assert other == ((1,), {}) and last == (results[0][0], 5)


def test_many_tasks_share_the_pool_and_pids_repeat():
    with Executor(backend="local", block_allocation=True, max_workers=2) as exe:
        futures = [exe.submit(pool_funcs.pid_after, 0.01 * i) for i in range(8)]
        pids = [f.result(timeout=60) for f in futures]
    assert 1 <= len(set(pids)) <= 2
    assert len(pids) == 8 and os.getpid() not in pids


@pytest.mark.parametrize("max_workers", [1, 2])
def test_max_workers_bounds_the_pool(tmp_path, max_workers):
    with Executor(backend="local", block_allocation=True, max_workers=max_workers) as exe:
        futures = [exe.submit(funcs.timed, str(tmp_path), f"t{i}", 0.3) for i in range(4)]
        assert [f.result(timeout=60) for f in futures] == ["t0", "t1", "t2", "t3"]
        pids = [exe.submit(pool_funcs.pid_after, 0.2 + i / 1000).result() for i in range(3)]
    assert peak(intervals(tmp_path)) <= max_workers
    assert len(set(pids)) <= max_workers


def test_max_cores_divided_by_cores_gives_the_pool_size(tmp_path):
    with Executor(backend="local", block_allocation=True, max_cores=1) as exe:
        futures = [exe.submit(funcs.timed, str(tmp_path), f"c{i}", 0.2) for i in range(3)]
        assert [f.result(timeout=60) for f in futures] == ["c0", "c1", "c2"]
    assert peak(intervals(tmp_path)) == 1


def test_the_pool_stops_at_shutdown():
    exe = Executor(backend="local", block_allocation=True, max_workers=2)
    pids = {exe.submit(pool_funcs.pid_after, 0.1 + i / 1000).result(timeout=60) for i in range(4)}
    exe.shutdown(wait=True)
    assert all(wait_until_dead(pid) for pid in pids), "a worker outlived shutdown(wait=True)"


def test_a_task_prints_to_its_job_out_and_cannot_disturb_the_workers(tmp_path):
    with Executor(backend="local", block_allocation=True, max_workers=1,
                  cache_directory=tmp_path / "cache") as exe:
        future = exe.submit(pool_funcs.print_protocol_lookalikes, 3)
        assert future.result(timeout=60) == 3
        assert exe.submit(funcs.add_funct, 1, 2).result(timeout=60) == 3
        log = Path(exe.cache_directory, future._executorlib_key, "job.out").read_text()
    assert "done /not/a/task 2" in log and "done /neither 0" in log and "to stderr" in log


def test_cwd_threads_and_environment_of_the_workers(tmp_path):
    with Executor(backend="local", block_allocation=True, max_workers=1,
                  cache_directory=tmp_path / "cache", resource_dict={"threads_per_core": 2}) as exe:
        own = exe.submit(funcs.get_cwd)
        moved = exe.submit(funcs.get_env, "OMP_NUM_THREADS", resource_dict={"cwd": str(tmp_path)})
        there = exe.submit(funcs.echo, "x", resource_dict={"cwd": str(tmp_path)})
        after = exe.submit(funcs.get_cwd, resource_dict={"run_time_max": 60})  # allowed per task
        assert own.result(timeout=60) == str(Path(exe.cache_directory, own._executorlib_key))
        assert moved.result(timeout=60) == "2"
        assert there.result(timeout=60) == (("x",), {})
        assert after.result(timeout=60) == own.result()  # back in its own task folder


# -- resources fixed by the Executor ---------------------------------------------------------------

@pytest.mark.parametrize("override, key", [({"cores": 2}, "cores"), ({"threads_per_core": 4}, "threads_per_core")])
def test_submit_cannot_change_what_a_started_worker_cannot_change(override, key):
    with Executor(backend="local", block_allocation=True, max_workers=1) as exe:
        with pytest.raises(ValueError) as info:
            exe.submit(funcs.add_funct, 1, 1, resource_dict=override)
        assert exe.submit(funcs.add_funct, 1, 1).result(timeout=60) == 2
    message = str(info.value)
    assert f"resource_dict[{key!r}]" in message and "block_allocation=True" in message
    assert "Executor(resource_dict=...)" in message


def test_init_function_requires_block_allocation():
    with pytest.raises(ValueError, match="init_function requires block_allocation=True"):
        Executor(backend="local", init_function=pool_funcs.init_model)
    with pytest.raises(TypeError, match="init_function must be a callable"):
        Executor(backend="local", block_allocation=True, init_function={"model": 1})


def test_cores_beyond_max_cores_are_refused_without_leaving_a_temporary_cache(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(ValueError, match=r"resource_dict\['cores'\] = 2 exceeds max_cores = 1"):
        Executor(backend="local", block_allocation=True, max_cores=1, resource_dict={"cores": 2})
    assert list(tmp_path.iterdir()) == []


# -- init_function ---------------------------------------------------------------------------------

def test_init_values_fill_the_parameters_the_call_leaves_out():
    with Executor(backend="local", block_allocation=True, max_workers=1,
                  init_function=pool_funcs.init_model) as exe:
        filled = exe.submit(pool_funcs.predict, 2)
        keyword = exe.submit(pool_funcs.predict, 3, model="given")
        positional = exe.submit(pool_funcs.predict, 4, "positional", 1)
        keyword_only = exe.submit(pool_funcs.predict_keyword_only, 5)
        unrelated = exe.submit(funcs.add_funct, 1, 2)  # no parameter named like an init key
        assert filled.result(timeout=60) == (20, "expensive model")
        assert keyword.result(timeout=60) == (30, "given")  # the call's argument wins
        assert positional.result(timeout=60) == (4, "positional")
        assert keyword_only.result(timeout=60) == (5, "expensive model")
        assert unrelated.result(timeout=60) == 3


def test_init_function_runs_once_per_worker(tmp_path):
    record = tmp_path / "inits.txt"
    with Executor(backend="local", block_allocation=True, max_workers=2,
                  init_function=functools.partial(pool_funcs.init_record, str(record))) as exe:
        results = [f.result(timeout=60) for f in
                   [exe.submit(pool_funcs.init_pid, init_pid=-1), exe.submit(funcs.echo, 1)]
                   + [exe.submit(pool_funcs.pid_after, 0.05 + i / 1000) for i in range(6)]]
        own = [exe.submit(pool_funcs.init_pid).result(timeout=60)]
    inits = record.read_text().split()
    assert 1 <= len(inits) <= 2  # one line per worker, not per task
    assert results[0][0] == -1  # the explicit argument wins over the init value
    init_value, pid = own[0]
    assert init_value == pid and str(pid) in inits


def test_an_init_function_from_a_module_next_to_the_script(tmp_path, monkeypatch):
    import importlib

    (tmp_path / "pool_user_model.py").write_text(
        "import os\n"
        "def init():\n"
        "    return {'model': open('weights.txt').read()}  # relative to the client's directory\n"
        "def use(x, model=None):\n"
        "    return x, model\n"
    )
    (tmp_path / "weights.txt").write_text("weights")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("pool_user_model")
    try:
        with Executor(backend="local", block_allocation=True, max_workers=1,
                      init_function=module.init) as exe:
            assert exe.submit(module.use, 1).result(timeout=60) == (1, "weights")
    finally:
        monkeypatch.delitem(__import__("sys").modules, "pool_user_model")


def test_a_failing_init_function_fails_the_tasks_with_its_error():
    with Executor(backend="local", block_allocation=True, max_workers=1,
                  init_function=pool_funcs.init_raises) as exe:
        future = exe.submit(pool_funcs.predict, 1)
        with pytest.raises(RuntimeError, match="init_function .* ValueError: cannot load the model"):
            future.result(timeout=60)
    with Executor(backend="local", block_allocation=True, max_workers=1,
                  init_function=pool_funcs.init_not_a_dict) as exe:
        with pytest.raises(RuntimeError, match="must return a dict .* got list"):
            exe.submit(pool_funcs.predict, 1).result(timeout=60)


def test_the_cache_key_includes_the_init_function(tmp_path):
    def keys(**options):
        with Executor(backend="local", cache_directory=tmp_path / "keys", **options) as exe:
            return exe.submit(pool_funcs.predict, 2)._executorlib_key

    plain = keys()
    assert keys(block_allocation=True) == plain  # a pool without init computes the same results
    with_init = keys(block_allocation=True, init_function=pool_funcs.init_model)
    other = keys(block_allocation=True, init_function=pool_funcs.init_other_model)
    assert len({plain, with_init, other}) == 3
    assert keys(block_allocation=True, init_function=pool_funcs.init_model) == with_init
    # the extra argument of compute_key changes nothing when it is None
    assert compute_key(pool_funcs.predict, (2,), {}) == compute_key(pool_funcs.predict, (2,), {}, extra=None) == plain


def test_a_cached_result_is_reused_only_with_the_same_init_function(tmp_path):
    cache, record = tmp_path / "cache", tmp_path / "ran.txt"

    def run(init):
        with Executor(backend="local", block_allocation=True, max_workers=1, cache_directory=cache,
                      init_function=init) as exe:
            return exe.submit(funcs.record, str(record), "x").result(timeout=60)

    run(pool_funcs.init_model)
    run(pool_funcs.init_model)
    assert record.read_text() == "x\n"  # the second run came from the cache
    run(pool_funcs.init_other_model)
    assert record.read_text() == "x\nx\n"


# -- failures, cancel, time limits, dependencies ---------------------------------------------------

def test_an_error_fails_only_its_task_and_the_worker_goes_on():
    with Executor(backend="local", block_allocation=True, max_workers=1) as exe:
        before = exe.submit(pool_funcs.pid_after, 0.0).result(timeout=60)
        with pytest.raises(ValueError, match="boom"):
            exe.submit(funcs.raise_value_error, "boom").result(timeout=60)
        with pytest.raises(TypeError):
            exe.submit(funcs.return_lock).result(timeout=60)  # a result that cannot be stored
        after = exe.submit(pool_funcs.pid_after, 0.001).result(timeout=60)
    assert before == after


def test_a_worker_crash_fails_only_its_task_and_the_pool_replaces_it():
    with Executor(backend="local", block_allocation=True, max_workers=1) as exe:
        before = exe.submit(pool_funcs.pid_after, 0.0).result(timeout=60)
        crashed = exe.submit(funcs.exit_hard, 3)
        waiting = exe.submit(funcs.add_funct, 2, 2)
        with pytest.raises(JobFailedError) as info:
            crashed.result(timeout=60)
        assert waiting.result(timeout=60) == 4
        after = exe.submit(pool_funcs.pid_after, 0.001).result(timeout=60)
    assert info.value.state == "FAILED (exit code 3)"
    assert "exit_hard: leaving without a result" in str(info.value)  # the task's output
    assert before != after and not pid_alive(before)


def test_a_worker_killed_from_outside_fails_only_its_task(tmp_path):
    import signal

    pid_file = tmp_path / "pid"
    with Executor(backend="local", block_allocation=True, max_workers=2) as exe:
        victim = exe.submit(funcs.pid_then_wait, str(pid_file), str(tmp_path / "never"))
        wait_for(pid_file)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        with pytest.raises(JobFailedError, match="SIGKILL"):
            victim.result(timeout=60)
        assert exe.submit(funcs.add_funct, 1, 1).result(timeout=60) == 2


def test_run_time_max_kills_the_worker_and_the_pool_goes_on(tmp_path):
    pid_file = tmp_path / "pid"
    with Executor(backend="local", block_allocation=True, max_workers=1) as exe:
        slow = exe.submit(funcs.pid_then_wait, str(pid_file), str(tmp_path / "never"),
                          resource_dict={"run_time_max": 1})
        with pytest.raises(JobFailedError) as info:
            slow.result(timeout=60)
        assert exe.submit(funcs.add_funct, 3, 3).result(timeout=60) == 6
    assert info.value.state == "TIMEOUT"
    assert wait_until_dead(int(pid_file.read_text()))


def test_cancel_of_a_waiting_task_and_shutdown_cancel_futures_cancel_only_what_has_not_started(tmp_path):
    pid_file, marker, release = tmp_path / "pid", tmp_path / "ran.txt", tmp_path / "release"
    exe = Executor(backend="local", block_allocation=True, max_workers=1)
    running = exe.submit(funcs.pid_then_wait, str(pid_file), str(release))
    cancelled = exe.submit(funcs.record, str(marker), "cancelled")
    pending = exe.submit(funcs.record, str(marker), "pending")
    child = exe.submit(funcs.add_funct, running, 1)
    assert cancelled.cancel() is True
    wait_for(pid_file)
    pid = int(pid_file.read_text())
    assert running.cancel() is False  # concurrent.futures: a running task cannot be cancelled
    timer = threading.Timer(0.5, release.touch)
    timer.start()
    try:
        # as the stdlib: the tasks that had not started are cancelled, the running one finishes
        exe.shutdown(wait=True, cancel_futures=True)
    finally:
        timer.cancel()
    assert running.result(timeout=0) == pid
    for future in (cancelled, pending, child):
        assert future.cancelled(), future
    assert not marker.exists()


def test_dependencies_pass_results_between_pooled_tasks():
    with Executor(backend="local", block_allocation=True, max_workers=2,
                  init_function=pool_funcs.init_model) as exe:
        future = 0
        for i in range(4, 8):
            future = exe.submit(funcs.add_funct, i, future)
        scaled = exe.submit(pool_funcs.predict, future)
        failed = exe.submit(funcs.raise_value_error, "parent failed")
        orphan = exe.submit(funcs.add_funct, failed, 1)
        assert future.result(timeout=60) == 22  # the seed's example
        assert scaled.result(timeout=60) == (220, "expensive model")
        with pytest.raises(Exception, match="parent failed"):
            orphan.result(timeout=60)


@pytest.mark.mpi
def test_mpi_workers_run_every_task_on_all_ranks(tmp_path):
    pytest.importorskip("mpi4py")
    from executorlib.spawners.local import find_mpiexec

    if find_mpiexec() is None:
        pytest.skip("no mpiexec (pip install 'executorlib[mpi]' mpich)")
    with Executor(backend="local", block_allocation=True, max_cores=2,
                  resource_dict={"cores": 2}) as exe:
        first = exe.submit(funcs.calc, 3)
        assert first.result(timeout=60) == [(3, 2, 0), (3, 2, 1)]  # the seed's MPI example
        pids = [exe.submit(pool_funcs.pid_after, i / 1000).result(timeout=60) for i in range(2)]
        with pytest.raises(ValueError, match="rank 1 failed on purpose"):
            exe.submit(funcs.mpi_rank_raises, 1).result(timeout=60)
        assert exe.submit(funcs.calc, 4).result(timeout=60) == [(4, 2, 0), (4, 2, 1)]
    assert pids[0] == pids[1] and len(set(pids[0])) == 2  # the same two rank processes


# -- restart_limit, resizing and worker ids with a named cache (the file path) ----------------------

def test_a_named_cache_resizes_and_gives_worker_ids(tmp_path):
    from executorlib import SingleNodeExecutor
    from tests.core.test_pool_fastpath import worker_ids

    with SingleNodeExecutor(max_workers=1, block_allocation=True, cache_directory=str(tmp_path / "c")) as exe:
        assert not exe._spawner.direct  # the task files are written
        assert exe.submit(worker_ids, pause=0.0).result(timeout=60)[0] == 0
        exe.max_workers = 2
        both = [exe.submit(worker_ids, pause=0.3 + i / 1000) for i in range(2)]
        assert {f.result(timeout=60)[0] for f in both} == {0, 1}
        assert len({f.result()[1] for f in both}) == 2
        exe.max_workers = 1
        assert exe.submit(funcs.add_funct, 1, 2).result(timeout=60) == 3
        with pytest.raises(JobFailedError):  # restart_limit=0 (the 1.x default): no restart ...
            exe.submit(funcs.exit_hard, 3).result(timeout=60)
        with pytest.raises(Exception, match=r"restart_limit = 0 allows no more restarts"):
            exe.submit(funcs.add_funct, 2, 2).result(timeout=60)  # ... so the pool is empty
