"""Tools for a cache directory: what is in it, Futures of its tasks, cancelling and cleaning.

Every task of a cache is in one of five states, derived from its folder (and, where a job was
submitted, from one status query per backend to that backend's job scheduler)::

    done       result.h5 holds a value
    failed     result.h5 holds an error, or the task's job is gone without writing a result
    cancelled  its job was cancelled with cancel_cache_jobs (job.json says so), no result
    running    its job is running, or was submitted and its state could not be asked
    pending    waiting: its job is queued, or it has no job yet (claimed, or never submitted)

Nothing here unpickles a result or a task unless asked, so listing a cache is fast and safe: the
``input_args``, ``input_kwargs`` and ``output`` of a :func:`get_cache_data` record are unpickled
only when they are read (and ``executorlib show`` loads a task's arguments only from a cache no
one else can write to). Unpickling runs code: read them only from a cache you trust.
"""

from __future__ import annotations

import datetime
import functools
import importlib
import os
import shutil
import threading
import time
import uuid
from concurrent.futures import CancelledError, Future
from typing import Any, Iterable, Optional, Union

from executorlib.claims import claim_is_stale
from executorlib.errors import CacheCorruptedError, JobFailedError
from executorlib.files import TASK_FILE
from executorlib.monitor import Seen, StatusMonitor, ended_without_result
from executorlib.packed_queue import PACKED_DIR
from executorlib.packed_queue import sweep as packed_sweep
from executorlib.result_index import INDEX_DIR
from executorlib.spawners.base import JobStatus, Spawner
from executorlib.store import TaskStore, folder_size, write_cancelled

__all__ = ["STATES", "CacheRecord", "get_cache_data", "get_key", "get_future_from_cache", "cancel_cache_jobs",
           "clean_cache", "terminate_tasks_in_cache", "terminate_task_in_cache"]

STATES = ("pending", "running", "done", "failed", "cancelled")
#: a task folder with no job record for this long, and no result, has nothing that will run it
NO_JOB_GRACE = 2.0

PathLike = Union[str, os.PathLike]


# -- backends --------------------------------------------------------------------------------------
def _backend_name(name: str) -> str:
    """The Executor backend for ``name``: a backend (``slurm_submission``) or a spawner's name as
    job.json records it (``slurm``)."""
    from executorlib.executor import BACKENDS

    if name in BACKENDS:
        return name
    for backend, (module, cls, _) in BACKENDS.items():
        try:
            spawner_class = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError):
            continue
        if getattr(spawner_class, "name", None) == name:
            return backend
    raise ValueError(f"backend {name!r} is not known. Valid backends are: {', '.join(map(repr, BACKENDS))}")


def _make_spawner(name: str, pysqa_config_directory: Optional[PathLike] = None) -> Spawner:
    """A spawner of backend ``name`` that only asks about, and cancels, existing jobs."""
    from executorlib.executor import BACKENDS

    if name.endswith("+packed"):  # calls served by worker jobs (max_jobs): their ids name their folder
        from executorlib.spawners.packed import PackedSpawner, queries_only

        return queries_only(PackedSpawner, _make_spawner(name[:-len("+packed")], pysqa_config_directory))
    module, cls, submission = BACKENDS[_backend_name(name)]
    options = {"pysqa_config_directory": pysqa_config_directory} if submission and pysqa_config_directory else {}
    return getattr(importlib.import_module(module), cls)(**options)


class _Spawners:
    """Spawners built on demand, one per backend; a backend that cannot be built is remembered."""

    def __init__(self, override: Optional[str] = None, pysqa_config_directory: Optional[PathLike] = None):
        self.override = override
        self.pysqa_config_directory = pysqa_config_directory
        self._built: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, recorded: Optional[str]) -> Spawner:
        name = self.override or recorded or "local"
        with self._lock:
            if name not in self._built:
                try:
                    self._built[name] = _make_spawner(name, self.pysqa_config_directory)
                except Exception as error:  # noqa: BLE001 - e.g. pysqa missing: raised to the caller
                    self._built[name] = error
            spawner = self._built[name]
        if isinstance(spawner, Exception):
            raise spawner
        return spawner

    def close(self) -> None:
        for spawner in self._built.values():
            if isinstance(spawner, Spawner):
                spawner.close()
        self._built.clear()


_Job = tuple  # (recorded backend, job id)


def _query(spawners: _Spawners, jobs: Iterable[_Job]) -> dict[_Job, Optional[JobStatus]]:
    """(backend, job id) -> status, one query per backend.

    A job the scheduler no longer knows maps to None; a job whose backend could not be asked is
    left out."""
    by_backend: dict[Optional[str], list[str]] = {}
    for backend, job_id in jobs:
        by_backend.setdefault(backend, []).append(job_id)
    found: dict[_Job, Optional[JobStatus]] = {}
    for backend, job_ids in by_backend.items():
        try:
            states = spawners.get(backend).states(job_ids)
        except Exception:  # noqa: BLE001 - no scheduler here, pysqa missing...: state unknown
            continue
        for job_id in job_ids:
            found[(backend, job_id)] = states.get(job_id)
    return found


