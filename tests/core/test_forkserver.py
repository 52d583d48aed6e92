"""The fork server of the local backend (executorlib.spawners.forkserver): every call still runs
in a fresh process of its own (isolation), with its cwd, environment, output, process group and
exit status as a plain subprocess gives them; cancel and run_time_max kill it, a killed call
fails alone; without the fork server the plain subprocess path runs the same calls."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from executorlib import Executor, get_key
from executorlib.errors import JobFailedError
from executorlib.spawners import forkserver
from executorlib.spawners.local import OutputPump
from executorlib.store import TaskStore
from tests.core import funcs

TIMEOUT = 60


def pollute(marker: str) -> int:
    """Change a module global, os.environ, the cwd and sys.path; return the pid."""
    import sys

    funcs.POLLUTED = marker  # type: ignore[attr-defined]
    os.environ["EXECUTORLIB_TEST_POLLUTED"] = marker
    os.chdir("/")
    sys.path.insert(0, "/polluted")
    return os.getpid()


def observe() -> dict:
    import sys

    return {"global": getattr(funcs, "POLLUTED", None), "env": os.environ.get("EXECUTORLIB_TEST_POLLUTED"),
            "cwd": os.getcwd(), "path": "/polluted" in sys.path, "pid": os.getpid(), "ppid": os.getppid(),
            "pgid": os.getpgid(0), "sid": os.getsid(0), "omp": os.environ.get("OMP_NUM_THREADS")}


def spawn_grandchild_and_wait(pid_file: str) -> None:
    import subprocess

    child = subprocess.Popen(["sleep", "300"])
    Path(pid_file).write_text(str(child.pid))
    child.wait()


def return_after_thread(path: str) -> str:
    """Start a non-daemon thread that writes ``path`` after the call returned."""
    import threading

    def later() -> None:
        time.sleep(0.3)
        Path(path).write_text("written by the thread")

    threading.Thread(target=later).start()
    return "returned"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(params=["fork-server", "subprocess"])
def mode(request, monkeypatch):
    if request.param == "subprocess":
        monkeypatch.setenv("EXECUTORLIB_FORK_SERVER", "0")
    elif not forkserver.enabled():
        pytest.skip("no fork server on this platform")
    return request.param


def test_calls_are_isolated_fresh_processes(mode, tmp_path):
    with Executor(backend="local", max_workers=1, cache_directory=tmp_path / "cache") as exe:
        first_pid = exe.submit(pollute, "x").result(timeout=TIMEOUT)
        future = exe.submit(observe, resource_dict={"threads_per_core": 3})
        seen = future.result(timeout=TIMEOUT)
    assert seen["pid"] != first_pid and seen["pid"] != os.getpid()
    assert seen["global"] is None and seen["env"] is None and not seen["path"]
    assert seen["cwd"] == str(TaskStore(tmp_path / "cache").task_dir(get_key(future)))
    assert seen["pgid"] == seen["pid"] == seen["sid"]  # its own session and process group
    assert seen["omp"] == "3"
    if mode == "fork-server":
        assert seen["ppid"] != os.getpid()  # forked by the server, not by this process


def test_results_are_on_disk_and_exit_codes_reach_the_future(mode, tmp_path):
    cache = tmp_path / "cache"
    with Executor(backend="local", max_workers=2, cache_directory=cache) as exe:
        good = exe.submit(funcs.add_funct, 1, 2)
        hard = exe.submit(funcs.exit_hard, 3)
        killed = exe.submit(funcs.kill_self)
        after = exe.submit(funcs.add_funct, 2, 2)
        assert good.result(timeout=TIMEOUT) == 3
        with pytest.raises(JobFailedError) as hard_info:
            hard.result(timeout=TIMEOUT)
        with pytest.raises(JobFailedError) as kill_info:
            killed.result(timeout=TIMEOUT)
        assert after.result(timeout=TIMEOUT) == 4
    assert hard_info.value.state == "FAILED (exit code 3)"
    assert "exit_hard: leaving without a result" in str(hard_info.value)
    assert kill_info.value.state == "KILLED (SIGKILL)"
    store = TaskStore(cache)
    assert store.durable
    assert store.has_result(get_key(good)) and store.read_result(get_key(good)).value == 3
    assert store.read_task_info(get_key(good))["durable"] is True


def test_cancel_kills_the_process_group(mode, tmp_path):
    """cancel_cache_jobs (as 'executorlib cancel') stops a running call and what it started."""
    from executorlib import cancel_cache_jobs

    cache = tmp_path / "cache"
    pid_file = tmp_path / "grandchild.pid"
    with Executor(backend="local", max_workers=1, cache_directory=cache) as exe:
        running = exe.submit(spawn_grandchild_and_wait, str(pid_file))
        deadline = time.monotonic() + TIMEOUT
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        grandchild = int(pid_file.read_text())
        assert cancel_cache_jobs(cache) == [get_key(running)]
        with pytest.raises(CancelledError):
            running.result(timeout=TIMEOUT)
        assert exe.submit(funcs.add_funct, 1, 1).result(timeout=TIMEOUT) == 2
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_run_time_max_kills_the_call_and_its_group(mode, tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    with Executor(backend="local", max_workers=1, cache_directory=tmp_path / "cache") as exe:
        slow = exe.submit(spawn_grandchild_and_wait, str(pid_file), resource_dict={"run_time_max": 1})
        with pytest.raises(JobFailedError) as info:
            slow.result(timeout=TIMEOUT)
        assert exe.submit(funcs.add_funct, 1, 1).result(timeout=TIMEOUT) == 2
    assert info.value.state == "TIMEOUT"
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_threads_of_a_call_finish_before_its_process_ends(mode, tmp_path):
    target = tmp_path / "thread.txt"
    with Executor(backend="local", max_workers=1) as exe:
        assert exe.submit(return_after_thread, str(target)).result(timeout=TIMEOUT) == "returned"
    deadline = time.monotonic() + 10
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert target.read_text() == "written by the thread"


def test_a_temporary_cache_is_not_fsynced_a_named_one_is(tmp_path):
    import tempfile

    temporary = TaskStore(tempfile.mkdtemp(prefix="executorlib-"), use_index=False)
    try:
        assert not temporary.durable
        assert TaskStore(temporary.directory, create=False, use_index=False).durable  # a job: from task.h5
    finally:
        import shutil

        shutil.rmtree(temporary.directory)
    assert TaskStore(tmp_path / "named").durable
    assert TaskStore(tmp_path / "named", use_index=False).durable


def test_a_dead_fork_server_is_replaced(tmp_path):
    if not forkserver.enabled():
        pytest.skip("no fork server on this platform")
    with Executor(backend="local", max_workers=1) as exe:
        assert exe.submit(funcs.add_funct, 1, 1).result(timeout=TIMEOUT) == 2
        servers = list(forkserver._servers.values())
        assert servers
        for server in servers:
            os.kill(server.popen.pid, signal.SIGKILL)
            server.popen.wait()
        assert exe.submit(funcs.add_funct, 2, 1).result(timeout=TIMEOUT) == 3
        assert exe.submit(funcs.add_funct, 3, 1).result(timeout=TIMEOUT) == 4


class _FullLog:
    def __init__(self) -> None:
        self.closed = False

    def write(self, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    def close(self) -> None:
        self.closed = True


def test_output_pump_keeps_a_tail_when_the_log_cannot_be_written(tmp_path):
    import subprocess
    import threading

    from executorlib.monitor import remembered_output

    log_path = tmp_path / "task" / "job.out"
    popen = subprocess.Popen(["sh", "-c", "echo out; echo 'OSError: disk full' >&2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = threading.Event()
    log = _FullLog()
    OutputPump().add(popen.stdout, popen.stderr, log, done, log_path)
    assert done.wait(TIMEOUT)
    popen.wait()
    tail, error = remembered_output(log_path)
    assert "OSError: disk full" in tail
    assert "No space left on device" in error
    assert log.closed
