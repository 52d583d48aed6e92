"""SLURM: ``sbatch`` through pysqa, ``squeue`` for this executor's jobs, ``scancel``.

Accounting (``sacct``) is not needed: ``squeue --states=all`` reports jobs that ended until SLURM
forgets them (``MinJobAge``), ``scontrol show job`` is asked once per vanished job, and the job's
own files say the rest. On a cluster with accounting (slurmdbd), ``sacct`` gives the final state of a
job that ``scontrol`` has forgotten; without accounting it is asked once and then left alone.
"""

from __future__ import annotations

import getpass
import math
import re
from typing import Optional

from executorlib.errors import SubmissionError
from executorlib.spawners.base import JobStatus
from executorlib.spawners.batch import BatchSpawner, match_tagged, run_command

__all__ = ["SlurmSpawner", "parse_squeue", "parse_scontrol_job", "parse_sacct", "parse_tagged", "slurm_status",
           "slurm_time", "slurm_memory", "transient_refusal"]

#: states in which a job is still queued or running (``squeue --states=all`` also lists ended ones)
ACTIVE_STATES = {
    "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
    "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "SPECIAL_EXIT", "STOPPED", "RESV_DEL_HOLD",
    "POWER_UP_NODE",
}
RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT"}
#: final states that are the cluster's doing, never the code's: the call is submitted again
CLUSTER_STATES = {"NODE_FAIL", "BOOT_FAIL", "PREEMPTED"}
#: reasons (``%r``, ``Reason=``) that make a FAILED/CANCELLED job the cluster's failure: a node of
#: the allocation went down (also when the job itself reports FAILED, as with ``--no-requeue``)
CLUSTER_REASONS = {"NodeDown", "SystemFailure"}
#: states of a job SLURM requeued: if it vanishes without a result, the cluster lost it
REQUEUE_STATES = {"REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD"}
#: final states of a job that ran into a resource_dict limit: the key to raise
EXCEEDED = {"TIMEOUT": "run_time_max", "DEADLINE": "run_time_max", "OUT_OF_MEMORY": "memory_max"}
#: the final state of a forgotten job, from accounting (one line per job with -X)
SACCT_FIELDS = "State,ExitCode,Reason"
#: sacct's words for "this cluster has no accounting": sacct is not asked again
NO_ACCOUNTING = ("accounting storage is disabled", "was not found on PATH")
#: above this many jobs, ask for the user's jobs and filter, instead of listing ids on the command line
MAX_IDS_PER_QUERY = 500
SQUEUE_FORMAT = "%i|%T|%r"
#: for find_tagged: the job name last, since a name may itself contain "|"
TAGGED_FORMAT = "%i|%T|%j"
#: sbatch's refusals that pass by themselves: a site's submit limits (the job is accepted once the
#: user's queue has room again) and a slurmctld that did not answer in time (restarting, busy)
TRANSIENT_REFUSALS = (
    "QOSMaxSubmitJobPerUserLimit", "QOSMaxSubmitJobPerAccountLimit", "AssocMaxSubmitJobLimit",
    "AssocGrpSubmitJobsLimit", "QOSGrpSubmitJobsLimit", "Job violates accounting/QOS policy",
    "Socket timed out", "Unable to contact slurm controller", "Slurm temporarily unable to accept job",
)


def transient_refusal(message: str) -> bool:
    """True when sbatch's error ``message`` is a refusal that passes by itself."""
    return any(text in message for text in TRANSIENT_REFUSALS)


#: reasons that only repeat the final state (left out of the state shown in errors)
_REPEATING_REASONS = {"TimeLimit", "NonZeroExitCode"}
#: what ``--mem`` accepts: a whole number with an optional unit
_MEMORY_PATTERN = re.compile(r"0*[1-9][0-9]*[KMGTkmgt]?")


def slurm_time(seconds: int) -> str:
    """``--time`` in SLURM's ``minutes:seconds`` form (second resolution)."""
    return f"{seconds // 60}:{seconds % 60:02d}"


