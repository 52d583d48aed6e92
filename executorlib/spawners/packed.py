"""``max_jobs``: a few scheduler jobs serve many calls (the client's side).

Wraps the spawner of a submission backend (SLURM, flux). A call is not a job of its own: it is put
into its resource shape's queue in the cache directory (:mod:`executorlib.packed_queue`) and
served by a worker job (:mod:`executorlib.packed_worker`), at most ``max_jobs`` of them in the
scheduler's queue at once. To the scheduler loop a call still looks like a job: an id
(``<nonce>@<task folder>``), states (PENDING while queued, RUNNING while a live worker runs it,
its worker's final state when the worker died under it), cancel, dependencies (submitted at once;
a worker takes a call only when its parents have results), retries of what the cluster did (a
worker lost with its node: the call goes back into the queue under a new nonce).

One status query per pass: the worker jobs' states, in one ``squeue``/``flux jobs``; the calls'
states are read off the cache. Workers are started here, when calls of a shape are runnable and
fewer workers of that shape are alive; they end on their own after an idle time, so a cancelled
or finished Executor leaves no job behind, while calls queued before the client exited are
still served (the seed's "close the notebook and come back").
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

from executorlib import packed_queue as pq
from executorlib.errors import SubmissionError
from executorlib.files import RESULT_FILE
from executorlib.spawners.base import JobSpec, JobStatus, Spawner

__all__ = ["PackedSpawner", "DEFAULT_IDLE", "worker_walltime"]

log = logging.getLogger("executorlib")

#: seconds a worker job waits for a runnable call before it ends (EXECUTORLIB_WORKER_IDLE)
DEFAULT_IDLE = 20.0
#: a worker's walltime from the calls it may serve: at most this much beyond the longest call
WALLTIME_CAP = 4 * 3600
#: where a worker job finds the id its scheduler gave it (the local backend's id is the pid)
_ID_SOURCES = {"slurm": "SLURM_JOB_ID", "flux": "FLUX_JOB_ID"}
#: seconds a worker job must stay listed as ended before its record is dropped
_FORGET_AFTER = 10.0


def worker_walltime(run_time_maxes: list[Optional[int]], idle: float) -> Optional[int]:
    """The ``run_time_max`` of a worker job that may serve calls with these limits: None (the
    partition's limit) when one call has none; else their sum plus the idle time and a margin,
    cut to WALLTIME_CAP but never below the longest call plus the margin."""
    if not run_time_maxes or any(t is None for t in run_time_maxes):
        return None
    margin = 60 + int(idle)
    longest = max(run_time_maxes) + margin  # type: ignore[type-var]
    return int(max(longest, min(sum(run_time_maxes) + margin, WALLTIME_CAP)))  # type: ignore[arg-type]


def _idle_time() -> float:
    value = os.environ.get("EXECUTORLIB_WORKER_IDLE")
    if not value:
        return DEFAULT_IDLE
    try:
        idle = float(value)
    except ValueError:
        raise ValueError(f"EXECUTORLIB_WORKER_IDLE={value!r} is not a number of seconds") from None
    if not idle > 0:
        raise ValueError(f"EXECUTORLIB_WORKER_IDLE={value!r} must be a number of seconds > 0")
    return idle


class PackedSpawner(Spawner):
    """At most ``max_jobs`` worker jobs of ``inner``'s scheduler serve the calls of one cache."""

    submits_with_dependencies = True

    def __init__(self, inner: Spawner, max_jobs: Optional[int], cache_directory: Optional[os.PathLike | str],
                 python: str = sys.executable):
        self.inner = inner
        self.name = f"{inner.name}+packed"
        self.max_jobs = max_jobs if max_jobs is not None else 1
        #: None: only follows and cancels calls (the cache tools), never starts a worker
        self.cache = Path(cache_directory).absolute() if cache_directory is not None else None
        self.python = python
        self.idle = _idle_time()
        self.min_poll_interval = inner.min_poll_interval
        self.max_poll_interval = inner.max_poll_interval
        self.result_grace_period = inner.result_grace_period
        self.limit_states = dict(inner.limit_states)
        self.retry_backoff = inner.retry_backoff
        self.max_retry_backoff = inner.max_retry_backoff
        #: shape -> the job-level resources its workers are started with
        self._shapes: dict[str, dict] = {}
        #: call id -> shape, for the calls this spawner queued
        self._calls: dict[str, str] = {}
        #: worker id -> JobStatus at the last query (None: not listed)
        self._worker_status: dict[str, Optional[JobStatus]] = {}
        self._gone_since: dict[str, float] = {}
        self._busy: set[str] = set()  # live workers running a call at the last query
        self._entries: dict[str, dict] = {}  # shape -> {queue file name: QueueEntry}
        #: worker id -> its record in <cache>/.packed/workers (read at the first use)
        self._records: Optional[dict[str, dict]] = None
        self.sbatch_calls = 0  # worker jobs submitted (the benchmark reads it)
        #: shape -> why its worker job was refused for good (its queued calls fail with it)
        self._refused: dict[str, str] = {}

    # -- the call's view ----------------------------------------------------------------------------
    def check_resources(self, resources: dict) -> None:
        self.inner.check_resources(resources)

    def submit(self, job: JobSpec, dependencies: list[str]) -> str:
        resources = job.resources
        shape = pq.shape_of(resources)
        parents = [pq.parse_call_id(d)[1].name for d in dependencies if pq.is_call_id(d)]
        if len(parents) < len(dependencies):  # a parent is a job of its own (an earlier run without
            parents = self._parents_of(job)   # max_jobs, followed): the task file names them all
        launch = getattr(self.inner, "launch_command", None)
        command = launch(resources, job.command) if launch is not None else job.command
        fork = resources.get("cores", 1) == 1 and command == job.command
        nonce = pq.new_nonce(job.tag)  # the claim's tag first: find_tagged() finds the call again
        task_dir = Path(job.task_dir).absolute()
        fixed = pq.shape_resources(resources)
        try:
            entry = pq.enqueue(self.cache, shape, job.key, nonce, task_dir, parents,
                               resources.get("run_time_max"), command, fork, fixed)
        except OSError as error:
            raise SubmissionError(f"queueing task {job.key} in {pq.queue_dir(self.cache, shape)} failed: {error}") from None
        self._shapes.setdefault(shape, fixed)
        self._refused.pop(shape, None)  # a new call of the shape: try its worker job again
        job_id = pq.call_id(nonce, task_dir)
        if not any(s == shape and _alive(st) for _, s, st in self._workers()):
            try:  # the first call of a shape needs no status query first
                self._start_workers(only=shape)
            except Exception:  # its worker job was refused: so is the call (held when transient)
                if pq.cancel_queued(task_dir, nonce):
                    entry.unlink(missing_ok=True)
                raise
        self._calls[job_id] = shape
        return job_id

    @staticmethod
    def _parents_of(job: JobSpec) -> list[str]:
        from executorlib.store import TaskStore

        task_dir = Path(job.task_dir)
        try:
            return list(TaskStore(task_dir.parent, create=False, use_index=False).read_task_info(job.key)["parents"])
        except Exception as error:  # noqa: BLE001 - unreadable task file: the call cannot be queued
            raise SubmissionError(f"the parents of task {job.key} cannot be read from its task file: {error}") from None

    def states(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """The calls' states from the cache, and in one query of the inner scheduler the worker
        jobs and the plain jobs of an earlier run without max_jobs (followed, see follows())."""
        plain = [job_id for job_id in job_ids if not pq.is_call_id(job_id)]
        job_ids = [job_id for job_id in job_ids if pq.is_call_id(job_id)]
        caches = {self.cache} if self.cache is not None else set()
        caches.update(pq.parse_call_id(job_id)[1].parent for job_id in job_ids)
        records: dict[str, dict] = {}
        for cache in caches:
            for worker, record in pq.read_workers(cache).items():
                records[worker] = dict(record, cache=str(cache))
        wanted = set(records)
        taken: dict[str, dict] = {}
        done: dict[str, dict] = {}
        for job_id in job_ids:
            nonce, task_dir = pq.parse_call_id(job_id)
            record = pq.read_done(task_dir, nonce)
            if record is not None:
                done[job_id] = record
                continue
            holder = pq.read_taken(task_dir, nonce)
            if holder is not None:
                taken[job_id] = holder
                if holder.get("worker"):
                    holder["worker"] = self._canonical(holder["worker"])
                    wanted.add(holder["worker"])
        answered = self._query_workers(sorted(wanted), records, plain)
        self._busy = {str(h.get("worker")) for h in taken.values() if _alive(self._worker_status.get(str(h.get("worker"))))}
        found: dict[str, JobStatus] = {j: answered[j] for j in plain if answered.get(j) is not None}
        waiting: dict[Path, set[str]] = {}  # cache -> the nonces in its queues (one listing per shape)
        for job_id in job_ids:
            if job_id in done:
                found[job_id] = self._done_status(done[job_id])
            elif job_id in taken:
                found[job_id] = self._taken_status(job_id, taken[job_id])
            else:
                nonce, task_dir = pq.parse_call_id(job_id)
                cache = task_dir.parent
                if cache not in waiting:
                    waiting[cache] = pq.queued_nonces(cache)
                refusal = self._refused.get(self._calls.get(job_id, ""))
                if nonce in waiting[cache] and refusal and pq.cancel_queued(task_dir, nonce):
                    found[job_id] = JobStatus(f"FAILED (its worker job was refused: {refusal})", active=False)
                elif nonce in waiting[cache]:
                    found[job_id] = JobStatus("PENDING", active=True, reason="waiting for a worker job")
                # else: absent (forgotten), as a job the scheduler no longer knows
        if self.cache is not None:
            self._start_workers()
        return found

    def _done_status(self, record: dict) -> JobStatus:
        state = str(record.get("state") or "FAILED")
        detail = str(record.get("detail") or "")
        if state == pq.DEPENDENCY_FAILED:
            return JobStatus(state, active=False, reason="DependencyNeverSatisfied", dependency_failed=True)
        return JobStatus(f"{state} ({detail})" if detail and state != "COMPLETED" else state, active=False,
                         reason=detail, exceeded="run_time_max" if state == "TIMEOUT" else "")

    def _canonical(self, job_id: object) -> str:
        """One spelling per job id (flux prints F58, its jobs see decimal)."""
        canonical = getattr(self.inner, "canonical_job_id", None)
        return str(canonical(job_id)) if canonical is not None else str(job_id)

    def _taken_status(self, job_id: str, holder: dict) -> JobStatus:
        if holder.get("cancelled"):
            return JobStatus("CANCELLED", active=False)
        worker = self._canonical(holder.get("worker"))
        status = self._worker_status.get(worker)
        if status is not None and status.active:
            return JobStatus("RUNNING", active=True, running=True)
        if status is None:
            status = self.inner.final_status(worker)
        if status is None:  # the worker job ended and its scheduler forgot it
            return JobStatus(f"FAILED (its worker job {worker} ended while it ran)", active=False)
        nonce, task_dir = pq.parse_call_id(job_id)
        done = pq.read_done(task_dir, nonce)
        if done is not None:  # it ended just now
            return self._done_status(done)
        return JobStatus(f"{status.state} (its worker job {worker})", active=False, reason=status.reason,
                         cluster_failure=status.cluster_failure, exceeded=status.exceeded)

    # -- the workers --------------------------------------------------------------------------------
    def _query_workers(self, worker_ids: list[str], records: dict[str, dict],
                       plain: Optional[list[str]] = None) -> dict[str, JobStatus]:
        """One query for every worker job (ours, other processes', and those that hold calls),
        together with the ``plain`` jobs; returns the inner scheduler's answer."""
        asked = sorted(set(worker_ids) | set(plain or ()))
        states = self.inner.states(asked) if asked else {}
        now = time.monotonic()
        self._worker_status = {w: states.get(w) for w in worker_ids}
        for worker in worker_ids:
            status = states.get(worker)
            if status is not None and status.active:
                self._gone_since.pop(worker, None)
                continue
            since = self._gone_since.setdefault(worker, now)
            if worker in records and now - since > _FORGET_AFTER:
                pq.forget_worker(Path(records[worker]["cache"]), worker)
        self._records = {w: r for w, r in records.items() if self.cache is None or r["cache"] == str(self.cache)}
        return states

    def _workers(self) -> list[tuple[str, str, Optional[JobStatus]]]:
        """(worker id, shape, last status) of the worker jobs recorded in the cache."""
        if self._records is None:
            self._records = pq.read_workers(self.cache)  # type: ignore[arg-type]
        return [(w, str(r.get("shape")), self._worker_status.get(w, _SUBMITTED)) for w, r in self._records.items()]

    def _start_workers(self, only: Optional[str] = None) -> None:
        """Start worker jobs for shapes whose runnable calls outnumber their live workers."""
        workers = [(w, s, st) for w, s, st in self._workers() if _alive(st)]
        free = self.max_jobs - len(workers)
        if free <= 0:
            return
        # also shapes of calls queued by earlier clients of this cache (reattached, or never served)
        shapes = [only] if only else list(dict.fromkeys([*self._shapes, *_listdir(pq.queue_dir(self.cache))]))
        for shape in shapes:
            if free <= 0:
                break
            entries = self._queued(shape)
            if not entries:
                continue
            if shape not in self._shapes:
                self._shapes[shape] = dict(entries[0].resources)
            runnable = sum(1 for e in entries if all(self._has_result(p) for p in e.parents))
            have = sum(1 for _, s, _ in workers if s == shape)
            busy = sum(1 for w, s, _ in workers if s == shape and w in self._busy)
            need = min(runnable - (have - busy), free) if runnable else 0
            for _ in range(max(need, 0)):
                if only is not None:  # from submit(): the refusal goes to the call
                    self._start_worker(shape, entries)
                else:
                    try:
                        self._start_worker(shape, entries)
                    except SubmissionError as error:
                        if not error.transient:  # a site limit passes: try at the next pass
                            self._refused[shape] = str(error)
                            log.warning("executorlib: the worker job for %s was refused: %s", shape, error)
                        break
                free -= 1

    def _queued(self, shape: str) -> list:
        """The calls waiting in ``shape``'s queue; an entry file is read once (it never changes)."""
        known = self._entries.setdefault(shape, {})
        names = pq.queued_names(self.cache, shape)  # type: ignore[arg-type]
        for name in set(known) - set(names):
            del known[name]
        entries = []
        for name in names:
            entry = known.get(name)
            if entry is None:
                entry = pq.read_entry(pq.queue_dir(self.cache, shape) / name)  # type: ignore[arg-type]
                if entry is None:
                    continue
                known[name] = entry
            entries.append(entry)
        return entries

    def _has_result(self, key: str) -> bool:
        return (self.cache / key / RESULT_FILE).exists()  # type: ignore[operator]

    def _start_worker(self, shape: str, entries: list) -> None:
        spec = self.worker_spec(shape, entries)
        worker_id = self._canonical(self.inner.submit(spec, []))
        self.sbatch_calls += 1
        record = {"shape": shape, "submitted": time.time(), "walltime": spec.resources["run_time_max"],
                  "backend": self.inner.name, "log": str(spec.log_path)}
        pq.write_worker(self.cache, worker_id, record)  # type: ignore[arg-type]
        self._records = {**(self._records or {}), worker_id: record}
        self._worker_status[worker_id] = _SUBMITTED

    def worker_spec(self, shape: str, entries: list) -> JobSpec:
        """The job of a worker for ``shape`` that may serve ``entries`` (their run_time_max set
        its time limit): the shape's resources, its own folder, no MPI launcher around it."""
        resources = dict(self._shapes[shape])
        walltime = worker_walltime([e.run_time_max for e in entries], self.idle)
        limit = getattr(self.inner, "partition_time_limit", None)
        cap = limit(resources.get("partition")) if limit is not None else None
        if walltime is not None and cap is not None and walltime > cap:  # the partition's MaxTime:
            walltime = cap  # more would leave the worker pending (PartitionTimeLimit)
        resources["run_time_max"] = walltime
        resources["job_name"] = f"executorlib-worker-{shape}"
        nonce = pq.new_nonce()
        folder = pq.workers_dir(self.cache) / f"worker-{nonce}"  # its job script and its output
        folder.mkdir(parents=True, exist_ok=True)
        command = [self.python, "-m", "executorlib.packed_worker", "--cache", str(self.cache.absolute()),
                   "--shape", shape, "--idle", f"{self.idle:g}",
                   "--worker-id-env", _ID_SOURCES.get(self.inner.name, "PID")]
        if walltime is not None:
            command += ["--walltime", str(walltime)]
        return JobSpec(key=f"worker-{shape}", task_dir=folder, function_name="executorlib-worker",
                       resources=resources, command=command, log_path=folder / "worker.out",
                       tag=nonce, launcher=False)

    def worker_count(self) -> int:
        """Worker jobs of this cache queued or running at the last status query."""
        return sum(1 for _, _, st in self._workers() if _alive(st))

    # -- cancel, logs, names ------------------------------------------------------------------------
    def follows(self, backend: Optional[str]) -> bool:
        """Its own calls, and the jobs of the inner backend without max_jobs (a script that gained
        max_jobs attaches to the jobs its earlier run submitted instead of running them again)."""
        return backend in (self.name, self.inner.name)

    def find_tagged(self, tags: list[str]) -> dict[str, str]:
        """The calls a client killed between queueing them and writing job.json left (their nonce
        starts with the claim's tag), and the jobs of an earlier run without max_jobs."""
        found = self.inner.find_tagged(tags)
        if self.cache is not None:
            found.update(pq.find_tagged(self.cache, tags))
        return found

    def cancel(self, job_ids: list[str]) -> None:
        plain = [job_id for job_id in job_ids if not pq.is_call_id(job_id)]
        if plain:
            self.inner.cancel(plain)
        for job_id in job_ids:
            if pq.is_call_id(job_id):
                pq.withdraw(job_id)  # queued: never runs; running: its worker kills it

    def final_status(self, job_id: str) -> Optional[JobStatus]:
        try:
            nonce, task_dir = pq.parse_call_id(job_id)
        except ValueError:
            return self.inner.final_status(job_id)
        record = pq.read_done(task_dir, nonce)
        if record is not None:
            return self._done_status(record)
        holder = pq.read_taken(task_dir, nonce)
        if holder is not None:
            status = self._taken_status(job_id, holder)
            return None if status.active else status
        return None

    def final_state(self, job_id: str) -> Optional[str]:
        if not pq.is_call_id(job_id):
            return self.inner.final_state(job_id)
        status = self.final_status(job_id)
        return None if status is None else status.state

    def log_file(self, task_dir: Path, job_id: Optional[str] = None) -> Optional[Path]:
        if job_id is not None and not pq.is_call_id(job_id):
            return self.inner.log_file(task_dir, job_id)
        return Path(task_dir) / "job.out"

    def describe(self, job_id: str) -> str:
        try:
            nonce, task_dir = pq.parse_call_id(job_id)
        except ValueError:
            return self.inner.describe(job_id)
        holder = pq.read_taken(task_dir, nonce) or {}
        worker = holder.get("worker")
        where = f" in {self.inner.describe(self._canonical(worker))}" if worker else ""
        return f"call {task_dir.name} (submission {nonce}){where}"

    def close(self) -> None:
        """Workers end on their own once no call is runnable; the idle ones of a shape whose queue
        is empty now are told to end at once instead of after their idle time (they hold cores)."""
        if self.cache is not None:
            for shape in self._shapes:
                try:
                    if not any(True for _ in pq.queued(self.cache, shape)):
                        pq.mark_quiet(self.cache, shape)
                except OSError:
                    pass
        self.inner.close()


def queries_only(cls: type, inner: Spawner) -> "PackedSpawner":
    """A spawner that follows and cancels calls of any cache (for the cache tools and the CLI)."""
    return cls(inner, None, None)


_SUBMITTED = JobStatus("PENDING", active=True, reason="just submitted")


def _alive(status: Optional[JobStatus]) -> bool:
    return status is not None and status.active


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []

