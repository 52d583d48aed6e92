"""The scheduler loop: one background thread per Executor.

It takes tasks from ``Executor.submit``, claims and submits them through a spawner (at once with
their parents' job ids when the job scheduler handles dependencies, or when their parents are done
otherwise), asks the spawner for the states of all its jobs in one call per pass, and resolves
Futures from the task store. Passes back off while nothing changes. It never imports a spawner:
it is handed one.

Futures move only through ``set_running_or_notify_cancel``, ``set_result`` and
``set_exception``, so ``wait``, ``as_completed``, callbacks and ``cancel`` behave as usual.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import socket
import threading
import time
from concurrent.futures import CancelledError, Future
from typing import Callable, Optional

from executorlib.errors import DependencyError, JobFailedError, SubmissionError
from executorlib.spawners.base import JobSpec, Spawner, worker_command
from executorlib.store import TaskStore
from executorlib.task import Task

__all__ = ["Scheduler", "resolve_from_store"]

#: seconds of pause per running job between two looks for their results (a stat each, ~10 us):
#: 1,000 running jobs are looked at every second, about 1 % of a core
LOOK_COST = 0.001
#: seconds the loop spends at most on the Executor's messages before a pass over its tasks
DRAIN_BUDGET = 0.1

log = logging.getLogger("executorlib")

#: a claim by another process older than this, whose owner cannot be checked, is stale
CLAIM_TIMEOUT = 600.0
#: give up on a job scheduler that has not answered status queries for this long
STATUS_FAILURE_TIMEOUT = 600.0
#: how many trailing lines of a job's log an error message quotes
LOG_TAIL_LINES = 15


def _set_running(future: Future) -> bool:
    """Move a pending Future to running; False if it was cancelled (or is already done)."""
    if future.running():
        return True
    if future.done():
        return False
    return future.set_running_or_notify_cancel()


def resolve_from_store(store: TaskStore, key: str, future: Future) -> None:
    """Resolve ``future`` with the stored outcome of ``key`` (errors go onto the Future too)."""
    if not _set_running(future):
        return
    try:
        outcome = store.read_result(key)
    except Exception as error:  # noqa: BLE001 - e.g. CacheCorruptedError, unpickling errors
        future.set_exception(error)
        return
    if outcome.ok:
        future.set_result(outcome.value)
    else:
        error = outcome.error
        if outcome.traceback and isinstance(error, BaseException):
            note = f"Traceback of the remote task {key}:\n{outcome.traceback}"
            if hasattr(error, "add_note"):
                if note not in getattr(error, "__notes__", ()):
                    error.add_note(note)
            else:  # Python < 3.11
                error.args = (*error.args, note) if error.args else (note,)
        future.set_exception(error)


def log_tail(path: Optional[os.PathLike], lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a job's output file, or '' when there is none."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16_384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class _Entry:
    """The scheduler's bookkeeping for one unresolved task."""

    __slots__ = ("task", "job_id", "waiting_on", "children", "missing_since", "claimed", "attached",
                 "confirmed")

    def __init__(self, task: Task):
        self.task = task
        self.job_id: Optional[str] = None
        self.waiting_on: set[str] = set()  # parent keys not yet satisfied
        self.children: list[str] = []
        self.missing_since: Optional[float] = None
        self.claimed = False
        self.attached = False  # the job was submitted by an earlier run or another process
        # False for an attached job until a status query shows it queued or running: a job of an
        # earlier run may have died, and children must not get afterok on a dead (or forgotten,
        # which SLURM counts as satisfied) job id
        self.confirmed = True


