"""``Executor``: a ``concurrent.futures.Executor`` whose ``backend`` picks where work runs."""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401 - see _python_exit
import functools
import importlib
import inspect
import itertools
import logging
import os
import shutil
import tempfile
import threading
import time
import traceback
import uuid
import weakref
from concurrent.futures import Executor as _BaseExecutor
from concurrent.futures import Future
from typing import Any, Callable, Iterable, Iterator, Optional

from executorlib.files import RESULT_FILE
from executorlib.future_tools import batched as _batched
from executorlib.future_tools import resolve_selected_futures
from executorlib.resources import merge_resources, spawner_resources, validate_resources
from executorlib.scheduler import Scheduler, resolve_from_store
from executorlib.store import TaskStore
from executorlib.task import Task, compute_key, function_name, replace_futures

__all__ = ["Executor", "BACKENDS"]

#: backend name -> (spawner module, class, is a submission backend)
BACKENDS: dict[str, tuple[str, str, bool]] = {
    "local": ("executorlib.spawners.local", "LocalSpawner", False),
    "slurm_submission": ("executorlib.spawners.slurm", "SlurmSpawner", True),
    "flux_submission": ("executorlib.spawners.flux", "FluxSpawner", True),
    "slurm_allocation": ("executorlib.spawners.srun", "SrunSpawner", False),
    "flux_allocation": ("executorlib.spawners.flux_allocation", "FluxAllocationSpawner", False),
}
#: backend name -> (spawner module, class) with block_allocation=True
BLOCK_ALLOCATION_SPAWNERS: dict[str, tuple[str, str]] = {
    "local": ("executorlib.spawners.pool", "WorkerPoolSpawner"),
    "slurm_allocation": ("executorlib.spawners.srun", "SrunPoolSpawner"),
    "flux_allocation": ("executorlib.spawners.flux_allocation", "FluxPoolSpawner"),
}


# -- interpreter exit ------------------------------------------------------------------------------
# As concurrent.futures does, a hook that runs before the interpreter joins its threads (so before
# atexit handlers and before finalization): the local backends finish their unfinished tasks, the
# submission backends hand every task to the job scheduler and stop their thread, leaving the jobs
# running (a later process reattaches to the cache). No scheduler thread touches h5py afterwards.
# concurrent.futures.thread is imported above so that a lazy import during the hand-over (pysqa
# imports pandas, which imports ThreadPoolExecutor, which registers its own hook) does not fail
# with "can't register atexit after shutdown".
_exit_lock = threading.Lock()
_interpreter_exiting = False
#: the schedulers that may still run -> True when their jobs outlive this process (submission)
_live_schedulers: "weakref.WeakKeyDictionary[Scheduler, bool]" = weakref.WeakKeyDictionary()


def _python_exit() -> None:
    global _interpreter_exiting
    with _exit_lock:
        _interpreter_exiting = True
        schedulers = list(_live_schedulers.items())
    # local tasks first: a submitted task may wait for a local parent
    for scheduler, jobs_outlive in schedulers:
        if not jobs_outlive:
            scheduler.shutdown(wait=True)
    for scheduler, jobs_outlive in schedulers:
        if jobs_outlive:
            _hand_over_and_stop(scheduler)


def _hand_over_and_stop(scheduler: Scheduler) -> None:
    """Give every task to the job scheduler, then end the thread; the jobs keep running."""
    detach = getattr(scheduler, "detach", None)
    if detach is not None:
        detach()
    else:  # an older Scheduler: hand over; its daemon thread may outlive this hook
        scheduler.shutdown(wait=False)


def _forget_schedulers_after_fork() -> None:
    global _exit_lock
    _exit_lock = threading.Lock()
    _live_schedulers.clear()  # their threads did not survive the fork


try:
    threading._register_atexit(_python_exit)  # type: ignore[attr-defined]
except AttributeError:  # not CPython >= 3.9: the closest stand-in
    atexit.register(_python_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_schedulers_after_fork)


def _release(scheduler: Scheduler) -> None:
    """An Executor was collected without shutdown(): its tasks still finish (local) or are handed
    to the job scheduler (submission), then its thread ends."""
    scheduler.shutdown(wait=False)


