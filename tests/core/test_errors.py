"""Errors of a task reach its Future only; the Executor keeps working after any of them."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from executorlib import Executor
from executorlib.errors import JobFailedError, RemoteError
from tests.core import funcs


def test_original_exception_type_message_and_remote_traceback():
    with Executor(backend="local") as exe:
        plain = exe.submit(funcs.raise_value_error, "bad value 42")
        custom = exe.submit(funcs.raise_custom, "custom failure")
        with pytest.raises(ValueError, match="bad value 42") as info:
            plain.result()
        with pytest.raises(funcs.CustomError, match="custom failure"):
            custom.result()
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Traceback" in notes and "raise_value_error" in notes and "funcs.py" in notes
    assert plain._executorlib_key in notes


def test_an_exception_that_cannot_be_pickled_arrives_as_remote_error():
    with Executor(backend="local") as exe:
        future = exe.submit(funcs.raise_unpicklable, "with a lock inside")
        with pytest.raises(RemoteError) as info:
            future.result()
    assert info.value.remote_type == "tests.core.funcs.UnpicklableError"
    assert "with a lock inside" in str(info.value)


@pytest.mark.parametrize("bad_argument", [threading.Lock(), (i for i in range(3))], ids=["lock", "generator"])
def test_an_unpicklable_argument_fails_only_its_future(bad_argument):
    with Executor(backend="local") as exe:
        bad = exe.submit(funcs.echo, bad_argument)
        with pytest.raises(TypeError, match="pickle"):
            bad.result()
        assert exe.submit(funcs.add_funct, 1, 2).result() == 3


def test_an_unpicklable_result_fails_only_its_future():
    with Executor(backend="local") as exe:
        bad = exe.submit(funcs.return_lock)
        good = exe.submit(funcs.add_funct, 1, 1)
        with pytest.raises(TypeError, match="cannot be stored"):
            bad.result()
        assert good.result() == 2


def test_a_worker_that_exits_without_a_result_fails_with_job_failed_error():
    with Executor(backend="local") as exe:
        exited = exe.submit(funcs.exit_hard, 3)
        killed = exe.submit(funcs.kill_self)
        with pytest.raises(JobFailedError) as exit_info:
            exited.result()
        with pytest.raises(JobFailedError) as kill_info:
            killed.result()
        assert exe.submit(funcs.add_funct, 2, 2).result() == 4
    assert exit_info.value.state == "FAILED (exit code 3)"
    assert "exit_hard: leaving without a result" in str(exit_info.value)  # the job's output
    assert "SIGKILL" in kill_info.value.state


def test_a_process_killed_from_outside_fails_only_its_future(tmp_path):
    pid_file = tmp_path / "pid"
    with Executor(backend="local") as exe:
        victim = exe.submit(funcs.pid_then_wait, str(pid_file), str(tmp_path / "never"))
        other = exe.submit(funcs.add_funct, 1, 1)
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        with pytest.raises(JobFailedError, match="SIGKILL"):
            victim.result(timeout=60)
        assert other.result() == 2
        assert exe.submit(funcs.add_funct, 3, 3).result() == 6


def test_run_time_max_kills_the_task_with_state_timeout(tmp_path):
    with Executor(backend="local") as exe:
        slow = exe.submit(funcs.wait_for_file, str(tmp_path / "never"), resource_dict={"run_time_max": 1})
        with pytest.raises(JobFailedError) as info:
            slow.result(timeout=60)
    assert info.value.state == "TIMEOUT"
    assert "TIMEOUT" in str(info.value)


def test_a_function_the_worker_cannot_import_reports_the_import_error(tmp_path, monkeypatch):
    module_dir = tmp_path / "client_only"
    module_dir.mkdir()
    (module_dir / "client_only_module.py").write_text("def hello():\n    return 'hi'\n")
    monkeypatch.syspath_prepend(str(module_dir))
    import client_only_module

    try:
        with Executor(backend="local") as exe:
            future = exe.submit(client_only_module.hello)
            # a setup failure of the job, not a result: it names the module and what to fix
            with pytest.raises(JobFailedError, match="ModuleNotFoundError.*client_only_module") as info:
                future.result()
            assert "PYTHONPATH" in str(info.value) and "runs again" in str(info.value)
    finally:
        sys.modules.pop("client_only_module", None)


def call_sys_exit(code):
    sys.exit(code)


class _RefusesPickling:
    def __reduce__(self):
        import pickle

        raise pickle.PicklingError("this object refuses to be pickled")


@pytest.mark.parametrize("code", [3, 0, None, "bye"])
def test_a_task_calling_sys_exit_raises_task_exit_error_with_its_code_not_system_exit(code):
    from executorlib.errors import ExecutorlibError, TaskExitError

    with Executor(backend="local") as exe:
        future = exe.submit(call_sys_exit, code)
        with pytest.raises(TaskExitError) as info:  # a SystemExit here would end pytest's run
            future.result(timeout=60)
        assert exe.submit(funcs.add_funct, 1, 2).result(timeout=60) == 3
    assert isinstance(info.value, ExecutorlibError) and not isinstance(info.value, SystemExit)
    assert info.value.code == code
    assert f"sys.exit({code!r})" in str(info.value)


def test_a_pickling_error_stays_a_pickling_error_naming_the_call():
    import pickle

    with Executor(backend="local") as exe:
        future = exe.submit(funcs.echo, _RefusesPickling())
        with pytest.raises(pickle.PicklingError) as info:
            future.result(timeout=60)
    assert "this object refuses to be pickled" in str(info.value)
    assert "echo" in str(info.value)
