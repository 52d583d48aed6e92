"""The original executorlib 1.x's behaviour on this executorlib's machinery, local backend: a
dependent of a failed call raises the parent's own exception type, Future arguments of map(),
parts of results on Executor(backend=...), batched(), and the resource_dict keys cache_key,
error_log_file, priority and cache_directory (per call), the executorlib_worker_id parameter
of block allocation."""

from __future__ import annotations

import concurrent.futures as cf
import os

import pytest

from executorlib import Executor, SingleNodeExecutor, get_cache_data, get_item_from_future, split_future
from executorlib.errors import DependencyError, JobFailedError
from tests.core import funcs


class ChainError(ValueError):
    """A user-defined exception type that carries an attribute."""

    def __init__(self, message, code=0):
        super().__init__(message)
        self.code = code

    def __reduce__(self):
        return type(self), (self.args[0], self.code)


def fail_with(message, code=0):
    raise ChainError(message, code)


def inc(x):
    return x + 1


def who_am_i(x, executorlib_worker_id=None):
    import time

    time.sleep(0.2)
    return executorlib_worker_id


# -- a dependent of a failed call ----------------------------------------------------------------------

def test_except_the_parents_exception_type_at_the_end_of_a_chain():
    with SingleNodeExecutor() as exe:
        parent = exe.submit(fail_with, "deep", 7)
        last = exe.submit(inc, exe.submit(inc, exe.submit(inc, parent)))
        try:
            last.result(timeout=60)
        except ChainError as error:  # the user's own type, with its attributes
            assert error.code == 7 and str(error) == "deep"
            assert any(parent._executorlib_key in note for note in error.__notes__)
        else:  # pragma: no cover
            pytest.fail("no exception")


def test_a_cancelled_parent_still_gives_a_dependency_error(tmp_path):
    release = tmp_path / "release"
    with SingleNodeExecutor(max_workers=1) as exe:
        blocker = exe.submit(funcs.wait_for_file, str(release))
        parent = exe.submit(inc, 1)
        child = exe.submit(inc, parent)
        assert parent.cancel()
        release.touch()
        with pytest.raises(DependencyError, match="cancelled"):
            child.result(timeout=60)
        assert blocker.result(timeout=60) is True


def test_executorlib_errors_of_the_parents_job_stay_dependency_errors():
    from executorlib.scheduler import _problem_of

    problem = _problem_of("parent_1", JobFailedError("job 5 was killed", job_id="5"))
    assert type(problem) is DependencyError and isinstance(problem.__cause__, JobFailedError)
    passed = _problem_of("parent_1", KeyError("k"))
    assert type(passed) is KeyError and passed.args == ("k",)


# -- map() with Future arguments -----------------------------------------------------------------------

def test_map_takes_futures_in_its_iterables_as_dependencies():
    with SingleNodeExecutor() as exe:
        parents = [exe.submit(inc, i) for i in range(4)]
        assert list(exe.map(funcs.add_funct, parents, [10, 20, 30, exe.submit(inc, 39)])) == [11, 22, 33, 44]
        a, b = split_future(exe.submit(divmod, 7, 2), 2)
        assert list(exe.map(inc, [a, b])) == [4, 2]


def test_map_with_a_failed_future_raises_its_type_in_order():
    with SingleNodeExecutor() as exe:
        results = exe.map(inc, [exe.submit(inc, 0), exe.submit(fail_with, "bad")])
        assert next(results) == 2
        with pytest.raises(ChainError, match="bad"):
            next(results)


# -- parts of results on Executor(backend=...) ---------------------------------------------------------

def test_the_seed_executor_takes_parts_of_results_as_arguments():
    with Executor(backend="local") as exe:
        quotient, remainder = split_future(exe.submit(divmod, 7, 2), n=2)
        assert exe.submit(sum, [quotient, remainder]).result(timeout=60) == 4
        item = get_item_from_future(exe.submit(dict, a=1, b=-2), "b")
        assert exe.submit(abs, item).result(timeout=60) == 2


# -- batched ------------------------------------------------------------------------------------------------

