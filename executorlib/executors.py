"""The executor classes of the original executorlib's 1.x API, on the machinery of :class:`Executor`.

=========================  =========================================  ==============================
class                      what it is                                 ``Executor(backend=...)``
=========================  =========================================  ==============================
``SingleNodeExecutor``     subprocesses on this computer              ``"local"``
``SlurmClusterExecutor``   one SLURM job per call (``sbatch``)        ``"slurm_submission"``
``SlurmJobExecutor``       ``srun`` steps inside a SLURM allocation   ``"slurm_allocation"``
``FluxClusterExecutor``    one flux job per call                      ``"flux_submission"``
``FluxJobExecutor``        ``flux run`` inside a flux allocation      ``"flux_allocation"``
=========================  =========================================  ==============================

Each is an :class:`executorlib.Executor` (so a ``concurrent.futures.Executor``) that takes the
original's constructor keywords. A keyword of the original that this project does not implement
yet raises ``NotImplementedError`` naming it when it is given a value other than its default,
instead of being ignored. See ``docs/migration.md``.

In addition to :class:`Executor`'s API these classes have ``len(exe)`` (calls not yet done),
``info`` (the settings as a dict) and ``max_workers``, and their ``submit()`` and ``map()`` accept
the Futures of :func:`~executorlib.future_tools.split_future` and
:func:`~executorlib.future_tools.get_item_from_future` as arguments.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from executorlib.executor import Executor
from executorlib.future_tools import get_item_from_future, split_future
from executorlib.resources import merge_resources

__all__ = [
    "SingleNodeExecutor",
    "SlurmClusterExecutor",
    "SlurmJobExecutor",
    "FluxClusterExecutor",
    "FluxJobExecutor",
    "TestClusterExecutor",
    "split_future",
    "get_item_from_future",
]

#: the cache directory of the cluster executors when none is given, relative to the working
#: directory at construction (as in the original)
DEFAULT_CLUSTER_CACHE = "executorlib_cache"


def _keywords(executor: "_Executor1x", frame_locals: dict) -> dict:
    """The constructor's keywords as given (its ``locals()`` without ``self``); those of the
    class's ``_UNSUPPORTED`` go to ``extra`` as (value, default), for ``_start`` to reject."""
    given = {name: value for name, value in frame_locals.items() if name not in ("self", "__class__")}
    extra = {name: (given.pop(name), default) for name, default in executor._UNSUPPORTED.items()
             if name in given}
    if extra:
        given["extra"] = extra
    return given


def _not_implemented(name: str, value: Any, default: Any, why: str = "") -> None:
    unchanged = value is None if default is None else value == default
    if not unchanged:
        raise NotImplementedError(
            f"{name}={value!r} (a keyword of the original executorlib 1.x) is not implemented by "
            f"this executorlib yet{': ' + why if why else ''}; leave it at its default "
            f"{default!r}. See docs/migration.md."
        )


def _with_pmi_mode(resource_dict: Optional[dict], pmi_mode: Optional[str]) -> Optional[dict]:
    """SLURM: ``pmi_mode`` becomes ``srun --mpi=<pmi_mode>`` of the MPI calls (``slurm_cmd_args``),
    unless ``slurm_cmd_args`` already names an ``--mpi``."""
    if pmi_mode is None:
        return resource_dict
    if not isinstance(pmi_mode, str) or not pmi_mode or not pmi_mode.isprintable() or " " in pmi_mode:
        raise ValueError(f"pmi_mode must be the name of a PMI interface such as 'pmix' or 'pmi2', got {pmi_mode!r}")
    resources = dict(resource_dict or {})
    cmd_args = list(resources.get("slurm_cmd_args") or ())
    if not any(a == "--mpi" or a.startswith("--mpi=") for a in cmd_args):
        cmd_args.append(f"--mpi={pmi_mode}")
    resources["slurm_cmd_args"] = cmd_args
    return resources


