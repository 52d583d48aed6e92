"""Interpreter exit: a script that submits and ends without shutdown() or ``with`` loses nothing
(local: every task runs to its result; SLURM: every call is submitted as a job, with its
dependencies, and left running), never crashes (no segfault) and never hangs (exit code 0).

Each test runs a small script in a fresh interpreter, as a user's script runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from tests.conformance.conftest import ALL, SLURM, flavours

EXIT_TIMEOUT = 90.0  # seconds a script may take to end (the local tasks take ~1 s in all)


def run_script(flavour, body: str) -> subprocess.CompletedProcess:
    """Run ``body`` in a new interpreter with ``exe = Executor(**flavour.options)`` defined."""
    script = textwrap.dedent(f"""\
        from executorlib import Executor
        from tests.conformance import funcs
        exe = Executor(**{flavour.options!r})
    """) + textwrap.dedent(body)
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=EXIT_TIMEOUT, cwd=flavour.tmp_path, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"the script hung at exit ({EXIT_TIMEOUT} s): stderr={expired.stderr!r}")
    assert done.returncode == 0, f"exit code {done.returncode} (negative: killed by a signal); " \
                                 f"stderr:\n{done.stderr}"
    assert "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr
    return done


def test_exit_without_shutdown_runs_every_task(flavour):
    paths = [flavour.tmp_path / f"ran-{i}" for i in range(12)]
    run_script(flavour, f"""
        for i in range(12):
            exe.submit(funcs.sleep_touch, 0.05 * (i % 4), str({str(flavour.tmp_path)!r}) + f"/ran-{{i}}", i)
        # no shutdown(), no with: the interpreter ends here
    """)
    missing = [p.name for p in paths if not p.exists()]
    assert missing == [], f"tasks lost at interpreter exit: {missing}"


@flavours("local_cache")  # a temporary cache is removed at exit: the test above covers it
def test_exit_without_shutdown_writes_every_result_to_a_named_cache(flavour):
    from executorlib import get_cache_data

    run_script(flavour, """
        first = exe.submit(funcs.sleep_return, 0.2, 1)
        for i in range(29):
            exe.submit(funcs.add, first, i)  # dependents too
    """)
    states = [record["state"] for record in get_cache_data(flavour.cache)]
    assert states.count("done") == 30, f"30 results expected, the cache holds: {sorted(states)}"


@flavours(*SLURM)
def test_exit_without_shutdown_submits_every_job_and_leaves_them(flavour):
    from tests.slurm.slurm_tools import job_ids_in, jobs_under

    start = time.monotonic()
    run_script(flavour, """
        first = exe.submit(funcs.sleep_return, 1.0, 1)
        second = exe.submit(funcs.add, first, 10)
        third = exe.submit(funcs.add, second, 100)
        other = exe.submit(funcs.sleep_return, 0.5, 2)
    """)
    assert time.monotonic() - start < 60
    ids = job_ids_in(flavour.cache)
    assert len(ids) == 4 and ids <= jobs_under(flavour.tmp_path), \
        f"4 jobs expected in the cache's job records, got {sorted(ids)}"
    # the jobs were left running: a later Executor reattaches and gets every result
    from tests.conformance import funcs

    with flavour.executor() as later:
        first = later.submit(funcs.sleep_return, 1.0, 1)
        third = later.submit(funcs.add, later.submit(funcs.add, first, 10), 100)
        other = later.submit(funcs.sleep_return, 0.5, 2)
        assert third.result(timeout=flavour.timeout) == 111
        assert other.result(timeout=flavour.timeout) == 2
    assert job_ids_in(flavour.cache) == ids, "the later Executor resubmitted instead of attaching"


def test_exit_after_shutdown_wait_false_does_not_hang_and_loses_nothing(flavour):
    marker = flavour.tmp_path / "ran"
    run_script(flavour, f"""
        exe.submit(funcs.sleep_touch, 0.5, {str(marker)!r})
        exe.shutdown(wait=False)
    """)
    assert marker.exists(), "the task submitted before shutdown(wait=False) did not run"


def test_submit_from_atexit_after_interpreter_shutdown_raises_runtime_error(flavour):
    """As in concurrent.futures, atexit handlers run after interpreter shutdown began (the
    stdlib's executors stop at threading's exit hook, before any atexit handler), so a submit()
    from one raises RuntimeError, whatever the order the handler and the Executor were made in."""
    done = run_script(flavour, """
        import atexit

        def late_submit():
            try:
                exe.submit(funcs.add, 1, 2)
            except RuntimeError as error:
                print("runtime-error:", error)
            else:
                print("accepted")

        atexit.register(late_submit)
        exe.submit(funcs.add, 1, 1).result()
    """)
    assert "runtime-error:" in done.stdout, f"stdout: {done.stdout!r}"


def test_dropped_executors_release_their_threads(flavour):
    done = run_script(flavour, """
        import gc, threading, time
        exe.shutdown()
        baseline = threading.active_count()
        futures = []
        for i in range(10):
            dropped = Executor(**OPTIONS)
            futures.append(dropped.submit(funcs.add, i, 1))
            del dropped
        gc.collect()
        assert [f.result(timeout=60) for f in futures] == [i + 1 for i in range(10)]
        deadline = time.monotonic() + 10
        while threading.active_count() > baseline and time.monotonic() < deadline:
            time.sleep(0.05)
            gc.collect()
        print("threads left:", threading.active_count() - baseline)
    """.replace("OPTIONS", repr(flavour.options)))
    assert "threads left: 0" in done.stdout, done.stdout
