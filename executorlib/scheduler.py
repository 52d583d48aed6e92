"""The scheduler loop: one background thread per Executor.

Each pass is a short sequence of named steps::

    take new calls   write their task files, link them to their parents, claim them
    watch claims     follow tasks another process claimed; ask the spawner for the tagged jobs of
                     dead claimants (a client killed between sbatch and the job record)
    ask the monitor  the states of every job in one query (or, between queries, a look on disk
                     for the results of running jobs)
    resolve          set the Futures of finished tasks, release or fail their children
    submit ready     hand the claimed tasks whose parents allow it to the spawner

Every task is in exactly one :class:`State`. The parts live in their own modules: the claim
protocol of a task folder (:mod:`executorlib.claims`), the dependency edges
(:mod:`executorlib.deps`), the interpretation of job states (:mod:`executorlib.monitor`, shared
with the cache tools) and the timing (:mod:`executorlib.cadence`). It never imports a spawner:
it is handed one.

Futures move only through ``set_running_or_notify_cancel``, ``set_result`` and
``set_exception``, so ``wait``, ``as_completed``, callbacks and ``cancel`` behave as usual. Two
identical calls (the same key in a cache the user named) share one task, but each keeps its own
Future: cancelling one leaves the other following the job, which is cancelled only when no
Future follows it any more.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import errno as errno_module
import logging
import os
import queue
import re
import threading
import time
import uuid
from concurrent.futures import CancelledError, Future
from typing import Callable, Optional

from executorlib import claims
from executorlib import packed_queue as pq
from executorlib.cadence import Cadence, poll_limits
from executorlib.deps import Dependencies
from executorlib.errors import DependencyError, ExecutorlibError, JobFailedError, SubmissionError, TaskExitError
from executorlib.files import JOB_FILE, TASK_FILE
from executorlib.monitor import (Seen, StatusMonitor, StatusUnavailable, ended_without_result, job_failure, log_tail,
                                 setup_error)
from executorlib.spawners.base import JobSpec, JobStatus, Spawner, worker_command
from executorlib.store import Outcome, TaskStore
from executorlib.task import Task

__all__ = ["Scheduler", "State", "resolve_from_store", "job_failure", "log_tail"]

#: seconds the loop spends at most on the Executor's messages before a pass over its tasks
DRAIN_BUDGET = 0.1
#: the first pause after the job scheduler refused a job for a limit that passes (doubled per refusal)
REFUSAL_BACKOFF = 5.0

log = logging.getLogger("executorlib")


class State(enum.Enum):
    """Where one unfinished task of the loop stands (a finished task leaves the loop)."""

    CLAIM_WATCH = "another live process claimed it: its job is followed once it has one"
    FIND_TAGGED = "a dead process claimed it with a tag: ask the spawner for a job carrying the tag"
    WAITING_PARENTS = "claimed by this loop; a parent is not done (or has no job id) yet"
    READY = "claimed by this loop; waiting for the spawner's capacity"
    SUBMITTED = "its job, submitted by this loop, is queued or running"
    ATTACHED_UNCONFIRMED = "following a job of an earlier run, not yet seen alive"
    ATTACHED = "following a job of an earlier run or of another process, seen alive"
    RETRY_WAIT = ("claimed by this loop; submitted again after a pause: the cluster lost its job, or the job "
                  "scheduler refused it for a limit that passes (the user's queue is full, slurmctld busy)")


_WITH_JOB = (State.SUBMITTED, State.ATTACHED_UNCONFIRMED, State.ATTACHED)


# -- resolving a Future from the store ---------------------------------------------------------------
def _set_running(future: Future) -> bool:
    """Move a pending Future to running; False if it was cancelled (or is already done)."""
    if future.running():
        return True
    if future.done():
        return False
    return future.set_running_or_notify_cancel()


def _as_future_error(error: BaseException) -> BaseException:
    """A SystemExit or KeyboardInterrupt never reaches result(): it would end the caller."""
    if isinstance(error, (SystemExit, KeyboardInterrupt)):
        return TaskExitError.from_exception(error)
    return error


def resolve_from_store(store: TaskStore, key: str, future: Future, outcome: Optional[Outcome] = None) -> None:
    """Resolve ``future`` with the stored outcome of ``key`` (errors go onto the Future too,
    also a BaseException raised while the result is unpickled); ``outcome``: the outcome of a
    call the spawner ran from memory (Spawner.take_outcome), instead of the store's."""
    if not _set_running(future):
        return
    try:
        outcome = store.read_result(key) if outcome is None else outcome
    except BaseException as error:  # noqa: BLE001 - e.g. CacheCorruptedError, a __setstate__ raising
        future.set_exception(_as_future_error(error))
        return
    if outcome.ok:
        future.set_result(outcome.value)
        return
    error = outcome.error
    if isinstance(error, BaseException):
        error = _as_future_error(error)
        if outcome.traceback:
            note = f"Traceback of the remote task {key}:\n{outcome.traceback}"
            if hasattr(error, "add_note"):
                if note not in getattr(error, "__notes__", ()):
                    error.add_note(note)
            else:  # Python < 3.11
                error.args = (*error.args, note) if error.args else (note,)
    else:
        error = RuntimeError(f"task {key} stored {error!r} as its error")
    future.set_exception(error)


def _parent_values(task: Task) -> tuple[dict, Optional[BaseException]]:
    """The values of the parents of a task the spawner runs from memory, from their Futures
    (done: the loop submits a task after its parents), or the child's error for a parent
    Future that was cancelled or failed."""
    values = {}
    for parent_key, parent in task.parents.items():
        problem = _parent_problem(parent_key, parent) if parent.done() else DependencyError(
            f"parent task {parent_key} is not done")
        if problem is not None:
            return {}, problem
        values[parent_key] = parent.result()
    return values, None


