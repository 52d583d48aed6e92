"""Exceptions raised in a task come back as themselves; a task never ends or hangs the caller."""

from __future__ import annotations

import pickle
import traceback

import pytest

from executorlib.errors import CacheCorruptedError, ExecutorlibError
from tests.conformance import funcs
from tests.conformance.conftest import ALL, flavours


@flavours(*ALL)
def test_the_tasks_exception_comes_back_with_its_type_and_message(flavour):
    with flavour.executor() as exe:
        future = exe.submit(funcs.raise_custom, "custom message")
        with pytest.raises(funcs.ConformanceError) as caught:
            future.result(timeout=flavour.timeout)
        assert type(caught.value) is funcs.ConformanceError
        assert caught.value.args == ("custom message",) and str(caught.value) == "custom message"


def test_builtin_exceptions_and_their_remote_traceback(flavour):
    with flavour.executor() as exe:
        value_error = exe.submit(funcs.raise_value_error, "bad value")
        zero = exe.submit(divmod, 1, 0)
        with pytest.raises(ValueError, match="bad value") as caught:
            value_error.result(timeout=flavour.timeout)
        with pytest.raises(ZeroDivisionError):
            zero.result(timeout=flavour.timeout)
    shown = "".join(traceback.format_exception(caught.value))
    assert "raise_value_error" in shown, f"the task's own frame is not in the traceback:\n{shown}"


def test_a_base_exception_subclass_comes_back_as_itself(flavour):
    with flavour.executor() as exe:
        future = exe.submit(funcs.raise_base, "not an Exception")
        with pytest.raises(funcs.CustomBaseException, match="not an Exception"):
            future.result(timeout=flavour.timeout)


@flavours(*ALL)
@pytest.mark.parametrize("code", [3])
def test_sys_exit_in_a_task_is_an_executorlib_error_naming_the_code(flavour, code):
    with flavour.executor() as exe:
        future = exe.submit(funcs.call_exit, code)
        try:
            future.result(timeout=flavour.timeout)
        except SystemExit as error:  # pragma: no cover - the bug: it would end the caller
            pytest.fail(f"result() raised SystemExit({error.code!r}) in the caller")
        except ExecutorlibError as error:
            assert str(code) in str(error) and "exit" in str(error).lower(), str(error)
        else:
            pytest.fail("sys.exit() in a task gave a result")
        # the Executor is still usable
        assert exe.submit(funcs.add, 1, 1).result(timeout=flavour.timeout) == 2


@pytest.mark.parametrize("code", [0, None, "a message"])
def test_any_sys_exit_in_a_task_is_an_executorlib_error(flavour, code):
    """Even sys.exit(0) is no result: the function did not return a value."""
    with flavour.executor() as exe:
        error = exe.submit(funcs.call_exit, code).exception(timeout=flavour.timeout)
    assert isinstance(error, ExecutorlibError) and not isinstance(error, SystemExit), repr(error)
    assert repr(code) in str(error) or str(code) in str(error), str(error)


def test_keyboard_interrupt_in_a_task_does_not_interrupt_the_caller(flavour):
    with flavour.executor() as exe:
        future = exe.submit(funcs.raise_keyboard_interrupt)
        try:
            error = future.exception(timeout=flavour.timeout)
        except KeyboardInterrupt:  # pragma: no cover - the bug
            pytest.fail("exception() raised KeyboardInterrupt in the caller")
        assert isinstance(error, ExecutorlibError) and "KeyboardInterrupt" in str(error), repr(error)
        with pytest.raises(ExecutorlibError):
            future.result()


def test_a_failed_parent_fails_its_dependent_with_the_parents_exception_type(flavour):
    with flavour.executor() as exe:
        parent = exe.submit(funcs.raise_custom, "parent failed")
        child = exe.submit(funcs.add, parent, 1)
        with pytest.raises(funcs.ConformanceError, match="parent failed"):
            child.result(timeout=flavour.timeout)
        assert isinstance(parent.exception(), funcs.ConformanceError)


def test_a_pickling_error_stays_a_pickling_error(flavour):
    with flavour.executor() as exe:
        try:
            future = exe.submit(funcs.identity, funcs.RefusesPickling())
        except pickle.PicklingError:
            return  # raised at submit(): the type is right
        error = future.exception(timeout=flavour.timeout)
        assert isinstance(error, pickle.PicklingError), repr(error)


def test_the_users_unpickling_error_is_not_reported_as_cache_corruption(flavour):
    with flavour.executor() as exe:
        future = exe.submit(funcs.make_fails_on_load, "unpickling")
        error = future.exception(timeout=flavour.timeout)
        assert not isinstance(error, CacheCorruptedError), repr(error)
        assert isinstance(error, pickle.UnpicklingError), repr(error)


def test_a_base_exception_while_unpickling_a_result_never_kills_the_executor(flavour):
    """Issue 13 part 5: the scheduler loop must not die silently. Either it survives (the next
    call runs) or every later submit() raises; no Future may stay pending forever."""
    exe = flavour.executor()
    broken = exe.submit(funcs.make_fails_on_load, "base")
    error = broken.exception(timeout=flavour.timeout)
    assert error is not None
    try:
        later = exe.submit(funcs.add, 1, 2)
    except RuntimeError:
        pass
    else:
        assert later.result(timeout=flavour.timeout) == 3
    exe.shutdown(wait=True)