def slurm_memory(memory_max: object) -> str:
    """``--mem``: a number is GB (fractions become MB), a string is passed as written."""
    if isinstance(memory_max, str):
        return memory_max.strip()
    megabytes = float(memory_max) * 1024  # type: ignore[arg-type]
    if megabytes % 1024 == 0:
        return f"{int(megabytes // 1024)}G"
    # rounded up, never to 0: SLURM reads --mem=0 as "all the memory of the node"
    return f"{max(1, math.ceil(megabytes))}M"


def parse_slurm_duration(text: str) -> Optional[int]:
    """Seconds of a SLURM time limit as sinfo prints it (``30``, ``30:00``, ``2:00:00``,
    ``1-12:00:00``); None for ``infinite``/``UNLIMITED`` or what cannot be read."""
    text = text.strip()
    if not text or text.lower() in ("infinite", "unlimited", "n/a", "none"):
        return None
    days, _, rest = text.rpartition("-")
    try:
        parts = [int(x) for x in rest.split(":")]
        day_seconds = int(days) * 86400 if days else 0
    except ValueError:
        return None
    if len(parts) == 1:  # minutes
        return day_seconds + parts[0] * 60
    if len(parts) == 2:  # minutes:seconds, or hours:minutes after days
        return day_seconds + (parts[0] * 3600 + parts[1] * 60 if days else parts[0] * 60 + parts[1])
    if len(parts) == 3:
        return day_seconds + parts[0] * 3600 + parts[1] * 60 + parts[2]
    return None


def parse_squeue(output: str) -> dict[str, JobStatus]:
    """Parse ``squeue -h -o '%i|%T|%r'`` lines into job id -> status."""
    states: dict[str, JobStatus] = {}
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0]:
            continue
        job_id, state = parts[0], parts[1].strip().upper()
        reason = parts[2].strip() if len(parts) > 2 else ""
        state = state.split()[0] if state else "UNKNOWN"
        states[job_id] = slurm_status(state, reason)
    return states


def slurm_status(state: str, reason: str = "") -> JobStatus:
    """The generic status of a job in SLURM's ``state`` (JobState) with ``reason`` (``%r``,
    ``Reason=``): whether it is the cluster's failure, which limit it exceeded."""
    state = state.strip().upper()
    reason = "" if reason in ("None", "(null)") else reason.strip()
    active = state in ACTIVE_STATES
    if state in REQUEUE_STATES:
        cluster = True  # active; counts only if it vanishes without a result
    elif active:
        cluster = False
    else:
        cluster = state in CLUSTER_STATES or (state in ("FAILED", "CANCELLED") and reason in CLUSTER_REASONS)
    return JobStatus(state, active=active, running=state in RUNNING_STATES, reason=reason,
                     dependency_failed=reason == "DependencyNeverSatisfied",
                     cluster_failure=cluster, exceeded="" if active else EXCEEDED.get(state, ""))


def parse_scontrol_job(output: str) -> Optional[JobStatus]:
    """The status in ``scontrol show job --oneliner`` output (None without a JobState)."""
    fields = dict(f.split("=", 1) for f in output.split() if "=" in f)
    state = fields.get("JobState")
    if not state:
        return None
    return slurm_status(state, fields.get("Reason", ""))


