"""The HPC allocation mode on SLURM: ``backend="slurm_allocation"``.

The user already holds an allocation (``salloc -n 4 python script.py``, or an sbatch script that
runs Python) and distributes calls inside it: every task is one job step,
``srun --exact -n <cores> --cpus-per-task <threads_per_core> ... python -m executorlib.worker``,
started as a subprocess of this process like a task of the local backend, with its output copied
to the task's ``job.out`` and to ``sys.stdout`` / ``sys.stderr``. As many steps run at once as the
allocation has CPUs (``max_cores``, default: the allocation's CPUs as SLURM reports them).

With ``block_allocation=True`` the persistent workers of :mod:`executorlib.spawners.pool` are
long-lived steps of the allocation (:class:`SrunPoolSpawner`): the same stdin/stdout protocol,
carried by ``srun --input=0``.

A step that SLURM ends (``scancel <job>.<step>``, its ``--time``, out of memory) fails only its
task, with the state that ``slurmstepd`` printed and the tail of the step's output.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from executorlib.errors import SubmissionError
from executorlib.resources import reject_unhonoured
from executorlib.spawners.base import JobSpec, JobStatus
from executorlib.spawners.local import LocalSpawner, _Process, exit_state
from executorlib.spawners.pool import WorkerPoolSpawner

__all__ = ["Allocation", "SrunSpawner", "SrunPoolSpawner", "current_allocation", "srun_command",
           "step_state", "parse_cpus_per_node", "PMI_MODES", "HONOURED", "HONOURED_ELSEWHERE"]

BACKEND = "slurm_allocation"
#: the PMI flavours srun offers in general (``srun --mpi=list`` says which this cluster has)
PMI_MODES = ("pmi2", "pmix", "pmix_v3", "pmix_v4", "pmix_v5", "cray_shasta", "none")
#: what an sbatch script's --mem leaves in the environment (srun reads them as its own --mem)
_MEMORY_VARIABLES = ("SLURM_MEM_PER_NODE", "SLURM_MEM_PER_CPU", "SLURM_MEM_PER_GPU")
#: extra seconds after a step's ``--time`` before the spawner kills its srun itself
TIME_LIMIT_GRACE = 60.0


def _anything(value: Any) -> bool:
    return True


#: the resource_dict keys a job step acts on, with the values it can honour
HONOURED: dict[str, Callable[[Any], bool]] = {
    "cores": _anything, "threads_per_core": _anything, "gpus_per_core": _anything, "cwd": _anything,
    "run_time_max": _anything, "memory_max": _anything, "job_name": _anything,
    "slurm_cmd_args": _anything, "num_nodes": _anything,
}
#: for the error message: who acts on the keys a job step cannot honour
HONOURED_ELSEWHERE = {
    "partition": "backend='slurm_submission' (--partition): a job step runs in the allocation's partition",
    "account": "backend='slurm_submission' (--account): a job step is charged to the allocation's account",
    "qos": "backend='slurm_submission' (--qos): a job step has the allocation's QOS",
    "exclusive": "backend='slurm_submission' (--exclusive); job steps already get their CPUs alone (srun --exact)",
    "submission_template": "backend='slurm_submission' and 'flux_submission' (the job script); a job step has none",
    "openmpi_oversubscribe": "backend='local' (mpiexec --oversubscribe); srun starts the ranks here",
}


# -- the allocation --------------------------------------------------------------------------------
def parse_cpus_per_node(value: str) -> list[int]:
    """``SLURM_JOB_CPUS_PER_NODE`` (e.g. ``"2"``, ``"4(x3),2"``) as one CPU count per node."""
    counts: list[int] = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part)
        if match is None:
            raise ValueError(f"SLURM_JOB_CPUS_PER_NODE={value!r} is not in SLURM's form, e.g. '4(x2),2'")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


@dataclass(frozen=True)
class Allocation:
    """The SLURM allocation this process runs in, as its environment describes it."""

    job_id: str
    cpus: int  # CPUs of all nodes
    nodes: int
    ntasks: Optional[int]
    source: str  # which variable gave ``cpus``, for messages
    gpus: Optional[str]  # SLURM's GPU ids of the allocation, None when it has none
    #: the job step this process runs in (``srun python script.py``), None outside a step
    step: Optional[str] = None
    kind: str = "SLURM allocation"

    def describe(self) -> str:
        tasks = f", {self.ntasks} task(s)" if self.ntasks else ""
        return f"{self.kind} {self.job_id} ({self.cpus} CPU(s) on {self.nodes} node(s){tasks}; {self.source})"


def no_allocation_error(backend: str = BACKEND) -> ValueError:
    return ValueError(
        f"backend={backend!r} runs job steps inside a SLURM allocation, and this process is not in "
        "one (SLURM_JOB_ID is not set). Get an allocation and run the script inside it, e.g. "
        "'salloc -n 4 python script.py', or an sbatch script with '#SBATCH -n 4' that runs "
        "'python script.py'. To submit every call as a job of its own instead, use "
        "backend='slurm_submission'."
    )


def current_allocation(environ: Optional[dict] = None) -> Allocation:
    """The allocation described by ``environ`` (default ``os.environ``); ValueError outside one."""
    env = os.environ if environ is None else environ
    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job_id:
        raise no_allocation_error()
    nodes = int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1)
    ntasks_text = env.get("SLURM_NTASKS") or env.get("SLURM_NPROCS")
    ntasks = int(ntasks_text) if ntasks_text and ntasks_text.isdigit() else None
    per_node = env.get("SLURM_JOB_CPUS_PER_NODE")
    if per_node:
        cpus = sum(parse_cpus_per_node(per_node))
        source = f"SLURM_JOB_CPUS_PER_NODE={per_node}"
    elif env.get("SLURM_CPUS_ON_NODE"):
        cpus = int(env["SLURM_CPUS_ON_NODE"]) * nodes
        source = f"SLURM_CPUS_ON_NODE={env['SLURM_CPUS_ON_NODE']} x {nodes} node(s)"
    elif ntasks:
        cpus = ntasks * int(env.get("SLURM_CPUS_PER_TASK") or 1)
        source = f"SLURM_NTASKS={ntasks}"
    else:
        cpus, source = 1, "no CPU count in the environment: 1 assumed"
    gpus = env.get("SLURM_JOB_GPUS") or env.get("SLURM_GPUS_ON_NODE") or env.get("SLURM_GPUS") or None
    step = env.get("SLURM_STEP_ID") or None
    return Allocation(job_id, cpus, nodes, ntasks, source, gpus, step)


def check_step_resources(resources: dict, allocation: Allocation, backend: str = BACKEND,
                         max_cores: Optional[int] = None) -> None:
    """ValueError for what a job step of ``allocation`` cannot honour or the allocation cannot hold."""
    reject_unhonoured(resources, backend, HONOURED, HONOURED_ELSEWHERE)
    cpus = resources["cores"] * resources["threads_per_core"]
    if cpus > allocation.cpus:
        raise ValueError(
            f"resource_dict asks for cores = {resources['cores']} x threads_per_core = "
            f"{resources['threads_per_core']} = {cpus} CPU(s), more than the {allocation.describe()} "
            f"has. Ask for at most {allocation.cpus} CPU(s), or get a larger allocation (salloc -n {cpus} ...)."
        )
    if max_cores is not None and cpus > max_cores:
        raise ValueError(
            f"resource_dict asks for {cpus} CPU(s) (cores x threads_per_core), more than "
            f"max_cores = {max_cores} of this Executor"
        )
    nodes = resources.get("num_nodes")
    if nodes is not None and nodes > allocation.nodes:
        raise ValueError(
            f"resource_dict['num_nodes'] = {nodes} exceeds the {allocation.describe()}: a job step "
            f"can use at most {allocation.nodes} node(s)"
        )
    if resources.get("gpus_per_core") and not allocation.gpus:
        raise ValueError(
            f"resource_dict['gpus_per_core'] = {resources['gpus_per_core']}, but the "
            f"{allocation.describe()} holds no GPUs (SLURM_JOB_GPUS is not set): ask for them when "
            "you allocate (salloc --gpus-per-task=1 ...), or set gpus_per_core to 0"
        )


def allocation_max_cores(max_cores: Optional[int], allocation: Allocation) -> int:
    """``max_cores`` of an Executor in ``allocation``: the allocation's CPUs by default, never more
    (steps beyond them would wait for CPUs that never free up)."""
    if max_cores is None:
        return allocation.cpus
    if max_cores > allocation.cpus:
        raise ValueError(
            f"max_cores = {max_cores} exceeds the {allocation.describe()}: use max_cores <= "
            f"{allocation.cpus} (or leave it out), or get a larger allocation")
    return max_cores


def srun_command(resources: dict, pmi_mode: Optional[str] = "pmi2", srun: str = "srun",
                 keep_stdin: bool = False, overlap: bool = False) -> list[str]:
    """The ``srun`` prefix of one job step with ``resources`` (see RESOURCE_KEYS).

    ``overlap``: this process runs in a step of its own (``srun python script.py``), which holds
    CPUs of the allocation while it mostly waits; the task steps share them (``--overlap``)
    instead of waiting for them forever. The Executor still counts the CPUs it hands out.
    """
    command = [srun, "--exact", "-n", str(resources["cores"]),
               "--cpus-per-task", str(resources["threads_per_core"])]
    if overlap:
        command.append("--overlap")
    if resources.get("gpus_per_core"):
        command += ["--gpus-per-task", str(resources["gpus_per_core"])]
    if resources.get("num_nodes"):
        command += ["-N", str(resources["num_nodes"])]
    if resources.get("run_time_max"):
        command += ["--time", str(max(1, math.ceil(resources["run_time_max"] / 60)))]
    if resources.get("memory_max") is not None:
        from executorlib.spawners.slurm import slurm_memory

        command += ["--mem", slurm_memory(resources["memory_max"])]
    if resources.get("job_name"):
        command += ["--job-name", resources["job_name"]]
    if resources.get("cwd"):
        command += ["--chdir", resources["cwd"]]
    extra = list(resources.get("slurm_cmd_args") or ())
    if resources["cores"] > 1 and pmi_mode is not None and not any(a.startswith("--mpi") for a in extra):
        command.append(f"--mpi={pmi_mode}")
    if keep_stdin:
        command.append("--input=0")  # the pool protocol: requests go to rank 0 only
    return command + extra


def step_environment(resources: dict) -> dict[str, str]:
    """The environment of a step: the allocation's own, without the memory requests an sbatch
    script inherits (``SLURM_MEM_PER_*`` would give every step all the job's memory, so that
    steps run one after another), and with ``OMP_NUM_THREADS``."""
    env = dict(os.environ)
    if resources.get("memory_max") is None:
        for name in _MEMORY_VARIABLES:
            env.pop(name, None)
    env["OMP_NUM_THREADS"] = str(resources["threads_per_core"])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


#: what slurmstepd / srun print when SLURM ends a step, and the state it means
_STEP_MARKERS = [
    (re.compile(r"\*\*\* STEP (\S+) ON \S+ CANCELLED AT \S+ DUE TO TIME LIMIT"), "TIMEOUT"),
    # before CANCELLED: slurmstepd also prints "CANCELLED AT" for a step it kills for its memory
    (re.compile(r"StepId=(\S+) exceeded memory limit"), "OUT_OF_MEMORY"),
    (re.compile(r"Detected \d+ oom[-_]kill event|oom[-_]kill|Exceeded (?:step|job) memory limit"),
     "OUT_OF_MEMORY"),
    (re.compile(r"\*\*\* (?:STEP|JOB) (\S+) ON \S+ CANCELLED AT \S+ DUE TO PREEMPTION"), "PREEMPTED"),
    (re.compile(r"\*\*\* (?:STEP|JOB) (\S+) ON \S+ CANCELLED AT"), "CANCELLED"),
    (re.compile(r"srun: error: .*(?:Unable to create step|Job step creation)"), "STEP_CREATION_FAILED"),
]


def step_state(output: str, code: int) -> str:
    """The final state of a step from the exit code of its srun and what srun printed."""
    for pattern, state in _STEP_MARKERS:
        match = pattern.search(output)
        if match is not None:
            step = match.group(1) if match.groups() else None
            return f"{state} (step {step}, srun exit code {code})" if step else f"{state} (srun exit code {code})"
    return exit_state(code)


def _tail(path: Optional[Path], size: int = 16384) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _check_pmi_mode(pmi_mode: Optional[str]) -> Optional[str]:
    if pmi_mode is None or (isinstance(pmi_mode, str) and re.fullmatch(r"[A-Za-z0-9_]+", pmi_mode)):
        return pmi_mode
    raise ValueError(f"pmi_mode must be None or a name srun --mpi accepts (e.g. {', '.join(PMI_MODES)}), "
                     f"got {pmi_mode!r}; 'srun --mpi=list' shows this cluster's")


# -- one step per task -----------------------------------------------------------------------------
class SrunSpawner(LocalSpawner):
    """Every task is one ``srun --exact`` step of the current allocation."""

    name = BACKEND
    max_poll_interval = 0.1
    result_grace_period = 1.0

    def __init__(self, max_workers: Optional[int] = None, max_cores: Optional[int] = None,
                 pmi_mode: Optional[str] = "pmi2", allocation: Optional[Allocation] = None):
        self.allocation = allocation or current_allocation()
        self.pmi_mode = _check_pmi_mode(pmi_mode)
        super().__init__(max_workers=max_workers,
                         max_cores=allocation_max_cores(max_cores, self.allocation))
        self._logs: dict[str, Optional[Path]] = {}

    def check_resources(self, resources: dict) -> None:
        check_step_resources(resources, self.allocation, max_cores=self.max_cores)

    def has_capacity(self, resources: dict) -> bool:
        running = self._running()
        if self.max_workers is not None and len(running) >= self.max_workers:
            return False
        need = resources["cores"] * resources["threads_per_core"]
        return sum(p.cores for p in running) + need <= self.max_cores  # type: ignore[operator]

    def command(self, job: JobSpec) -> list[str]:
        """The step's command line: the srun prefix, then the worker."""
        return (srun_command(job.resources, self.pmi_mode, overlap=self.allocation.step is not None)
                + list(job.command))

    @staticmethod
    def state_from_output(output: str, code: int) -> str:
        return step_state(output, code)

    def submit(self, job: JobSpec, dependencies: list[str]) -> str:
        resources = job.resources
        command = self.command(job)
        log = open(job.log_path, "ab", buffering=0) if job.log_path else None
        try:
            popen = subprocess.Popen(
                command, cwd=str(job.task_dir), env=step_environment(resources),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as err:
            if log is not None:
                log.close()
            raise SubmissionError(f"cannot start {command[0]} (is this a SLURM node?): {err}") from None
        drained = threading.Event()
        self._pump.add(popen.stdout, popen.stderr, log, drained)
        run_time_max = resources.get("run_time_max")
        # SLURM ends the step at its --time; the spawner's own deadline is a backstop only
        deadline = (time.monotonic() + math.ceil(run_time_max / 60) * 60 + TIME_LIMIT_GRACE
                    if run_time_max else None)
        job_id = str(popen.pid)
        cpus = resources["cores"] * resources["threads_per_core"]
        self._processes[job_id] = _Process(popen, cpus, deadline, drained, [])
        self._logs[job_id] = job.log_path
        if resources.get("job_name"):
            self._names[job_id] = resources["job_name"]
        return job_id

    def states(self, job_ids: list[str]) -> dict[str, JobStatus]:
        result = super().states(job_ids)
        for job_id in job_ids:
            if job_id in result or job_id not in self._logs:
                continue
            state = self._finished.get(job_id)
            log = self._logs.pop(job_id)
            if state is not None and not state.startswith("COMPLETED"):
                code = _exit_code(state)
                if code is not None:
                    self._finished[job_id] = self.state_from_output(_tail(log), code)
        return result

    def describe(self, job_id: str) -> str:
        name = self._names.get(job_id)
        return (f"srun job step (srun process {job_id}) of SLURM allocation {self.allocation.job_id}"
                + (f" (job_name {name!r})" if name else ""))


def _exit_code(state: str) -> Optional[int]:
    match = re.fullmatch(r"FAILED \(exit code (\d+)\)", state)
    if match:
        return int(match.group(1))
    match = re.fullmatch(r"KILLED \((\w+)\)", state)
    if match:
        import signal

        try:
            return -int(signal.Signals[match.group(1)])
        except KeyError:
            return None
    return None


# -- block allocation: persistent workers as long-lived steps ---------------------------------------
#: the keys a started worker step cannot change
POOL_FIXED = ("cores", "threads_per_core", "gpus_per_core", "num_nodes", "memory_max", "slurm_cmd_args")


class SrunPoolSpawner(WorkerPoolSpawner):
    """The worker pool of :mod:`executorlib.spawners.pool`, each worker a long-lived srun step.

    ``restart_limit`` bounds how many times a worker is started again after it died (a task
    that kills its worker, a cancelled step); after that the tasks fail instead of starting
    workers forever.
    """

    name = BACKEND
    max_poll_interval = 0.05
    result_grace_period = 1.0

    def __init__(self, max_workers: Optional[int] = None, max_cores: Optional[int] = None,
                 resources: Optional[dict] = None, init_function: Optional[Callable[[], dict]] = None,
                 cache_directory: Optional[os.PathLike | str] = None, pmi_mode: Optional[str] = "pmi2",
                 restart_limit: int = 10, allocation: Optional[Allocation] = None,
                 temporary_cache: bool = False):
        from executorlib.resources import merge_resources

        self.allocation = allocation or current_allocation()
        self.pmi_mode = _check_pmi_mode(pmi_mode)
        if not isinstance(restart_limit, int) or isinstance(restart_limit, bool) or restart_limit < 0:
            raise ValueError(f"restart_limit must be an int >= 0, got {restart_limit!r}")
        full = merge_resources(resources, None)
        max_cores = allocation_max_cores(max_cores, self.allocation)
        self.check_step_resources(full, max_cores)
        cpus = full["cores"] * full["threads_per_core"]
        workers = max(1, max_cores // cpus) if max_workers is None else min(max_workers, max(1, max_cores // cpus))
        # the base class checks and starts with local resources; the steps get the real ones
        self._deferred = True
        self._time_limit = full.get("run_time_max")
        local = {"run_time_max": None}
        super().__init__(max_workers=workers, max_cores=None, resources=local,
                         init_function=init_function, cache_directory=cache_directory,
                         restart_limit=restart_limit, temporary_cache=temporary_cache)
        self._step_cores = max_cores
        self.resources = full
        self.resources["run_time_max"] = None  # a task's limit, not the worker's (see submit)
        self.max_workers = workers
        self._deferred = False
        try:
            self._top_up()
        except BaseException:
            self.close()
            raise

    def _start_worker(self):  # noqa: ANN202 - the base class's _Worker
        if self._exhausted():
            return super()._start_worker()  # raises: no restart left (the base class counts them)
        # the base class hands os.environ on: without the memory requests of an sbatch script
        # (each worker step would take all the job's memory and the others would wait)
        saved = {name: os.environ.pop(name) for name in _MEMORY_VARIABLES
                 if name in os.environ and self.resources.get("memory_max") is None}
        try:
            return super()._start_worker()
        finally:
            os.environ.update(saved)

    def _top_up(self) -> None:
        if self._deferred:
            return
        super()._top_up()

    def _what_workers(self) -> str:
        return "worker steps"

    def _where_output(self) -> str:
        return "srun's messages went to this process's stderr"

    def _size_limit(self) -> Optional[tuple[int, str]]:
        cpus = self.resources["cores"] * self.resources["threads_per_core"]
        return (max(1, self._step_cores // cpus),
                f"max_cores = {self._step_cores} of the {self.allocation.describe()} with {cpus} CPU(s) per worker")

    def _command(self, token: str = "TOKEN") -> list[str]:
        inner = super()._command(token)
        if sys.executable in inner:  # drop the base class's mpiexec: srun starts the ranks
            inner = inner[inner.index(sys.executable):]
        step = dict(self.resources)
        step["cwd"] = None  # the worker starts in the client's directory, a task chdirs itself
        return self.launcher(step) + inner

    def launcher(self, resources: dict) -> list[str]:
        """The launcher prefix of a worker with ``resources``."""
        return srun_command(resources, self.pmi_mode, keep_stdin=True,
                            overlap=self.allocation.step is not None)

    def check_step_resources(self, resources: dict, max_cores: Optional[int] = None) -> None:
        check_step_resources(resources, self.allocation, max_cores=max_cores)

    def check_resources(self, resources: dict) -> None:
        self.check_step_resources(resources)
        for key in POOL_FIXED:
            if resources.get(key) != self.resources.get(key) and not (
                    not resources.get(key) and not self.resources.get(key)):
                raise ValueError(
                    f"resource_dict[{key!r}] = {resources.get(key)!r} cannot be used with "
                    f"block_allocation=True: the worker steps of this Executor were started with "
                    f"{key} = {self.resources.get(key)!r} (from Executor(resource_dict=...)), and a "
                    f"running step cannot change it. Give {key} to the Executor, or use "
                    "block_allocation=False for tasks with other resources.")

    @staticmethod
    def _state_of(code: int) -> str:
        if code in (137, -9, 143, -15):
            return (f"{exit_state(code)}: the worker's srun step was killed (cancelled with "
                    "scancel, out of time or out of memory; srun's message is in this process's stderr)")
        return exit_state(code, success="EXITED (the worker step ended without answering)")

    def describe(self, job_id: str) -> str:
        return (f"block-allocation worker step (srun process {job_id}) of SLURM allocation "
                f"{self.allocation.job_id}")

    def __repr__(self) -> str:
        return (f"<SrunPoolSpawner {len(self._workers)}/{self.max_workers} worker steps in "
                f"{self.allocation.describe()}, cores={self.resources['cores']}>")