class Scheduler:
    """Owns the background thread that moves the tasks of one Executor."""

    def __init__(self, store: TaskStore, spawner: Spawner, refresh_rate: float = 0.01,
                 on_exit: Optional[Callable[[], None]] = None):
        self.store = store
        self.spawner = spawner
        self.refresh_rate = refresh_rate
        self.on_exit = on_exit  # called by the thread after its last task (removes a temporary cache)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._entries: dict[str, _Entry] = {}
        self._by_job: dict[str, str] = {}  # job id -> key
        self._ready: collections.deque[str] = collections.deque()
        self._claim_watch: set[str] = set()
        self._closing = False
        self._cancel_all = False
        self._idle = threading.Event()
        self._idle.set()
        # set once the tasks submitted before shutdown() were handed to the spawner (those that can
        # go now), so that shutdown(wait=False) followed by the end of the process loses none
        self._handed_over = threading.Event()
        self._status_failing_since: Optional[float] = None
        # job ids seen running by the last status query: _look_for_results checks their results
        # between queries when the spawner's min_poll_interval spaces the queries out
        self._running: set[str] = set()
        self._thread = threading.Thread(target=self._main, name="executorlib-scheduler", daemon=True)
        self._thread.start()

    # -- API for the Executor (any thread) ---------------------------------------------------------
    def add(self, task: Task) -> None:
        self._idle.clear()
        self._inbox.put(("add", task))
        task.future.add_done_callback(self._on_done)

    def _on_done(self, future: Future) -> None:
        if future.cancelled():
            self._inbox.put(("cancelled", future))

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        self._inbox.put(("shutdown", cancel_futures))
        if wait:
            self._thread.join()
        elif threading.current_thread() is not self._thread:  # e.g. a callback dropping the Executor
            self._handed_over.wait()

    @property
    def pending(self) -> int:
        return len(self._entries)

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        return self._idle.wait(timeout)

    # -- the loop ----------------------------------------------------------------------------------
    def _main(self) -> None:
        interval = self.refresh_rate
        # the spawner's floor between two status queries: new messages wake the loop, but do not
        # make it query; between queries it looks on disk for the results of running jobs
        floor = self.spawner.min_poll_interval
        next_poll = next_look = 0.0
        poll_gap = floor
        try:
            while True:
                wait = interval
                if floor > 0:
                    if not self._running:
                        wait = max(interval, floor)
                    if self._by_job:
                        wait = min(wait, max(next_poll - time.monotonic(), 0.0))
                changed = self._drain_inbox(wait)
                if self._closing and not self._entries:
                    break
                now = time.monotonic()
                polled = False
                if now >= next_poll and self._by_job:
                    changed |= self._poll()
                    polled = True
                elif self._running and now >= next_look:
                    changed |= self._look_for_results()
                    next_look = now + max(self.refresh_rate, len(self._running) * LOOK_COST)
                changed |= self._watch_claims()
                changed |= self._submit_ready()
                if self._closing:
                    self._handed_over.set()
                if not self._entries:
                    self._idle.set()
                    self.store.flush_index(quiet=2.0)
                if changed:
                    interval = self.refresh_rate
                else:
                    interval = min(max(interval * 1.5, self.refresh_rate), self.spawner.max_poll_interval)
                if floor > 0:  # the gap between status queries backs off from the floor
                    if changed:
                        poll_gap = floor
                    elif polled:
                        poll_gap = min(poll_gap * 1.5, max(floor, self.spawner.max_poll_interval))
                    if polled:
                        next_poll = now + poll_gap
                    elif changed:  # activity (e.g. new jobs): the next query comes within the floor
                        next_poll = min(next_poll, now + floor)
        except BaseException as error:  # noqa: BLE001 - a bug here must not leave Futures hanging
            log.exception("executorlib scheduler loop failed")
            for entry in list(self._entries.values()):
                failure = RuntimeError(f"the executorlib scheduler thread failed: {error!r}")
                failure.__cause__ = error
                self._fail(entry, failure, cascade=False)
        finally:
            self._idle.set()
            self._handed_over.set()
            self.spawner.close()
            self.store.flush_index()
            if self.on_exit is not None:
                self.on_exit()

    def _drain_inbox(self, timeout: float) -> bool:
        """Handle the messages of the Executor; a burst of submissions is taken in slices of
        DRAIN_BUDGET seconds, so that the first tasks start while later ones are still written."""
        changed = False
        try:
            message = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return False
        deadline = time.monotonic() + DRAIN_BUDGET
        while True:
            kind, payload = message
            if kind == "add":
                self._register(payload)
            elif kind == "cancelled":
                self._on_cancelled(payload)
            elif kind == "parent_done":
                self._parent_done(*payload)
            elif kind == "shutdown":
                self._closing = True
                if payload:
                    self._cancel_everything()
            changed = True
            if time.monotonic() > deadline:
                return changed
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                return changed

    # -- registration --------------------------------------------------------------------------------
    def _register(self, task: Task) -> None:
        key = task.key
        if task.future.done():
            return
        if key in self._entries:  # the same call submitted twice: follow the first one
            first = self._entries[key].task.future
            first.add_done_callback(lambda f, mine=task.future: _copy_outcome(f, mine))
            return
        entry = _Entry(task)
        self._entries[key] = entry
        if task.pickled is not None:
            try:
                self.store.write_task(key, task.fn_name, task.pickled, task.resources, list(task.parents))
            except Exception as error:  # noqa: BLE001 - e.g. a full disk: this task fails
                self._fail(entry, error)
                return
            task.pickled = None  # written: no second copy of large arguments in memory
        for parent_key, parent in task.parents.items():
            parent_entry = self._entries.get(parent_key)
            if parent.done():
                problem = _parent_problem(parent_key, parent) or self._import_result(parent_key, parent)
                if problem is not None:
                    self._fail(entry, problem)
                    return
            elif parent_entry is not None and parent_entry.task.future is parent:
                if not (self.spawner.submits_with_dependencies and parent_entry.job_id
                        and parent_entry.confirmed):
                    entry.waiting_on.add(parent_key)
                    parent_entry.children.append(key)
            else:  # a Future of another Executor: wait until it is done
                entry.waiting_on.add(parent_key)
                parent.add_done_callback(
                    lambda f, k=key, p=parent_key: self._inbox.put(("parent_done", (k, p)))
                )
        self._take_over_or_claim(entry)

    def _take_over_or_claim(self, entry: _Entry) -> None:
        """Decide who runs the task: a job from an earlier run, another live process, or us."""
        key = entry.task.key
        if self.store.has_result(key):
            self._resolve(entry)
            return
        record = self.store.read_job(key)
        if record is None:
            if self.store.claim(key, self.spawner.name):
                self._claimed(entry)
            else:
                self._claim_watch.add(key)
            return
        if record.get("state") == "submitted" and record.get("backend") == self.spawner.name:
            self._attach(entry, record["job_id"])
        elif record.get("state") == "claimed" and not self._claim_is_stale(record):
            self._claim_watch.add(key)
        else:  # a dead claimant, a cancelled job or a job of another backend: submit again
            self.store.release_stale_claim(key, record)
            if self.store.claim(key, self.spawner.name):
                self._claimed(entry)
            else:
                self._claim_watch.add(key)

    def _claimed(self, entry: _Entry) -> None:
        entry.claimed = True
        if not entry.waiting_on:
            self._ready.append(entry.task.key)

    def _attach(self, entry: _Entry, job_id: str) -> None:
        entry.job_id = job_id
        entry.attached = True
        entry.confirmed = False  # children wait until _poll sees the job alive
        self._by_job[job_id] = entry.task.key

    @staticmethod
    def _claim_is_stale(record: dict) -> bool:
        if record.get("host") == socket.gethostname():
            try:
                os.kill(int(record["pid"]), 0)
            except ProcessLookupError:
                return True
            except (PermissionError, KeyError, ValueError):
                pass
            return False
        return time.time() - float(record.get("time", 0)) > CLAIM_TIMEOUT

    def _watch_claims(self) -> bool:
        """Tasks another process claimed: follow its job once it has one, or take over."""
        changed = False
        for key in list(self._claim_watch):
            entry = self._entries.get(key)
            if entry is None:
                self._claim_watch.discard(key)
                continue
            record = self.store.read_job(key)
            if self.store.has_result(key):
                self._claim_watch.discard(key)
                self._resolve(entry)
                changed = True
            elif record is None or record.get("state") != "claimed" or self._claim_is_stale(record):
                self._claim_watch.discard(key)
                self._take_over_or_claim(entry)
                changed = True
        return changed

    # -- dependencies ----------------------------------------------------------------------------
    def _released_for_submission(self, entry: _Entry) -> None:
        """``entry`` has a job id: children that only wait for parents' job ids may go."""
        if not self.spawner.submits_with_dependencies:
            return
        for child_key in entry.children:
            self._satisfy(child_key, entry.task.key)
        entry.children = []

    def _satisfy(self, child_key: str, parent_key: str) -> None:
        child = self._entries.get(child_key)
        if child is None:
            return
        child.waiting_on.discard(parent_key)
        if not child.waiting_on and child.claimed and child.job_id is None:
            self._ready.append(child_key)

    def _parent_done(self, child_key: str, parent_key: str) -> None:
        child = self._entries.get(child_key)
        if child is None:
            return
        parent = child.task.parents[parent_key]
        problem = _parent_problem(parent_key, parent) or self._import_result(parent_key, parent)
        if problem is not None:
            self._fail(child, problem)
        else:
            self._satisfy(child_key, parent_key)

    def _import_result(self, parent_key: str, parent: Future) -> Optional[DependencyError]:
        """A successful parent of another Executor has its result in another cache: copy it
        into this one, where the child's job looks for it."""
        if self.store.has_result(parent_key):
            return None
        try:
            self.store.write_result(parent_key, parent.result(), 0.0)
        except Exception as error:  # noqa: BLE001 - e.g. a result that cannot be pickled
            return DependencyError(
                f"the result of parent task {parent_key} (from another Executor) cannot be "
                f"stored in this Executor's cache {self.store.directory}: {error!r}")
        return None

    # -- submission ------------------------------------------------------------------------------
    def _submit_ready(self) -> bool:
        changed = False
        while self._ready:
            key = self._ready[0]
            entry = self._entries.get(key)
            if entry is None or entry.job_id is not None or entry.task.future.done():
                self._ready.popleft()
                continue
            if not self.spawner.has_capacity(entry.task.resources):
                break
            self._ready.popleft()
            self._submit(entry)
            changed = True
        return changed

    def _submit(self, entry: _Entry) -> None:
        task = entry.task
        dependencies = []
        for parent_key in task.parents:
            parent_entry = self._entries.get(parent_key)
            if parent_entry is not None and parent_entry.job_id is not None:
                dependencies.append(parent_entry.job_id)
        task_dir = self.store.task_dir(task.key)
        spec = JobSpec(
            key=task.key,
            task_dir=task_dir,
            function_name=task.fn_name,
            resources=task.resources,
            command=worker_command(task_dir, task.resources["cores"]),
            log_path=self.store.log_path(task.key),
        )
        try:
            job_id = self.spawner.submit(spec, dependencies)
        except Exception as error:  # noqa: BLE001 - the error belongs to this task's Future
            self.store.release_stale_claim(task.key)  # not cached: a corrected rerun submits again
            if not isinstance(error, SubmissionError):
                wrapped = SubmissionError(f"submitting task {task.key} failed: {error}")
                wrapped.__cause__ = error
                error = wrapped
            self._fail(entry, error)
            return
        self.store.write_job(task.key, self.spawner.name, job_id,
                             log=self.spawner.log_file(task_dir, job_id))
        entry.job_id = job_id
        self._by_job[job_id] = task.key
        if not self.spawner.submits_with_dependencies:
            _set_running(task.future)  # a local process runs from the start
        self._released_for_submission(entry)

    # -- polling ---------------------------------------------------------------------------------
    def _poll(self) -> bool:
        if not self._by_job:
            return False
        try:
            states = self.spawner.states(list(self._by_job))
        except Exception as error:  # noqa: BLE001 - a scheduler hiccup: retry, then give up
            now = time.monotonic()
            if self._status_failing_since is None:
                self._status_failing_since = now
                log.warning("querying the job scheduler failed (will retry): %s", error)
            elif now - self._status_failing_since > STATUS_FAILURE_TIMEOUT:
                for key in list(self._by_job.values()):
                    entry = self._entries.get(key)
                    if entry is not None:
                        self._fail(entry, JobFailedError(
                            f"the job scheduler did not answer status queries for "
                            f"{STATUS_FAILURE_TIMEOUT:.0f} s: {error}", job_id=entry.job_id))
            return False
        self._status_failing_since = None
        changed = False
        now = time.monotonic()
        self._running = {job_id for job_id, status in states.items()
                         if status is not None and status.running and job_id in self._by_job}
        for job_id, key in list(self._by_job.items()):
            if job_id not in self._by_job:  # dropped earlier in this pass (a parent's failure)
                continue
            entry = self._entries.get(key)
            if entry is None or entry.job_id != job_id:
                del self._by_job[job_id]
                continue
            status = states.get(job_id)
            if status is not None and status.active:
                if entry.attached and status.running and self.store.has_result(key):
                    # another Executor's persistent worker outlives the task it ran for us
                    del self._by_job[job_id]
                    self._resolve(entry)
                    changed = True
                    continue
                if not entry.confirmed:  # an attached job is alive: its children may go
                    entry.confirmed = True
                    self._released_for_submission(entry)
                    changed = True
                if status.running and not entry.task.future.running():
                    if not _set_running(entry.task.future):
                        self._on_cancelled(entry.task.future)
                    changed = True
                if status.reason == "DependencyNeverSatisfied":
                    changed |= self._check_dead_dependency(entry)
                continue
            # the job left the queue: its result must be in the store
            if self.store.has_result(key):
                del self._by_job[job_id]
                self._resolve(entry)
                changed = True
            elif entry.missing_since is None:
                entry.missing_since = now
            elif now - entry.missing_since > self.spawner.result_grace_period:
                del self._by_job[job_id]
                record = self.store.read_job(key) or {}
                same_job = record.get("job_id") == job_id
                if self.store.has_result(key):
                    self._resolve(entry)
                elif same_job and record.get("state") == "cancelled":
                    self._fail(entry, CancelledError(
                        f"{self.spawner.describe(job_id)} of task {entry.task.key} was cancelled "
                        f"(executorlib.cancel_cache_jobs or 'executorlib cancel')"))
                elif entry.attached:
                    # a job of an earlier run that vanished without a result: submit it again
                    # (unless another process already did: then follow its claim or job)
                    entry.attached, entry.job_id, entry.missing_since = False, None, None
                    entry.confirmed = True
                    if same_job:
                        self.store.release_stale_claim(key, record)
                    self._take_over_or_claim(entry)
                else:
                    state = status.state if status is not None else None
                    self._fail(entry, self._job_failure(entry, job_id, state))
                changed = True
        return changed

    def _look_for_results(self) -> bool:
        """Resolve the tasks whose jobs were running at the last status query and have written
        their result since: one ``stat`` per running job, no query to the job scheduler."""
        changed = False
        for job_id in list(self._running):
            key = self._by_job.get(job_id)
            entry = self._entries.get(key) if key is not None else None
            if entry is None or entry.job_id != job_id:
                self._running.discard(job_id)
            elif self.store.has_result(key):
                self._running.discard(job_id)
                del self._by_job[job_id]
                self._resolve(entry)
                changed = True
        return changed

    def _check_dead_dependency(self, entry: _Entry) -> bool:
        """The job scheduler holds a job forever because a job it depends on did not succeed.

        If a parent failed, the task fails with the parent's error. Otherwise the parent's job was
        replaced (a reattached parent whose job vanished and was submitted again): cancel the held
        job and submit the task again against the parents' current job ids.
        """
        for parent_key in entry.task.parents:
            if self.store.has_result(parent_key):
                info = self.store.read_result_info(parent_key)
                if info and not info["ok"]:
                    self._fail(entry, DependencyError(
                        f"task {entry.task.key} cannot run: its parent task {parent_key} failed "
                        f"with {info['error_type']}: {info['error_message']}"))
                    return True
        if entry.job_id is None:
            return False
        key, old_job = entry.task.key, entry.job_id
        self._cancel_jobs([old_job])
        self._by_job.pop(old_job, None)
        entry.job_id, entry.attached, entry.missing_since = None, False, None
        record = self.store.read_job(key)
        if record is not None and record.get("job_id") == old_job:
            self.store.release_stale_claim(key, record)
        for parent_key in entry.task.parents:
            parent_entry = self._entries.get(parent_key)
            if parent_entry is not None and parent_entry.job_id is None:
                entry.waiting_on.add(parent_key)  # wait for the parent's new job id
                parent_entry.children.append(key)
        self._take_over_or_claim(entry)
        return True

    def _job_failure(self, entry: _Entry, job_id: str, state: Optional[str]) -> JobFailedError:
        return job_failure(self.store, entry.task.key, job_id, self.spawner.final_state(job_id) or state,
                           self.spawner.describe(job_id))

    # -- outcomes --------------------------------------------------------------------------------
    def _resolve(self, entry: _Entry) -> None:
        key = entry.task.key
        resolve_from_store(self.store, key, entry.task.future)
        self._finish(entry)

    def _finish(self, entry: _Entry) -> None:
        key = entry.task.key
        self._entries.pop(key, None)
        self._claim_watch.discard(key)
        if entry.job_id is not None:
            self._by_job.pop(entry.job_id, None)
        future = entry.task.future
        failed = future.cancelled() or future.exception() is not None
        for child_key in entry.children:
            child = self._entries.get(child_key)
            if child is None:
                continue
            problem = _parent_problem(key, future) if failed else None
            if problem is not None:
                self._fail(child, problem)
            else:
                self._satisfy(child_key, key)
        if failed and self.spawner.submits_with_dependencies:
            # children already submitted with afterok on this job: the scheduler would hold them
            # forever (DependencyNeverSatisfied); fail and cancel them now. Children released by
            # this job's id but not submitted yet must fail too (they would run without it).
            for child in list(self._entries.values()):
                if key in child.task.parents:
                    self._fail(child, _parent_problem(key, future))

    def _fail(self, entry: _Entry, error: BaseException, cascade: bool = True) -> None:
        future = entry.task.future
        if entry.job_id is not None and entry.job_id in self._by_job:
            self._cancel_jobs([entry.job_id])
        if _set_running(future):
            future.set_exception(error)
        if entry.claimed and entry.job_id is None:
            self.store.release_stale_claim(entry.task.key)
        if cascade:
            self._finish(entry)
        else:
            self._entries.pop(entry.task.key, None)

    def _cancel_jobs(self, job_ids: list[str]) -> None:
        try:
            self.spawner.cancel(job_ids)
        except Exception as error:  # noqa: BLE001
            log.warning("cancelling jobs %s failed: %s", job_ids, error)

    def _on_cancelled(self, future: Future) -> None:
        key = future._executorlib_key  # type: ignore[attr-defined]
        entry = self._entries.get(key)
        if entry is None or entry.task.future is not future:
            return
        if entry.job_id is not None:
            self._cancel_jobs([entry.job_id])
        elif entry.claimed:
            self.store.release_stale_claim(key)
        if not entry.task.future.done():
            entry.task.future.cancel()
        self._finish(entry)

    def _cancel_everything(self) -> None:
        job_ids = [e.job_id for e in self._entries.values() if e.job_id is not None]
        if job_ids:
            self._cancel_jobs(job_ids)
        for entry in list(self._entries.values()):
            future = entry.task.future
            if entry.claimed and entry.job_id is None:
                self.store.release_stale_claim(entry.task.key)
            if not future.cancel() and not future.done():
                future.set_exception(CancelledError(
                    f"task {entry.task.key} was cancelled by shutdown(cancel_futures=True)"))
            self._entries.pop(entry.task.key, None)
        self._by_job.clear()
        self._ready.clear()
        self._claim_watch.clear()


def job_failure(store: TaskStore, key: str, job_id: str, state: Optional[str], what: str) -> JobFailedError:
    """The error of a task whose job ended without a result: state, job id, tail of its log."""
    final = state or "UNKNOWN (no longer known to the scheduler)"
    log_path = store.job_log(key)
    message = f"{what} for task {key} ended in state {final} without writing a result."
    tail = log_tail(log_path)
    if tail:
        message += f"\nLast lines of {log_path}:\n{tail}"
    return JobFailedError(message, job_id=job_id, state=final)


def _parent_problem(parent_key: str, parent: Future) -> Optional[DependencyError]:
    """The error for a child of a finished parent, or None when the parent succeeded."""
    if parent.cancelled():
        return DependencyError(f"parent task {parent_key} was cancelled")
    error = parent.exception()
    if error is None:
        return None
    problem = DependencyError(f"parent task {parent_key} failed with {type(error).__name__}: {error}")
    problem.__cause__ = error
    return problem


def _copy_outcome(source: Future, target: Future) -> None:
    if target.done() or not _set_running(target):
        return
    if source.cancelled():
        target.set_exception(CancelledError("the identical task submitted first was cancelled"))
    elif source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())