class _Executor1x(Executor):
    """What the five classes share: the 1.x keywords, ``len()``, ``info``, ``max_workers`` and
    the Futures of parts of results as arguments."""

    _BACKEND = "local"
    _SUBMISSION = False
    #: the cache directory when none is given (None: a temporary one, unless _SUBMISSION)
    _DEFAULT_CACHE: Optional[str] = None
    #: keywords of the original accepted only at their default (name -> default) for now
    _UNSUPPORTED: dict[str, Any] = {}
    #: why a keyword of _UNSUPPORTED is not implemented and what to do instead (name -> text)
    _UNSUPPORTED_WHY: dict[str, str] = {}

    def _start(self, *, max_workers: Optional[int], cache_directory: Optional[str | os.PathLike],
               max_cores: Optional[int], resource_dict: Optional[dict],
               hostname_localhost: Optional[bool], block_allocation: bool,
               init_function: Optional[Callable], disable_dependencies: bool, refresh_rate: float,
               plot_dependency_graph: bool, plot_dependency_graph_filename: Optional[str],
               export_workflow_filename: Optional[str], log_obj_size: bool,
               pysqa_config_directory: Optional[str | os.PathLike] = None,
               pmi_mode: Optional[str] = None, restart_limit: Optional[int] = None,
               flux_log_files: Optional[bool] = None, extra: Optional[dict] = None) -> None:
        for name, (value, default) in (extra or {}).items():
            _not_implemented(name, value, default, self._UNSUPPORTED_WHY.get(name, ""))
        if flux_log_files is not None and not isinstance(flux_log_files, bool):
            raise TypeError(f"flux_log_files must be True or False, got {flux_log_files!r}")
        if isinstance(resource_dict, dict) and resource_dict.get("cache_directory") is not None:
            if cache_directory is None:  # as in the original: the default resources' cache is the executor's
                resource_dict = dict(resource_dict)
                cache_directory = resource_dict.pop("cache_directory")
        if self._SUBMISSION:
            for name, value in (("max_workers", max_workers), ("max_cores", max_cores)):
                _not_implemented(name, value, None, "in the HPC submission mode every call is its "
                                 "own job and the job scheduler decides how many run at once")
            if cache_directory is None:
                cache_directory = DEFAULT_CLUSTER_CACHE
        if cache_directory is None and self._DEFAULT_CACHE is not None:
            cache_directory = self._DEFAULT_CACHE
        # options of the spawner (see Executor.__init__): only the allocation backends take them
        self._spawner_options: dict[str, Any] = {}
        if pmi_mode is not None:
            if self._BACKEND.startswith("slurm"):
                resource_dict = _with_pmi_mode(resource_dict, pmi_mode)
            elif self._BACKEND.startswith("flux"):
                if not isinstance(pmi_mode, str) or not pmi_mode.isidentifier():
                    raise ValueError(f"pmi_mode must be the name of a flux PMI such as 'pmix' or "
                                     f"'simple', got {pmi_mode!r}")
                self._spawner_options["pmi_mode"] = pmi_mode  # flux run -o pmi=<pmi_mode>
            else:  # no class of a backend without MPI launcher takes pmi_mode
                raise TypeError(f"pmi_mode is not a keyword of {type(self).__name__}")
        if restart_limit is not None:
            if not isinstance(restart_limit, int) or isinstance(restart_limit, bool) or restart_limit < 0:
                raise ValueError(f"restart_limit must be an int >= 0, got {restart_limit!r}")
            if block_allocation:
                self._spawner_options["restart_limit"] = restart_limit
            elif restart_limit != 0:
                raise ValueError(
                    f"restart_limit={restart_limit} needs block_allocation=True: it bounds how often "
                    "the persistent workers of a block allocation are started again after dying, and "
                    "without block_allocation every call starts its own process")
        plot = bool(plot_dependency_graph) or plot_dependency_graph_filename is not None
        super().__init__(
            max_workers=max_workers,
            backend=self._BACKEND,
            cache_directory=cache_directory,
            max_cores=max_cores,
            resource_dict=resource_dict,
            pysqa_config_directory=pysqa_config_directory,
            block_allocation=block_allocation,
            init_function=init_function,
            disable_dependencies=disable_dependencies,
            refresh_rate=refresh_rate,
            plot_dependency_graph=plot,
            plot_dependency_graph_filename=plot_dependency_graph_filename,
            export_workflow_filename=export_workflow_filename,
            log_obj_size=log_obj_size,
        )
        self._info: dict[str, Any] = {
            "backend": self._BACKEND,
            "max_workers": self.max_workers,
            "max_cores": max_cores,
            "cache_directory": None if self._temporary_cache is not None else self.cache_directory,
            "resource_dict": merge_resources(self._default_resources, None),
            "hostname_localhost": hostname_localhost,
            "block_allocation": block_allocation,
            "init_function": init_function,
            "disable_dependencies": disable_dependencies,
            "refresh_rate": refresh_rate,
            "plot_dependency_graph": plot,
            "plot_dependency_graph_filename": plot_dependency_graph_filename,
            "export_workflow_filename": export_workflow_filename,
            "log_obj_size": log_obj_size,
        }
        if self._SUBMISSION:
            self._info["pysqa_config_directory"] = pysqa_config_directory
        if self._BACKEND != "local":
            self._info["pmi_mode"] = pmi_mode
        if restart_limit is not None:
            self._info["restart_limit"] = restart_limit
        if flux_log_files is not None:
            self._info["flux_log_files"] = flux_log_files

    # -- members of the 1.x executors -----------------------------------------------------------------
    def __len__(self) -> int:
        """The number of submitted calls whose Future is not done yet (pending or running)."""
        counts = self._counts
        with counts._lock:
            return len(counts._unfinished)

    def __bool__(self) -> bool:
        # with __len__ alone an idle executor would be false in ``if exe:``
        return True

    @property
    def info(self) -> dict:
        """The settings of this executor as a new dict: ``backend``, ``max_workers``,
        ``max_cores``, ``cache_directory`` (``None`` for the temporary cache of a local executor
        without one), ``resource_dict`` (the defaults of every call, completed with the default
        of every key), ``block_allocation``, ``init_function``, ``disable_dependencies``,
        ``refresh_rate``, ``plot_dependency_graph`` and ``plot_dependency_graph_filename``,
        ``hostname_localhost``, ``export_workflow_filename``, ``log_obj_size``; the cluster
        executors add ``pysqa_config_directory``, the classes with a ``pmi_mode`` keyword add
        ``pmi_mode``, the job executors ``restart_limit`` and ``FluxJobExecutor``
        ``flux_log_files``."""
        info = dict(self._info)
        info["resource_dict"] = dict(info["resource_dict"])
        return info

    @property
    def max_workers(self) -> Optional[int]:
        """How many calls run at once at most (the CPU count when neither ``max_workers`` nor
        ``max_cores`` was given to a local or allocation executor); ``None`` for the cluster
        executors, where the job scheduler decides."""
        return getattr(self._spawner, "max_workers", None)

    @max_workers.setter
    def max_workers(self, value: int) -> None:
        """With ``block_allocation=True``: grow or shrink the pool of persistent workers (new
        workers start now, idle ones beyond ``value`` end now, busy ones after their call)."""
        resize = getattr(self._spawner, "resize", None)
        if resize is None:
            raise NotImplementedError(
                "setting max_workers resizes the pool of persistent workers of block_allocation=True; "
                "this executor starts a process or job per call: create a new executor with "
                "max_workers=... instead")
        resize(value)
        self._info["max_workers"] = value


