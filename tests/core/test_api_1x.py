"""The original executorlib 1.x's public API (executorlib.executors, executorlib.future_tools,
executorlib.api): local backend only; the cluster classes are constructed, never submitted to."""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import executorlib
from executorlib import Executor
from executorlib.errors import MissingDependencyError
from tests.core import funcs


def pair(a):
    return a, a * 10


def as_dict(**kwargs):
    return dict(kwargs)


def fail_with_value_error(message):
    raise ValueError(message)


def init_offset():
    return {"offset": 100}


def add_offset(value, offset=0):
    return value + offset


@dataclass
class Box:
    content: object


def unbox(box):
    return box.content


# -- names and imports ----------------------------------------------------------------------------------

ALL_NAMES = ["SingleNodeExecutor", "SlurmClusterExecutor", "SlurmJobExecutor", "FluxClusterExecutor",
             "FluxJobExecutor", "split_future", "get_item_from_future"]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_names_are_exported_from_the_package_and_the_api_module(name):
    import executorlib.api

    assert name in executorlib.__all__
    assert getattr(executorlib, name) is getattr(executorlib.api, name)
    assert name in executorlib.api.__all__


def test_import_executorlib_stays_light():
    code = ("import sys, executorlib; executorlib.split_future; executorlib.get_item_from_future; "
            "heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('pysqa', 'mpi4py', 'flux', 'h5py', 'pandas')]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(executorlib.__file__).parent.parent))
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name, backend", [
    ("SingleNodeExecutor", "local"), ("SlurmClusterExecutor", "slurm_submission"),
    ("SlurmJobExecutor", "slurm_allocation"), ("FluxClusterExecutor", "flux_submission"),
    ("FluxJobExecutor", "flux_allocation")])
def test_each_class_is_an_executor_of_its_backend(name, backend):
    cls = getattr(executorlib, name)
    assert issubclass(cls, Executor) and issubclass(cls, cf.Executor)
    assert cls._BACKEND == backend
    assert "hostname_localhost" in cls.__init__.__code__.co_varnames
    assert "no effect" in cls.__doc__


# -- SingleNodeExecutor ------------------------------------------------------------------------------------

def test_single_node_executor_runs_calls():
    from executorlib import SingleNodeExecutor

    with SingleNodeExecutor() as exe:
        assert exe.backend == "local"
        assert exe.submit(sum, [1, 2]).result(timeout=60) == 3
        assert list(exe.map(funcs.add_funct, [1, 2], [10, 20])) == [11, 22]
        chained = exe.submit(funcs.add_funct, exe.submit(funcs.add_funct, 1, 2), 3)
        assert chained.result(timeout=60) == 6


def test_hostname_localhost_is_accepted():
    from executorlib import SingleNodeExecutor

    with SingleNodeExecutor(hostname_localhost=True, max_workers=1) as exe:
        assert exe.submit(abs, -4).result(timeout=60) == 4
        assert exe.info["hostname_localhost"] is True


def test_restart_limit_needs_block_allocation():
    from executorlib import SingleNodeExecutor

    with pytest.raises(ValueError, match="restart_limit=2 needs block_allocation=True"):
        SingleNodeExecutor(restart_limit=2)
    with pytest.raises(ValueError, match="restart_limit must be an int >= 0"):
        SingleNodeExecutor(block_allocation=True, restart_limit=-1)


def test_unknown_keyword_is_a_type_error():
    from executorlib import SingleNodeExecutor

    with pytest.raises(TypeError, match="backend"):
        SingleNodeExecutor(backend="local")  # the class is the backend


def test_len_counts_calls_not_done_and_bool_stays_true(tmp_path):
    from executorlib import SingleNodeExecutor

    release = tmp_path / "release"
    with SingleNodeExecutor(max_workers=2) as exe:
        assert len(exe) == 0 and bool(exe)
        blocked = exe.submit(funcs.wait_for_file, str(release))
        dependent = exe.submit(funcs.add_funct, blocked, 1)
        assert len(exe) == 2
        release.write_text("go")
        assert dependent.result(timeout=60) == 2
        assert blocked.result() is True
        assert len(exe) == 0


