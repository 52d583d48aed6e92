"""A client that is PID 1 of a PID namespace (a container), killed right after it claimed a task
and started again as PID 1 with the same cache, must not take the dead claim for its own nor wait
on it (issue "Cache integrity under faults", local backend).

Both runs are ``unshare --pid --fork --mount-proc python ...``: same host, same boot, same pid.
Only the claim's start time and its owner lock tell the dead first run from the second.

The kill uses tests/faults/kill_at.py at ``executorlib.claims:claim``, with one difference: the
kernel drops a signal that the init of a PID namespace sends to itself unless it has a handler,
so kill_at's ``os.kill(os.getpid(), SIGKILL)`` is ignored by PID 1 (the process goes on). The
client therefore parks the claiming thread right after kill_at wrote its mark, and the test
SIGKILLs the namespace's init from outside (from the parent namespace that is always delivered).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from executorlib import clean_cache, get_cache_data
from executorlib.claims import read_job
from executorlib.store import TaskStore
from tests.faults.conftest import _client_env
from tests.faults.funcs import executions
from tests.faults.kill_at import KILL_AT, KILL_MARK

UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]
CLAIMED = "executorlib.claims:claim"

CLIENT = """
    import os
    import threading

    import executorlib.claims
    from executorlib import Executor
    from tests.faults.funcs import record_square

    print("pid", os.getpid(), flush=True)
    hook = executorlib.claims.claim
    if hasattr(hook, "__wrapped__"):  # run under tests.faults.kill_at
        kill_at_globals = hook.__globals__
        kill = kill_at_globals["_die"]

        def die(step, mark):
            kill(step, mark)  # writes the mark; its SIGKILL to itself is ignored by PID 1
            threading.Event().wait()  # park until the test kills this process from outside

        kill_at_globals["_die"] = die

    with Executor(backend="local", cache_directory={cache!r}) as exe:
        print("result", exe.submit(record_square, {runs!r}, 7).result(timeout=30), flush=True)
"""


def _unshare_problem() -> str:
    if shutil.which("unshare") is None:
        return "the unshare command is not installed"
    try:
        done = subprocess.run(UNSHARE + ["true"], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{' '.join(UNSHARE)} true failed: {error}"
    if done.returncode != 0:
        return f"{' '.join(UNSHARE)} is not permitted here: {done.stderr.strip() or done.returncode}"
    return ""


@pytest.fixture
def unshare_pid() -> None:
    problem = _unshare_problem()
    if problem:
        pytest.skip(problem)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # field 4, ppid
            found.append(int(entry))
    return found


def run_as_pid1_killed_at(tmp_path: Path, code: str, step: str, timeout: float = 60.0) -> str:
    """Run ``code`` as PID 1 of a new PID namespace under kill_at; SIGKILL it (from outside)
    once it reached ``step``. Returns its stdout; fails when it never reached the step."""
    tag = uuid.uuid4().hex[:8]
    script, mark = tmp_path / f"pid1-{tag}.py", tmp_path / f"pid1-{tag}.mark"
    script.write_text(textwrap.dedent(code))
    out = open(tmp_path / f"pid1-{tag}.out", "w+")
    process = subprocess.Popen(UNSHARE + [sys.executable, "-m", "tests.faults.kill_at", str(script)],
                               cwd=str(tmp_path), env=_client_env({KILL_AT: step, KILL_MARK: str(mark)}),
                               stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not (mark.exists() and step in mark.read_text()):
            assert process.poll() is None, f"the client ended before {step}:\n{Path(out.name).read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the client never reached {step}"
            time.sleep(0.05)
        inits = _children(process.pid)  # the namespace's init: unshare's only child
        assert len(inits) == 1, inits
        os.kill(inits[0], signal.SIGKILL)
        process.wait(timeout=10)  # unshare ends when its child (the namespace's init) is gone
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        out.seek(0)
        text = out.read()
        out.close()
    return text


def run_as_pid1(tmp_path: Path, code: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    script = tmp_path / f"pid1-{uuid.uuid4().hex[:8]}.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(UNSHARE + [sys.executable, str(script)], cwd=str(tmp_path), env=_client_env(),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_pid1_client_restarted_as_pid1_does_not_wait_on_its_dead_claim(tmp_path, unshare_pid, runs):
    """The first PID-1 client dies right after claiming the task (the function did not run);
    clean sees that claim as dead; a second PID-1 client on the same cache takes the task over
    and returns the right result within the timeout, the function having run exactly once."""
    cache = tmp_path / "cache"
    code = CLIENT.format(cache=str(cache), runs=runs)

    first = run_as_pid1_killed_at(tmp_path, code, CLAIMED)
    assert "pid 1\n" in first, first
    assert "result" not in first, first
    assert executions(runs) == {}, executions(runs)
    tasks = get_cache_data(cache, query=False)
    assert len(tasks) == 1, tasks
    claim = read_job(TaskStore(cache), tasks[0]["key"])
    assert claim and claim["state"] == "claimed" and claim["pid"] == 1, claim  # the dead PID 1's claim

    plan = clean_cache(cache, grace=0, dry_run=True)
    assert not [r for r in plan.kept if r["kept"] in ("claim", "client")], plan.kept  # not live
    assert [r["key"] for r in plan] == [tasks[0]["key"]], (list(plan), plan.kept)

    started = time.monotonic()
    second = run_as_pid1(tmp_path, code)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.split() == ["pid", "1", "result", "49"], second.stdout
    assert time.monotonic() - started < 30
    assert executions(runs) == {"7": 1}, executions(runs)