_KEYWORDS_DOC = """
    Args:
        max_workers: at most this many calls run at once (default: the CPU count){submission_note}.
        cache_directory: where calls and results are stored; a call whose result is stored there
            returns it without running again. {cache_note}
        max_cores: at most this many cores are in use at once{submission_note}.
        resource_dict: the default resources of every call (``submit(..., resource_dict=...)``
            wins key by key); see :data:`executorlib.resources.RESOURCE_KEYS`.
        hostname_localhost: accepted for compatibility and has **no effect**: the original used it
            for its ZMQ socket connections; this executorlib communicates through files and opens
            no sockets.
        block_allocation: run the calls in a fixed pool of persistent workers{block_note}.
        init_function: with ``block_allocation=True``: a callable without arguments, run once per
            worker, whose returned dict fills the parameters of the same names.
        disable_dependencies: make Future arguments an error instead of dependencies.
        refresh_rate: seconds between two polls of the scheduler.
        plot_dependency_graph: record the calls and draw their dependency graph at shutdown
            instead of running them (every Future resolves with ``None``).
        plot_dependency_graph_filename: where to draw the graph; giving it also turns on
            ``plot_dependency_graph``.
        export_workflow_filename: record the calls instead of running them (every Future
            resolves with ``None``) and write them at shutdown to this JSON file in the Python
            Workflow Definition format (see :mod:`executorlib.workflow`).
        log_obj_size: log the size of each call's pickled function and arguments, and of its
            result file, at INFO level of the logger ``executorlib``.
"""


_RESTART_LIMIT_DOC = """        restart_limit: with ``block_allocation=True``: how many times a worker that died is
            started again (a call that crashed its worker, a running call that was cancelled or
            ran past its ``run_time_max``: each of these ends its worker). The default ``0`` (as
            in the original) starts none, so the pool shrinks with each death and calls fail once
            no worker is left; ``Executor(backend=...)`` allows 10. Without block allocation only
            ``0`` is valid (ValueError otherwise).
"""


class SingleNodeExecutor(_Executor1x):
    __doc__ = """Run each call in a Python subprocess on this computer (``Executor(backend="local")``).

    Example:
        >>> with SingleNodeExecutor() as exe:  # doctest: +SKIP
        ...     print(exe.submit(sum, [1, 2]).result())
        3
    """ + _KEYWORDS_DOC.format(
        submission_note="",
        cache_note="Default ``None``: a temporary cache, removed at shutdown (every call runs).",
        block_note="",
    ) + _RESTART_LIMIT_DOC.replace("``Executor(backend=...)`` allows 10", "``Executor(backend=\"local\")`` "
                                   "restarts without limit")

    _BACKEND = "local"

    def __init__(
        self,
        max_workers: Optional[int] = None,
        cache_directory: Optional[str] = None,
        max_cores: Optional[int] = None,
        resource_dict: Optional[dict] = None,
        hostname_localhost: Optional[bool] = None,
        block_allocation: bool = False,
        init_function: Optional[Callable] = None,
        disable_dependencies: bool = False,
        refresh_rate: float = 0.01,
        plot_dependency_graph: bool = False,
        plot_dependency_graph_filename: Optional[str] = None,
        export_workflow_filename: Optional[str] = None,
        log_obj_size: bool = False,
        restart_limit: int = 0,
    ):
        self._start(**_keywords(self, locals()))


class SlurmJobExecutor(_Executor1x):
    __doc__ = """Inside a SLURM allocation: each call is an ``srun`` job step
    (``Executor(backend="slurm_allocation")``, see docs/allocation-mode.md).

    ``pmi_mode`` (e.g. ``"pmix"``) becomes ``srun --mpi=<pmi_mode>`` of the MPI calls, unless
    ``resource_dict["slurm_cmd_args"]`` names an ``--mpi`` already.
    """ + _KEYWORDS_DOC.format(
        submission_note=" (default: the allocation's CPUs)",
        cache_note="Default ``None``: a temporary cache, removed at shutdown (every call runs).",
        block_note="",
    ) + _RESTART_LIMIT_DOC

    _BACKEND = "slurm_allocation"

    def __init__(
        self,
        max_workers: Optional[int] = None,
        cache_directory: Optional[str] = None,
        max_cores: Optional[int] = None,
        resource_dict: Optional[dict] = None,
        pmi_mode: Optional[str] = None,
        hostname_localhost: Optional[bool] = None,
        block_allocation: bool = False,
        init_function: Optional[Callable] = None,
        disable_dependencies: bool = False,
        refresh_rate: float = 0.01,
        plot_dependency_graph: bool = False,
        plot_dependency_graph_filename: Optional[str] = None,
        export_workflow_filename: Optional[str] = None,
        log_obj_size: bool = False,
        restart_limit: int = 0,
    ):
        self._start(**_keywords(self, locals()))


class FluxJobExecutor(_Executor1x):
    __doc__ = """Inside a flux allocation: each call is a ``flux run``
    (``Executor(backend="flux_allocation")``, see docs/allocation-mode.md).

    ``pmi_mode`` (e.g. ``"pmix"``) becomes ``flux run -o pmi=<pmi_mode>`` of every call (and of
    the workers of a block allocation).

    The original's flux keywords:

    - ``flux_log_files``: accepted, no switch needed: what each call prints, and flux's own
      messages about its job, always go to ``job.out`` in the call's task folder (and to this
      process's stdout/stderr), also with ``False``.
    - ``flux_executor`` (a ``flux.job.FluxExecutor`` to submit through): ``NotImplementedError``
      unless ``None``. Calls are started with the ``flux run`` command of the flux instance this
      process runs in (``FLUX_URI``); to use another instance, run the script inside it.
    - ``flux_executor_nesting`` (a nested flux instance per call): ``NotImplementedError`` unless
      ``False``. Use :class:`FluxClusterExecutor`, whose calls are ``flux batch`` jobs, each a
      nested flux instance.
    """ + _KEYWORDS_DOC.format(
        submission_note=" (default: the allocation's CPUs)",
        cache_note="Default ``None``: a temporary cache, removed at shutdown (every call runs).",
        block_note="",
    ) + _RESTART_LIMIT_DOC

    _BACKEND = "flux_allocation"
    _UNSUPPORTED = {"flux_executor": None, "flux_executor_nesting": False}
    _UNSUPPORTED_WHY = {
        "flux_executor": "calls are started with the `flux run` command of the flux instance this "
                         "process runs in (FLUX_URI), not through a flux.job.FluxExecutor; to use "
                         "another instance, run the script inside it (flux alloc / flux batch)",
        "flux_executor_nesting": "for a nested flux instance per call use FluxClusterExecutor, whose "
                                 "calls are flux batch jobs, each a nested instance",
    }

    def __init__(
        self,
        max_workers: Optional[int] = None,
        cache_directory: Optional[str] = None,
        max_cores: Optional[int] = None,
        resource_dict: Optional[dict] = None,
        pmi_mode: Optional[str] = None,
        flux_executor: Any = None,
        flux_executor_nesting: bool = False,
        flux_log_files: bool = False,
        hostname_localhost: Optional[bool] = None,
        block_allocation: bool = False,
        init_function: Optional[Callable] = None,
        disable_dependencies: bool = False,
        refresh_rate: float = 0.01,
        plot_dependency_graph: bool = False,
        plot_dependency_graph_filename: Optional[str] = None,
        export_workflow_filename: Optional[str] = None,
        log_obj_size: bool = False,
        restart_limit: int = 0,
    ):
        self._start(**_keywords(self, locals()))


class SlurmClusterExecutor(_Executor1x):
    __doc__ = """Each call is its own SLURM job, submitted with ``sbatch``
    (``Executor(backend="slurm_submission")``, see docs/submission-mode.md).

    ``pmi_mode`` (e.g. ``"pmix"``) becomes ``srun --mpi=<pmi_mode>`` of the MPI calls, unless
    ``resource_dict["slurm_cmd_args"]`` names an ``--mpi`` already.
    """ + _KEYWORDS_DOC.format(
        submission_note=" — not available in the submission mode (NotImplementedError)",
        cache_note=f"Default: ``{DEFAULT_CLUSTER_CACHE}`` in the working directory, as in the original.",
        block_note=" — not available in the submission mode (ValueError)",
    ) + """        pysqa_config_directory: a pysqa configuration directory to use instead of the built-in
            SLURM support.
"""

    _BACKEND = "slurm_submission"
    _SUBMISSION = True

    def __init__(
        self,
        max_workers: Optional[int] = None,
        cache_directory: Optional[str] = None,
        max_cores: Optional[int] = None,
        resource_dict: Optional[dict] = None,
        pysqa_config_directory: Optional[str] = None,
        pmi_mode: Optional[str] = None,
        hostname_localhost: Optional[bool] = None,
        block_allocation: bool = False,
        init_function: Optional[Callable] = None,
        disable_dependencies: bool = False,
        refresh_rate: float = 0.01,
        plot_dependency_graph: bool = False,
        plot_dependency_graph_filename: Optional[str] = None,
        export_workflow_filename: Optional[str] = None,
        log_obj_size: bool = False,
    ):
        self._start(**_keywords(self, locals()))


class FluxClusterExecutor(_Executor1x):
    __doc__ = """Each call is its own flux job (``Executor(backend="flux_submission")``, see docs/flux.md).

    ``pmi_mode`` (e.g. ``"pmix"``) becomes ``flux run -o pmi=<pmi_mode>`` of the MPI ranks of
    the calls with ``cores > 1`` in their job scripts (a one-core call starts no MPI ranks).
    """ + _KEYWORDS_DOC.format(
        submission_note=" — not available in the submission mode (NotImplementedError)",
        cache_note=f"Default: ``{DEFAULT_CLUSTER_CACHE}`` in the working directory, as in the original.",
        block_note=" — not available in the submission mode (ValueError)",
    ) + """        pysqa_config_directory: a pysqa configuration directory to use instead of the built-in
            flux support.
"""

    _BACKEND = "flux_submission"
    _SUBMISSION = True

    def __init__(
        self,
        max_workers: Optional[int] = None,
        cache_directory: Optional[str] = None,
        max_cores: Optional[int] = None,
        resource_dict: Optional[dict] = None,
        pysqa_config_directory: Optional[str] = None,
        pmi_mode: Optional[str] = None,
        hostname_localhost: Optional[bool] = None,
        block_allocation: bool = False,
        init_function: Optional[Callable] = None,
        disable_dependencies: bool = False,
        refresh_rate: float = 0.01,
        plot_dependency_graph: bool = False,
        plot_dependency_graph_filename: Optional[str] = None,
        export_workflow_filename: Optional[str] = None,
        log_obj_size: bool = False,
    ):
        self._start(**_keywords(self, locals()))


class TestClusterExecutor(_Executor1x):
    __doc__ = """The cluster executors' file-based path run with local processes: for testing a
    workflow meant for :class:`SlurmClusterExecutor` or :class:`FluxClusterExecutor` on a laptop
    (``Executor(backend="local", cache_directory="executorlib_cache")``).

    Every call is written to the cache directory as its task file, run by a Python process that
    reads it and writes its result file next to it, exactly as a cluster job does; what the job
    scheduler does there (queueing, ``afterok`` dependencies) is done by the local process pool.
    As with the cluster executors, the cache directory defaults to ``executorlib_cache`` in the
    working directory, so a second run returns the stored results without running the calls
    again, and a run that was interrupted picks up the calls still running. Not for production:
    use :class:`SingleNodeExecutor` on one computer.
    """ + _KEYWORDS_DOC.format(
        submission_note="",
        cache_note=f"Default: ``{DEFAULT_CLUSTER_CACHE}`` in the working directory, as for the cluster executors.",
        block_note="",
    )

    __test__ = False  # not a test class for pytest, whatever its name
    _BACKEND = "local"
    _DEFAULT_CACHE = DEFAULT_CLUSTER_CACHE

    def __init__(
        self,
        max_workers: Optional[int] = None,
        cache_directory: Optional[str] = None,
        max_cores: Optional[int] = None,
        resource_dict: Optional[dict] = None,
        hostname_localhost: Optional[bool] = None,
        block_allocation: bool = False,
        init_function: Optional[Callable] = None,
        disable_dependencies: bool = False,
        refresh_rate: float = 0.01,
        plot_dependency_graph: bool = False,
        plot_dependency_graph_filename: Optional[str] = None,
        export_workflow_filename: Optional[str] = None,
        log_obj_size: bool = False,
    ):
        self._start(**_keywords(self, locals()))