# -- errors ----------------------------------------------------------------------------------------------
def _errno_of(error: BaseException) -> Optional[int]:
    code = getattr(error, "errno", None)
    if isinstance(code, int):
        return code
    found = re.search(r"errno = (\d+)", str(error))  # h5py's messages
    return int(found.group(1)) if found else None


def write_failure(what: str, path: os.PathLike | str, error: BaseException) -> OSError:
    """The OSError of a failed cache write: what, the path and the errno (e.g. a full disk)."""
    code = _errno_of(error)
    if code is None:
        problem = OSError(f"cannot write {what} {path}: {error}")
    else:
        name = errno_module.errorcode.get(code, "?")
        problem = OSError(code, f"cannot write {what} {path}: {os.strerror(code)} ({name})", str(path))
    problem.__cause__ = error
    return problem


def _parent_problem(parent_key: str, parent: Future) -> Optional[BaseException]:
    """The error for a child of a finished parent Future, or None when the parent succeeded."""
    if parent.cancelled():
        return DependencyError(f"parent task {parent_key} was cancelled")
    error = parent.exception()
    return None if error is None else _problem_of(parent_key, error)


def _problem_of(parent_key: str, error: BaseException) -> BaseException:
    """The error for the children of a task that failed with ``error``.

    A child raises the parent's own exception type (a copy of the parent's exception, with a note
    naming the failed parent), so that ``except ValueError:`` at the end of a chain works. What
    has no exception of its own to pass on becomes a :class:`DependencyError` naming the parent
    (with the parent's error as ``__cause__``): a cancelled parent, executorlib's own errors about
    the parent's job (JobFailedError, SubmissionError, ... : the child's job did not fail, an
    ``except JobFailedError:`` that resubmits must not see it), and an exception that cannot be
    copied.
    """
    if isinstance(error, CancelledError):
        return DependencyError(f"parent task {parent_key} was cancelled")
    passed = None if isinstance(error, ExecutorlibError) else _copy_exception(error)
    if passed is None:
        problem = DependencyError(f"parent task {parent_key} failed with {type(error).__name__}: {error}")
        problem.__cause__ = error
        return problem
    _add_note(passed, f"executorlib: this call did not run: its parent task {parent_key} failed "
                      f"with {type(error).__name__}: {error}")
    return passed


def _copy_exception(error: BaseException) -> Optional[BaseException]:
    """A new exception of ``error``'s type with its arguments, attributes and notes (the notes
    in a list of its own); None when the type cannot be re-made from its pickle state."""
    try:
        clone = copy.copy(error)
    except Exception:  # noqa: BLE001 - a constructor that needs other arguments
        return None
    if type(clone) is not type(error) or clone is error:
        return None
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, list):
        clone.__notes__ = list(notes)  # type: ignore[attr-defined]
    return clone


def _add_note(error: BaseException, note: str) -> None:
    if hasattr(error, "add_note"):
        if note not in getattr(error, "__notes__", ()):
            error.add_note(note)
    else:  # Python < 3.11
        error.args = (*error.args, note) if error.args else (note,)


# -- the loop's bookkeeping --------------------------------------------------------------------------
class _Entry:
    """One unfinished task: its state, the Futures that follow it, its claim and its job."""

    __slots__ = ("task", "followers", "state", "claim", "job_id", "last_status", "attempts", "retry_at",
                 "refusals")

    def __init__(self, task: Task):
        self.task = task
        self.followers: list[Future] = [task.future]
        self.state: Optional[State] = None
        self.claim: Optional[dict] = None  # our claim record while we hold the claim
        self.job_id: Optional[str] = None
        self.last_status: Optional[JobStatus] = None  # of the job, when last seen in the queue
        #: the jobs the cluster lost so far: {"job_id", "state", "reason", "time"} each
        self.attempts: list[dict] = []
        self.retry_at = 0.0  # in RETRY_WAIT: when to submit again (time.monotonic())
        self.refusals = 0  # transient refusals of its submission in a row

    @property
    def key(self) -> str:
        return self.task.key

    @property
    def started(self) -> bool:
        return any(f.running() for f in self.followers)

    def __repr__(self) -> str:
        state = self.state.name if self.state else "NEW"
        return f"<task {self.key} {state} job={self.job_id} futures={len(self.followers)}>"


