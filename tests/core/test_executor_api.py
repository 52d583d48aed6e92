"""The concurrent.futures API on the local backend, the seed's examples, and argument checks."""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading

import pytest

from executorlib import Executor
from tests.core import funcs


def test_is_a_concurrent_futures_executor_returning_real_futures():
    with Executor(backend="local") as exe:
        assert isinstance(exe, cf.Executor)
        future = exe.submit(sum, [1, 2])
        assert type(future) is cf.Future
        assert future.result(timeout=60) == 3


def test_seed_example_sums():
    with Executor(backend="local") as exe:
        future_lst = [exe.submit(sum, [i, i]) for i in range(1, 4)]
        assert [f.result() for f in future_lst] == [2, 4, 6]


def test_seed_example_add_funct_chain():
    with Executor(backend="local") as exe:
        future = 0
        for i in range(4, 8):
            future = exe.submit(funcs.add_funct, i, future)
        assert future.result() == 22


def test_wait_as_completed_and_callbacks():
    seen: list[int] = []
    done_event = threading.Event()

    def callback(f: cf.Future) -> None:
        seen.append(f.result())
        if len(seen) == 3:
            done_event.set()

    with Executor(backend="local") as exe:
        futures = [exe.submit(funcs.add_funct, i, 1) for i in range(3)]
        for f in futures:
            f.add_done_callback(callback)
        done, not_done = cf.wait(futures, timeout=60)
        assert len(done) == 3 and not not_done
        assert sorted(f.result() for f in cf.as_completed(futures, timeout=60)) == [1, 2, 3]
        assert done_event.wait(10)
    assert sorted(seen) == [1, 2, 3]


def test_result_timeout_raises_while_the_task_still_runs(tmp_path):
    release = tmp_path / "release"
    with Executor(backend="local") as exe:
        future = exe.submit(funcs.wait_for_file, str(release))
        with pytest.raises(cf.TimeoutError):
            future.result(timeout=0.2)
        assert not future.done()
        release.touch()
        assert future.result(timeout=60) is True


def test_map_keeps_order_and_zips_iterables():
    with Executor(backend="local") as exe:
        assert list(exe.map(funcs.add_funct, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]
        assert list(exe.map(funcs.add_funct, [], [])) == []


def test_keyword_arguments_lambdas_and_closures():
    offset = 100
    with Executor(backend="local") as exe:
        # "fn" as a keyword of the function itself must not collide with submit's own parameter
        kw = exe.submit(funcs.echo, 1, fn="f", b=[2])
        lam = exe.submit(lambda x: x * 2 + offset, 21)
        assert kw.result() == ((1,), {"fn": "f", "b": [2]})
        assert lam.result() == 142


def test_submit_after_shutdown_raises_runtime_error():
    exe = Executor(backend="local")
    exe.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        exe.submit(sum, [1])
    exe.shutdown()  # a second shutdown is harmless


def test_submit_needs_a_callable():
    with Executor(backend="local") as exe:
        with pytest.raises(TypeError, match="callable"):
            exe.submit(42)


def test_temporary_cache_is_removed_at_shutdown():
    with Executor(backend="local") as exe:
        assert exe.submit(sum, [1, 1]).result() == 2
        directory = exe.cache_directory
        assert os.path.isdir(directory) and os.listdir(directory)
    assert not os.path.exists(directory)


# -- constructor checks ----------------------------------------------------------------------------

def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        Executor(backend="slurm")
    for name in ("'slurm'", "local", "slurm_submission", "flux_submission"):
        assert name in str(info.value)


@pytest.mark.parametrize("backend", ["slurm_submission", "flux_submission"])
@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"block_allocation": True}, "block_allocation"),
        ({"init_function": lambda: {}}, "init_function"),
        ({"max_workers": 2}, "max_workers"),
        ({"max_cores": 2}, "max_cores"),
    ],
)
def test_submission_backends_reject_what_they_cannot_do(backend, kwargs, words, tmp_path):
    with pytest.raises(ValueError) as info:
        Executor(backend=backend, cache_directory=tmp_path, **kwargs)
    message = str(info.value)
    assert words in message and backend in message and "every task is its own job" in message


@pytest.mark.parametrize("backend", ["slurm_submission", "flux_submission"])
def test_submission_backends_need_a_cache_directory(backend):
    with pytest.raises(ValueError, match="needs a cache_directory"):
        Executor(backend=backend)


@pytest.mark.parametrize("kwargs", [{"max_workers": 0}, {"max_cores": -1}, {"max_workers": 1.5},
                                    {"refresh_rate": 0}])
def test_local_backend_checks_its_limits(kwargs):
    (name, _), = kwargs.items()
    with pytest.raises(ValueError, match=name):
        Executor(backend="local", **kwargs)


def test_max_workers_zero_has_the_stdlib_wording():
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        Executor(backend="local", max_workers=0)
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        cf.ThreadPoolExecutor(max_workers=0)  # the same words as the stdlib


@pytest.mark.parametrize("chunksize", [0, -1])
def test_map_with_a_chunksize_below_one_raises_value_error(chunksize):
    with Executor(backend="local") as exe:
        with pytest.raises(ValueError, match="chunksize must be >= 1"):
            exe.map(funcs.add_funct, [1], [2], chunksize=chunksize)
        assert list(exe.map(funcs.add_funct, [1, 2], [2, 3], chunksize=5)) == [3, 5]


def takes_resource_dict(x, resource_dict=None):
    return x, resource_dict


def test_a_resource_dict_meant_for_the_function_is_an_error_at_submit_saying_how_to_pass_it():
    import functools

    with Executor(backend="local") as exe:
        with pytest.raises(TypeError) as info:
            exe.submit(takes_resource_dict, 1, resource_dict={"cores": 1})
        message = str(info.value)
        assert "takes_resource_dict" in message and "'resource_dict'" in message
        assert "functools.partial" in message
        # bound with partial, it reaches the function; the submit's resource_dict is the task's
        bound = functools.partial(takes_resource_dict, resource_dict={"mine": 1})
        assert exe.submit(bound, 2, resource_dict={"cores": 1}).result(timeout=60) == (2, {"mine": 1})
        assert exe.submit(takes_resource_dict, 3).result(timeout=60) == (3, None)
        method = exe.submit(_HasResourceParameter().run, 4)  # no resource_dict given: no error
        assert method.result(timeout=60) == 4
        with pytest.raises(TypeError, match="'resource_dict'"):
            exe.submit(_HasResourceParameter().run, 5, resource_dict={})


class _HasResourceParameter:
    def run(self, x, *, resource_dict=None):
        return x