class _TaskCounts:
    """How many Futures of an Executor are pending, running, done and failed (for repr()).

    Its done-callbacks reference this object only, never the Executor, so that a dropped Executor
    is still collected while its Futures are alive.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._unfinished: set[Future] = set()
        self._done = 0
        self._failed = 0

    def track(self, future: Future) -> None:
        with self._lock:
            self._unfinished.add(future)
        future.add_done_callback(self._finished)

    def _finished(self, future: Future) -> None:
        failed = future.cancelled() or future.exception() is not None
        with self._lock:
            self._unfinished.discard(future)
            if failed:
                self._failed += 1
            else:
                self._done += 1

    def __str__(self) -> str:
        with self._lock:
            running = sum(1 for f in self._unfinished if f.running())
            pending = len(self._unfinished) - running
            return f"{pending} pending, {running} running, {self._done} done, {self._failed} failed"


def _pickling_failure(fn_name: str, error: Exception) -> Exception:
    """``error`` of pickling the call, re-made with a message naming the call; same type, so a
    ``PicklingError`` stays a ``PicklingError`` (and a TypeError a TypeError)."""
    message = f"cannot pickle the call {fn_name}(...): {error}"
    try:
        renamed = type(error)(message)
    except Exception:  # noqa: BLE001 - a class whose constructor takes other arguments
        if hasattr(error, "add_note"):
            error.add_note(message)
        return error
    renamed.__cause__ = error
    return renamed


#: function -> whether it has a parameter ``resource_dict`` that submit()'s own would hide
_HIDDEN_PARAMETER: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()


def _takes_resource_dict(fn: Callable) -> bool:
    """True when ``fn`` has a parameter named ``resource_dict`` that a call can pass by keyword
    (a ``functools.partial`` that binds it does not count). Cached per function."""
    if isinstance(fn, functools.partial):
        return "resource_dict" not in fn.keywords and _takes_resource_dict(fn.func)
    target = getattr(fn, "__func__", fn)  # a bound method: cache by its function
    try:
        return _HIDDEN_PARAMETER[target]
    except (KeyError, TypeError):  # not seen yet, or not weakly referable (builtins)
        pass
    try:
        parameter = inspect.signature(fn).parameters.get("resource_dict")
    except (TypeError, ValueError):  # no signature: nothing to say
        parameter = None
    takes = parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    try:
        _HIDDEN_PARAMETER[target] = takes
    except TypeError:
        pass
    return takes


def _check_not_an_argument(fn: Callable, resource_dict: Any) -> None:
    """submit(fn, resource_dict=...) takes ``resource_dict`` as the task's resources; if ``fn``
    has a parameter of that name, the user may have meant it for ``fn``: say so instead of
    dropping it silently (the call would fail later, or run without it)."""
    if not _takes_resource_dict(fn):
        return
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    raise TypeError(
        f"{name}() has a parameter named 'resource_dict', but submit(..., resource_dict=...) is "
        f"the task's resources for executorlib and is not passed to {name}() (got "
        f"resource_dict={resource_dict!r}). To pass it to the function, bind it: "
        f"submit(functools.partial({name}, resource_dict=...)) or submit(lambda: {name}("
        "resource_dict=...)); resources for such a call then go as submit(partial, "
        "resource_dict={...}) or into Executor(resource_dict=...)."
    )


_log_lock = threading.Lock()


def _log_failure(path: str, future: Future) -> None:
    """Done-callback of a call with ``resource_dict["error_log_file"]``: a failed call appends its
    key, exception and traceback (with the remote task's traceback and the notes) to ``path``."""
    if future.cancelled() or future.exception() is None:
        return
    error = future.exception()
    key = getattr(future, "_executorlib_key", "?")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    entry = f"=== {stamp} task {key} failed with {type(error).__name__}: {error}\n{text}\n"
    try:
        with _log_lock, open(path, "a", encoding="utf-8") as log_file:
            log_file.write(entry)
    except OSError as problem:
        logging.getLogger("executorlib").warning("cannot append to error_log_file %s: %s", path, problem)


def _log_sizes(key: str, pickled: dict, store: TaskStore, future: Future) -> None:
    """log_obj_size=True: the sizes of what goes to the task (now) and of its result file (when
    the Future is done), at INFO level of the logger ``executorlib``."""
    sizes = ", ".join(f"{name} {len(data)} bytes" for name, data in pickled.items())
    _size_log.info("executorlib: task %s sends %s (pickled)", key, sizes)

    def result_size(done: Future) -> None:
        if done.cancelled():
            return
        try:
            size = os.path.getsize(store.path(key, RESULT_FILE))
        except OSError:
            return
        _size_log.info("executorlib: task %s: result file %s bytes", key, size)

    future.add_done_callback(result_size)


_size_log = logging.getLogger("executorlib")


def _future_key(future: Future) -> str:
    key = getattr(future, "_executorlib_key", None)
    if key is None:
        raise TypeError(
            "a Future passed as an argument must come from an executorlib Executor (its result is "
            "looked up in the cache by key); call .result() on other Futures before submitting"
        )
    return key


def _check_max_jobs(backend: str, submission: bool, max_jobs: Any, block_allocation: bool,
                    cache_directory: Any) -> None:
    """``max_jobs``: an int >= 1, for the submission backends (and the local backend with a named
    cache, where local processes play the worker jobs: the cluster path tested on a laptop)."""
    if max_jobs is None:
        return
    if not isinstance(max_jobs, int) or isinstance(max_jobs, bool) or max_jobs < 1:
        raise ValueError(f"max_jobs must be None or an int >= 1 (the most worker jobs in the "
                         f"scheduler's queue at once), got {max_jobs!r}")
    if not submission and backend != "local":
        raise ValueError(
            f"max_jobs is not available with backend={backend!r}: it packs the calls of the HPC "
            "submission mode ('slurm_submission', 'flux_submission') into a few jobs. In an "
            "allocation, max_workers / max_cores bound how many calls run at once.")
    if backend == "local" and (block_allocation or cache_directory is None):
        raise ValueError(
            "max_jobs on backend='local' plays the worker jobs of the HPC submission mode with local "
            "processes (to test that path on a laptop): it needs a named cache_directory and no "
            "block_allocation. For a pool of persistent local workers use block_allocation=True.")


class Executor(_BaseExecutor):
    """Run Python functions locally or as jobs of an HPC scheduler, with the Future API.

    As with ``concurrent.futures``, the end of the interpreter without ``shutdown()`` waits for the
    local backend's unfinished tasks; the submission backends hand every submitted call to the job
    scheduler first and leave the jobs running (a later process reattaches through the cache). An
    Executor dropped without ``shutdown()`` does the same and then ends its thread. On the local
    backend what a task prints goes to this process's ``sys.stdout``/``sys.stderr`` (and job.out).

    Args:
        max_workers: local backend only: at most this many tasks run at once (default: CPU count).
        backend: ``"local"``, ``"slurm_submission"`` or ``"flux_submission"``; inside an allocation
            ``"slurm_allocation"`` (one srun job step per task) or ``"flux_allocation"`` (``flux
            run``), which take the local backend's arguments, with ``max_cores`` defaulting to
            the allocation's CPUs (docs/allocation-mode.md).
        cache_directory: where tasks and results are stored. Required for the submission backends;
            on the local backend ``None`` means a temporary cache removed at shutdown.
        max_cores: local backend only: at most this many cores are in use at once.
        resource_dict: default resources of every task; ``submit(..., resource_dict=...)`` wins key
            by key. See :data:`executorlib.resources.RESOURCE_KEYS`.
        pysqa_config_directory: a pysqa configuration directory (queue.yaml and templates) to use
            instead of pysqa's built-in SLURM/flux support.
        block_allocation: local backend only: run the tasks in a fixed pool of persistent Python
            workers (``max_workers`` of them, default ``max_cores // cores`` or the CPU count
            divided by ``cores``), started once with the Executor's ``resource_dict``, so the
            interpreter start and the imports are paid once per worker instead of once per task.
            A ``submit(..., resource_dict=...)`` that changes what a started worker cannot change
            (``cores``, ``threads_per_core``, ``openmpi_oversubscribe``) raises ValueError. With
            ``cores > 1`` each worker is an MPI job whose ranks all take every task. Cancelling
            a running task, or its ``run_time_max``, kills its worker; a worker that dies fails
            only its task, and the pool starts a new one. Not available in the HPC submission
            mode (each task is its own job).
        init_function: with ``block_allocation=True``: a callable without arguments that runs
            once in each worker when it starts and returns a dict; each task's function gets the
            values of the parameters that the call leaves out and whose names are keys of that
            dict (an argument given by the call wins), e.g. a model loaded once per worker. The
            init function is part of every task's cache key.
        disable_dependencies: make Future arguments an error instead of dependencies.
        refresh_rate: seconds between two polls of the scheduler while things change; the interval
            backs off while nothing changes. The submission backends ask the job scheduler
            (squeue, flux jobs) at most every 0.5 s whatever the refresh_rate, to spare the
            shared scheduler daemon.
        plot_dependency_graph: record the submitted tasks and draw their dependency graph at
            shutdown instead of running them: every Future resolves at once with ``None``.
        plot_dependency_graph_filename: where to draw it, in the format of its extension
            (``.png``, ``.svg``, ``.pdf``, ``.dot``); default: inline in Jupyter, else
            ``dependency_graph.png``. See :mod:`executorlib.graph`.
        log_obj_size: log the size of each call's pickled function and arguments at submit and
            of its result file when it is done (logger ``executorlib``, level INFO, e.g. after
            ``logging.basicConfig(level=logging.INFO)``).
        max_jobs: submission backends only: at most this many jobs of this Executor are in the
            scheduler's queue at once, and each job serves many calls one after another (a
            worker that takes ready calls of its resource shape from the cache directory and ends
            after an idle time, ``EXECUTORLIB_WORKER_IDLE`` seconds, default 20). A worker's
            start-up is paid once instead of once per call; a worker holds its resources while it
            idles. Every call keeps its own key, cache entry, ``job.out``, errors,
            ``run_time_max``, cancel and dependencies. Default None: one job per call.
            See docs/max-jobs.md.
        export_workflow_filename: record the submitted calls instead of running them (every
            Future resolves at once with ``None``) and write them at shutdown to this JSON file
            in the Python Workflow Definition format. A call the format cannot hold is a
            ValueError at ``submit()``. See :mod:`executorlib.workflow`.
    """

    def __init__(
        self,
        max_workers: Optional[int] = None,
        backend: str = "local",
        cache_directory: Optional[str | os.PathLike] = None,
        max_cores: Optional[int] = None,
        resource_dict: Optional[dict] = None,
        pysqa_config_directory: Optional[str | os.PathLike] = None,
        block_allocation: bool = False,
        init_function: Optional[Callable] = None,
        disable_dependencies: bool = False,
        refresh_rate: float = 0.01,
        plot_dependency_graph: bool = False,
        plot_dependency_graph_filename: Optional[str] = None,
        export_workflow_filename: Optional[str | os.PathLike] = None,
        log_obj_size: bool = False,
        max_jobs: Optional[int] = None,
    ):
        if _interpreter_exiting:
            raise RuntimeError("cannot start an Executor after interpreter shutdown")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is not known. Valid backends are: {', '.join(map(repr, BACKENDS))}")
        module_name, class_name, submission = BACKENDS[backend]
        if block_allocation and not submission:
            module_name, class_name = BLOCK_ALLOCATION_SPAWNERS[backend]
        self._check_arguments(backend, submission, max_workers, max_cores, cache_directory,
                              block_allocation, init_function, refresh_rate, pysqa_config_directory)
        _check_max_jobs(backend, submission, max_jobs, block_allocation, cache_directory)
        self._backend = backend
        self._default_resources = dict(resource_dict or {})
        merge_resources(self._default_resources, None)  # validate now, not at the first submit
        self._disable_dependencies = disable_dependencies
        self._key_extra = init_function  # the values it returns change results: part of the key
        # for the Executors of other caches (resource_dict["cache_directory"]): made on first use
        self._sibling_settings = dict(max_workers=max_workers, backend=backend, max_cores=max_cores,
                                      pysqa_config_directory=pysqa_config_directory,
                                      disable_dependencies=disable_dependencies, refresh_rate=refresh_rate,
                                      log_obj_size=log_obj_size, max_jobs=max_jobs)
        self._block_allocation = block_allocation
        self._siblings: dict[str, Executor] = {}
        self._lock = threading.Lock()
        self._shutdown = False
        self._counts = _TaskCounts()  # for repr()

        self._graph = None
        if plot_dependency_graph:
            from executorlib.graph import DependencyGraph

            self._graph = DependencyGraph(filename=plot_dependency_graph_filename)
        if not isinstance(log_obj_size, bool):
            raise TypeError(f"log_obj_size must be True or False, got {log_obj_size!r}")
        self._log_obj_size = log_obj_size
        self._workflow = None
        if export_workflow_filename is not None:
            from executorlib.workflow import WorkflowExport

            self._workflow = WorkflowExport(export_workflow_filename)

        self._temporary_cache: Optional[str] = None
        self._key_prefix, self._key_counter = uuid.uuid4().hex[:16], itertools.count()  # temporary keys
        if cache_directory is None:
            self._temporary_cache = tempfile.mkdtemp(prefix="executorlib-")
            cache_directory = self._temporary_cache
        # a temporary cache has no later reader: no result packs (executorlib.result_index)
        self._store = TaskStore(cache_directory, use_index=self._temporary_cache is None)

        options: dict[str, Any] = {}
        if submission:
            options["pysqa_config_directory"] = pysqa_config_directory
        else:
            options.update(max_workers=max_workers, max_cores=max_cores)
        if block_allocation and not submission:
            options.update(resources=spawner_resources(self._default_resources), init_function=init_function,
                           cache_directory=self._store.directory,
                           temporary_cache=self._temporary_cache is not None)  # calls sent in memory
        # set by the classes of executorlib.executors before this runs (pmi_mode, restart_limit)
        options.update(getattr(self, "_spawner_options", None) or {})
        spawner_class = getattr(importlib.import_module(module_name), class_name)
        try:
            self._spawner = spawner_class(**options)
            if max_jobs is not None:  # a few worker jobs serve every call (executorlib.spawners.packed)
                from executorlib.spawners.packed import PackedSpawner

                self._spawner = PackedSpawner(self._spawner, max_jobs, self._store.directory)
            # the Executor's defaults are checked now, not at the first submit
            self._spawner.check_resources(spawner_resources(merge_resources(self._default_resources, None)))
        except BaseException:
            if hasattr(self, "_spawner"):
                self._spawner.close()
            if self._temporary_cache is not None:
                shutil.rmtree(self._temporary_cache, ignore_errors=True)
            raise
        remove_cache = None
        if self._temporary_cache is not None:
            remove_cache = functools.partial(shutil.rmtree, self._temporary_cache, True)
        try:  # raises for a bad poll setting (EXECUTORLIB_POLL_*, the site's config file)
            self._scheduler = Scheduler(self._store, self._spawner, refresh_rate=refresh_rate,
                                        on_exit=remove_cache)
        except BaseException:
            self._spawner.close()
            if remove_cache is not None:
                remove_cache()
            raise
        with _exit_lock:
            _live_schedulers[self._scheduler] = submission
        # Dropped without shutdown(): the thread finishes the tasks (their Futures still resolve)
        # or hands them to the job scheduler, then ends (it also removes a temporary cache after
        # the last task). At interpreter exit _python_exit does this instead.
        self._cleanup = weakref.finalize(self, _release, self._scheduler)
        self._cleanup.atexit = False

    @staticmethod
    def _check_arguments(backend, submission, max_workers, max_cores, cache_directory,
                         block_allocation, init_function, refresh_rate, pysqa_config_directory) -> None:
        if submission:
            for name, value in (("max_workers", max_workers), ("max_cores", max_cores)):
                if value is not None:
                    raise ValueError(
                        f"{name} is not available with backend={backend!r}: in the HPC submission "
                        "mode every task is its own job and the job scheduler decides how many run"
                    )
            if block_allocation or init_function is not None:
                raise ValueError(
                    f"block_allocation and init_function are not available with backend={backend!r}: "
                    "in the HPC submission mode every task is its own job, so no worker persists "
                    "between tasks. Use backend='local' or drop these arguments."
                )
            if cache_directory is None:
                raise ValueError(
                    f"backend={backend!r} needs a cache_directory on a file system that the compute "
                    "nodes share, e.g. Executor(backend=..., cache_directory='./cache')"
                )
        else:
            if pysqa_config_directory is not None:
                raise ValueError("pysqa_config_directory is only used by the submission backends")
            if init_function is not None and not callable(init_function):
                raise TypeError(
                    f"init_function must be a callable without arguments that returns a dict, "
                    f"got {type(init_function).__name__}"
                )
            if init_function is not None and not block_allocation:
                raise ValueError(
                    "init_function requires block_allocation=True: it runs once in each "
                    "persistent worker, and without block_allocation every task starts a fresh "
                    "Python process"
                )
            for name, value in (("max_workers", max_workers), ("max_cores", max_cores)):
                if value is None:
                    continue
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError(f"{name} must be None or an int greater than 0, got {value!r}")
                if value < 1:  # the stdlib's wording
                    raise ValueError(f"{name} must be greater than 0, got {value!r}")
        if not isinstance(refresh_rate, (int, float)) or refresh_rate <= 0:
            raise ValueError(f"refresh_rate must be a positive number of seconds, got {refresh_rate!r}")

    # -- the concurrent.futures API ----------------------------------------------------------------
    def submit(self, fn: Callable, /, *args: Any, resource_dict: Optional[dict] = None, **kwargs: Any) -> Future:
        """Schedule ``fn(*args, **kwargs)`` and return a Future.

        Future arguments (also inside lists, tuples, sets and dicts) become dependencies, also
        the Futures of :func:`~executorlib.future_tools.split_future`,
        :func:`~executorlib.future_tools.get_item_from_future` and :meth:`batched`. A call
        whose result is already in the cache resolves at once without running again.
        ``resource_dict`` is the task's resources, never an argument of ``fn``: a function with a
        parameter of that name gets it through ``functools.partial`` (else TypeError). A call that
        cannot be pickled fails its Future with the pickling error's own type.
        """
        if not callable(fn):
            raise TypeError(f"submit() needs a callable, got {type(fn).__name__}")
        if resource_dict is not None:
            _check_not_an_argument(fn, resource_dict)
        sibling = self._executor_of_cache(resource_dict)
        if sibling is not None:  # resource_dict["cache_directory"]: the call belongs to another cache
            future = sibling.submit(fn, *args, resource_dict=resource_dict, **kwargs)
            self._counts.track(future)
            return future
        # the Futures of split_future / get_item_from_future / batched: dependencies on their
        # parent's task, the part is taken where the call runs
        fn, args, kwargs = resolve_selected_futures(fn, args, kwargs)
        merged = merge_resources(self._default_resources, resource_dict)
        resources = spawner_resources(merged)  # without the keys the Executor acts on itself
        self._spawner.check_resources(resources)
        cache_key, error_log = merged["cache_key"], merged["error_log_file"]
        if error_log is not None:
            error_log = os.path.abspath(os.fspath(error_log))  # relative to the cwd of submit()
        parents: dict[str, Future] = {}
        args = replace_futures(args, _future_key, parents)
        kwargs = replace_futures(kwargs, _future_key, parents)
        if parents and self._disable_dependencies:
            raise ValueError(
                "a Future was passed as an argument, but this Executor was created with "
                "disable_dependencies=True; pass f.result() instead or enable dependencies"
            )
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _interpreter_exiting:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            future: Future = Future()
            if error_log is not None:
                future.add_done_callback(functools.partial(_log_failure, error_log))
            fn_name = function_name(fn)
            try:
                if cache_key is not None:  # named by the user (resource_dict["cache_key"])
                    key = cache_key
                elif self._temporary_cache is not None:
                    # no cache the user named: every submit() runs, as in concurrent.futures, so
                    # identical calls must not share a key (and the key costs no hashing)
                    key = f"{fn_name}_{self._key_prefix}{next(self._key_counter):016x}"  # no urandom per call
                else:
                    key = compute_key(fn, args, kwargs, name=fn_name, extra=self._key_extra)
            except Exception as error:  # noqa: BLE001 - e.g. an argument that cannot be pickled
                self._counts.track(future)
                future._executorlib_key = f"{fn_name}_unpicklable"  # type: ignore[attr-defined]
                future.set_exception(_pickling_failure(fn_name, error))
                return future
            future._executorlib_key = key  # type: ignore[attr-defined]
            if self._graph is not None or self._workflow is not None:
                if self._workflow is not None:  # first: a call it cannot hold raises, unrecorded
                    self._workflow.add(key, fn, args, kwargs)
                if self._graph is not None:
                    self._graph.add(key, fn_name, args, kwargs, parents)
                self._counts.track(future)
                future.set_result(None)  # recording only: nothing runs, results are None
                return future
            if self._temporary_cache is None and self._store.has_result(key):
                self._counts.track(future)
                resolve_from_store(self._store, key, future)
                return future
            try:
                pickled = self._store.pickle_call(fn, args, kwargs)
            except Exception as error:  # noqa: BLE001 - a pickling error fails this call only
                self._counts.track(future)
                future.set_exception(_pickling_failure(fn_name, error))
                return future
            if self._log_obj_size:
                _log_sizes(key, pickled, self._store, future)
            # the scheduler thread writes task.h5 (HDF5 + fsync, ~5 ms): submit() returns at once
            with _exit_lock:  # not after the exit hook took the list of live schedulers
                if _interpreter_exiting:
                    raise RuntimeError("cannot schedule new futures after interpreter shutdown")
                self._counts.track(future)
                self._scheduler.add(Task(key, fn_name, resources, future, parents, pickled,
                                         max_retries=merged["max_retries"]))
            return future

    def _executor_of_cache(self, resource_dict: Optional[dict]) -> Optional["Executor"]:
        """The Executor of the call's ``resource_dict["cache_directory"]`` (else of the default
        resources'), or None when that is this Executor's cache or none is given. It is made on
        first use with this Executor's settings and shut down with this Executor; a call's
        dependencies across the two caches work as between any two Executors."""
        directory = resource_dict.get("cache_directory") if isinstance(resource_dict, dict) else None
        if directory is None:
            directory = self._default_resources.get("cache_directory")
        if directory is None or self._graph is not None or self._workflow is not None:
            return None  # recording only (graph, workflow): nothing runs, no cache is used
        validate_resources({"cache_directory": directory})
        path = os.path.abspath(os.path.expanduser(os.fspath(directory)))
        if path == os.path.abspath(self._store.directory):
            return None
        if self._block_allocation:
            raise ValueError(
                f"resource_dict['cache_directory'] = {directory!r} cannot be used with "
                "block_allocation=True: the pool's workers serve this Executor's cache "
                f"{self.cache_directory!r} only. Create a second Executor(cache_directory=...) for "
                "that cache, or drop the key")
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            sibling = self._siblings.get(path)
            if sibling is None:
                sibling = Executor.__new__(Executor)
                sibling._spawner_options = dict(getattr(self, "_spawner_options", None) or {})
                defaults = {k: v for k, v in self._default_resources.items() if k != "cache_directory"}
                Executor.__init__(sibling, cache_directory=path, resource_dict=defaults, **self._sibling_settings)
                self._siblings[path] = sibling
        return sibling

    def map(self, fn: Callable, *iterables: Iterable, timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator:
        """``fn`` over the zipped ``iterables``, results in order (see ``concurrent.futures``);
        every call is its own task, so ``chunksize`` only has to be valid."""
        if not isinstance(chunksize, int) or isinstance(chunksize, bool):
            raise TypeError(f"chunksize must be an int, got {type(chunksize).__name__}")
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        return super().map(fn, *iterables, timeout=timeout)

    def batched(self, iterable: Iterable[Future], n: int) -> list[Future]:
        """Futures of lists of ``n`` results, in order: the first resolves with the results of
        the first ``n`` Futures of ``iterable``, the next with the following ``n``, ...; the last
        batch may be shorter. A batch fails with the exception of its first failed Future.
        Passed to :meth:`submit`, a batch is a dependency on each of its Futures and the function
        receives the list of results (no extra task or job). See
        :func:`executorlib.future_tools.batched`."""
        return _batched(iterable, n)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks. ``wait`` blocks until every Future is done;
        ``cancel_futures`` cancels the tasks not started yet (their queued jobs too); running ones
        finish, as in ``concurrent.futures``. ``wait=False`` without
        cancelling leaves submitted jobs running, so a later process can reattach to the cache."""
        with self._lock:
            already = self._shutdown
            self._shutdown = True
        if not already:
            self._scheduler.shutdown(wait=wait, cancel_futures=cancel_futures)
        elif wait:
            self._scheduler.shutdown(wait=True, cancel_futures=cancel_futures)
        for sibling in list(getattr(self, "_siblings", {}).values()):  # resource_dict["cache_directory"]
            sibling.shutdown(wait=wait, cancel_futures=cancel_futures)
        if self._graph is not None and not already:
            self._graph.draw()
        if self._workflow is not None and not already:
            self._workflow.write()
        self._cleanup.detach()  # shutdown() was called: nothing left to do at collection
        if wait:
            with _exit_lock:
                _live_schedulers.pop(self._scheduler, None)  # its thread has ended
            if self._temporary_cache is not None:
                shutil.rmtree(self._temporary_cache, ignore_errors=True)  # done by the thread already

    # -- conveniences --------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self._backend

    @property
    def cache_directory(self) -> str:
        return str(self._store.directory)

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown else "running"
        return (f"<executorlib.Executor backend={self._backend!r} cache={self.cache_directory!r} "
                f"{state}: {self._counts}>")
