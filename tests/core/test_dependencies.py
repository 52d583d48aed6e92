"""Future arguments are dependencies, also nested; a failed parent fails its dependents."""

from __future__ import annotations

import concurrent.futures as cf

import pytest

from executorlib import Executor
from executorlib.errors import DependencyError
from tests.core import funcs


def test_futures_nested_in_lists_tuples_dicts_and_kwargs_are_resolved():
    with Executor(backend="local") as exe:
        a = exe.submit(funcs.add_funct, 1, 1)
        b = exe.submit(funcs.add_funct, 2, 2)
        out = exe.submit(funcs.echo, [a, 1], (b, [a]), {"k": {"deep": b}}, kw=a, plain=[3])
        assert out.result() == (([2, 1], (4, [2]), {"k": {"deep": 4}}), {"kw": 2, "plain": [3]})


def test_diamond_dependencies():
    with Executor(backend="local") as exe:
        top = exe.submit(funcs.add_funct, 1, 2)
        left = exe.submit(funcs.add_funct, top, 10)
        right = exe.submit(funcs.add_funct, top, 100)
        bottom = exe.submit(funcs.add_funct, left, right)
        assert bottom.result() == 116


def test_a_failed_parent_fails_all_dependents_with_its_own_exception_type(tmp_path):
    marker = tmp_path / "ran.txt"
    with Executor(backend="local") as exe:
        parent = exe.submit(funcs.raise_value_error, "parent broke")
        child = exe.submit(funcs.record, str(marker), parent)
        grandchild = exe.submit(funcs.add_funct, child, 1)
        sibling = exe.submit(funcs.add_funct, 1, 1)
        with pytest.raises(ValueError, match="parent broke"):
            parent.result()
        with pytest.raises(ValueError, match="parent broke") as info:
            child.result()
        assert type(info.value) is ValueError and info.value is not parent.exception()
        assert any(parent._executorlib_key in note for note in info.value.__notes__)
        with pytest.raises(ValueError, match=child._executorlib_key) as info:  # pytest matches notes too
            grandchild.result()
        notes = "\n".join(info.value.__notes__)
        assert parent._executorlib_key in notes and child._executorlib_key in notes
        assert not any(child._executorlib_key in note for note in parent.exception().__notes__)
        assert sibling.result() == 2
    assert not marker.exists()


def test_a_cancelled_parent_fails_its_dependents(tmp_path):
    release = tmp_path / "release"
    with Executor(backend="local", max_workers=1) as exe:
        blocker = exe.submit(funcs.wait_for_file, str(release))
        parent = exe.submit(funcs.add_funct, 1, 1)  # waits for the single worker slot
        child = exe.submit(funcs.add_funct, parent, 1)
        assert parent.cancel()
        release.touch()
        with pytest.raises(DependencyError, match="cancelled"):
            child.result()
        assert blocker.result() is True


def test_disable_dependencies_makes_a_future_argument_a_clear_error():
    with Executor(backend="local", disable_dependencies=True) as exe:
        parent = exe.submit(funcs.add_funct, 1, 1)
        with pytest.raises(ValueError, match="disable_dependencies=True"):
            exe.submit(funcs.add_funct, [parent], 1)
        assert parent.result() == 2


def test_a_future_of_another_kind_is_rejected_with_advice():
    foreign: cf.Future = cf.Future()
    with Executor(backend="local") as exe:
        with pytest.raises(TypeError, match=r"\.result\(\)"):
            exe.submit(funcs.add_funct, foreign, 1)


def test_futures_of_another_executorlib_executor_are_waited_for(tmp_path):
    release = tmp_path / "release"
    with Executor(backend="local") as first, Executor(backend="local") as second:
        parent = first.submit(funcs.sleep_return, 0.0, 5)
        slow = first.submit(funcs.wait_for_file, str(release))
        child = second.submit(funcs.add_funct, parent, 1)
        assert child.result(timeout=60) == 6
        dependent_on_slow = second.submit(funcs.echo, slow)
        with pytest.raises(cf.TimeoutError):
            dependent_on_slow.result(timeout=0.3)
        release.touch()
        assert dependent_on_slow.result(timeout=60) == ((True,), {})