# -- get_cache_data ------------------------------------------------------------------------------
def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _open_store(cache_directory: PathLike) -> TaskStore:
    return TaskStore(cache_directory, create=False, use_index=False)


def _collect(store: TaskStore, keys: Optional[Iterable[str]], query: bool,
             spawners: Optional[_Spawners] = None) -> list[tuple[dict, Optional[dict]]]:
    """(flat record, job.json) of each task, in order of creation."""
    if isinstance(keys, str):
        keys = [keys]
    keys = store.keys() if keys is None else [k for k in dict.fromkeys(keys) if store.task_dir(k).is_dir()]
    jobs = {key: store.read_job(key) for key in keys}
    own = spawners is None
    spawners = spawners or _Spawners()
    statuses: dict[_Job, Optional[JobStatus]] = {}
    try:
        if query:  # ask only about jobs without a result, before reading results (no race)
            wanted = {(job.get("backend"), str(job["job_id"])) for key, job in jobs.items()
                      if job and job.get("state") == "submitted" and job.get("job_id")
                      and not store.has_result(key)}
            statuses = _query(spawners, wanted)
        records = [(_record(store, key, jobs[key], statuses), jobs[key]) for key in keys]
    finally:
        if own:
            spawners.close()
    records.sort(key=lambda pair: (pair[0]["created"] or 0.0, pair[0]["key"]))
    return records


def _record(store: TaskStore, key: str, job: Optional[dict], statuses: dict[_Job, Optional[JobStatus]]) -> dict:
    record: dict[str, Any] = {
        "key": key, "function": key.rsplit("_", 1)[0], "state": "pending",
        "job_id": None, "job_state": None, "backend": None,
        "created": None, "submitted": None, "finished": None, "runtime": None,
        "error": None, "size": folder_size(store.task_dir(key)), "path": str(store.task_dir(key)),
    }
    problems = []
    try:
        info = store.read_task_info(key)
        record["function"], record["created"] = info["function_name"], info["created"]
    except FileNotFoundError:
        pass  # being written right now, or only a result is left
    except CacheCorruptedError as error:
        problems.append(f"CacheCorruptedError: {error}")
    if job:
        record["job_id"], record["backend"] = job.get("job_id"), job.get("backend")
        if job.get("state") in ("submitted", "cancelled"):
            record["submitted"] = job.get("time")
    try:
        result = store.read_result_info(key)
    except CacheCorruptedError as error:
        result, problems = None, [f"CacheCorruptedError: {error}"]
        record["state"] = "failed"
    if result is not None:
        record["state"] = "done" if result["ok"] else "failed"
        record["finished"], record["runtime"] = result["finished"], result["runtime"]
        if not result["ok"]:
            record["error"] = _short(f"{result['error_type']}: {result['error_message']}")
        return record
    if problems:
        record["state"], record["error"] = "failed", _short(problems[0])
        return record
    state = (job or {}).get("state")
    if state == "cancelled":
        record["state"] = "cancelled"
    elif state == "submitted" and record["job_id"]:
        job_id = record["job_id"] = str(record["job_id"])
        asked = (record["backend"], job_id)
        if asked not in statuses:  # not asked, or the scheduler could not be asked
            record["state"], record["job_state"] = "running", "UNKNOWN"
        elif statuses[asked] is not None and statuses[asked].active:  # type: ignore[union-attr]
            status = statuses[asked]
            record["state"] = "running" if status.running else "pending"
            record["job_state"] = status.state
        else:
            status = statuses[asked]  # None: the scheduler forgot it (no per-job query here)
            final = status.state if status is not None else None
            record["state"], record["job_state"] = "failed", final or "GONE"
            record["error"] = (f"JobFailedError: job {job_id} ended in state {final or 'UNKNOWN'} "
                               "without writing a result")
    return record


class _NotLoaded:
    """The value of a lazy field of a :class:`CacheRecord` before it is read."""

    __slots__ = ("name", "load")

    def __init__(self, name: str, load: Any):
        self.name = name
        self.load = load

    def __repr__(self) -> str:
        return f"<{self.name}: not loaded yet, read record[{self.name!r}]>"


#: the fields of a get_cache_data record that are unpickled only when read
LAZY_FIELDS = ("input_args", "input_kwargs", "output")