def parse_sacct(output: str) -> Optional[JobStatus]:
    """The status in ``sacct -n -P -X -o State,ExitCode,Reason`` output (the last line: the job's
    latest run); None without one. ``CANCELLED by 0`` is CANCELLED; a FAILED job without a reason
    gets scontrol's ``NonZeroExitCode``."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        return None
    parts = lines[-1].strip().split("|")
    words = parts[0].split()
    if not words:
        return None
    state = words[0].upper()
    exit_code = parts[1].strip() if len(parts) > 1 else ""
    reason = parts[2].strip() if len(parts) > 2 else ""
    if reason in ("", "None", "(null)") and state == "FAILED" and exit_code.split(":")[0] not in ("", "0"):
        reason = "NonZeroExitCode"
    return slurm_status(state, reason)


def parse_tagged(output: str) -> list[tuple[str, bool, str]]:
    """Parse ``squeue -h -o '%i|%T|%j'`` lines into (job id, active, job name)."""
    jobs = []
    for line in output.splitlines():
        parts = line.strip().split("|", 2)
        if len(parts) < 3 or not parts[0]:
            continue
        state = parts[1].strip().upper().split()
        jobs.append((parts[0], bool(state) and state[0] in ACTIVE_STATES, parts[2]))
    return jobs


class SlurmSpawner(BatchSpawner):
    """One sbatch job per task; Future arguments become ``--dependency=afterok:``."""

    name = "slurm"
    queue_type = "SLURM"
    template_name = "slurm.sh.j2"

    def __init__(self, pysqa_config_directory=None):
        super().__init__(pysqa_config_directory)
        self._default_partition: Optional[str] = None
        self._partition_known = False
        self._final: dict[str, JobStatus] = {}
        self._time_limits: dict[Optional[str], Optional[int]] = {}
        #: False once sacct said that the cluster has no accounting (then it is not asked again)
        self._accounting: Optional[bool] = None

    # -- job script --------------------------------------------------------------------------------
    def check_resources(self, resources: dict) -> None:
        """Values that end up in ``#SBATCH`` lines must stay on their line (and inside quotes)."""
        super().check_resources(resources)
        for name in ("job_name", "partition", "account", "qos"):
            value = resources.get(name)
            if isinstance(value, str) and (not value.isprintable() or '"' in value):
                raise ValueError(
                    f"resource_dict[{name!r}] = {value!r} cannot be written to a SLURM job script: "
                    "use printable characters without double quotes or line breaks"
                )
        memory = resources.get("memory_max")
        if isinstance(memory, str) and not _MEMORY_PATTERN.fullmatch(memory.strip()):
            raise ValueError(
                f"resource_dict['memory_max'] = {memory!r} is not a SLURM memory size: use a "
                "number of GB, or a string like '500M', '2G' or '1T'"
            )

    def launch_command(self, resources: dict, worker: list[str]) -> list[str]:
        """``srun`` for MPI (cores > 1, ``--mpi=pmi2`` unless slurm_cmd_args name one), and also
        for one core when ``slurm_cmd_args`` are given, so that they are never dropped."""
        cores = resources["cores"]
        extra = list(resources.get("slurm_cmd_args") or [])
        if cores == 1 and not extra:
            return worker
        launcher = ["srun", "-n", str(cores), "-c", str(resources["threads_per_core"])]
        if cores > 1 and not any(arg.startswith("--mpi") for arg in extra):
            launcher.append("--mpi=pmi2")
        return launcher + extra + worker

    def template_variables(self, resources: dict) -> dict:
        variables = {}
        if resources.get("run_time_max"):
            variables["slurm_time"] = slurm_time(resources["run_time_max"])
        if resources.get("memory_max"):
            variables["slurm_memory"] = slurm_memory(resources["memory_max"])
        return variables

    def default_partition(self) -> Optional[str]:
        """The cluster's default partition (``sinfo`` marks it with ``*``), asked once."""
        if not self._partition_known:
            try:
                output = run_command(["sinfo", "-h", "-o", "%P"], what="is SLURM installed")
            except SubmissionError:
                output = ""
            for line in output.split():
                if line.endswith("*"):
                    self._default_partition = line.rstrip("*")
                    break
            self._partition_known = True
        return self._default_partition

    def partition_time_limit(self, partition: Optional[str]) -> Optional[int]:
        """The longest time limit (seconds) a job may have in ``partition`` (default: the
        cluster's default partition), from ``sinfo``; None when unlimited or unknown. A worker
        job of max_jobs never asks for more, else SLURM would hold it (PartitionTimeLimit)."""
        partition = partition or self.default_partition()
        if partition not in self._time_limits:
            try:
                output = run_command(["sinfo", "-h", "-p", partition, "-o", "%l"] if partition
                                     else ["sinfo", "-h", "-o", "%l"])
                limits = [parse_slurm_duration(line) for line in output.split()]
                self._time_limits[partition] = None if not limits or None in limits else max(limits)  # type: ignore
            except SubmissionError:
                self._time_limits[partition] = None
        return self._time_limits[partition]

    def submit(self, job, dependencies: list[str]) -> str:
        """sbatch through pysqa; a refusal for a site's submit limit or an unanswered slurmctld
        is marked ``transient`` (the loop holds the call and submits it again later)."""
        try:
            return super().submit(job, dependencies)
        except SubmissionError as error:
            if not error.transient and transient_refusal(str(error)):
                raise SubmissionError(str(error), transient=True) from error
            raise

    # -- status ------------------------------------------------------------------------------------
    def states(self, job_ids: list[str]) -> dict[str, JobStatus]:
        if not job_ids:
            return {}
        if len(job_ids) <= MAX_IDS_PER_QUERY:
            selection = ["--jobs", ",".join(job_ids)]
        else:
            selection = ["--user", getpass.getuser()]
        command = ["squeue", "--noheader", "--states=all", "--format", SQUEUE_FORMAT, *selection]
        try:
            output = run_command(command)
        except SubmissionError as error:
            if "Invalid job id" in str(error):  # every id listed has been forgotten
                return {}
            raise
        wanted = set(job_ids)
        states = {k: v for k, v in parse_squeue(output).items() if k in wanted}
        for job_id, status in states.items():
            if not status.active:
                self._final[job_id] = status
        return states

    def find_tagged(self, tags: list[str]) -> dict[str, str]:
        """The user's jobs whose name ends with ``-<tag>``: one ``squeue`` listing of all the
        user's jobs, also those that ended and SLURM still remembers (``MinJobAge``)."""
        if not any(tags):
            return {}
        command = ["squeue", "--noheader", "--states=all", "--user", getpass.getuser(),
                   "--format", TAGGED_FORMAT]
        return match_tagged(parse_tagged(run_command(command)), tags)

    def final_status(self, job_id: str) -> Optional[JobStatus]:
        """From the last ``squeue`` that listed the job ended, else ``scontrol show job`` (while
        SLURM remembers it, ``MinJobAge``): JobState and Reason, no accounting needed. A job that
        scontrol has forgotten is asked of ``sacct`` when the cluster has accounting."""
        if job_id in self._final:
            return self._final[job_id]
        try:
            status = parse_scontrol_job(run_command(["scontrol", "show", "job", "--oneliner", job_id]))
        except SubmissionError:
            status = None
        if status is None:
            status = self.accounted_status(job_id)
        if status is not None and not status.active:
            self._final[job_id] = status
        return status

    def accounted_status(self, job_id: str) -> Optional[JobStatus]:
        """The job's state in accounting (``sacct``); None without accounting (then sacct is not
        asked again), when sacct fails or does not know the job."""
        if self._accounting is False:
            return None
        try:
            output = run_command(["sacct", "-j", job_id, "-n", "-P", "-X", "-o", SACCT_FIELDS])
        except SubmissionError as error:
            if any(text in str(error) for text in NO_ACCOUNTING):
                self._accounting = False
            return None
        self._accounting = True
        return parse_sacct(output)

    def final_state(self, job_id: str) -> Optional[str]:
        status = self.final_status(job_id)
        if status is None:
            return None
        if not status.reason or status.reason in _REPEATING_REASONS:
            return status.state
        return f"{status.state} (reason {status.reason})"

    def cancel(self, job_ids: list[str]) -> None:
        if not job_ids:
            return
        try:
            run_command(["scancel", *job_ids])
        except SubmissionError as error:
            if "Invalid job id" not in str(error) and "already completing" not in str(error):
                raise

    def describe(self, job_id: str) -> str:
        return f"SLURM job {job_id}"
