"""An in-process spawner for unit tests of the scheduler loop.

It implements the seam of :mod:`executorlib.spawners.base` with threads that call the real worker
(``executorlib.worker.main``), so a task runs in microseconds instead of a process start. The
``DependencySpawner`` variant behaves like a batch scheduler: a job is accepted at once with its
parents' job ids and starts only after they all COMPLETED (``afterok``); a job whose parent failed
stays PENDING with reason ``DependencyNeverSatisfied``, as SLURM keeps it.

Knobs for the tests: ``refuse`` (function names whose submission fails), ``lose`` (function names
whose job ends in ``NODE_FAIL`` without running, the cluster's failure), ``lose_times`` (function
name -> how many of its jobs end so before one runs), ``time_out`` (function names whose job ends in
``TIMEOUT``, run_time_max exceeded), ``refuse_for_now`` (function name -> how many submissions are
refused as transient, e.g. a full queue), ``accept_then_time_out`` (function name -> how many
submissions start the job but report a transient error, as sbatch after a socket timeout), ``hold`` (an Event every job waits for before it
starts), ``status_failures`` (how many ``states`` calls raise before answering), ``capacity`` (a
predicate on the resources: False keeps a ready task waiting for a slot).
"""

from __future__ import annotations

import itertools
import threading
from typing import Optional

from executorlib.errors import SubmissionError
from executorlib.spawners.base import JobSpec, JobStatus, Spawner


class _Job:
    def __init__(self, spec: JobSpec, dependencies: list[str]):
        self.spec = spec
        self.dependencies = dependencies
        self.state = "PENDING"
        self.reason = ""
        self.cancelled = threading.Event()


class ThreadSpawner(Spawner):
    name = "thread"
    submits_with_dependencies = False
    max_poll_interval = 0.02
    result_grace_period = 0.05
    retry_backoff = 0.01

    def __init__(self, max_workers: Optional[int] = None, max_cores: Optional[int] = None):
        self.submitted: list[tuple[str, list[str]]] = []  # (function name, dependencies)
        self.cancelled: list[str] = []
        self.refuse: set[str] = set()
        self.lose: set[str] = set()
        self.lose_times: dict[str, int] = {}
        self.time_out: set[str] = set()
        self.refuse_for_now: dict[str, int] = {}
        self.accept_then_time_out: dict[str, int] = {}
        self.refusals = 0  # transient refusals given
        #: a job whose parent failed ends CANCELLED (SLURM's --kill-on-invalid-dep) instead of
        #: staying PENDING with reason DependencyNeverSatisfied
        self.kill_on_invalid_dep = False
        self.hold = threading.Event()
        self.hold.set()
        self.status_failures = 0
        self.capacity = lambda resources: True  # has_capacity(resources)
        self._jobs: dict[str, _Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def has_capacity(self, resources: dict) -> bool:
        return self.capacity(resources)

    def submit(self, job: JobSpec, dependencies: list[str]) -> str:
        if job.function_name in self.refuse:
            raise SubmissionError(f"sbatch: error: invalid partition for {job.function_name}")
        if self.refuse_for_now.get(job.function_name, 0) > 0:
            self.refuse_for_now[job.function_name] -= 1
            self.refusals += 1
            raise SubmissionError("sbatch: error: QOSMaxSubmitJobPerUserLimit", transient=True)
        job_id = f"j{next(self._ids)}"
        with self._lock:
            self._jobs[job_id] = _Job(job, list(dependencies))
            self.submitted.append((job.function_name, list(dependencies)))
        threading.Thread(target=self._run, args=(job_id,), daemon=True).start()
        if self.accept_then_time_out.get(job.function_name, 0) > 0:
            self.accept_then_time_out[job.function_name] -= 1
            self.refusals += 1
            raise SubmissionError("sbatch: error: Socket timed out on send/recv operation", transient=True)
        return job_id

    def find_tagged(self, tags: list[str]) -> dict[str, str]:
        with self._lock:
            return {job.spec.tag: job_id for job_id, job in self._jobs.items() if job.spec.tag in tags}

    def _dependencies_state(self, job: _Job) -> str:
        with self._lock:
            states = [self._jobs[d].state for d in job.dependencies if d in self._jobs]
        if any(s not in ("PENDING", "RUNNING", "COMPLETED") for s in states):
            return "never"
        return "ok" if all(s == "COMPLETED" for s in states) else "wait"

    def _run(self, job_id: str) -> None:
        from executorlib.worker import main

        job = self._jobs[job_id]
        while not job.cancelled.is_set():
            state = self._dependencies_state(job)
            if state == "ok" and self.hold.is_set():
                break
            job.reason = "DependencyNeverSatisfied" if state == "never" else "Dependency"
            if state == "never" and self.kill_on_invalid_dep:
                job.state = "CANCELLED"
                return
            job.cancelled.wait(0.005)
        else:
            return
        name = job.spec.function_name
        if name in self.lose or self.lose_times.get(name, 0) > 0:
            if name in self.lose_times:
                self.lose_times[name] -= 1
            job.state = "NODE_FAIL"
            return
        if name in self.time_out:
            job.state = "TIMEOUT"
            return
        job.state = "RUNNING"
        code = main([str(job.spec.task_dir)])
        if not job.cancelled.is_set():
            job.state = "COMPLETED" if code == 0 else "FAILED"

    def states(self, job_ids: list[str]) -> dict[str, JobStatus]:
        if self.status_failures > 0:
            self.status_failures -= 1
            raise RuntimeError("squeue: error: slurm_load_jobs error: Socket timed out")
        out = {}
        with self._lock:
            for job_id in job_ids:
                job = self._jobs.get(job_id)
                if job is not None and job.state in ("PENDING", "RUNNING"):
                    out[job_id] = JobStatus(job.state, active=True, running=job.state == "RUNNING",
                                            reason=job.reason if job.state == "PENDING" else "",
                                            dependency_failed=(job.state == "PENDING"
                                                               and job.reason == "DependencyNeverSatisfied"))
        return out

    def final_state(self, job_id: str) -> Optional[str]:
        job = self._jobs.get(job_id)
        return job.state if job is not None else None

    def final_status(self, job_id: str) -> Optional[JobStatus]:
        state = self.final_state(job_id)
        if state is None:
            return None
        reason = "NodeDown" if state == "NODE_FAIL" else self._jobs[job_id].reason if state == "CANCELLED" else ""
        return JobStatus(state, active=False, reason=reason, cluster_failure=state == "NODE_FAIL",
                         dependency_failed=reason == "DependencyNeverSatisfied",
                         exceeded="run_time_max" if state == "TIMEOUT" else "")

    def cancel(self, job_ids: list[str]) -> None:
        with self._lock:
            for job_id in job_ids:
                self.cancelled.append(job_id)
                job = self._jobs.get(job_id)
                if job is not None and job.state in ("PENDING", "RUNNING"):
                    job.state = "CANCELLED"
                    job.cancelled.set()


class DependencySpawner(ThreadSpawner):
    name = "thread_deps"
    submits_with_dependencies = True
