"""The status monitor: what the job scheduler's answer means for a task, in one place.

Used by the scheduler loop of an Executor and by the watcher of ``get_future_from_cache``. Jobs
are asked about in one query per pass; a job that left the queue without writing a result is
given a grace period (the result may still be on its way through a network file system), then
judged: cancelled by a user (job.json says so), failed in its setup (the function could not be
imported, the working directory is missing: not a result, a rerun runs again), or ended without
a result (its final state and the tail of its log).
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Callable, Optional

from executorlib import claims
from executorlib.errors import CacheCorruptedError, JobFailedError

if TYPE_CHECKING:
    from executorlib.spawners.base import JobStatus, Spawner
    from executorlib.store import TaskStore

__all__ = ["Seen", "StatusMonitor", "StatusUnavailable", "ended_without_result", "job_failure", "limit_hint",
           "log_tail", "remember_output", "remembered_output"]

log = logging.getLogger("executorlib")

#: give up on a job scheduler that has not answered status queries for this long (seconds)
STATUS_FAILURE_TIMEOUT = 600.0
#: how many trailing lines of a job's log an error message quotes
LOG_TAIL_LINES = 15


class Seen(enum.Enum):
    """What one status query says about one job."""

    QUEUED = "queued"  # the job scheduler holds it, not started
    RUNNING = "running"
    RESULT = "result"  # left the queue, and its result is there
    MISSING = "missing"  # left the queue without a result, within the grace period
    GONE = "gone"  # left the queue without a result for longer than the grace period


class StatusUnavailable(Exception):
    """The job scheduler did not answer status queries for STATUS_FAILURE_TIMEOUT seconds."""


class StatusMonitor:
    """Asks a spawner about many jobs at once and remembers since when a job is missing."""

    def __init__(self, failure_timeout: float = STATUS_FAILURE_TIMEOUT):
        self.failure_timeout = failure_timeout
        self._missing_since: dict[str, float] = {}
        self._failing_since: Optional[float] = None

    def query(self, spawner: "Spawner", job_ids: list[str]) -> Optional[dict[str, "JobStatus"]]:
        """The states of ``job_ids`` (a job the scheduler forgot is absent); None after a failed
        query (retried next pass); StatusUnavailable once queries failed for too long."""
        try:
            states = spawner.states(job_ids)
        except Exception as error:  # noqa: BLE001 - a scheduler hiccup: retry, then give up
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
                log.warning("querying the job scheduler failed (will retry): %s", error)
            elif now - self._failing_since > self.failure_timeout:
                raise StatusUnavailable(
                    f"the job scheduler did not answer status queries for {self.failure_timeout:.0f} s: "
                    f"{error}") from error
            return None
        self._failing_since = None
        return states

    def judge(self, job_id: str, status: Optional["JobStatus"], has_result: Callable[[], bool],
              grace: float, now: Optional[float] = None) -> Seen:
        """What ``status`` (None: not in the queue) means; only a job out of the queue costs a
        look at the disk (``has_result``)."""
        if status is not None and status.active:
            self._missing_since.pop(job_id, None)
            return Seen.RUNNING if status.running else Seen.QUEUED
        if has_result():
            self._missing_since.pop(job_id, None)
            return Seen.RESULT
        now = time.monotonic() if now is None else now
        since = self._missing_since.setdefault(job_id, now)
        return Seen.GONE if now - since > grace else Seen.MISSING

    def is_missing(self, job_id: str) -> bool:
        """True while ``job_id`` is out of the queue without a result, within its grace period."""
        return job_id in self._missing_since

    def forget(self, job_id: Optional[str]) -> None:
        if job_id is not None:
            self._missing_since.pop(job_id, None)


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


#: how many processes' output tails are kept in memory (the most recent ones)
_MAX_REMEMBERED = 256
_remembered: "OrderedDict[str, tuple[str, str]]" = OrderedDict()
_remembered_lock = threading.Lock()


def remember_output(log_path: os.PathLike | str, tail: str, log_error: str = "") -> None:
    """Keep the last lines a local process printed (``tail``), and why its log ``log_path``
    could not be written (``log_error``, e.g. a full disk), for :func:`job_failure`: the log
    may hold none of it."""
    with _remembered_lock:
        path = os.path.abspath(log_path)
        _remembered.pop(path, None)
        _remembered[path] = (tail, log_error)
        while len(_remembered) > _MAX_REMEMBERED:
            _remembered.popitem(last=False)


def remembered_output(log_path: Optional[os.PathLike | str]) -> tuple[str, str]:
    """(tail, log error) kept by :func:`remember_output` for ``log_path``, else ('', '')."""
    if log_path is None:
        return "", ""
    with _remembered_lock:
        return _remembered.get(os.path.abspath(log_path), ("", ""))


#: what a job that ran into a limit ran into, per resource_dict key
_LIMITS = {
    "run_time_max": ("its run time limit", "s", "the partition's default time limit applied"),
    "memory_max": ("its memory limit", "", "the partition's default memory applied"),
}


def limit_hint(exceeded: str, resources: Optional[dict]) -> str:
    """What to raise when a job ran into the limit of the resource_dict key ``exceeded``, with the
    value that was used (or that none was set); '' for no limit."""
    if exceeded not in _LIMITS:
        return ""
    what, unit, default = _LIMITS[exceeded]
    if resources is None:  # not known here (e.g. the watcher of get_future_from_cache)
        return f"The job ran into {what}: raise resource_dict[{exceeded!r}]."
    value = resources.get(exceeded)
    used = (f"it was {value!r}{' ' + unit if unit else ''}" if value is not None
            else f"none was set: {default}")
    return f"The job ran into {what}: raise resource_dict[{exceeded!r}] ({used})."


def job_failure(store: "TaskStore", key: str, job_id: str, state: Optional[str], what: str,
                exceeded: str = "", resources: Optional[dict] = None) -> JobFailedError:
    """The error of a task whose job ended without a result: state, job id, what limit to raise
    (``exceeded``, a resource_dict key, with the value in ``resources``), tail of its log (or,
    when the log could not be written, of the output this process kept in memory)."""
    final = state or "UNKNOWN (no longer known to the scheduler)"
    log_path = claims.job_log(store, key)
    message = f"{what} for task {key} ended in state {final} without writing a result."
    hint = limit_hint(exceeded, resources)
    if hint:
        message += f"\n{hint}"
    tail = log_tail(log_path)
    kept, log_error = remembered_output(log_path)
    if log_error:
        message += f"\nIts output could not be written to {log_path}: {log_error}"
    if tail and not log_error:
        message += f"\nLast lines of {log_path}:\n{tail}"
    elif kept:
        message += f"\nLast lines of its output:\n{kept}"
    elif tail:
        message += f"\nLast lines of {log_path}:\n{tail}"
    return JobFailedError(message, job_id=job_id, state=final)


def setup_error(store: "TaskStore", key: str, job_id: str, state: Optional[str], what: str,
                record: Optional[dict] = None) -> Optional[Exception]:
    """The failure of the job's setup (importing the function, the working directory, ...) that
    it left in the folder, as the task's error; None when it left none. Not a result: a rerun
    runs the call again."""
    reader = getattr(store, "read_setup_error", None)
    if reader is None:
        return None
    since = None
    if record and record.get("job_id") == str(job_id):
        try:
            since = float(record["time"]) - 5.0  # the record of this job, not an earlier attempt's
        except (KeyError, TypeError, ValueError):
            since = None
    try:
        found = reader(key, since=since)
    except Exception:  # noqa: BLE001 - an unreadable record: the generic failure explains it
        return None
    if not found:
        return None
    if found.get("error_type") == "executorlib.errors.CacheCorruptedError":
        return CacheCorruptedError(found["message"])  # the task file itself is damaged
    final = state or "UNKNOWN"
    return JobFailedError(f"{what} for task {key} could not run the call (state {final}): {found['message']}",
                          job_id=job_id, state=final)


def ended_without_result(store: "TaskStore", key: str, job_id: str, state: Optional[str], what: str,
                         record: Optional[dict] = None, exceeded: str = "",
                         resources: Optional[dict] = None) -> BaseException:
    """Why the job ``job_id`` of ``key`` left the queue without a result: a user cancelled it, its
    setup failed, or it ended (killed, timed out, ...) in ``state`` (``exceeded``: the
    resource_dict key whose limit it ran into, see :func:`job_failure`)."""
    record = claims.read_job(store, key) if record is None else record
    if record and record.get("state") == claims.CANCELLED and str(record.get("job_id")) == str(job_id):
        return CancelledError(f"{what} of task {key} was cancelled (executorlib.cancel_cache_jobs or "
                              "'executorlib cancel')")
    error = setup_error(store, key, job_id, state, what, record)
    if error is not None:
        return error
    return job_failure(store, key, job_id, state, what, exceeded, resources)