def test_batched_gives_futures_of_lists_of_n_results_in_order():
    with SingleNodeExecutor() as exe:
        futures = [exe.submit(funcs.sleep_return, 0.3 if i == 0 else 0, i) for i in range(5)]
        batches = exe.batched(futures, n=2)
        assert len(batches) == 3 and all(isinstance(b, cf.Future) for b in batches)
        assert [b.result(timeout=60) for b in batches] == [[0, 1], [2, 3], [4]]
        # a batch is a dependency on each of its Futures; the function gets the list
        assert [exe.submit(sum, b).result(timeout=60) for b in batches] == [1, 5, 4]
        assert exe.submit(sum, exe.batched([exe.submit(inc, 1)], 3)[0]).result(timeout=60) == 2


def test_a_batch_fails_with_its_first_failed_future_and_so_do_its_dependents():
    with Executor(backend="local") as exe:
        futures = [exe.submit(inc, 1), exe.submit(fail_with, "in batch"), exe.submit(inc, 2)]
        first, second = exe.batched(futures, 2)
        with pytest.raises(ChainError, match="in batch"):
            first.result(timeout=60)
        assert second.result(timeout=60) == [3]
        with pytest.raises(ChainError, match="in batch"):
            exe.submit(sum, first).result(timeout=60)


def test_batched_checks_its_arguments():
    with SingleNodeExecutor() as exe:
        assert exe.batched([], 2) == []
        for n in (0, -1, 1.5, True):
            with pytest.raises(ValueError, match="n >= 1"):
                exe.batched([], n)
        with pytest.raises(TypeError, match="Futures"):
            exe.batched([1, 2], 1)


def test_a_batch_has_a_stable_key_in_a_named_cache(tmp_path):
    keys = []
    for _ in range(2):
        with SingleNodeExecutor(cache_directory=tmp_path) as exe:
            batch = exe.batched([exe.submit(inc, i) for i in range(3)], 3)[0]
            future = exe.submit(sum, batch)
            assert future.result(timeout=60) == 6
            keys.append(future._executorlib_key)
    assert keys[0] == keys[1]


# -- resource_dict: cache_key -----------------------------------------------------------------------------

def test_cache_key_names_the_task_and_its_folder(tmp_path):
    with SingleNodeExecutor(cache_directory=tmp_path) as exe:
        future = exe.submit(funcs.add_funct, 1, 2, resource_dict={"cache_key": "my_sum"})
        assert future.result(timeout=60) == 3 and future._executorlib_key == "my_sum"
        assert (tmp_path / "my_sum" / "result.h5").is_file()
        child = exe.submit(inc, future, resource_dict={"cache_key": "my_sum.plus_one"})
        assert child.result(timeout=60) == 4
    assert {r["key"] for r in get_cache_data(tmp_path)} == {"my_sum", "my_sum.plus_one"}
    # the user's name is the cache identity: the stored result comes back whatever the arguments
    with SingleNodeExecutor(cache_directory=tmp_path) as exe:
        assert exe.submit(funcs.add_funct, 5, 5, resource_dict={"cache_key": "my_sum"}).result(timeout=60) == 3


@pytest.mark.parametrize("bad", ["", "../up", "a/b", ".hidden", "with space", "x" * 201, 5])
def test_cache_key_must_be_a_folder_name(bad):
    with SingleNodeExecutor() as exe:
        with pytest.raises(ValueError, match="cache_key"):
            exe.submit(inc, 1, resource_dict={"cache_key": bad})


# -- resource_dict: error_log_file ------------------------------------------------------------------------