class Scheduler:
    """Owns the background thread that moves the tasks of one Executor.

    ``broken`` is the error that ended the loop, or None: once set, every unfinished Future has
    failed with it and :meth:`add` raises.
    """

    def __init__(self, store: TaskStore, spawner: Spawner, refresh_rate: float = 0.01,
                 on_exit: Optional[Callable[[], None]] = None):
        self.store = store
        self.spawner = spawner
        self.refresh_rate = refresh_rate
        self.on_exit = on_exit  # called by the thread after its last task (removes a temporary cache)
        self.broken: Optional[BaseException] = None
        self._holder = uuid.uuid4().hex[:12]  # this loop, in its claim records
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._entries: dict[str, _Entry] = {}
        self._in: dict[State, dict[str, None]] = {state: {} for state in State}  # ordered per state
        self._jobs: dict[str, str] = {}  # job id -> key, for the tasks in a state with a job
        self._seen_running: set[str] = set()  # job ids running at the last status query
        self._deps = Dependencies()
        self._monitor = StatusMonitor()
        floor, ceiling = spawner.min_poll_interval, spawner.max_poll_interval
        if floor > 0:  # a shared job-scheduler daemon: the site and the user may set its pace
            floor, ceiling = poll_limits(floor, ceiling)
        self._cadence = Cadence(refresh_rate, floor, ceiling)
        self._stopping = False  # shutdown() was called (any thread)
        self._closing = False  # the loop took the shutdown message
        self._cancelling = False
        self._detaching = False
        self._tag_failures_logged = False
        self._index_failures_logged = False
        self._idle = threading.Event()
        self._idle.set()
        # set once the tasks submitted before shutdown() were handed to the spawner (those that can
        # go now), so that shutdown(wait=False) followed by the end of the process loses none
        self._handed_over = threading.Event()
        self._dead_lock = threading.Lock()
        self._submit_hold_until = 0.0  # no submission before (after a transient refusal)
        if hasattr(spawner, "set_wakeup"):  # it learns of ended jobs at once: the loop looks then
            spawner.set_wakeup(lambda: self._inbox.put(("wake", None)))
        self._thread = threading.Thread(target=self._main, name="executorlib-scheduler", daemon=True)
        self._thread.start()

    # -- API for the Executor (any thread) ---------------------------------------------------------
    def add(self, task: Task) -> None:
        """Take a task; RuntimeError once the loop is broken or shut down."""
        if self.broken is not None:
            raise RuntimeError(f"the executorlib scheduler thread failed: {self.broken!r}; "
                               "create a new Executor") from self.broken
        if self._stopping:
            raise RuntimeError("cannot schedule new futures after shutdown")
        self._idle.clear()
        self._inbox.put(("add", task))
        task.future.add_done_callback(self._on_done)
        if not self._thread.is_alive():  # it ended meanwhile: nobody else will take the task
            self._fail_inbox()

    def _on_done(self, future: Future) -> None:
        if future.cancelled():
            self._inbox.put(("cancelled", future))

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Stop taking tasks; the thread ends after the last one. ``wait`` joins it;
        ``cancel_futures`` cancels every task not started (and its job)."""
        self._stopping = True
        self._inbox.put(("shutdown", cancel_futures))
        if wait:
            if threading.current_thread() is not self._thread:
                self._thread.join()
        elif threading.current_thread() is not self._thread:  # e.g. a callback dropping the Executor
            self._handed_over.wait()

    def detach(self, timeout: Optional[float] = None) -> None:
        """Hand every task over to the spawner (those that can go now), then end the thread
        without waiting for the jobs, which keep running (for the end of the process: a later
        process reattaches through the cache). Futures not done stay pending."""
        self._stopping = True
        self._inbox.put(("detach", None))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    #: kept for callers of the former name; use executorlib.claims.claim_is_stale
    _claim_is_stale = staticmethod(claims.claim_is_stale)

    @property
    def pending(self) -> int:
        return len(self._entries)

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        return self._idle.wait(timeout)

    # -- the loop ----------------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            while True:
                changed = self._take_messages(self._cadence.wait(bool(self._jobs), bool(self._seen_running)))
                if self._closing and (not self._entries or self._detaching and self._handed_over.is_set()):
                    break
                now = time.monotonic()
                polled = bool(self._jobs) and self._cadence.poll_due(now)
                if polled:
                    changed |= self._ask_monitor()
                elif self._seen_running and self._cadence.look_due(now, len(self._seen_running)):
                    changed |= self._look_for_results()
                changed |= self._watch_claims()
                changed |= self._find_tagged()
                changed |= self._retry_due(now)
                changed |= self._submit_ready()
                if self._closing:
                    self._handed_over.set()
                if not self._entries:
                    self._idle.set()
                    self._flush_index(quiet=2.0)
                self._cadence.after_pass(now, changed, polled)
        except BaseException as error:  # noqa: BLE001 - the loop must never die silently
            self.broken = error
            log.exception("executorlib scheduler loop failed")
            failure = RuntimeError(f"the executorlib scheduler thread failed: {error!r}")
            failure.__cause__ = error
            for entry in list(self._entries.values()):
                for future in entry.followers:
                    if _set_running(future):
                        future.set_exception(failure)
            self._entries.clear()
        finally:
            self._idle.set()
            self._handed_over.set()
            self._fail_inbox()
            for step in (self.spawner.close, self._flush_index, self.on_exit):
                if step is None:
                    continue
                try:
                    step()
                except Exception as error:  # noqa: BLE001
                    log.warning("executorlib scheduler: %s at exit failed: %s", step, error)

    def _fail_inbox(self) -> None:
        """Fail the tasks of messages that no loop will take (the thread ended)."""
        with self._dead_lock:
            while True:
                try:
                    kind, payload = self._inbox.get_nowait()
                except queue.Empty:
                    return
                if kind != "add" or payload.future.done():
                    continue
                if self.broken is not None:
                    error = RuntimeError(f"the executorlib scheduler thread failed: {self.broken!r}")
                    error.__cause__ = self.broken
                else:
                    error = RuntimeError("cannot schedule new futures after shutdown")
                if _set_running(payload.future):
                    payload.future.set_exception(error)

    def _flush_index(self, quiet: Optional[float] = None) -> None:
        """Write the packs of small results read (speed only: a failure is logged, never raised)."""
        try:
            self.store.flush_index(quiet=quiet)
        except Exception as error:  # noqa: BLE001 - e.g. a full disk
            if not self._index_failures_logged:
                self._index_failures_logged = True
                log.warning("executorlib: writing the result packs of %s failed: %s", self.store.directory, error)

    # -- step 1: take new calls ------------------------------------------------------------------------
    def _take_messages(self, timeout: float) -> bool:
        """Handle the messages of the Executor; a burst of submissions is taken in slices of
        DRAIN_BUDGET seconds, so that the first tasks start while later ones are still written."""
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
                    self._cancel_not_started()
            elif kind == "detach":
                self._closing = self._detaching = True
            if time.monotonic() > deadline:
                return True
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                return True

    def _register(self, task: Task) -> None:
        key = task.key
        if task.future.done():
            return
        entry = self._entries.get(key)
        if entry is not None:  # an identical call: one more Future following the same task
            entry.followers.append(task.future)
            if entry.started:
                _set_running(task.future)
            return
        entry = self._entries[key] = _Entry(task)
        direct = task.pickled is not None and self.spawner.accepts_call(task.resources)
        if task.pickled is not None and not direct:  # (direct: the call goes to the spawner in memory)
            try:
                self.store.write_task(key, task.fn_name, task.pickled, task.resources, list(task.parents))
            except Exception as error:  # noqa: BLE001 - e.g. a full disk: this task fails
                self._fail(entry, write_failure("the task file", self.store.path(key, TASK_FILE), error))
                return
            task.pickled = None  # written: no second copy of large arguments in memory
        batch = self.spawner.submits_with_dependencies
        for parent_key, parent in task.parents.items():
            parent_entry = self._entries.get(parent_key)
            if parent_entry is not None:  # a task of this loop: follow it, not the Future given
                released = batch and parent_entry.state in (State.SUBMITTED, State.ATTACHED)
                self._deps.add(key, parent_key, blocking=not released)
            elif parent.done():
                problem = _parent_problem(parent_key, parent) or self._import_result(parent_key, parent)
                if problem is not None:
                    self._fail(entry, problem)
                    return
            else:  # a Future of another Executor: wait until it is done
                self._deps.add(key, parent_key)
                parent.add_done_callback(lambda f, k=key, p=parent_key: self._inbox.put(("parent_done", (k, p))))
        if direct:  # a temporary cache: no earlier result, no other process, nothing to claim
            self._claimed(entry, {})
        else:
            self._decide(entry)

    def _move(self, entry: _Entry, state: Optional[State]) -> None:
        if entry.state is not None:
            self._in[entry.state].pop(entry.key, None)
        entry.state = state
        if state is not None:
            self._in[state][entry.key] = None

    # -- step 2: claim --------------------------------------------------------------------------------------
    def _decide(self, entry: _Entry) -> None:
        """Who runs the task: a job from an earlier run, another live process, or us."""
        key = entry.key
        if self.store.has_result(key):
            self._resolve(entry)
            return
        record = claims.read_job(self.store, key)
        state = record.get("state") if record else None
        if state == claims.SUBMITTED and self.spawner.follows(record.get("backend")) and record.get("job_id"):
            # a call being retried keeps its lost jobs; one whose retries ran out starts afresh
            attempts = [dict(a) for a in record.get("attempts") or () if isinstance(a, dict)]
            entry.attempts = attempts if len(attempts) <= entry.task.max_retries else []
            self._attach(entry, str(record["job_id"]))
            return
        if state == claims.CLAIMED:
            if record.get("holder") == self._holder and claims.is_own_claim(record):
                self._claimed(entry, record)  # our own leftover (its release failed)
                return
            if not claims.claim_is_stale(record):
                self._move(entry, State.CLAIM_WATCH)
                return
            if record.get("tag") and self.spawner.follows(record.get("backend")):
                entry.claim = record  # the dead claimant may have submitted a job already
                self._move(entry, State.FIND_TAGGED)
                return
        if record is not None:  # a dead claimant, a cancelled job or a job of another backend
            if state == claims.SUBMITTED and pq.is_call_id(record.get("job_id", "")):
                # queued for the worker jobs of max_jobs, which this Executor does not follow:
                # take the call back (a running one is killed) before it is submitted here
                pq.withdraw(str(record["job_id"]))
            if not self._release(entry, record):
                self._move(entry, State.CLAIM_WATCH)  # another process was faster: follow it
                return
        self._claim(entry)

    def _claim(self, entry: _Entry) -> None:
        try:
            record = claims.claim(self.store, entry.key, self.spawner.name, holder=self._holder)
            if record is None and claims.discard_junk(self.store, entry.key):  # a damaged record
                record = claims.claim(self.store, entry.key, self.spawner.name, holder=self._holder)
        except Exception as error:  # noqa: BLE001 - a full or read-only disk: this task fails
            self._fail(entry, write_failure("the claim", self.store.path(entry.key, JOB_FILE), error))
            return
        if record is None:
            self._move(entry, State.CLAIM_WATCH)
        else:
            self._claimed(entry, record)

    def _claimed(self, entry: _Entry, record: dict) -> None:
        entry.claim = record
        self._move(entry, State.WAITING_PARENTS if self._deps.blocked(entry.key) else State.READY)

    def _release(self, entry: _Entry, expected: Optional[dict] = None) -> bool:
        """Remove the task's record (ours, or a stale one); False when another process replaced it.
        A failure to remove ours is logged: the record names this loop, which takes it up again."""
        try:
            return claims.release(self.store, entry.key, expected)
        except Exception as error:  # noqa: BLE001 - e.g. a read-only disk
            log.warning("executorlib: %s", write_failure("the release of the claim",
                                                         self.store.path(entry.key, JOB_FILE), error))
            return expected is None

    def _release_claim(self, entry: _Entry) -> None:
        """Give up our claim of a task that has no job (not cached: a rerun submits again)."""
        if entry.claim is not None and entry.job_id is None and entry.claim.get("holder") == self._holder:
            self._release(entry)
        entry.claim = None

    def _attach(self, entry: _Entry, job_id: str) -> None:
        entry.job_id = job_id
        self._jobs[job_id] = entry.key
        self._move(entry, State.ATTACHED_UNCONFIRMED)  # children wait until the job is seen alive

    def _watch_claims(self) -> bool:
        """Tasks another process claimed: follow its job once it has one, or take over."""
        changed = False
        for key in list(self._in[State.CLAIM_WATCH]):
            entry = self._entries[key]
            if self.store.has_result(key):
                self._resolve(entry)
                changed = True
                continue
            record = claims.read_job(self.store, key)
            if record is None or record.get("state") != claims.CLAIMED or claims.claim_is_stale(record):
                self._decide(entry)
                changed = True
        return changed

    def _find_tagged(self) -> bool:
        """Claims of dead processes that carry a tag: one question to the spawner for all of them.
        A job carrying the tag is the one the dead claimant submitted: attach to it."""
        waiting = list(self._in[State.FIND_TAGGED])
        if not waiting:
            return False
        tags = {self._entries[key].claim["tag"]: key for key in waiting}  # type: ignore[index]
        try:
            found = self.spawner.find_tagged(list(tags))
        except Exception as error:  # noqa: BLE001 - ask again in the next pass
            if not self._tag_failures_logged:
                self._tag_failures_logged = True
                log.warning("executorlib: looking for the jobs of dead claimants failed (will retry): %s", error)
            return False
        for tag, key in tags.items():
            entry = self._entries.get(key)
            if entry is None or entry.state is not State.FIND_TAGGED:
                continue
            stale, entry.claim = entry.claim, None
            if self.store.has_result(key):
                self._resolve(entry)
            elif not self._release(entry, stale):
                self._decide(entry)  # another process took over first
            elif tag not in found:
                self._claim(entry)
            else:
                self._adopt(entry, str(found[tag]), tag)
        return True

    def _adopt(self, entry: _Entry, job_id: str, tag: str) -> None:
        """Record the job of a dead claimant (found by its tag) as the task's job, and follow it."""
        try:
            record = claims.claim(self.store, entry.key, self.spawner.name, holder=self._holder)
            if record is None:
                self._move(entry, State.CLAIM_WATCH)
                return
            claims.write_job(self.store, entry.key, self.spawner.name, job_id, tag=tag)
        except Exception as error:  # noqa: BLE001 - a full or read-only disk: follow the job anyway
            log.warning("executorlib: %s", write_failure("the job record", self.store.path(entry.key, JOB_FILE), error))
        self._attach(entry, job_id)

    # -- step 3: release ready ones -----------------------------------------------------------------
    def _unblocked(self, key: str) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.state is State.WAITING_PARENTS:
            self._move(entry, State.READY)

    def _released_for_submission(self, entry: _Entry) -> None:
        """``entry`` has a live job id: children the job scheduler holds on it may go."""
        if self.spawner.submits_with_dependencies:
            for child in self._deps.release_children(entry.key):
                self._unblocked(child)

    def _parent_done(self, child_key: str, parent_key: str) -> None:
        child = self._entries.get(child_key)
        if child is None:
            return
        parent = child.task.parents[parent_key]
        problem = _parent_problem(parent_key, parent) or self._import_result(parent_key, parent)
        if problem is not None:
            self._fail(child, problem)
        elif self._deps.release(child_key, parent_key):
            self._unblocked(child_key)

    def _import_result(self, parent_key: str, parent: Future) -> Optional[BaseException]:
        """A successful parent of another Executor has its result in another cache: copy it
        into this one, where the child's job looks for it."""
        if self.store.has_result(parent_key):
            return None
        try:
            self.store.write_result(parent_key, parent.result(), 0.0)
        except Exception as error:  # noqa: BLE001 - e.g. a result that cannot be pickled, a full disk
            return DependencyError(
                f"the result of parent task {parent_key} (from another Executor) cannot be "
                f"stored in this Executor's cache {self.store.directory}: {error!r}")
        return None

    def _submit_ready(self) -> bool:
        changed = False
        ready = self._in[State.READY]
        while ready and time.monotonic() >= self._submit_hold_until:
            key = next(iter(ready))
            entry = self._entries[key]
            if not self.spawner.has_capacity(entry.task.resources):
                break
            self._move(entry, None)
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
        tag = (entry.claim or {}).get("tag", "")
        spec = JobSpec(key=task.key, task_dir=task_dir, function_name=task.fn_name, resources=task.resources,
                       command=worker_command(task_dir, task.resources["cores"]),
                       log_path=self.store.log_path(task.key), tag=tag)
        if task.pickled is not None:  # accepted by the spawner in _register: the parents' values go along
            values, problem = _parent_values(task)
            if problem is not None:
                self._fail(entry, problem)
                return
            spec = dataclasses.replace(spec, call={**task.pickled, "parents": values})
        try:
            job_id = self.spawner.submit(spec, dependencies)
        except SubmissionError as error:
            if error.transient:
                self._hold_refused(entry, error)
                return
            self._fail(entry, error)
            return
        except Exception as error:  # noqa: BLE001 - the error belongs to this task's Futures
            if not isinstance(error, SubmissionError):
                wrapped = SubmissionError(f"submitting task {task.key} failed: {error}")
                wrapped.__cause__ = error
                error = wrapped
            self._fail(entry, error)
            return
        try:
            if spec.call is None:  # (a call run from memory has no folder to record its job in)
                claims.write_job(self.store, task.key, self.spawner.name, job_id,
                                 log=self.spawner.log_file(task_dir, job_id), tag=tag, attempts=entry.attempts)
        except Exception as error:  # noqa: BLE001 - unrecorded, the job would be an orphan: cancel it
            self._cancel_jobs([job_id])
            self._fail(entry, write_failure(f"the record of {self.spawner.describe(job_id)} (cancelled)",
                                            self.store.path(task.key, JOB_FILE), error))
            return
        entry.job_id = job_id
        entry.refusals = 0
        self._jobs[job_id] = task.key
        self._move(entry, State.SUBMITTED)
        if not self.spawner.submits_with_dependencies:
            for future in entry.followers:
                _set_running(future)  # a local process runs from the start
        self._released_for_submission(entry)

    # -- step 4: ask the monitor -----------------------------------------------------------------------
    def _ask_monitor(self) -> bool:
        try:
            states = self._monitor.query(self.spawner, list(self._jobs))
        except StatusUnavailable as error:
            for job_id, key in list(self._jobs.items()):
                entry = self._entries.get(key)
                if entry is not None:
                    self._fail(entry, JobFailedError(str(error), job_id=job_id))
            return True
        if states is None:
            return False
        changed = False
        now = time.monotonic()
        grace = self.spawner.result_grace_period
        self._seen_running = {job_id for job_id, status in states.items()
                              if status is not None and status.running and job_id in self._jobs}
        for job_id, key in list(self._jobs.items()):
            entry = self._entries.get(key)
            if entry is None or entry.job_id != job_id:  # finished earlier in this pass
                self._jobs.pop(job_id, None)
                continue
            status = states.get(job_id)
            was_missing = self._monitor.is_missing(job_id)
            seen = self._monitor.judge(job_id, status, lambda k=key: self.spawner.has_outcome(k)
                                       or self.store.has_result(k), grace, now)
            if seen in (Seen.QUEUED, Seen.RUNNING):
                changed |= self._job_alive(entry, status, seen)  # type: ignore[arg-type]
            elif seen is Seen.MISSING:
                changed |= not was_missing  # it just left the queue: ask again soon, not a ceiling later
            elif seen is Seen.RESULT:
                self._resolve(entry)
                changed = True
            elif seen is Seen.GONE:
                self._job_gone(entry, job_id, status)
                changed = True
        return changed

    def _job_alive(self, entry: _Entry, status, seen: Seen) -> bool:
        changed = False
        entry.last_status = status
        if seen is Seen.RUNNING and entry.state is not State.SUBMITTED and self.store.has_result(entry.key):
            self._resolve(entry)  # another Executor's persistent worker outlives the task it ran for us
            return True
        if entry.state is State.ATTACHED_UNCONFIRMED:  # an attached job is alive: its children may go
            self._move(entry, State.ATTACHED)
            self._released_for_submission(entry)
            changed = True
        if seen is Seen.RUNNING and not entry.started:
            for future in list(entry.followers):
                _set_running(future)  # a cancelled one sends its message
            changed = True
        if status.dependency_failed:
            changed |= self._dead_dependency(entry)
        return changed

    def _job_gone(self, entry: _Entry, job_id: str, status: Optional[JobStatus]) -> None:
        """The job left the queue without a result, longer ago than the grace period."""
        state = status.state if status is not None else None
        key = entry.key
        record = claims.read_job(self.store, key) or {}
        same_job = str(record.get("job_id")) == job_id
        if self.store.has_result(key):
            self._resolve(entry)
            return
        cancelled = same_job and record.get("state") == claims.CANCELLED
        if entry.state is not State.SUBMITTED and not cancelled:
            if same_job and entry.attempts and self._lost_again(entry, job_id, status, record):
                return
            # a job of an earlier run that vanished without a result: submit it again (unless
            # another process already did: then follow its claim or job)
            self._drop_job(entry)
            if same_job:
                self._release(entry, record)
            self._decide(entry)
            return
        what = self.spawner.describe(job_id)
        final = self.spawner.final_state(job_id) or state
        ending = self.spawner.final_status(job_id) or status
        if ending is None and entry.last_status is not None and entry.last_status.cluster_failure:
            ending = entry.last_status  # e.g. requeued, then forgotten by the scheduler
        if ending is not None and ending.dependency_failed and not cancelled and entry.task.parents:
            # removed by the scheduler because a parent's job did not succeed (SLURM's
            # --kill-on-invalid-dep): fail with the parent's error, or go again after the parents'
            # current jobs when a parent's lost job is being submitted again
            self._dead_dependency(entry)
            return
        error = ended_without_result(self.store, key, job_id, final, what, record,
                                     exceeded=ending.exceeded if ending is not None else "",
                                     resources=entry.task.resources)
        if (ending is not None and ending.cluster_failure and isinstance(error, JobFailedError)
                and setup_error(self.store, key, job_id, final, what, record) is None):
            # the cluster's failure (not a cancellation, not a setup error of the call)
            entry.attempts.append({"job_id": job_id, "state": final or ending.state,
                                   "reason": ending.reason, "time": time.time()})
            if len(entry.attempts) <= entry.task.max_retries:
                self._retry(entry)
                return
            error = self._retries_exhausted(entry, error)
        self._fail(entry, error)

    def _lost_again(self, entry: _Entry, job_id: str, status: Optional[JobStatus], record: dict) -> bool:
        """An attached job of a call being retried (job.json lists the jobs the cluster lost) was
        lost by the cluster too: one more attempt. True when it was the last one allowed (the call
        failed); False when the call is to be submitted again."""
        ending = self.spawner.final_status(job_id) or status
        if ending is None or not ending.cluster_failure or any(a.get("job_id") == job_id for a in entry.attempts):
            return False
        final = self.spawner.final_state(job_id) or ending.state
        entry.attempts.append({"job_id": job_id, "state": final, "reason": ending.reason, "time": time.time()})
        if len(entry.attempts) <= entry.task.max_retries:
            return False
        error = ended_without_result(self.store, entry.key, job_id, final, self.spawner.describe(job_id), record,
                                     exceeded=ending.exceeded, resources=entry.task.resources)
        self._fail(entry, self._retries_exhausted(entry, error) if isinstance(error, JobFailedError) else error)
        return True

    def _retries_exhausted(self, entry: _Entry, error: JobFailedError) -> JobFailedError:
        """The error of a call whose every job the cluster lost: the last job's error with every
        attempt listed."""
        lines = [f"  {n}. {self.spawner.describe(a['job_id'])}: {a['state']}"
                 + (f" (reason {a['reason']})" if a["reason"] and a["reason"] not in a["state"] else "")
                 for n, a in enumerate(entry.attempts, 1)]
        retries = entry.task.max_retries
        message = (f"the cluster lost the job of task {entry.key} {len(entry.attempts)} time(s) "
                   f"(resource_dict['max_retries'] = {retries}); attempts:\n" + "\n".join(lines)
                   + f"\nThe last one: {error}")
        failed = JobFailedError(message, job_id=error.job_id, state=error.state)
        failed.attempts = [dict(a) for a in entry.attempts]  # type: ignore[attr-defined]
        try:
            claims.record_attempts(self.store, entry.key, entry.attempts)
        except Exception as problem:  # noqa: BLE001 - only the record: the error goes to the Future
            log.warning("executorlib: %s", write_failure("the attempts", self.store.path(entry.key, JOB_FILE), problem))
        return failed

    def _retry(self, entry: _Entry) -> None:
        """Submit the call again after a pause that doubles per attempt (the cluster lost its job:
        its node failed, it was preempted, ...). The task keeps its claim; job.json keeps the
        attempts."""
        n = len(entry.attempts)
        pause = min(self.spawner.retry_backoff * 2 ** (n - 1), self.spawner.max_retry_backoff)
        last = entry.attempts[-1]
        log.warning("executorlib: %s of task %s ended in state %s (the cluster's failure): submitting "
                    "it again in %.0f s (attempt %d of %d)", self.spawner.describe(last["job_id"]),
                    entry.key, last["state"], pause, n + 1, entry.task.max_retries + 1)
        try:
            claims.record_attempts(self.store, entry.key, entry.attempts)
        except Exception as error:  # noqa: BLE001 - only the record: the retry goes on
            log.warning("executorlib: %s", write_failure("the attempts", self.store.path(entry.key, JOB_FILE), error))
        if entry.job_id is not None:
            self._jobs.pop(entry.job_id, None)
            self._seen_running.discard(entry.job_id)
            self._monitor.forget(entry.job_id)
        entry.job_id = None
        entry.last_status = None
        entry.retry_at = time.monotonic() + pause
        self._move(entry, State.RETRY_WAIT)
        for child_key in self._deps.children(entry.key):  # released by the lost job, not submitted
            child = self._entries.get(child_key)
            if child is not None and child.state in (State.READY, State.WAITING_PARENTS):
                self._deps.add(child_key, entry.key)  # wait for the new job id
                self._move(child, State.WAITING_PARENTS)

    def _hold_refused(self, entry: _Entry, error: SubmissionError) -> None:
        """The job scheduler refused the job for a limit that passes (the user's queue is full,
        slurmctld did not answer): no failure. The call waits, and every submission of this loop
        pauses, 5 s, then 10 s, 20 s, ... (at most the spawner's max_retry_backoff)."""
        entry.refusals += 1
        pause = min(REFUSAL_BACKOFF * 2 ** (entry.refusals - 1), self.spawner.max_retry_backoff)
        if entry.refusals == 1 or pause >= self.spawner.max_retry_backoff:
            log.warning("executorlib: the job of task %s was refused for now (%s): submitting it again in %.0f s",
                        entry.key, error, pause)
        entry.retry_at = time.monotonic() + pause
        self._submit_hold_until = max(self._submit_hold_until, entry.retry_at)
        self._move(entry, State.RETRY_WAIT)

    def _retry_due(self, now: float) -> bool:
        """Calls whose pause is over go back to the spawner: after a lost job (after their
        parents' current jobs, when a parent's job is being resubmitted too), or after a refusal
        (first asking the spawner for a job carrying the claim's tag: sbatch may have taken the
        job although it reported a timeout)."""
        changed = False
        for key in list(self._in[State.RETRY_WAIT]):
            entry = self._entries[key]
            if entry.retry_at > now:
                continue
            changed = True
            if entry.refusals and entry.claim is not None and entry.claim.get("tag"):
                self._move(entry, State.FIND_TAGGED)
                continue
            for parent_key in entry.task.parents:
                parent_entry = self._entries.get(parent_key)
                if parent_entry is not None and parent_entry.job_id is None:
                    self._deps.add(key, parent_key)  # released when the parent has a job again
            self._move(entry, State.WAITING_PARENTS if self._deps.blocked(key) else State.READY)
        return changed

    def _look_for_results(self) -> bool:
        """Resolve the tasks whose jobs were running at the last status query and have written
        their result since: one ``stat`` per running job, no query to the job scheduler."""
        changed = False
        for job_id in list(self._seen_running):
            key = self._jobs.get(job_id)
            entry = self._entries.get(key) if key is not None else None
            if entry is None or entry.job_id != job_id:
                self._seen_running.discard(job_id)
            elif self.store.has_result(key):
                self._seen_running.discard(job_id)
                self._resolve(entry)
                changed = True
        return changed

    def _dead_dependency(self, entry: _Entry) -> bool:
        """The job scheduler holds a job forever because a job it depends on did not succeed.

        If a parent failed, the task fails with the parent's error. Otherwise the parent's job was
        replaced (a reattached parent whose job vanished and was submitted again): cancel the held
        job and submit the task again against the parents' current job ids.
        """
        for parent_key in entry.task.parents:
            info = self.store.read_result_info(parent_key) if self.store.has_result(parent_key) else None
            if info and not info["ok"]:
                self._fail(entry, self._stored_problem(entry.key, parent_key, info))
                return True
        old_job = entry.job_id
        if old_job is None:
            return False
        self._cancel_jobs([old_job])
        self._drop_job(entry)
        record = claims.read_job(self.store, entry.key)
        if record is not None and str(record.get("job_id")) == old_job:
            self._release(entry, record)
        for parent_key in entry.task.parents:
            parent_entry = self._entries.get(parent_key)
            if parent_entry is not None and parent_entry.job_id is None:
                self._deps.add(entry.key, parent_key)  # wait for the parent's new job id
        self._decide(entry)
        return True

    def _stored_problem(self, key: str, parent_key: str, info: dict) -> BaseException:
        """The error for ``key`` whose parent's stored result is an error: the parent's own
        exception (see :func:`_problem_of`), or a DependencyError when it cannot be read."""
        try:
            outcome = self.store.read_result(parent_key)
            if not outcome.ok and isinstance(outcome.error, BaseException):
                return _problem_of(parent_key, _as_future_error(outcome.error))
        except BaseException:  # noqa: BLE001 - unreadable: say what the record says
            pass
        return DependencyError(f"task {key} cannot run: its parent task {parent_key} failed "
                               f"with {info['error_type']}: {info['error_message']}")

    def _drop_job(self, entry: _Entry) -> None:
        if entry.job_id is not None:
            self._jobs.pop(entry.job_id, None)
            self._seen_running.discard(entry.job_id)
            self._monitor.forget(entry.job_id)
        entry.job_id = None
        entry.claim = None
        self._move(entry, None)

    # -- step 5: resolve ------------------------------------------------------------------------------
    def _resolve(self, entry: _Entry) -> None:
        outcome = self.spawner.take_outcome(entry.key)  # a call run from memory; else the store's
        for future in entry.followers:
            resolve_from_store(self.store, entry.key, future, outcome)
        problem = None
        for future in entry.followers:
            if future.done() and not future.cancelled() and future.exception() is not None:
                problem = _problem_of(entry.key, future.exception())  # type: ignore[arg-type]
                break
        self._finish(entry, problem)

    def _fail(self, entry: _Entry, error: BaseException) -> None:
        if entry.job_id is not None:
            self._cancel_jobs([entry.job_id])
        self._release_claim(entry)  # before the Futures: who sees the error sees no claim left
        for future in entry.followers:
            if _set_running(future):
                future.set_exception(error)
        self._finish(entry, _problem_of(entry.key, error))

    def _finish(self, entry: _Entry, problem: Optional[BaseException]) -> None:
        """The task left the loop: its children go on (or fail with ``problem``)."""
        key = entry.key
        if self._entries.get(key) is not entry:
            return
        del self._entries[key]
        self._drop_job(entry)
        for child_key in self._deps.remove(key):
            child = self._entries.get(child_key)
            if child is None:
                continue
            if problem is not None:
                # also children the job scheduler holds on this job (afterok): it would hold
                # them forever; and children released by its job id but not submitted yet
                self._fail(child, problem)
            elif self._deps.release(child_key, key):
                self._unblocked(child_key)

    def _cancel_jobs(self, job_ids: list[str]) -> None:
        try:
            self.spawner.cancel(job_ids)
        except Exception as error:  # noqa: BLE001
            log.warning("cancelling jobs %s failed: %s", job_ids, error)

    def _on_cancelled(self, future: Future) -> None:
        """A Future was cancelled; the task's job goes only when no Future follows it any more."""
        key = future._executorlib_key  # type: ignore[attr-defined]
        entry = self._entries.get(key)
        if entry is None or future not in entry.followers:
            return
        entry.followers.remove(future)
        if entry.followers:
            return
        if entry.job_id is not None:
            self._cancel_jobs([entry.job_id])
        else:
            self._release_claim(entry)
        self._finish(entry, DependencyError(f"parent task {key} was cancelled"))

    def _cancel_not_started(self) -> None:
        """shutdown(cancel_futures=True): every task not started is cancelled (its job too);
        tasks already running finish, as in concurrent.futures."""
        self._cancelling = True
        job_ids = []
        for entry in list(self._entries.values()):
            if entry.started:
                continue
            if entry.job_id is not None:
                job_ids.append(entry.job_id)
            else:
                self._release_claim(entry)
            del self._entries[entry.key]
            self._drop_job(entry)
            self._deps.remove(entry.key)
            for future in entry.followers:
                if not future.cancel() and not future.done():  # started meanwhile (another thread)
                    future.set_exception(CancelledError(
                        f"task {entry.key} was cancelled by shutdown(cancel_futures=True)"))
        if job_ids:
            self._cancel_jobs(job_ids)