def test_info_and_max_workers(tmp_path):
    from executorlib import SingleNodeExecutor

    with SingleNodeExecutor(max_workers=3, cache_directory=str(tmp_path / "c"),
                            resource_dict={"cores": 1, "cwd": str(tmp_path)}) as exe:
        info = exe.info
        assert info["backend"] == "local"
        assert info["max_workers"] == 3 == exe.max_workers
        assert info["max_cores"] is None
        assert Path(info["cache_directory"]) == (tmp_path / "c").resolve() or \
            Path(info["cache_directory"]) == tmp_path / "c"
        assert info["resource_dict"]["cwd"] == str(tmp_path)
        assert info["resource_dict"]["cores"] == 1
        assert info["block_allocation"] is False
        assert info["disable_dependencies"] is False
        assert info["plot_dependency_graph"] is False
        info["max_workers"] = 99  # a copy
        assert exe.info["max_workers"] == 3
        with pytest.raises(NotImplementedError, match="max_workers"):
            exe.max_workers = 4
    with SingleNodeExecutor() as exe:
        assert exe.info["cache_directory"] is None  # a temporary cache
        assert exe.max_workers == (os.cpu_count() or 1)


def test_plot_dependency_graph_filename_alone_turns_the_graph_on(tmp_path):
    from executorlib import SingleNodeExecutor

    target = tmp_path / "graph.dot"
    with SingleNodeExecutor(plot_dependency_graph_filename=str(target)) as exe:
        assert exe.info["plot_dependency_graph"] is True
        a, b = executorlib.split_future(exe.submit(pair, 1), 2)
        assert exe.submit(funcs.add_funct, a, b).result(timeout=5) is None  # nothing runs
    source = target.read_text()
    assert "pair" in source and "add_funct" in source and "->" in source


def test_block_allocation_with_init_function_and_a_part_argument():
    from executorlib import SingleNodeExecutor

    with SingleNodeExecutor(max_workers=1, block_allocation=True, init_function=init_offset) as exe:
        first, _ = executorlib.split_future(exe.submit(pair, 2), 2)
        # the wrapper keeps add_offset's signature: init_function's "offset" still fills in
        assert exe.submit(add_offset, first).result(timeout=60) == 102


# -- split_future / get_item_from_future --------------------------------------------------------------------

def test_split_future_parts_are_dependencies_of_later_calls():
    from executorlib import SingleNodeExecutor, split_future

    with SingleNodeExecutor() as exe:
        a, b = split_future(exe.submit(pair, 3), n=2)
        assert isinstance(a, cf.Future)
        total = exe.submit(funcs.add_funct, a, b=b)
        nested = exe.submit(sum, [a, b, 1])
        in_dict = exe.submit(as_dict, x={"first": a}, y=(b,))
        boxed = exe.submit(unbox, Box(b))
        assert total.result(timeout=60) == 33
        assert nested.result(timeout=60) == 34
        assert in_dict.result(timeout=60) == {"x": {"first": 3}, "y": (30,)}
        assert boxed.result(timeout=60) == 30
        assert (a.result(), b.result()) == (3, 30)
        assert list(exe.map(abs, [a, b])) == [3, 30]


def test_get_item_from_future_by_key_and_chained():
    from executorlib import SingleNodeExecutor, get_item_from_future

    with SingleNodeExecutor() as exe:
        d = exe.submit(as_dict, numbers=[4, -5], name="x")
        name = get_item_from_future(d, "name")
        second = get_item_from_future(get_item_from_future(d, "numbers"), 1)
        assert second.path == ("numbers", 1)
        assert exe.submit(abs, second).result(timeout=60) == 5
        assert name.result(timeout=60) == "x"


