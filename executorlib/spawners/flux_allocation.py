"""The HPC allocation mode inside a flux instance: ``backend="flux_allocation"``.

The same as :mod:`executorlib.spawners.srun` with ``flux run`` as the launcher: inside an
instance (``flux alloc -n 4 python script.py``, ``flux batch``, or ``flux start``) every task is
one job of that instance, ``flux run -n <cores> -c <threads_per_core> [-g <gpus_per_core>]
[-t <run_time_max>s] ... python -m executorlib.worker``, run as a subprocess of this process;
with ``block_allocation=True`` the persistent workers are long-lived ``flux run`` jobs fed over
stdin (``--input=0``: the requests go to rank 0).

The instance's size comes from ``flux resource list`` once, when the Executor starts. flux-core
is not installed on the machines this project is tested on: the tests stop at the command lines
and the parsing (tests/allocation/test_commands.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any, Callable, Optional

from executorlib.resources import reject_unhonoured
from executorlib.spawners.base import JobSpec
from executorlib.spawners.local import exit_state
from executorlib.spawners.srun import Allocation, SrunPoolSpawner, SrunSpawner

__all__ = ["FluxAllocationSpawner", "FluxPoolSpawner", "flux_run_command", "flux_instance",
           "parse_resource_list", "flux_job_state"]

BACKEND = "flux_allocation"
RESOURCE_LIST_COMMAND = ["flux", "resource", "list", "-n", "-s", "up", "-o", "{nnodes} {ncores} {ngpus}"]


def _anything(value: Any) -> bool:
    return True


HONOURED: dict[str, Callable[[Any], bool]] = {
    "cores": _anything, "threads_per_core": _anything, "gpus_per_core": _anything, "cwd": _anything,
    "run_time_max": _anything, "job_name": _anything, "num_nodes": _anything, "exclusive": _anything,
}
HONOURED_ELSEWHERE = {
    "memory_max": "backend='slurm_allocation' (srun --mem) and 'slurm_submission' (--mem); flux run has no memory limit",
    "partition": "backend='flux_submission' (--queue): a job of the instance runs in the instance",
    "account": "backend='flux_submission' (--bank)",
    "qos": "backend='slurm_submission' (--qos)",
    "slurm_cmd_args": "backend='slurm_allocation' and 'slurm_submission' (the srun line)",
    "submission_template": "backend='slurm_submission' and 'flux_submission' (the job script)",
    "openmpi_oversubscribe": "backend='local' (mpiexec --oversubscribe); flux starts the ranks here",
}


def no_instance_error() -> ValueError:
    return ValueError(
        "backend='flux_allocation' runs jobs inside a flux instance, and this process is not in one "
        "(FLUX_URI is not set). Run the script inside an instance, e.g. 'flux alloc -n 4 python "
        "script.py', 'flux batch -n 4 script.sh', or 'flux start python script.py' (on a SLURM "
        "cluster: 'srun --pty -n 4 flux start python script.py'). To submit every call as a job of "
        "its own instead, use backend='flux_submission'."
    )


def parse_resource_list(output: str, uri: str) -> Allocation:
    """``flux resource list -n -o '{nnodes} {ncores} {ngpus}'`` as an :class:`Allocation`."""
    fields = output.split()
    if len(fields) != 3 or not all(f.isdigit() for f in fields):
        raise ValueError(f"cannot read the size of the flux instance {uri} from "
                         f"{' '.join(RESOURCE_LIST_COMMAND)!r}: {output.strip()!r}")
    nodes, cores, gpus = (int(f) for f in fields)
    return Allocation(job_id=uri, cpus=cores, nodes=nodes, ntasks=None,
                      source="flux resource list", gpus=str(gpus) if gpus else None,
                      kind="flux instance")


def flux_instance(environ: Optional[dict] = None, run: Optional[Callable[[list[str]], str]] = None) -> Allocation:
    """The flux instance this process runs in; ValueError outside one or without ``flux``."""
    env = os.environ if environ is None else environ
    uri = env.get("FLUX_URI")
    if not uri:
        raise no_instance_error()
    if run is None:
        if shutil.which("flux") is None:
            raise ValueError(f"FLUX_URI={uri!r} is set, but the 'flux' command is not on PATH; "
                             "install flux-core (e.g. conda install -c conda-forge flux-core)")

        def run(command: list[str]) -> str:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                  stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                raise ValueError(f"{' '.join(command)} failed (exit code {done.returncode}): "
                                 f"{done.stderr.strip()}")
            return done.stdout
    return parse_resource_list(run(RESOURCE_LIST_COMMAND), uri)


def check_flux_resources(resources: dict, instance: Allocation, max_cores: Optional[int] = None) -> None:
    reject_unhonoured(resources, BACKEND, HONOURED, HONOURED_ELSEWHERE)
    cpus = resources["cores"] * resources["threads_per_core"]
    if cpus > instance.cpus:
        raise ValueError(
            f"resource_dict asks for cores = {resources['cores']} x threads_per_core = "
            f"{resources['threads_per_core']} = {cpus} core(s), more than the flux instance "
            f"{instance.job_id} has ({instance.cpus} core(s) on {instance.nodes} node(s), from "
            f"flux resource list)")
    if max_cores is not None and cpus > max_cores:
        raise ValueError(f"resource_dict asks for {cpus} core(s) (cores x threads_per_core), more "
                         f"than max_cores = {max_cores} of this Executor")
    if resources.get("num_nodes") and resources["num_nodes"] > instance.nodes:
        raise ValueError(f"resource_dict['num_nodes'] = {resources['num_nodes']} exceeds the "
                         f"{instance.nodes} node(s) of the flux instance {instance.job_id}")
    gpus = resources.get("gpus_per_core") or 0
    if gpus and gpus * resources["cores"] > int(instance.gpus or 0):
        raise ValueError(f"resource_dict['gpus_per_core'] = {gpus} with cores = {resources['cores']} "
                         f"needs {gpus * resources['cores']} GPU(s); the flux instance "
                         f"{instance.job_id} has {instance.gpus or 0}")


def flux_run_command(resources: dict, pmi_mode: Optional[str] = None, keep_stdin: bool = False,
                     flux: str = "flux") -> list[str]:
    """The ``flux run`` prefix of one job with ``resources``."""
    command = [flux, "run", "-n", str(resources["cores"]), "-c", str(resources["threads_per_core"])]
    if resources.get("gpus_per_core"):
        command += ["-g", str(resources["gpus_per_core"])]
    if resources.get("num_nodes"):
        command += ["-N", str(resources["num_nodes"])]
    if resources.get("exclusive"):
        command.append("--exclusive")
    if resources.get("run_time_max"):
        command += ["-t", f"{int(resources['run_time_max'])}s"]
    if resources.get("job_name"):
        command.append(f"--job-name={resources['job_name']}")
    if resources.get("cwd"):
        command.append(f"--cwd={resources['cwd']}")
    if pmi_mode is not None:
        command += ["-o", f"pmi={pmi_mode}"]
    if keep_stdin:
        command.append("--input=0")
    return command


#: what flux run prints when the instance ends a job, and the state it means
_JOB_MARKERS = [
    (re.compile(r"exception type=timeout|resource allocation expired|job\.exception type=timeout"), "TIMEOUT"),
    (re.compile(r"exception type=cancel|job\.exception type=cancel"), "CANCELLED"),
    (re.compile(r"Out of memory|oom[-_ ]kill", re.IGNORECASE), "OUT_OF_MEMORY"),
    (re.compile(r"exception type=(\w+)"), "EXCEPTION"),
]


def flux_job_state(output: str, code: int) -> str:
    """The final state of a ``flux run`` job from its exit code and what it printed."""
    for pattern, state in _JOB_MARKERS:
        match = pattern.search(output)
        if match is not None:
            detail = f" {match.group(1)}" if state == "EXCEPTION" else ""
            return f"{state}{detail} (flux run exit code {code})"
    return exit_state(code)


class FluxAllocationSpawner(SrunSpawner):
    """Every task is one ``flux run`` job of the current flux instance."""

    name = BACKEND

    def __init__(self, max_workers: Optional[int] = None, max_cores: Optional[int] = None,
                 pmi_mode: Optional[str] = None, allocation: Optional[Allocation] = None):
        super().__init__(max_workers=max_workers, max_cores=max_cores, pmi_mode=pmi_mode,
                         allocation=allocation or flux_instance())

    def check_resources(self, resources: dict) -> None:
        check_flux_resources(resources, self.allocation, self.max_cores)

    def command(self, job: JobSpec) -> list[str]:
        return flux_run_command(job.resources, self.pmi_mode) + list(job.command)

    @staticmethod
    def state_from_output(output: str, code: int) -> str:
        return flux_job_state(output, code)

    def describe(self, job_id: str) -> str:
        name = self._names.get(job_id)
        return (f"flux run job (flux process {job_id}) of the flux instance {self.allocation.job_id}"
                + (f" (job_name {name!r})" if name else ""))


class FluxPoolSpawner(SrunPoolSpawner):
    """The block-allocation pool with long-lived ``flux run`` jobs as workers."""

    name = BACKEND

    def __init__(self, max_workers: Optional[int] = None, max_cores: Optional[int] = None,
                 resources: Optional[dict] = None, init_function: Optional[Callable[[], dict]] = None,
                 cache_directory: Optional[os.PathLike | str] = None, pmi_mode: Optional[str] = None,
                 restart_limit: int = 10, allocation: Optional[Allocation] = None,
                 temporary_cache: bool = False):
        super().__init__(max_workers=max_workers, max_cores=max_cores, resources=resources,
                         init_function=init_function, cache_directory=cache_directory,
                         pmi_mode=pmi_mode, restart_limit=restart_limit,
                         allocation=allocation or flux_instance(), temporary_cache=temporary_cache)

    def check_step_resources(self, resources: dict, max_cores: Optional[int] = None) -> None:
        check_flux_resources(resources, self.allocation, max_cores)

    def launcher(self, resources: dict) -> list[str]:
        return flux_run_command(resources, self.pmi_mode, keep_stdin=True)

    @staticmethod
    def _state_of(code: int) -> str:
        if code in (137, -9, 143, -15):
            return (f"{exit_state(code)}: the worker's flux job was killed (cancelled, out of time or "
                    "out of memory; flux's message is in this process's stderr)")
        return exit_state(code, success="EXITED (the worker job ended without answering)")

    def describe(self, job_id: str) -> str:
        return (f"block-allocation worker (flux run process {job_id}) of the flux instance "
                f"{self.allocation.job_id}")