class CacheRecord(dict):
    """A record of :func:`get_cache_data`: a dict whose ``input_args``, ``input_kwargs`` and
    ``output`` are unpickled from the task's files the first time they are read (``record[...]``,
    ``get``, ``items``, ``values``), so that listing a large cache stays fast.

    ``input_args`` (a tuple) and ``input_kwargs`` (a dict) are the call's arguments as stored, a
    Future argument as a ``FutureRef`` naming its parent's key (``None`` when the task file is
    gone); ``output`` is the result of a done task, else ``None``. C code that reads the dict
    directly (``pandas.DataFrame(records)``) sees the placeholder of a field not read yet; call
    :meth:`loaded` first (``pandas.DataFrame([r.loaded() for r in records])``).
    """

    def __getitem__(self, name: str) -> Any:
        value = dict.__getitem__(self, name)
        if isinstance(value, _NotLoaded):
            value = value.load()
            dict.__setitem__(self, name, value)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def items(self):  # type: ignore[override]
        return [(name, self[name]) for name in self]

    def values(self):  # type: ignore[override]
        return [self[name] for name in self]

    def loaded(self) -> dict:
        """A plain dict of every field, the lazy ones read."""
        return dict(self.items())


def _load_input(store: TaskStore, key: str, index: int) -> Any:
    if not store.has_task(key):
        return None
    return store.read_task(key)[index]


def _load_output(store: TaskStore, key: str) -> Any:
    info = store.read_result_info(key)
    if info is None or not info["ok"]:
        return None
    return store.read_result(key).value


def _queue_id(job_id: Any) -> Any:
    """The job id as the original's ``queue_id``: an int where the scheduler's id is one."""
    if job_id is None:
        return None
    text = str(job_id)
    return int(text) if text.isdigit() else text


def get_cache_data(cache_directory: PathLike, query: bool = True) -> list[CacheRecord]:
    """One flat dict per task of the cache (a :class:`CacheRecord`).

    Keys: ``key``, ``function``, ``state`` (one of :data:`STATES`), ``job_id``, ``job_state``
    (the job scheduler's word when asked), ``backend``, ``created``, ``submitted``, ``finished``
    (seconds since the epoch), ``runtime`` (s), ``error`` ("Type: message"), ``size`` (bytes of
    the task folder) and ``path``; and, under the original executorlib's names, ``filename`` (the
    task's ``task.h5``), ``queue_id`` (the job id, an int where the scheduler's id is one),
    ``input_args``, ``input_kwargs`` and ``output``, which are unpickled only when read (see
    :class:`CacheRecord`). ``query=False`` does not ask the job scheduler: submitted jobs without
    a result then count as running. Listing unpickles nothing.
    """
    store = _open_store(cache_directory)
    records = []
    for flat, _ in _collect(store, None, query):
        record = CacheRecord(flat)
        key = flat["key"]
        dict.update(record, {
            "filename": str(store.path(key, TASK_FILE)),
            "queue_id": _queue_id(flat["job_id"]),
            "input_args": _NotLoaded("input_args", functools.partial(_load_input, store, key, 1)),
            "input_kwargs": _NotLoaded("input_kwargs", functools.partial(_load_input, store, key, 2)),
            "output": _NotLoaded("output", functools.partial(_load_output, store, key)),
        })
        records.append(record)
    return records


# -- get_future_from_cache -----------------------------------------------------------------------
class _Watch:
    __slots__ = ("store", "key", "future", "spawners", "missing_since", "job_id", "backend")

    def __init__(self, store: TaskStore, key: str, future: Future, spawners: _Spawners):
        self.store, self.key, self.future, self.spawners = store, key, future, spawners
        self.missing_since: Optional[float] = None  # since when no job (nor a live claim) is seen
        self.job_id: Optional[str] = None
        self.backend: Optional[str] = None

    def follow(self, job: Optional[dict], monitor: StatusMonitor) -> None:
        """Track the job that job.json names now; a new job restarts the grace period."""
        job_id = str(job["job_id"]) if job and job.get("state") == "submitted" and job.get("job_id") else None
        if job_id != self.job_id:
            monitor.forget(self.label)
            self.job_id, self.missing_since = job_id, None
        self.backend = job.get("backend") if job else None

    @property
    def label(self) -> Optional[str]:
        """The job, as the monitor knows it (job ids of two backends may be equal)."""
        return None if self.job_id is None else f"{self.backend}:{self.job_id}"

    def grace(self) -> float:
        try:
            return max(self.spawners.get(self.backend).result_grace_period, 0.5)
        except Exception:  # noqa: BLE001
            return 1.0


class _Watcher:
    """One background thread for every Future of get_future_from_cache: one status query per
    backend and pass, passes backing off while nothing changes; the states mean what they mean
    for an Executor (executorlib.monitor)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: list[_Watch] = []
        self._thread: Optional[threading.Thread] = None
        self._wake = threading.Event()
        self._spawners: dict[Optional[str], _Spawners] = {}  # shared: one query per backend and pass
        self._monitor = StatusMonitor()

    def spawners(self, backend: Optional[str]) -> _Spawners:
        with self._lock:
            return self._spawners.setdefault(backend, _Spawners(backend))

    def add(self, watch: _Watch) -> None:
        with self._lock:
            self._watches.append(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name="executorlib-cache-watcher",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def _main(self) -> None:
        interval = 0.02
        while True:
            with self._lock:
                watches = [w for w in self._watches if not w.future.done()]
                self._watches = watches
                if not watches:
                    self._thread = None
                    return
            try:
                changed = self._pass(watches)
            except BaseException as error:  # noqa: BLE001 - a bug here must not leave Futures hanging
                for watch in watches:
                    _fail(watch.future, RuntimeError(f"watching the cache failed: {error!r}"))
                changed = True
            interval = 0.02 if changed else min(interval * 1.5, 1.0)
            self._wake.wait(interval)
            self._wake.clear()

    def _pass(self, watches: list[_Watch]) -> bool:
        changed = False
        asking: dict[int, set[_Job]] = {}  # id(spawners) -> jobs
        for watch in watches:
            if watch.store.has_result(watch.key):
                _resolve(watch)
                changed = True
                continue
            job = watch.store.read_job(watch.key)
            watch.follow(job, self._monitor)
            if watch.job_id is not None:
                asking.setdefault(id(watch.spawners), set()).add((watch.backend, watch.job_id))
            elif self._without_job(watch, job):
                changed = True
        if not asking:
            return changed
        groups = {id(w.spawners): w.spawners for w in watches}
        statuses = {gid: _query(groups[gid], jobs) for gid, jobs in asking.items()}
        now = time.monotonic()
        for watch in watches:
            if watch.future.done() or watch.job_id is None:
                continue
            found = statuses.get(id(watch.spawners), {})
            if (watch.backend, watch.job_id) not in found:  # could not ask: wait for the result
                continue
            status = found[(watch.backend, watch.job_id)]
            seen = self._monitor.judge(watch.label, status, lambda w=watch: w.store.has_result(w.key),  # type: ignore[arg-type]
                                       watch.grace(), now)
            if seen is Seen.RUNNING and not watch.future.running():
                watch.future.set_running_or_notify_cancel()
            elif seen is Seen.RESULT:
                _resolve(watch)
                changed = True
            elif seen is Seen.GONE:
                self._monitor.forget(watch.label)
                _fail(watch.future, _job_gone(watch, status))
                changed = True
        return changed

    @staticmethod
    def _without_job(watch: _Watch, job: Optional[dict]) -> bool:
        """Settle tasks that have no live job; True when the Future was resolved."""
        state = (job or {}).get("state")
        if state == "cancelled":
            _fail(watch.future, CancelledError(f"the job of task {watch.key} was cancelled"))
            return True
        if state == "claimed" and not claim_is_stale(job):  # type: ignore[arg-type]
            watch.missing_since = None
            return False
        now = time.monotonic()
        if watch.missing_since is None:
            watch.missing_since = now
            return False
        if now - watch.missing_since <= NO_JOB_GRACE:
            return False
        if state == "claimed":
            why = f"the process that claimed it ({job.get('host')}, pid {job.get('pid')}) ended before submitting a job"  # type: ignore[union-attr]
        else:
            why = "no job was submitted for it"
        _fail(watch.future, JobFailedError(
            f"task {watch.key} has no result and nothing will write one: {why}. Submit the call "
            f"again with an Executor using cache_directory={str(watch.store.directory)!r}."))
        return True


_WATCHER = _Watcher()


def _fail(future: Future, error: BaseException) -> None:
    if not future.done() and (future.running() or future.set_running_or_notify_cancel()):
        future.set_exception(error)


def _resolve(watch: _Watch) -> None:
    from executorlib.scheduler import resolve_from_store

    resolve_from_store(watch.store, watch.key, watch.future)


def _job_gone(watch: _Watch, status: Optional[JobStatus]) -> BaseException:
    job_id = watch.job_id
    final = status.state if status is not None else None
    exceeded = status.exceeded if status is not None else ""
    try:
        spawner = watch.spawners.get(watch.backend)
        final = spawner.final_state(job_id) or final  # type: ignore[arg-type]
        ending = spawner.final_status(job_id)  # type: ignore[arg-type]
        exceeded = ending.exceeded if ending is not None else exceeded
        what = spawner.describe(job_id)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001
        what = f"job {job_id}"
    return ended_without_result(watch.store, watch.key, job_id, final, what,  # type: ignore[arg-type]
                                exceeded=exceeded)


def get_key(future: Future) -> str:
    """The cache key of a Future of an executorlib Executor: the name of its task's folder, as
    listed by :func:`get_cache_data` and ``python -m executorlib list``, and what
    :func:`get_future_from_cache` takes in another process."""
    key = getattr(future, "_executorlib_key", None)
    if key is None:
        raise TypeError(f"get_key() needs a Future returned by an executorlib Executor, got {future!r}")
    return key


def get_future_from_cache(cache_directory: PathLike, key: Optional[str] = None, backend: Optional[str] = None,
                          *, cache_key: Optional[str] = None) -> Future:
    """A Future of the task ``key`` in ``cache_directory``, resolved when its result appears.

    ``cache_key=...`` is the original executorlib's name of ``key`` (give one of the two).

    A finished task resolves at once (its stored error is raised by ``result()``). Otherwise a
    background thread watches the task: the Future fails with JobFailedError when its job is known
    to be gone without a result (asked through ``backend``, by default the backend recorded in the
    task's job.json), or when nothing was submitted to run it. The Future may be passed as an
    argument to ``Executor.submit`` like any Future of an Executor.
    """
    if (key is None) == (cache_key is None):
        raise TypeError("get_future_from_cache() needs the task's key, as key=... or cache_key=... "
                        f"(not both), got key={key!r}, cache_key={cache_key!r}")
    key = key if key is not None else cache_key
    store = _open_store(cache_directory)
    if not store.has_result(key) and not store.has_task(key):
        known = store.keys()
        close = [k for k in known if k.startswith(key)]
        hint = f" Did you mean {close[0]!r}?" if len(close) == 1 else ""
        raise KeyError(f"task {key!r} is not in cache directory {str(store.directory)!r} "
                       f"({len(known)} task(s) there).{hint}")
    future: Future = Future()
    future._executorlib_key = key  # type: ignore[attr-defined]
    if store.has_result(key):
        _resolve(_Watch(store, key, future, _Spawners()))
        return future
    spawners = _WATCHER.spawners(backend)
    if backend is not None:
        spawners.get(None)  # an unknown backend or a missing package fails here, not later
    else:
        job = store.read_job(key)
        if job and job.get("state") == "submitted":
            spawners.get(job.get("backend"))
    _WATCHER.add(_Watch(store, key, future, spawners))
    return future


# -- cancel_cache_jobs and clean_cache -------------------------------------------------------------
#: clean_cache keeps task folders that changed less than this many seconds ago (``grace``): a live
#: Executor may be writing the task right now, or may not have read its result yet
CLEAN_GRACE = 60.0

#: why clean_cache kept a task it was asked to delete (the ``kept`` field of its record)
KEEP_REASONS = {
    "job": "its job is queued or running (or its scheduler could not be asked)",
    "claim": "a live process claimed it and is submitting its job",
    "client": "the process that submitted it is alive and may not have read its result yet",
    "parent": "a task that is kept takes its result as an argument",
    "young": "its folder changed within the grace period",
}


class CleanResult(list):
    """What :func:`clean_cache` returns: the records of the tasks deleted (a list, as
    get_cache_data gives them), plus

    - ``kept``: the records of the selected tasks that were kept, each with a ``kept`` field
      naming the reason (a key of :data:`KEEP_REASONS`);
    - ``removed_temporaries``: how many files of writers that were killed mid-write (``.*.tmp``),
      of interrupted cleans (``.deleted-*``) and lock files of ended processes were removed.
    """

    def __init__(self, deleted: Iterable[dict] = (), kept: Iterable[dict] = (), removed_temporaries: int = 0):
        super().__init__(deleted)
        self.kept: list[dict] = list(kept)
        self.removed_temporaries = removed_temporaries

    def kept_counts(self) -> dict[str, int]:
        """reason -> how many tasks were kept for it (in the order of KEEP_REASONS)."""
        counts = {reason: 0 for reason in KEEP_REASONS}
        for record in self.kept:
            counts[record["kept"]] = counts.get(record["kept"], 0) + 1
        return {reason: n for reason, n in counts.items() if n}


def _live_job(record: dict, job: Optional[dict]) -> bool:
    """True while a job (or a live submitter's claim) may still write into the task folder."""
    from executorlib.claims import claim_is_stale

    if record["state"] not in ("pending", "running") or not job:
        return False
    if job.get("state") == "submitted":
        return True
    return job.get("state") == "claimed" and not claim_is_stale(job)


def _newest_change(folder: PathLike) -> Optional[int]:
    """The latest mtime (ns) of the folder and of the entries in it; None when it is gone.

    Every write goes through a temporary file renamed into place, which changes the folder's
    own mtime too; reading changes nothing, and neither does renaming the folder itself."""
    try:
        newest = os.stat(folder).st_mtime_ns
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime_ns)
                except OSError:
                    continue  # renamed or removed meanwhile: the folder's mtime shows it
    except OSError:
        return None
    return newest


def _owned_by_live_client(job: Optional[dict]) -> bool:
    """True when ``job`` (a claim, job or cancel record) names another process that is alive."""
    from executorlib.claims import claim_is_stale, is_own_claim

    if not job or not job.get("host") or is_own_claim(job):
        return False
    return not claim_is_stale(job)


def _keep_reason(record: dict, job: Optional[dict], newest: Optional[int], grace: float,
                 now: float) -> Optional[str]:
    """Why the task of ``record`` must not be deleted now (a key of KEEP_REASONS), or None;
    ``newest`` is its folder's latest change (ns) from before its record was read."""
    from executorlib.claims import claim_is_stale, is_own_claim

    state = (job or {}).get("state")
    if record["state"] in ("pending", "running") and state == "submitted":
        return "job"
    if state == "claimed" and not claim_is_stale(job):  # type: ignore[arg-type]
        return "claim"
    if _owned_by_live_client(job):
        return "client"
    if newest is None:
        return "young"  # it appeared while clean was looking
    if grace > 0 and not (job and is_own_claim(job)) and now - newest / 1e9 < grace:
        return "young"  # this process's own tasks are exempt: it knows it is not writing them
    return None


def _parents(store: TaskStore, key: str) -> list[str]:
    try:
        return list(store.read_task_info(key).get("parents") or [])
    except Exception:  # noqa: BLE001 - no task file (yet), or a damaged one: no parents known
        return []


def _delete(store: TaskStore, key: str, job: Optional[dict] = None, newest: Optional[int] = None,
            check: bool = False) -> bool:
    """Remove a task folder: renamed away first, so it vanishes at once for every reader.

    With ``check`` a folder whose latest change is no longer ``newest`` (or whose job.json is no
    longer ``job``) is kept, and one that a writer changed while it was moved away is put back:
    a live Executor writes into it. False when the folder was kept (or was already gone)."""
    folder = store.task_dir(key)
    if check and (newest is None or _newest_change(folder) != newest or store.read_job(key) != job):
        return False
    trash = store.directory / f".deleted-{key}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return False
    if check and _newest_change(trash) != newest:
        try:
            os.rename(trash, folder)  # a live writer raced us: give its folder back
            return False
        except OSError:
            pass  # it made the folder anew meanwhile: what was moved away is an old copy
    shutil.rmtree(trash, ignore_errors=True)
    return True


def _sweep(store: TaskStore, keys: Iterable[str], grace: float, now: float) -> int:
    """Remove what killed writers left: stale temporaries in task folders and in the result
    packs, folders of interrupted cleans, lock files of ended claimants. Returns how many."""
    from executorlib.files import remove_stale_temporaries

    removed = 0
    for key in keys:
        removed += len(remove_stale_temporaries(store.task_dir(key)))
    removed += len(remove_stale_temporaries(store.directory / INDEX_DIR))
    removed += len(remove_stale_temporaries(store.directory))
    removed += packed_sweep(store.directory, grace, now)
    try:
        entries = [e for e in os.scandir(store.directory) if e.name.startswith(".deleted-")]
    except OSError:
        entries = []
    for entry in entries:  # a clean killed between its rename and its rmtree
        newest = _newest_change(entry.path)
        if newest is not None and now - newest / 1e9 >= grace:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed + _remove_dead_locks(store, grace, now)


def _remove_dead_locks(store: TaskStore, grace: float, now: float) -> int:
    """Lock files (executorlib.claims) that no process holds any more: their owners ended."""
    import fcntl

    from executorlib import claims

    folder = store.directory / getattr(claims, "LOCK_DIR", ".claims")
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    removed = 0
    for entry in entries:
        try:
            if not entry.name.endswith(".lock") or now - entry.stat().st_mtime < grace:
                continue  # a new owner opens its lock file before it locks it
            fd = os.open(entry.path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while the owner lives
            os.unlink(entry.path)
            removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    try:
        folder.rmdir()  # only when empty
    except OSError:
        pass
    return removed


def _drop_own_lock(store: TaskStore) -> None:
    """A purge that kept nothing: this process holds no live claim here, so its lock file goes
    too (its next claim makes a new one) and the cache directory is left empty."""
    from executorlib import claims

    drop = getattr(claims, "drop_own_lock", None)
    if drop is not None:
        drop(store.directory)
        return
    held = getattr(claims, "_locks", {}).pop(str(store.directory), None)  # until claims offers it
    if held is not None:
        fd, path = held
        for step in (lambda: os.unlink(path), lambda: os.close(fd)):
            try:
                step()
            except OSError:
                pass


def _cancel(store: TaskStore, pairs: list[tuple[dict, Optional[dict]]], spawners: _Spawners) -> list[str]:
    by_backend: dict[Optional[str], list[tuple[dict, dict]]] = {}
    for record, job in pairs:
        if job and job.get("state") == "submitted" and record["state"] in ("pending", "running"):
            by_backend.setdefault(job.get("backend"), []).append((record, job))
    cancelled = []
    for backend, items in by_backend.items():
        spawner = spawners.get(backend)  # before marking: a missing backend raises, changes nothing
        for record, job in items:
            write_cancelled(store, record["key"], job)
        spawner.cancel([str(job["job_id"]) for _, job in items])
        for record, _ in items:
            record["state"] = "cancelled"
            cancelled.append(record["key"])
    return cancelled


def cancel_cache_jobs(cache_directory: PathLike, keys: Optional[Iterable[str]] = None) -> list[str]:
    """Cancel the queued and running jobs of the cache (or of the tasks ``keys``) through the
    backend recorded for each; return the keys whose jobs were cancelled.

    Their job.json records the cancellation: Executors following these tasks fail them with
    CancelledError, and a later submission of the same call runs it again.
    """
    store = _open_store(cache_directory)
    spawners = _Spawners()
    try:
        return _cancel(store, _collect(store, keys, True, spawners), spawners)
    finally:
        spawners.close()


def _terminate(cache_directory: PathLike, keys: Optional[list[str]], pysqa_config_directory: Optional[PathLike],
               backend: Optional[str]) -> list[str]:
    store = _open_store(cache_directory)
    if keys is not None:
        missing = [k for k in keys if not store.task_dir(k).is_dir()]
        if missing:
            raise KeyError(f"task {missing[0]!r} is not in cache directory {str(store.directory)!r}")
    if backend is not None:
        _backend_name(backend)  # an unknown name fails here, before anything is cancelled
    spawners = _Spawners(override=backend, pysqa_config_directory=pysqa_config_directory)
    try:
        return _cancel(store, _collect(store, keys, True, spawners), spawners)
    finally:
        spawners.close()


def terminate_tasks_in_cache(cache_directory: PathLike, pysqa_config_directory: Optional[PathLike] = None,
                             backend: Optional[str] = None, *,
                             config_directory: Optional[PathLike] = None) -> list[str]:
    """The original executorlib's name of :func:`cancel_cache_jobs`: cancel every queued or
    running job recorded in ``cache_directory``; return the keys whose jobs were cancelled.

    Args:
        cache_directory: the cache directory.
        pysqa_config_directory: the pysqa configuration the jobs were submitted with (a submission
            backend); ``config_directory`` is its older name.
        backend: ask and cancel through this backend (``"slurm"``, ``"flux"``, or a backend name
            such as ``"slurm_submission"``) instead of the one recorded for each job.
    """
    if config_directory is not None:
        if pysqa_config_directory is not None:
            raise TypeError("give pysqa_config_directory or its older name config_directory, not both")
        pysqa_config_directory = config_directory
    return _terminate(cache_directory, None, pysqa_config_directory, backend)


def terminate_task_in_cache(cache_directory: PathLike, cache_key: str,
                            pysqa_config_directory: Optional[PathLike] = None,
                            backend: Optional[str] = None) -> list[str]:
    """Cancel the job of the task ``cache_key`` (its key, see :func:`get_key`) if it is queued or
    running; return ``[cache_key]`` when a job was cancelled, else ``[]``. KeyError when the
    task is not in the cache. The other arguments are those of :func:`terminate_tasks_in_cache`."""
    if not isinstance(cache_key, str):
        raise TypeError(f"cache_key must be the task's key (a str), got {type(cache_key).__name__}")
    return _terminate(cache_directory, [cache_key], pysqa_config_directory, backend)


def _seconds(older_than: Union[None, float, int, datetime.timedelta], name: str = "older_than") -> Optional[float]:
    if older_than is None:
        return None
    if isinstance(older_than, datetime.timedelta):
        seconds = older_than.total_seconds()
    elif isinstance(older_than, (int, float)) and not isinstance(older_than, bool):
        seconds = float(older_than)
    else:
        raise TypeError(f"{name} must be seconds (a number) or a datetime.timedelta, got {older_than!r}")
    if seconds < 0:
        raise ValueError(f"{name} must not be negative, got {older_than!r}")
    return seconds


def _select(pairs: list[tuple[dict, Optional[dict]]], states: Optional[Iterable[str]],
            older_than: Optional[float], keys: Optional[Iterable[str]]) -> list[tuple[dict, Optional[dict]]]:
    wanted_states = None
    if states is not None:
        wanted_states = {states} if isinstance(states, str) else set(states)
        unknown = wanted_states - set(STATES)
        if unknown:
            raise ValueError(f"unknown state(s) {', '.join(sorted(map(repr, unknown)))}; "
                             f"valid states are: {', '.join(STATES)}")
    wanted_keys = None if keys is None else ({keys} if isinstance(keys, str) else set(keys))
    now = time.time()
    selected = []
    for record, job in pairs:
        if wanted_keys is not None and record["key"] not in wanted_keys:
            continue
        if wanted_states is not None and record["state"] not in wanted_states:
            continue
        if older_than is not None:
            last = record["finished"] or record["submitted"] or record["created"]
            if last is None:
                try:
                    last = os.stat(record["path"]).st_mtime
                except OSError:
                    continue
            if now - last < older_than:
                continue
        selected.append((record, job))
    return selected


def _clean(cache_directory: PathLike, states: Optional[Iterable[str]] = None,
           older_than: Union[None, float, datetime.timedelta] = None,
           keys: Optional[Iterable[str]] = None, dry_run: bool = False,
           force: bool = False, grace: Union[float, datetime.timedelta] = CLEAN_GRACE) -> CleanResult:
    """clean_cache (see there)."""
    seconds = _seconds(older_than)
    grace_seconds = _seconds(grace, "grace") or 0.0
    store = _open_store(cache_directory)
    spawners = _Spawners()
    try:
        # each folder's latest change, before its record is read: a change after it means a
        # live writer, whatever the clocks and mtime resolution of the file system
        before = {key: _newest_change(store.task_dir(key)) for key in store.keys()}
        pairs = _collect(store, None, True, spawners)  # all tasks: a kept child keeps its parents
        now = time.time()
        reasons = {record["key"]: _keep_reason(record, job, before.get(record["key"]), grace_seconds, now)
                   for record, job in pairs}
        needed: set[str] = set()  # parents whose results a kept task without a result will read
        for record, _ in pairs:
            if reasons[record["key"]] is not None and record["state"] in ("pending", "running"):
                needed.update(_parents(store, record["key"]))
        selected = _select(pairs, states, seconds, keys)
        doomed, kept = [], []
        for record, job in selected:
            reason = reasons[record["key"]] or ("parent" if record["key"] in needed else None)
            if reason is None or force:
                doomed.append((record, job))
            else:
                kept.append({**record, "kept": reason})
        if dry_run:
            return CleanResult([r for r, _ in doomed], kept)
        live = [(r, j) for r, j in doomed if _live_job(r, j)]
        if force and live:
            _cancel(store, live, spawners)
        deleted = []
        for record, job in doomed:
            if _delete(store, record["key"], job, before.get(record["key"]), check=not force):
                deleted.append(record)
            elif os.path.isdir(record["path"]):  # changed while clean looked: a live writer
                kept.append({**record, "kept": "young"})
        if states is None and seconds is None and keys is None and not kept:
            # a purge: the result packs (copies of small results, see result_index) go too, and
            # the call queues of max_jobs (no call is left to serve: idle workers just end)
            shutil.rmtree(store.directory / INDEX_DIR, ignore_errors=True)
            shutil.rmtree(store.directory / PACKED_DIR, ignore_errors=True)
            _drop_own_lock(store)
        gone = {record["key"] for record in deleted}
        removed = _sweep(store, [r["key"] for r, _ in pairs if r["key"] not in gone], grace_seconds, now)
        return CleanResult(deleted, kept, removed)
    finally:
        spawners.close()


def clean_cache(cache_directory: PathLike, states: Optional[Iterable[str]] = None,
                older_than: Union[None, float, datetime.timedelta] = None,
                keys: Optional[Iterable[str]] = None, dry_run: bool = False,
                force: bool = False, grace: Union[float, datetime.timedelta] = CLEAN_GRACE) -> CleanResult:
    """Delete task folders of the cache; return the records (as get_cache_data) of those deleted.

    Selects tasks whose state is in ``states``, whose last activity (finished, else submitted,
    else created) is at least ``older_than`` ago (seconds or a timedelta) and whose key is in
    ``keys``; no filter at all selects every task (a purge). ``dry_run=True`` only returns what
    would be deleted.

    Live work is never deleted: a selected task is kept when its job is queued or running, when a
    live process claimed it, when the process that submitted it is still alive (its Executor may
    not have read the result yet), when a kept task takes its result as an argument, or when its
    folder changed less than ``grace`` seconds ago (default :data:`CLEAN_GRACE`, 60 s; tasks of
    this very process are exempt, it knows what it is doing). A folder that changes while clean
    looks at it is kept too. ``force=True`` deletes the selected tasks whatever the reason,
    cancelling their queued and running jobs first.

    The returned list (a :class:`CleanResult`) has ``kept``, the selected tasks kept with the
    reason in their ``kept`` field, and ``removed_temporaries``: clean also removes the
    temporary files of writers that were killed mid-write, whatever the selection.
    """
    return _clean(cache_directory, states, older_than, keys, dry_run, force, grace)
