"""Behaviour at scale (not timing): lookups are per key, and polling asks the spawner, not the disk.

The in-memory Spawner below exists only to drive the generic scheduler loop in a unit test: it
stands for no real job scheduler and is never used outside this file.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import executorlib.store as store_module
from executorlib import Executor
from executorlib.resources import merge_resources
from executorlib.scheduler import Scheduler
from executorlib.spawners.base import JobSpec, JobStatus, Spawner
from executorlib.store import TaskStore
from executorlib.task import Task
from tests.cache.conftest import store_outcome, wait_for
from tests.cache.funcs import double

#: the behaviour (no file looked at while jobs are queued) does not depend on the count; 2,000
#: keeps the test quick, the issue's 10,000 behaves the same (see scheduler._poll)
PENDING_TASKS = 2_000


def _forbid(name: str, allowed: list | None = None, original=None):
    """Fail on any call, except listings of the result-pack folder (recorded in ``allowed``)."""

    def forbidden(*args, **kwargs):
        if allowed is not None and args and str(args[0]).endswith(".index"):
            allowed.append(args[0])
            return original(*args, **kwargs)
        raise AssertionError(f"{name} was called while submitting cached calls")

    return forbidden


def test_cached_calls_are_looked_up_without_walking_the_cache(tmp_path, monkeypatch):
    store = TaskStore(tmp_path / "cache")
    for i in range(50):
        store_outcome(store, double, i, value=2 * i)
    exe = Executor(cache_directory=store.directory)
    index_listings: list = []
    try:
        for module, name in ((os, "scandir"), (os, "listdir"), (os, "walk"), (glob, "glob"),
                             (glob, "iglob"), (Path, "iterdir"), (Path, "glob"), (Path, "rglob")):
            label = f"{getattr(module, '__name__', module)}.{name}"
            if (module, name) == (os, "listdir"):
                monkeypatch.setattr(module, name, _forbid(label, index_listings, os.listdir))
            else:
                monkeypatch.setattr(module, name, _forbid(label))
        futures = [exe.submit(double, i) for i in range(50)]
        assert all(f.done() for f in futures)  # resolved inside submit: no job, no scan
        assert [f.result() for f in futures] == [2 * i for i in range(50)]
        monkeypatch.undo()
        assert len(index_listings) <= 1  # the result packs are listed once per process, not per call
    finally:
        exe.shutdown()


class InMemorySpawner(Spawner):
    """Jobs that stay queued until the test says they left; one states() call per pass."""

    name = "in-memory-test"
    submits_with_dependencies = True
    max_poll_interval = 0.005
    result_grace_period = 0.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[str, str] = {}  # job id -> key
        self.gone: set[str] = set()
        self.passes = 0

    def submit(self, job: JobSpec, dependencies: list[str]) -> str:
        with self.lock:
            job_id = str(len(self.jobs) + 1)
            self.jobs[job_id] = job.key
            return job_id

    def states(self, job_ids: list[str]) -> dict[str, JobStatus]:
        with self.lock:
            self.passes += 1
            return {j: JobStatus("PENDING", active=True) for j in job_ids if j not in self.gone}

    def cancel(self, job_ids: list[str]) -> None:
        with self.lock:
            self.gone.update(job_ids)


def _task_of(store: TaskStore, what: str) -> str:
    """The task key of a store method's argument or of a path inside the cache."""
    path = Path(what)
    return path.relative_to(store.directory).parts[0] if path.is_absolute() else what


class _Counter:
    """Counts what the scheduler thread asks the disk, by kind and key."""

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread
        self.calls: list[tuple[str, str]] = []

    def wrap(self, name: str, function):
        def counted(*args, **kwargs):
            if threading.current_thread() is self.thread:
                self.calls.append((name, str(args[-1]) if args else ""))
            return function(*args, **kwargs)

        return counted


def _folder_only_task(store: TaskStore, key: str) -> Task:
    """A task with its folder but no task file (the in-memory spawner never starts a worker)."""
    store.task_dir(key).mkdir()
    future: Future = Future()
    future._executorlib_key = key  # type: ignore[attr-defined]
    return Task(key, "task", merge_resources({}, None), future)


