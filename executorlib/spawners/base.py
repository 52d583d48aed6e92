"""The seam between the generic scheduler loop and a job scheduler.

A spawner starts one job per task, reports the states of many jobs in one call, and cancels jobs.
It never touches Futures: only the scheduler loop resolves them.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from executorlib.store import Outcome

__all__ = ["JobSpec", "JobStatus", "Spawner", "worker_command"]


@dataclass(frozen=True)
class JobStatus:
    """A job as the scheduler reports it right now.

    ``state`` is the scheduler's own word (PENDING, RUNNING, COMPLETED, TIMEOUT, ...), ``active``
    is True while the job is queued or running, ``reason`` is why a queued job waits (SLURM's
    ``%r``, e.g. ``DependencyNeverSatisfied``). ``dependency_failed`` is True when the job waits
    on a parent that ended without success and so will never start: the adapter sets it from its
    scheduler's own words, the loop reads only this flag.

    ``cluster_failure`` is True when the job ended (or, on an active job, would end if it vanished)
    for the cluster's reasons, not the code's: its node failed or was set down, it was preempted,
    it was requeued and then forgotten. The loop resubmits such a call
    (``resource_dict["max_retries"]``). ``exceeded`` names the ``resource_dict`` key whose limit the
    job ran into (``"run_time_max"``, ``"memory_max"``), for the error message. Both are set by the
    adapter from its scheduler's words; the loop reads only the flags.
    """

    state: str
    active: bool
    running: bool = False
    reason: str = ""
    dependency_failed: bool = False
    cluster_failure: bool = False
    exceeded: str = ""


@dataclass(frozen=True)
class JobSpec:
    """Everything a spawner needs to start the job of one task."""

    key: str
    task_dir: Path
    function_name: str
    resources: dict
    command: list[str] = field(default_factory=list)  # the worker, without an MPI launcher
    log_path: Optional[Path] = None
    #: a nonce from the task's claim record; the spawner puts it into the job's name or comment so
    #: that :meth:`Spawner.find_tagged` finds a job whose id was never recorded ("" = no tag)
    tag: str = ""
    #: a call the spawner runs from memory (:meth:`Spawner.accepts_call`): the pickled
    #: ``function``, ``args`` and ``kwargs`` (TaskStore.pickle_call) and ``parents``, the values of
    #: the parent tasks by key; None: the call is in the task folder's task.h5
    call: Optional[dict] = None
    #: False: ``command`` runs as given, without the MPI launcher (a worker job of ``max_jobs``
    #: launches each call it serves itself)
    launcher: bool = True


def worker_command(task_dir: Path, cores: int, python: str = sys.executable) -> list[str]:
    """The command that runs one task; ``--mpi`` makes the worker gather one result per rank."""
    command = [python, "-m", "executorlib.worker"]
    if cores > 1:
        command.append("--mpi")
    return command + [str(task_dir)]


class Spawner(ABC):
    """Starts, watches and cancels the jobs of one Executor."""

    #: the backend's name, as stored in the cache's job records
    name: str = "base"
    #: True: a task is submitted at once with its parents' job ids as dependencies (the job
    #: scheduler holds it); False: the loop starts a task only after its parents are done.
    submits_with_dependencies: bool = False
    #: the longest pause between two status queries while nothing changes (seconds)
    max_poll_interval: float = 1.0
    #: the shortest pause between two status queries, also while things change: a floor for
    #: ``refresh_rate`` that keeps a busy Executor from flooding a shared scheduler daemon. A
    #: spawner with a floor may have both set by the site's config file and by the user's
    #: environment (EXECUTORLIB_POLL_FLOOR, EXECUTORLIB_POLL_CEILING; executorlib.cadence)
    min_poll_interval: float = 0.0
    #: how long a job may be gone from the queue before its missing result counts as a failure
    result_grace_period: float = 1.0
    #: the first word of a final state -> the resource_dict key whose limit the job ran into
    #: (e.g. ``{"TIMEOUT": "run_time_max"}``), for :meth:`final_status`
    limit_states: dict = {}
    #: the pause before the first resubmission of a job the cluster lost (doubled per attempt)
    retry_backoff: float = 10.0
    #: the longest pause between two resubmissions of one call
    max_retry_backoff: float = 300.0

    def follows(self, backend: Optional[str]) -> bool:
        """Whether this spawner can follow (ask about, cancel) a job that job.json records under
        ``backend``: its own name; a wrapper also its inner spawner's (``max_jobs``)."""
        return backend == self.name

    def check_resources(self, resources: dict) -> None:
        """Raise ValueError at submit time for resources this backend cannot honour."""

    def has_capacity(self, resources: dict) -> bool:
        """True when a task with ``resources`` may start now (the local backend's slots)."""
        return True

    def accepts_call(self, resources: dict) -> bool:
        """True when this spawner runs a task with ``resources`` from memory: the loop writes no
        task.h5 and no job record, hands the call over in :attr:`JobSpec.call`, and takes the
        outcome from :meth:`take_outcome` instead of result.h5 (a block-allocation pool with a
        temporary cache, whose records nobody reads later)."""
        return False

    def has_outcome(self, key: str) -> bool:
        """True when the outcome of the task ``key``, sent in memory, is waiting in the spawner."""
        return False

    def take_outcome(self, key: str) -> Optional["Outcome"]:
        """The outcome of the task ``key`` sent in memory, once (None: none, look in the store)."""
        return None

    @abstractmethod
    def submit(self, job: JobSpec, dependencies: list[str]) -> str:
        """Start ``job`` after the jobs ``dependencies`` succeeded; return its job id.

        Raise :class:`executorlib.errors.SubmissionError` with the scheduler's message on failure.
        """

    @abstractmethod
    def states(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """The states of ``job_ids`` in one query; a job the scheduler no longer knows is absent."""

    def find_tagged(self, tags: list[str]) -> dict[str, str]:
        """The jobs of this user that carry one of ``tags`` (tag -> job id), in one query.

        A client killed after the scheduler accepted a job but before its id was recorded leaves a
        claim with a tag; the next client asks here and attaches to the job instead of starting a
        second one. The default knows no tagged jobs.
        """
        return {}

    def final_state(self, job_id: str) -> Optional[str]:
        """The final state of a job that left the queue, if the scheduler still remembers it."""
        return None

    def final_status(self, job_id: str) -> Optional[JobStatus]:
        """Why a job that left the queue ended, if the scheduler still remembers it: the state of
        :meth:`final_state` with the flags of :class:`JobStatus` (``cluster_failure``,
        ``exceeded``). The default knows only the state; adapters that can tell the cluster's
        failures from the code's override it."""
        state = self.final_state(job_id)
        if state is None:
            return None
        word = state.split()[0] if state.split() else ""
        return JobStatus(state, active=False, exceeded=self.limit_states.get(word, ""))

    @abstractmethod
    def cancel(self, job_ids: list[str]) -> None:
        """Cancel these jobs; ids that already ended are ignored."""

    def close(self) -> None:
        """Release what the spawner holds (called once at shutdown)."""

    def log_file(self, task_dir: Path, job_id: Optional[str] = None) -> Optional[Path]:
        """Where the job's output went, when the spawner chose it (else the store's job.out)."""
        return None

    def describe(self, job_id: str) -> str:
        """A human-readable name of the job for error messages."""
        return f"{self.name} job {job_id}"