def test_a_named_cache_gives_a_part_argument_call_a_stable_key(tmp_path):
    from executorlib import SingleNodeExecutor, split_future

    keys = []
    for _ in range(2):
        with SingleNodeExecutor(cache_directory=str(tmp_path / "cache")) as exe:
            a, b = split_future(exe.submit(pair, 5), 2)
            f = exe.submit(funcs.add_funct, a, b)
            assert f.result(timeout=60) == 55
            keys.append(f._executorlib_key)
    assert keys[0] == keys[1]
    assert keys[0].startswith("add_funct_")


def test_parent_exception_propagates_to_parts_and_their_dependents():
    from executorlib import SingleNodeExecutor, split_future

    with SingleNodeExecutor() as exe:
        a, b = split_future(exe.submit(fail_with_value_error, "boom"), 2)
        dependent = exe.submit(abs, a)
        with pytest.raises(ValueError, match="boom"):
            a.result(timeout=60)
        with pytest.raises(ValueError, match="boom"):
            b.result(timeout=60)
        with pytest.raises(ValueError, match="boom"):  # as for a dependent of the parent itself
            dependent.result(timeout=60)


def test_parts_beyond_the_result_fail_with_index_error():
    from executorlib import SingleNodeExecutor, split_future

    with SingleNodeExecutor() as exe:
        parts = split_future(exe.submit(pair, 1), 3)
        assert [p.result(timeout=60) for p in parts[:2]] == [1, 10]
        with pytest.raises(IndexError):
            parts[2].result(timeout=60)


def test_parts_of_plain_futures_without_an_executor():
    from executorlib import get_item_from_future, split_future

    parent = cf.Future()
    a, b = split_future(parent, 2)
    key = get_item_from_future(parent, 0)
    assert not a.done()
    parent.set_result(("x", "y"))
    assert (a.result(0), b.result(0), key.result(0)) == ("x", "y", "x")

    failed = cf.Future()
    part = get_item_from_future(failed, "k")
    failed.set_exception(KeyError("k"))
    with pytest.raises(KeyError):
        part.result(0)

    cancelled = cf.Future()
    part = get_item_from_future(cancelled, 0)
    assert cancelled.cancel()
    assert part.cancelled()

    parent = cf.Future()
    part = get_item_from_future(parent, 0)
    assert part.cancel()  # cancelling a part leaves the parent alone
    parent.set_result([1])
    assert not parent.cancelled() and part.cancelled()

    with pytest.raises(ValueError):
        split_future(cf.Future(), -1)
    with pytest.raises(TypeError):
        get_item_from_future((1, 2), 0)


def test_a_part_is_not_a_dependency_when_dependencies_are_disabled():
    from executorlib import SingleNodeExecutor, split_future

    with SingleNodeExecutor(disable_dependencies=True) as exe:
        a, _ = split_future(exe.submit(pair, 1), 2)
        with pytest.raises(ValueError, match="disable_dependencies"):
            exe.submit(abs, a)


def test_a_part_of_a_foreign_future_is_rejected_like_the_future():
    from executorlib import SingleNodeExecutor, split_future

    foreign = cf.Future()
    with SingleNodeExecutor() as exe:
        with pytest.raises(TypeError, match="executorlib Executor"):
            exe.submit(abs, split_future(foreign, 1)[0])


# -- the cluster classes (constructed, nothing submitted) ------------------------------------------------------

def test_slurm_cluster_executor_defaults_to_executorlib_cache_in_the_working_directory(tmp_path, monkeypatch):
    from executorlib import SlurmClusterExecutor

    monkeypatch.chdir(tmp_path)
    exe = SlurmClusterExecutor(pmi_mode="pmix")
    try:
        assert Path(exe.cache_directory).resolve() == (tmp_path / "executorlib_cache").resolve()
        assert exe.backend == "slurm_submission"
        assert exe.max_workers is None
        assert len(exe) == 0
        info = exe.info
        assert info["pmi_mode"] == "pmix"
        assert "--mpi=pmix" in info["resource_dict"]["slurm_cmd_args"]
        assert info["pysqa_config_directory"] is None
    finally:
        exe.shutdown()


