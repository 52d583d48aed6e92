"""Processes sharing one cache: the same call submitted at the same time runs as exactly one job."""

from __future__ import annotations

import json
import threading

from executorlib.store import JOB_FILE, TaskStore
from tests.cache.conftest import dead_pid, store_call
from tests.cache.funcs import count_runs, double, record_run

CALLS = 4

RACER = """
    import os, sys, time
    from executorlib import Executor
    from tests.cache.funcs import record_run

    cache, name, other = {cache!r}, {name!r}, {other!r}
    open(name, "w").close()
    deadline = time.monotonic() + 20
    while not os.path.exists(other) and time.monotonic() < deadline:  # start together
        pass
    with Executor(cache_directory=cache) as exe:
        futures = [exe.submit(record_run, {runs!r} + str(i), i, delay=0.5) for i in range({calls})]
        print([f.result(timeout=60) for f in futures])
"""


def test_two_processes_submitting_the_same_calls_share_one_job_each(run_script, tmp_path, runs):
    cache = str(tmp_path / "cache")
    ready = [str(tmp_path / "ready_a"), str(tmp_path / "ready_b")]
    racers = [
        run_script(RACER.format(cache=cache, name=ready[0], other=ready[1], runs=runs, calls=CALLS), "a.py"),
        run_script(RACER.format(cache=cache, name=ready[1], other=ready[0], runs=runs, calls=CALLS), "b.py"),
    ]
    expected = str([2 * i for i in range(CALLS)])
    for racer in racers:
        out, err = racer.communicate(timeout=60)
        assert racer.returncode == 0, err
        assert out.strip() == expected
    assert [count_runs(runs + str(i)) for i in range(CALLS)] == [1] * CALLS


def test_only_one_of_many_claims_wins(tmp_path):
    store = TaskStore(tmp_path / "cache")
    key = store_call(store, double, 1)
    start = threading.Barrier(8)
    won = []

    def claim() -> None:
        start.wait()
        won.append(store.claim(key, "local"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False] * 7 + [True]


def test_a_stale_record_is_released_only_while_unchanged(tmp_path):
    store = TaskStore(tmp_path / "cache")
    key = store_call(store, double, 2)
    path = store.path(key, JOB_FILE)
    stale = {"state": "claimed", "backend": "local", "host": "elsewhere", "pid": dead_pid(), "time": 0.0}
    path.write_text(json.dumps(stale))
    fresh = {"state": "claimed", "backend": "local", "host": "here", "pid": 1, "time": 1.0}

    # another process replaced the stale record meanwhile: its claim stays
    path.write_text(json.dumps(fresh))
    assert store.release_stale_claim(key, stale) is False
    assert store.read_job(key) == fresh
    # the record judged stale is still there: released
    assert store.release_stale_claim(key, fresh) is True
    assert store.read_job(key) is None
    assert store.release_stale_claim(key, fresh) is False  # nothing left to release
    assert not [p for p in store.task_dir(key).iterdir() if p.name.endswith(".tmp")]


def test_releasing_a_claim_leaves_other_processes_writes_alone(tmp_path):
    store = TaskStore(tmp_path / "cache")
    key = store_call(store, double, 3)
    assert store.claim(key, "local")
    in_flight = store.task_dir(key) / f".{JOB_FILE}.otherhost.12345.abcdef12.tmp"  # another claim
    in_flight.write_text("{}")
    assert store.release_stale_claim(key)
    assert in_flight.exists()
    assert store.claim(key, "local")


def test_same_call_submitted_twice_in_one_executor_runs_once(tmp_path, runs):
    from executorlib import Executor

    with Executor(cache_directory=tmp_path / "cache") as exe:
        futures = [exe.submit(record_run, runs, 9, delay=0.3) for _ in range(3)]
        assert [f.result(timeout=30) for f in futures] == [18] * 3
    assert count_runs(runs) == 1