def test_error_log_file_gets_the_traceback_of_each_failed_call(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with SingleNodeExecutor(resource_dict={"error_log_file": "errors.log"}) as exe:
        ok = exe.submit(inc, 1)
        failed = exe.submit(fail_with, "logged")
        dependent = exe.submit(inc, failed)
        quiet = exe.submit(fail_with, "not logged", resource_dict={"error_log_file": None})
        for future in (failed, dependent, quiet):
            future.exception(timeout=60)
        assert ok.result(timeout=60) == 2
    text = (tmp_path / "errors.log").read_text()
    assert text.count("=== ") == 2
    assert f"task {failed._executorlib_key} failed with ChainError: logged" in text
    assert f"task {dependent._executorlib_key} failed with ChainError" in text
    assert "in fail_with" in text  # the remote traceback
    assert "not logged" not in text


def test_error_log_file_appends(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("before\n")
    with SingleNodeExecutor() as exe:
        exe.submit(fail_with, "x", resource_dict={"error_log_file": str(log)}).exception(timeout=60)
    assert log.read_text().startswith("before\n=== ")


# -- resource_dict: priority, cache_directory --------------------------------------------------------------

@pytest.mark.parametrize("block_allocation", [False, True])
def test_priority_is_an_error_where_no_job_scheduler_takes_it(block_allocation):
    with SingleNodeExecutor(max_workers=1, block_allocation=block_allocation) as exe:
        with pytest.raises(ValueError, match=r"priority.*slurm_submission.*--nice"):
            exe.submit(inc, 1, resource_dict={"priority": 3})
        assert exe.submit(inc, 1, resource_dict={"priority": None}).result(timeout=60) == 2
    with pytest.raises(ValueError, match="priority"):
        SingleNodeExecutor(resource_dict={"priority": 1})
    with pytest.raises(ValueError, match="an int"):
        SingleNodeExecutor(resource_dict={"priority": "high"})


def count_call_once(path, value):
    with open(path, "a") as f:
        f.write("x")
    return value + 1


def test_a_cache_directory_per_call_stores_the_call_there(tmp_path, monkeypatch):
    """The call's task folder and result go to its own cache directory (relative to the working
    directory at submit), dependencies cross the two caches both ways, and a later executor on
    that directory returns the stored result without running the call again."""
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs.txt"
    with SingleNodeExecutor(cache_directory=tmp_path / "main") as exe:
        first = exe.submit(inc, 1)
        there = exe.submit(count_call_once, str(runs), first, resource_dict={"cache_directory": "other"})
        back = exe.submit(inc, there)
        assert back.result(timeout=60) == 4 and there.result(timeout=60) == 3
        again = exe.submit(count_call_once, str(runs), first, resource_dict={"cache_directory": "other"})
        assert again.result(timeout=60) == 3  # the same call in the same cache: stored
        assert len(exe) == 0
    assert (tmp_path / "other" / there._executorlib_key / "result.h5").is_file()
    # the main cache holds at most a copy of its result, for its child ``back``: no task of its own
    assert not (tmp_path / "main" / there._executorlib_key / "task.h5").exists()
    assert there._executorlib_key in {r["key"] for r in get_cache_data(tmp_path / "other")}
    with SingleNodeExecutor(cache_directory=tmp_path / "other") as exe:  # reattach / cache hit
        stored = exe.submit(count_call_once, str(runs), first)
        assert stored.done() and stored.result() == 3
    assert runs.read_text() == "x"


def test_a_cache_directory_per_call_without_a_cache_of_the_executor(tmp_path):
    with SingleNodeExecutor() as exe:  # a temporary cache of its own
        same = str(tmp_path / "c")
        futures = [exe.submit(inc, 1, resource_dict={"cache_directory": same}) for _ in range(2)]
        assert [f.result(timeout=60) for f in futures] == [2, 2]
        assert futures[0]._executorlib_key == futures[1]._executorlib_key  # a named cache: one key
        assert len(exe._siblings) == 1
    assert (tmp_path / "c" / futures[0]._executorlib_key / "result.h5").is_file()
    with pytest.raises(RuntimeError, match="after shutdown"):
        exe.submit(inc, 1, resource_dict={"cache_directory": same})


def test_a_cache_directory_in_the_default_resources(tmp_path):
    with SingleNodeExecutor(resource_dict={"cache_directory": str(tmp_path / "d")}) as exe:
        assert exe.cache_directory == str(tmp_path / "d")  # as in the original: the executor's cache
        assert exe.submit(inc, 1).result(timeout=60) == 2
    with Executor(backend="local", cache_directory=tmp_path / "e",
                  resource_dict={"cache_directory": str(tmp_path / "d")}) as exe:
        f = exe.submit(inc, 5)
        assert f.result(timeout=60) == 6
        g = exe.submit(inc, 5, resource_dict={"cache_directory": str(tmp_path / "e")})  # the call wins
        assert g.result(timeout=60) == 6
    assert (tmp_path / "d" / f._executorlib_key).is_dir() and (tmp_path / "e" / g._executorlib_key).is_dir()


def test_a_cache_directory_per_call_is_checked_and_refused_with_block_allocation(tmp_path):
    with SingleNodeExecutor(max_workers=1) as exe:
        with pytest.raises(ValueError, match="cache_directory"):
            exe.submit(inc, 1, resource_dict={"cache_directory": 3})
    with SingleNodeExecutor(max_workers=1, block_allocation=True) as exe:
        with pytest.raises(ValueError, match=r"block_allocation=True.*second Executor"):
            exe.submit(inc, 1, resource_dict={"cache_directory": str(tmp_path)})
        assert exe.submit(inc, 1).result(timeout=60) == 2


def test_a_cache_directory_per_call_while_recording_records(tmp_path):
    with SingleNodeExecutor(plot_dependency_graph=True,
                            plot_dependency_graph_filename=str(tmp_path / "g.dot")) as exe:
        assert exe.submit(inc, 1, resource_dict={"cache_directory": str(tmp_path / "x")}).result() is None
    assert not (tmp_path / "x").exists()


# -- block allocation: executorlib_worker_id --------------------------------------------------------------

def test_a_function_that_declares_executorlib_worker_id_gets_its_workers_index():
    with SingleNodeExecutor(max_workers=2, block_allocation=True) as exe:
        ids = {f.result(timeout=60) for f in [exe.submit(who_am_i, i) for i in range(6)]}
        assert ids == {0, 1}
        assert exe.submit(who_am_i, 0, executorlib_worker_id=9).result(timeout=60) == 9  # the call wins
        assert exe.submit(inc, 1).result(timeout=60) == 2  # functions without it are untouched
        # the id is not inherited by what a task starts
        assert exe.submit(os.environ.get, "EXECUTORLIB_WORKER_ID").result(timeout=60) is None


def test_without_block_allocation_the_parameter_keeps_its_default():
    with SingleNodeExecutor() as exe:
        assert exe.submit(who_am_i, 0).result(timeout=60) is None


# -- executorlib.api.TestClusterExecutor ---------------------------------------------------------------------

def count_call(path, value):
    with open(path, "a") as f:
        f.write("x")
    return value * 2


def test_test_cluster_executor_runs_the_file_based_path_with_local_processes(tmp_path, monkeypatch):
    from executorlib.api import TestClusterExecutor

    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs.txt"
    with TestClusterExecutor() as exe:
        assert isinstance(exe, Executor) and exe.backend == "local"
        assert exe.info["cache_directory"] == str(tmp_path / "executorlib_cache")
        future = exe.submit(count_call, str(runs), 21)
        assert exe.submit(inc, future).result(timeout=60) == 43
        folder = tmp_path / "executorlib_cache" / future._executorlib_key
        assert (folder / "task.h5").is_file() and (folder / "result.h5").is_file()
    with TestClusterExecutor(max_workers=2) as exe:  # a second run: the stored result, no new run
        assert exe.submit(count_call, str(runs), 21).result(timeout=60) == 42
    assert runs.read_text() == "x"
    assert TestClusterExecutor.__test__ is False  # pytest does not collect it


def test_test_cluster_executor_takes_a_cache_directory_and_the_1x_keywords(tmp_path):
    from executorlib.api import TestClusterExecutor

    with TestClusterExecutor(cache_directory=tmp_path / "c", max_cores=2, hostname_localhost=True,
                             block_allocation=True, refresh_rate=0.05) as exe:
        assert exe.submit(inc, 1).result(timeout=60) == 2
        assert exe.max_workers == 2
    with pytest.raises(TypeError, match="restart_limit"):  # not one of its keywords in the original
        TestClusterExecutor(cache_directory=tmp_path, restart_limit=1)


# -- restart_limit and flux pmi_mode reach the allocation spawners ------------------------------------------

from executorlib.spawners.local import LocalSpawner  # noqa: E402
from executorlib.spawners.pool import WorkerPoolSpawner  # noqa: E402

SPAWNER_OPTIONS: list[dict] = []


class RecordingPool(WorkerPoolSpawner):
    """The local pool standing in for an allocation's pool: records what the Executor gave it."""

    def __init__(self, restart_limit=10, pmi_mode=None, **options):
        SPAWNER_OPTIONS.append({"restart_limit": restart_limit, "pmi_mode": pmi_mode})
        super().__init__(**options)


class RecordingSpawner(LocalSpawner):
    def __init__(self, pmi_mode=None, **options):
        SPAWNER_OPTIONS.append({"pmi_mode": pmi_mode})
        super().__init__(**options)


@pytest.fixture
def recording(monkeypatch):
    from executorlib import executor

    SPAWNER_OPTIONS.clear()
    for backend in ("slurm_allocation", "flux_allocation"):
        monkeypatch.setitem(executor.BLOCK_ALLOCATION_SPAWNERS, backend, (__name__, "RecordingPool"))
        monkeypatch.setitem(executor.BACKENDS, backend, (__name__, "RecordingSpawner", False))
    return SPAWNER_OPTIONS


@pytest.mark.parametrize("name", ["SlurmJobExecutor", "FluxJobExecutor"])
def test_restart_limit_reaches_the_block_allocation_pool(recording, name):
    import executorlib

    cls = getattr(executorlib, name)
    with cls(max_workers=1, block_allocation=True, restart_limit=3) as exe:
        assert exe.submit(inc, 1).result(timeout=60) == 2
        assert exe.info["restart_limit"] == 3
    with cls(max_workers=1, block_allocation=True) as exe:  # the original's default: no restart
        pass
    assert [o["restart_limit"] for o in recording] == [3, 0]
    with pytest.raises(ValueError, match="needs block_allocation=True"):
        cls(max_workers=1, restart_limit=2)
    with pytest.raises(ValueError, match="int >= 0"):
        cls(max_workers=1, block_allocation=True, restart_limit=-1)


def test_flux_job_executor_pmi_mode_reaches_flux_run(recording):
    from executorlib import FluxJobExecutor

    with FluxJobExecutor(max_workers=1, pmi_mode="pmix") as exe:
        assert exe.submit(inc, 1).result(timeout=60) == 2
        assert exe.info["pmi_mode"] == "pmix"
    with FluxJobExecutor(max_workers=1, pmi_mode="simple", block_allocation=True):
        pass
    assert [o["pmi_mode"] for o in recording] == ["pmix", "simple"]
    with pytest.raises(ValueError, match="pmi_mode"):
        FluxJobExecutor(max_workers=1, pmi_mode="bad mode")


def test_flux_run_gets_the_pmi_option():
    from executorlib.resources import merge_resources
    from executorlib.spawners.flux_allocation import flux_run_command

    command = flux_run_command(merge_resources(None, {"cores": 2}), "pmix")
    assert command[:2] == ["flux", "run"]
    assert command[command.index("-o") + 1] == "pmi=pmix"
    assert "-o" not in flux_run_command(merge_resources(None, {"cores": 2}))


def test_flux_cluster_executor_pmi_mode_is_checked(tmp_path):
    """(Its job script: tests/flux/test_executors_1x_flux.py.)"""
    from executorlib import FluxClusterExecutor

    with pytest.raises(ValueError, match="pmi_mode"):
        FluxClusterExecutor(cache_directory=tmp_path, pmi_mode="bad mode")


# -- log_obj_size ------------------------------------------------------------------------------------------

def test_log_obj_size_logs_the_sizes_of_the_call_and_of_its_result(caplog):
    import logging

    caplog.set_level(logging.INFO, logger="executorlib")
    with SingleNodeExecutor(log_obj_size=True) as exe:
        future = exe.submit(funcs.add_funct, "x" * 5000, "y")
        assert future.result(timeout=60) == "x" * 5000 + "y"
        assert exe.info["log_obj_size"] is True
    messages = [r.getMessage() for r in caplog.records if future._executorlib_key in r.getMessage()]
    sent = [m for m in messages if "sends" in m]
    assert len(sent) == 1 and "function" in sent[0] and "args" in sent[0]
    args_bytes = int(sent[0].split("args ")[1].split(" bytes")[0])
    assert args_bytes > 5000
    assert any("result file" in m for m in messages)


def test_without_log_obj_size_nothing_is_logged(caplog):
    import logging

    caplog.set_level(logging.INFO, logger="executorlib")
    with SingleNodeExecutor() as exe:
        exe.submit(inc, 1).result(timeout=60)
    assert not [r for r in caplog.records if "sends" in r.getMessage()]
    with pytest.raises(TypeError, match="log_obj_size"):
        Executor(log_obj_size="yes")


def test_a_part_of_a_batch_is_an_argument_too():
    with Executor(backend="local") as exe:
        (batch,) = exe.batched([exe.submit(inc, 1), exe.submit(inc, 2)], 2)
        assert exe.submit(inc, get_item_from_future(batch, 1)).result(timeout=60) == 4
        nested = exe.batched([batch, exe.batched([exe.submit(inc, 9)], 1)[0]], 2)[0]
        assert exe.submit(len, nested).result(timeout=60) == 2
        assert nested.result(timeout=60) == [[2, 3], [10]]