def test_slurm_pmi_mode_keeps_an_explicit_mpi_argument(tmp_path):
    from executorlib import SlurmClusterExecutor

    exe = SlurmClusterExecutor(cache_directory=str(tmp_path / "c"), pmi_mode="pmix",
                               resource_dict={"slurm_cmd_args": ["--mpi=pmi2"]})
    try:
        assert exe.info["resource_dict"]["slurm_cmd_args"] == ["--mpi=pmi2"]
    finally:
        exe.shutdown()


@pytest.mark.parametrize("keyword", ["max_workers", "max_cores"])
def test_cluster_executors_reject_pool_sizes(keyword, tmp_path):
    from executorlib import FluxClusterExecutor, SlurmClusterExecutor

    for cls in (SlurmClusterExecutor, FluxClusterExecutor):
        with pytest.raises(NotImplementedError, match=keyword):
            cls(cache_directory=str(tmp_path), **{keyword: 2})


def test_flux_cluster_executor_default_cache(tmp_path, monkeypatch):
    from executorlib import FluxClusterExecutor

    monkeypatch.chdir(tmp_path)
    try:
        exe = FluxClusterExecutor()
    except (MissingDependencyError, FileNotFoundError, RuntimeError) as error:
        pytest.skip(f"no flux here: {error}")
    try:
        assert Path(exe.cache_directory).resolve() == (tmp_path / "executorlib_cache").resolve()
    finally:
        exe.shutdown()


@pytest.mark.parametrize("keyword, value, alternative", [
    ("flux_executor", object(), "FLUX_URI"), ("flux_executor_nesting", True, "FluxClusterExecutor")])
def test_flux_job_executor_keywords_not_implemented_yet(keyword, value, alternative):
    """Refused before any flux is asked, naming what to do instead (flux_log_files: see tests/flux)."""
    from executorlib import FluxJobExecutor

    with pytest.raises(NotImplementedError, match=f"{keyword}.*{alternative}"):
        FluxJobExecutor(**{keyword: value})


# -- executorlib.api.cloudpickle_register -------------------------------------------------------------------

def test_cloudpickle_register_registers_the_calling_module():
    import cloudpickle

    from executorlib.api import cloudpickle_register

    assert __name__ not in cloudpickle.list_registry_pickle_by_value()
    try:
        assert cloudpickle_register(ind=1) == __name__
        assert __name__ in cloudpickle.list_registry_pickle_by_value()
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert cloudpickle_register(ind=10_000) is None


# -- the walk that puts the parts in place (executorlib.future_tools._fill_selected) ----------------------

def test_fill_selected_reaches_into_every_container_and_copies_only_what_changed():
    from collections import namedtuple

    from executorlib.future_tools import Selected, _fill_selected

    Point = namedtuple("Point", "x y")

    @dataclass(frozen=True)
    class Frozen:
        a: object
        b: object = None

    part = Selected({"k": [10, 20]}, ("k", 1))
    assert _fill_selected(part) == 20
    hashable = Selected((5, 20), (1,))  # a set holds only hashable parts
    nested = ([part], {"d": part}, {hashable}, Point(part, 1), Frozen(Box(part), b=3))
    filled = _fill_selected(nested)
    assert filled[0] == [20] and filled[1] == {"d": 20} and filled[2] == {20}
    assert filled[3] == Point(20, 1) and type(filled[3]) is Point
    assert filled[4].a.content == 20 and filled[4].b == 3
    assert nested[4].a.content is part  # the original is not changed
    untouched = ([1, "x"], {"d": (2,)}, Box(3))
    assert _fill_selected(untouched) is untouched  # nothing changed: no copy
    loop: list = [part]
    loop.append(loop)
    result = _fill_selected(loop)
    assert result[0] == 20 and result[1] is loop  # a structure holding itself is not followed forever