def test_polling_does_not_stat_pending_tasks(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "_fsync", lambda path: None)  # speed only: claims still atomic
    store = TaskStore(tmp_path / "cache")
    spawner = InMemorySpawner()
    scheduler = Scheduler(store, spawner, refresh_rate=0.001)
    tasks = [_folder_only_task(store, f"task_{i:05d}") for i in range(PENDING_TASKS)]
    try:
        for task in tasks:
            scheduler.add(task)
        wait_for(lambda: len(spawner.jobs) == PENDING_TASKS, timeout=120, what="every task to be submitted")

        counter = _Counter(scheduler._thread)
        monkeypatch.setattr(os, "stat", counter.wrap("os.stat", os.stat))
        for method in ("has_result", "read_job", "read_result_info", "read_result"):
            monkeypatch.setattr(store, method, counter.wrap(method, getattr(store, method)))
        start = spawner.passes
        wait_for(lambda: spawner.passes >= start + 5, what="five polling passes")
        assert counter.calls == []  # thousands of queued jobs, five passes, not one file looked at

        left = {job_id: key for job_id, key in list(spawner.jobs.items())[:3]}
        for key in left.values():
            store.write_result(key, "finished", runtime=0.0)
        with spawner.lock:
            spawner.gone.update(left)
        by_key = {task.key: task.future for task in tasks}
        assert [by_key[key].result(timeout=30) for key in left.values()] == ["finished"] * 3
        start = spawner.passes
        wait_for(lambda: spawner.passes >= start + 3, what="three more passes")
        looked_at = {_task_of(store, what) for _, what in counter.calls}
        assert looked_at == set(left.values())  # only the jobs that left the queue
    finally:
        monkeypatch.undo()
        scheduler.shutdown(wait=True, cancel_futures=True)
    assert all(task.future.done() for task in tasks)



class RunningSpawner(InMemorySpawner):
    """Jobs that are reported running; status queries at most every 30 s (a busy cluster)."""

    min_poll_interval = 30.0
    max_poll_interval = 30.0

    def states(self, job_ids: list[str]) -> dict[str, JobStatus]:
        with self.lock:
            self.passes += 1
            return {j: JobStatus("RUNNING", active=True, running=True) for j in job_ids if j not in self.gone}


def test_status_queries_keep_the_spawners_floor_and_results_are_seen_between_them(tmp_path):
    store = TaskStore(tmp_path / "cache")
    spawner = RunningSpawner()
    scheduler = Scheduler(store, spawner, refresh_rate=0.001)
    tasks = [_folder_only_task(store, f"task_{i}") for i in range(3)]
    try:
        scheduler.add(tasks[0])
        wait_for(lambda: tasks[0].future.running(), what="the first job to be seen running")
        for task in tasks[1:]:  # new work wakes the loop, but must not trigger a status query
            scheduler.add(task)
        wait_for(lambda: len(spawner.jobs) == 3, what="every task to be submitted")
        store.write_result(tasks[0].key, "finished", runtime=0.0)
        assert tasks[0].future.result(timeout=10) == "finished"  # long before the next query
        assert spawner.passes == 1
    finally:
        scheduler.shutdown(wait=False, cancel_futures=True)


class QuietSpawner(InMemorySpawner):
    """Queued jobs on a scheduler whose status queries must keep 0.2 s apart, backing off to 0.4 s."""

    min_poll_interval = 0.2
    max_poll_interval = 0.4


def test_polling_backs_off_from_the_spawners_floor(tmp_path):
    store = TaskStore(tmp_path / "cache")
    spawner = QuietSpawner()
    scheduler = Scheduler(store, spawner, refresh_rate=0.001)
    try:
        scheduler.add(_folder_only_task(store, "task_0"))
        wait_for(lambda: spawner.passes >= 1, what="the first status query")
        start = spawner.passes
        time.sleep(2.0)
        # nothing changes: 0.3 s, then 0.4 s apart (5-6 queries); rising from refresh_rate
        # instead would take ~13 queries 0.2 s apart before reaching the floor
        assert spawner.passes - start <= 7
    finally:
        scheduler.shutdown(wait=True, cancel_futures=True)
