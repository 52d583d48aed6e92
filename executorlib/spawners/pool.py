"""A fixed pool of persistent Python workers on this machine: the local backend with
``block_allocation=True``.

Each worker is ``python -m executorlib.worker --serve --stream TOKEN [--mpi] [--init INIT_FILE]``
(under ``mpiexec -n cores`` when ``cores > 1``: every rank takes every task). It is started once,
pays the interpreter start, the imports and the ``init_function`` once, and then runs one task at
a time: the spawner writes the task's folder as one line to the worker's stdin, the worker runs it
exactly as a one-shot job does (the result goes to the task store) and answers
``TOKEN done <folder> <exit code>`` on its stdout. Everything else the worker writes to its stdout
and stderr is the task's output: the spawner copies it to the caller's ``sys.stdout`` /
``sys.stderr`` (as ``ProcessPoolExecutor`` shows a task's prints) and to the task's ``job.out``.

A task's job id is its worker's process id, as for the one-shot local backend, so that other
processes (``get_cache_data``, a second Executor on the same cache) see a live job while the
worker lives. The spawner keeps the id unique from the scheduler's point of view: a worker takes
its next task only after ``states()`` reported the previous one finished with its result in the
store; a worker that finished a task without leaving a result is replaced.

Killing a task (``cancel``, ``run_time_max``) kills its worker; a worker that dies fails only its
own task. The pool starts replacements when tasks need them, at most ``restart_limit`` times (no
limit by default; ``SingleNodeExecutor``'s default 0 starts none). :meth:`WorkerPoolSpawner.resize`
grows or shrinks the pool (``exe.max_workers = n`` of the 1.x classes).

**Calls in memory.** With the temporary cache of an Executor without ``cache_directory`` nobody
reads the task records later, so a serial worker (``cores == 1``) gets the call itself: the
scheduler hands the pickled call and its parents' values over in ``JobSpec.call``
(:meth:`WorkerPoolSpawner.accepts_call`), the spawner writes ``@call <length>`` and the pickle to
the worker's stdin, and the worker sends the pickled outcome back on stdout in frames
``TOKEN part <n>`` of at most PIPE_BUF bytes each (one atomic pipe write: what other threads or
processes of the task print cannot land inside a frame) before its ``TOKEN done`` answer. The
scheduler resolves the Futures from :meth:`WorkerPoolSpawner.take_outcome`. Nothing is written to
the cache: no task.h5, result.h5, job.json or job.out (the last lines of a task's output are kept in
memory for the error of a worker that died); the calls run in ``.work/<worker pid>`` of the
temporary cache. A named cache keeps the file path above.
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.util
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

from executorlib.errors import JobFailedError, SubmissionError
from executorlib.spawners.base import JobSpec, JobStatus, Spawner
from executorlib.spawners.local import (TAIL_BYTES, _kill_foreign, _pid_alive, _write_text,
                                        check_local_resources, exit_state, find_mpiexec, gpus_needed,
                                        no_gpus_error, remember_tail, visible_gpus)
from executorlib.store import Outcome
from executorlib.worker import CALL_PREFIX

__all__ = ["WorkerPoolSpawner", "FIXED_RESOURCES"]

#: resource_dict keys fixed when a worker starts: a task cannot ask for other values
FIXED_RESOURCES = {
    "cores": "number of MPI ranks",
    "threads_per_core": "OMP_NUM_THREADS",
    "openmpi_oversubscribe": "mpiexec options",
    "gpus_per_core": "GPUs (CUDA_VISIBLE_DEVICES)",
}
#: how long close() lets idle workers end on their own before killing them
CLOSE_TIMEOUT = 10.0
#: the folder of the temporary cache in which the calls sent in memory run: one working
#: directory per worker process below it (no folder per task, nothing else written)
WORK_FOLDER = ".work"
#: seconds a worker seen alive counts as alive without a new look (see _Worker.alive)
ALIVE_RECHECK = 0.02


class _RestartsExhausted(Exception):
    """No more worker may start (restart_limit)."""


def _write_all(stream: Any, data: bytes) -> None:
    """Write all of ``data`` to an unbuffered pipe (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        written = stream.write(view)
        if written is None:  # a non-blocking stream that is full: should not happen here
            raise BlockingIOError("the worker's input pipe is full")
        view = view[written:]


class _Worker:
    """One persistent worker process, the task it runs, and the copying of its output."""

    __slots__ = ("popen", "pid", "task_dir", "deadline", "outcome", "buffer", "busy", "eof", "gpus",
                 "marker", "log", "decoders", "worker_id", "key", "direct", "tails", "parts",
                 "answered", "log_path", "dead", "checked", "folder")

    def __init__(self, popen: subprocess.Popen, gpus: list[str], token: str):
        self.popen = popen
        self.gpus = gpus  # the GPU ids in its CUDA_VISIBLE_DEVICES (none when it asked for none)
        self.pid = str(popen.pid)
        self.task_dir: Optional[Path] = None
        self.folder = ""  # str(task_dir): the answers name it
        self.key: Optional[str] = None
        self.deadline: Optional[float] = None
        self.outcome: Optional[str] = None  # the final state of the current task, once known
        self.buffer = bytearray()
        self.busy = False  # a task was handed over and its end not yet reported by states()
        self.eof = False
        self.marker = f"{token} ".encode()  # starts a frame or an answer; anything else is output
        self.log: Optional[BinaryIO] = None  # the current task's job.out
        self.log_path: Optional[Path] = None
        self.direct = False  # the current task was sent in memory (no task.h5, no job.out)
        self.tails: Optional[dict[str, bytearray]] = None  # its output's last bytes, for errors
        self.parts: list[bytes] = []  # the frames of the outcome being received
        self.answered = False
        self.worker_id: Optional[int] = None
        self.dead = False
        self.checked = 0.0  # seen alive until then (time.monotonic())
        self.decoders = {name: codecs.getincrementaldecoder("utf-8")(errors="replace")
                         for name in ("stdout", "stderr")}
        for pipe in (popen.stdout, popen.stderr):
            os.set_blocking(pipe.fileno(), False)  # type: ignore[union-attr]

    def alive(self) -> bool:
        """Whether the process runs. A worker seen alive less than ALIVE_RECHECK seconds ago
        counts as alive without asking again (a dead idle worker is also found when a task
        written to it meets a closed pipe, and a busy one by states())."""
        if self.dead:
            return False
        now = time.monotonic()
        if now < self.checked:
            return True
        if self.popen.poll() is not None:
            self.dead = True
            return False
        self.checked = now + ALIVE_RECHECK
        return True

    def start_task(self, job: JobSpec, direct: bool) -> None:
        """Hand-over bookkeeping: the task's output goes to its job.out from now on (a task sent
        in memory has none: the last lines of its output are kept for a failure message)."""
        self.end_task()
        self.task_dir, self.key, self.direct = job.task_dir, job.key, direct
        self.folder = str(job.task_dir)
        self.log_path = job.log_path or job.task_dir / "job.out"
        self.answered = False
        self.parts = []
        if direct:
            self.tails = {"stdout": bytearray(), "stderr": bytearray()}
            return
        try:
            self.log = open(job.task_dir / "job.out", "ab", buffering=0)
        except OSError:
            self.log = None  # the caller still sees the output

    def end_task(self) -> None:
        if self.log is not None:
            try:
                self.log.close()
            except OSError:
                pass
            self.log = None
        if self.tails is not None:
            if not self.answered and self.log_path is not None:  # ended without an answer
                remember_tail(self.log_path, self.tails)
            self.tails = None

    def _emit(self, name: str, data: bytes) -> None:
        if not data:
            return
        if self.log is not None:
            try:
                self.log.write(data)
            except (OSError, ValueError):
                pass
        elif self.tails is not None:
            tail = self.tails[name]
            tail += data
            if len(tail) > TAIL_BYTES:
                del tail[:len(tail) - TAIL_BYTES]
        _write_text(name, self.decoders[name].decode(data))

    @staticmethod
    def _read(pipe: Any) -> tuple[bytes, bool]:
        """What the non-blocking ``pipe`` holds now, and whether it ended."""
        chunks = []
        while True:
            try:
                chunk = os.read(pipe.fileno(), 262144)
            except BlockingIOError:
                return b"".join(chunks), False
            except (OSError, ValueError):
                return b"".join(chunks), True
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)

    def read_answers(self) -> list[tuple[str, int, Optional[bytes]]]:
        """The answers written since the last call (never blocks): (folder, exit code, the
        outcome's bytes of a call sent in memory, else None). The output around them is copied
        to the caller and to the current task's job.out."""
        answers: list[tuple[str, int, Optional[bytes]]] = []
        if not self.eof:
            data, self.eof = self._read(self.popen.stdout)
            self.buffer += data
        buffer, marker = self.buffer, self.marker
        pos = 0
        while True:
            start = buffer.find(marker, pos)
            if start < 0:
                break
            end = buffer.find(b"\n", start)
            self._emit("stdout", bytes(buffer[pos:start]))
            pos = start
            if end < 0:
                break  # the rest of the header is still on its way
            kind, _, rest = bytes(buffer[start + len(marker):end]).decode(errors="replace").partition(" ")
            if kind == "part" and rest.isdigit():
                size = int(rest)
                if len(buffer) < end + 2 + size:
                    break  # a frame still on its way
                self.parts.append(bytes(buffer[end + 1:end + 1 + size]))
                pos = end + 2 + size
                continue
            pos = end + 1
            if kind != "done":
                self._emit("stdout", bytes(buffer[start:pos]))  # not ours after all
                continue
            # the task's stderr was flushed before its answer: copy it to the task's log first
            self._emit("stderr", self._read(self.popen.stderr)[0])
            folder, _, code = rest.rpartition(" ")
            payload = b"".join(self.parts) if self.parts else None
            self.parts = []
            try:
                answers.append((folder, int(code), payload))
            except ValueError:
                continue
            if self.task_dir is not None and folder == self.folder:
                self.answered = True
                self.end_task()
        if pos < len(buffer) and buffer.find(marker, pos) < 0:
            # keep back only what may be the start of an answer; the rest is output
            rest_len = len(buffer) - pos
            keep = 0 if self.eof else next(
                (k for k in range(min(len(marker), rest_len), 0, -1) if buffer.endswith(marker[:k])), 0)
            self._emit("stdout", bytes(buffer[pos:len(buffer) - keep]))
            pos = len(buffer) - keep
        elif self.eof and pos < len(buffer):  # a frame cut off by the worker's end: output
            self._emit("stdout", bytes(buffer[pos:]))
            pos = len(buffer)
        del buffer[:pos]
        self._emit("stderr", self._read(self.popen.stderr)[0])
        return answers

    def drain(self) -> None:
        """Copy what an ended worker left in its pipes (its last words name why it ended)."""
        self.read_answers()
        self.end_task()


class WorkerPoolSpawner(Spawner):
    """``max_workers`` (or ``max_cores // cores``) persistent workers with the Executor's
    resources; ``init_function`` runs once in each of them."""

    #: a job killed at its run_time_max (see Spawner.final_status)
    limit_states = {"TIMEOUT": "run_time_max"}
    name = "local"  # the same jobs as the one-shot local backend: local process ids
    submits_with_dependencies = False
    max_poll_interval = 0.05
    result_grace_period = 0.5

    def __init__(self, max_workers: Optional[int] = None, max_cores: Optional[int] = None,
                 resources: Optional[dict] = None, init_function: Optional[Callable[[], dict]] = None,
                 cache_directory: Optional[os.PathLike | str] = None, restart_limit: Optional[int] = None,
                 temporary_cache: bool = False):
        from executorlib.resources import merge_resources

        if restart_limit is not None and (not isinstance(restart_limit, int) or isinstance(restart_limit, bool)
                                          or restart_limit < 0):
            raise ValueError(f"restart_limit must be None (no limit) or an int >= 0, got {restart_limit!r}")
        #: how many times a worker that died may be started again (None: without limit)
        self.restart_limit = restart_limit
        #: the cache is the Executor's temporary one: nobody reads its records later, so serial
        #: calls go to the workers in memory (see the module docstring)
        self.temporary_cache = bool(temporary_cache)
        self.resources = merge_resources(resources, None)
        check_local_resources(self.resources)
        cores = self.resources["cores"]
        if max_cores is not None and cores > max_cores:
            raise ValueError(
                f"resource_dict['cores'] = {cores} exceeds max_cores = {max_cores}: with "
                "block_allocation=True every worker holds resource_dict['cores'] cores"
            )
        if cores > 1:
            if find_mpiexec() is None:
                raise ValueError(
                    f"resource_dict['cores'] = {cores} needs an MPI launcher (mpiexec), and none was "
                    "found. Install one, for example: pip install 'executorlib[mpi]' mpich"
                )
            if importlib.util.find_spec("mpi4py") is None:
                raise ValueError(
                    f"resource_dict['cores'] = {cores} with block_allocation=True needs mpi4py in the "
                    "workers: pip install 'executorlib[mpi]'"
                )
        gpus = gpus_needed(self.resources)
        self._gpus = visible_gpus() if gpus else []
        if gpus > len(self._gpus):
            raise no_gpus_error(self.resources, self._gpus, "each worker")
        if max_workers is None:
            max_workers = max(1, (max_cores or os.cpu_count() or 1) // cores)
            if gpus:
                max_workers = min(max_workers, len(self._gpus) // gpus)
        elif max_cores is not None:
            max_workers = min(max_workers, max_cores // cores)
        if gpus and max_workers * gpus > len(self._gpus):
            raise ValueError(
                f"max_workers = {max_workers} workers with {gpus} GPU(s) each (gpus_per_core * cores) "
                f"need {max_workers * gpus} GPUs, but this machine shows {len(self._gpus)} to the local "
                f"backend ({', '.join(self._gpus)}): use max_workers <= {len(self._gpus) // gpus}")
        self.max_workers = max_workers
        self._max_cores = max_cores
        self._granted = max_workers  # worker starts that are not restarts (the first ones, growth)
        self._starts = 0
        self._lock = threading.RLock()  # resize() comes from the user's thread
        self._outcomes: dict[str, tuple[Optional[bytes], int, str]] = {}  # key -> (pickle, code, job id)
        self.directory = Path(cache_directory or os.getcwd())
        # the workers start (and run init_function) in the client's working directory, so that
        # the init function finds the user's modules and relative paths as in the client
        self.home = os.getcwd()
        self._workdir = str(self.directory / WORK_FOLDER)  # of the calls sent in memory
        self._idle_read = 0.0  # when the output of the idle workers was last copied
        self.init_file = self._write_init(init_function) if init_function is not None else None
        self._workers: list[_Worker] = []
        self._busy: dict[str, _Worker] = {}  # job id (= worker pid) -> worker running its task
        self._finished: dict[str, str] = {}
        self._closed = False
        self._wakeup: Optional[Callable[[], None]] = None
        self._kick = threading.Event()  # a task was handed over, or states() read the answers
        try:
            self._top_up()
        except BaseException:
            self.close()
            raise

    # -- workers -----------------------------------------------------------------------------------
    def _write_init(self, init_function: Callable[[], dict]) -> Path:
        """Pickle ``init_function`` into the cache, named by its content (written atomically)."""
        import cloudpickle

        from executorlib.store import write_atomic

        try:
            payload = cloudpickle.dumps(init_function)
        except Exception as error:  # noqa: BLE001
            raise TypeError(f"init_function cannot be pickled for the workers: {error!r}") from None
        path = self.directory / f".init-{hashlib.sha256(payload).hexdigest()[:32]}.pkl"
        if not path.exists():
            write_atomic(path, lambda tmp: tmp.write_bytes(payload))
        return path

    def _command(self, token: str = "TOKEN") -> list[str]:
        command = [sys.executable, "-m", "executorlib.worker", "--serve", "--stream", token]
        cores = self.resources["cores"]
        if cores > 1:
            command.append("--mpi")
        if self.init_file is not None:
            command += ["--init", str(self.init_file)]
        if cores > 1:
            launcher = [find_mpiexec() or "mpiexec", "-n", str(cores)]
            if self.resources.get("openmpi_oversubscribe"):
                launcher.append("--oversubscribe")
            command = launcher + command
        return command

    def _exhausted(self) -> bool:
        """No worker may start any more: restart_limit restarts were used up."""
        return self.restart_limit is not None and self._starts >= self._granted + self.restart_limit

    def _start_worker(self) -> _Worker:
        if self._exhausted():
            raise _RestartsExhausted()
        self._starts += 1
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(self.resources["threads_per_core"])
        env["EXECUTORLIB_STREAMED_OUTPUT"] = "1"  # a failed call's traceback: job.out only
        used = {gpu for w in self._workers if w.alive() for gpu in w.gpus}  # a dead one frees its GPUs
        gpus = [gpu for gpu in self._gpus if gpu not in used][:gpus_needed(self.resources)]
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        # the index of this worker, 0 .. max_workers - 1 (a restarted worker takes the freed one):
        # a function with a parameter executorlib_worker_id gets it (executorlib.worker.serve)
        taken = {getattr(w, "worker_id", None) for w in self._workers if w.alive()}
        worker_id = next(i for i in range(len(taken) + 1) if i not in taken)
        env["EXECUTORLIB_WORKER_ID"] = str(worker_id)
        token = uuid.uuid4().hex
        command = self._command(token)
        try:
            popen = self._launch(command, env)
        except OSError as err:
            raise SubmissionError(f"cannot start the worker {command[0]}: {err}") from None
        worker = _Worker(popen, gpus, token)
        worker.worker_id = worker_id
        self._workers.append(worker)
        return worker

    def _launch(self, command: list[str], env: dict) -> Any:
        """A worker process: forked by the fork server (executorlib.spawners.forkserver: no
        interpreter start, the imports are done) when the command is the plain serial worker,
        else (mpiexec, srun, no fork server) a subprocess."""
        prefix = [sys.executable, "-m", "executorlib.worker"]
        if command[:3] == prefix and "--mpi" not in command:
            from executorlib.spawners import forkserver

            forked_env = {**env, "PYTHONUNBUFFERED": env.get("PYTHONUNBUFFERED", "1")}
            server = forkserver.fork_server_for(forked_env)
            if server is not None:
                try:
                    return server.spawn(command[3:], self.home, forked_env, stdin_pipe=True)
                except OSError as error:  # it died or hangs: the next worker starts another
                    forkserver.mark_broken(server, str(error))
        return subprocess.Popen(
            command, cwd=self.home, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, start_new_session=True,
        )

    def _top_up(self) -> None:
        """Start workers until the pool is full again (after a crash, a cancel or a timeout),
        as far as restart_limit allows; retire idle workers beyond ``max_workers`` (resize)."""
        if self._closed:
            return
        self._workers = [w for w in self._workers if w.busy or w.alive()]
        try:
            while sum(1 for w in self._workers if not w.busy or w.alive()) < self.max_workers:
                self._start_worker()
        except _RestartsExhausted:
            self._workers = [w for w in self._workers if w.busy or w.alive()]
        extra = len(self._workers) - self.max_workers
        for worker in [w for w in self._workers if not w.busy][:max(0, extra)]:
            self._retire(worker)

    def _retire(self, worker: _Worker) -> None:
        """End an idle worker the pool no longer needs: the end of its input ends it."""
        try:
            worker.popen.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            worker.popen.wait(timeout=CLOSE_TIMEOUT)
            self._release(worker)
        except subprocess.TimeoutExpired:
            self._kill(worker)

    def resize(self, max_workers: int) -> None:
        """Grow or shrink the pool to ``max_workers`` workers: new ones start now, idle ones
        beyond it end now, busy ones once their task is done. Growing grants the new workers
        their own start (restart_limit counts restarts only)."""
        if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
            raise ValueError(f"max_workers must be an int >= 1, got {max_workers!r}")
        limit = self._size_limit()
        if limit is not None and max_workers > limit[0]:
            raise ValueError(f"max_workers = {max_workers} is more than this pool can hold: {limit[1]}; "
                             f"use max_workers <= {limit[0]}")
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot resize the worker pool of an Executor that was shut down")
            if max_workers > self.max_workers:
                self._granted += max_workers - self.max_workers
            self.max_workers = max_workers
            self._top_up()
        if self._wakeup is not None:
            self._wakeup()  # waiting tasks may start on the new workers now

    def _size_limit(self) -> Optional[tuple[int, str]]:
        """The most workers this pool may have, and why (None: no limit)."""
        cores = self.resources["cores"]
        gpus = gpus_needed(self.resources)
        limits = []
        if self._max_cores is not None:
            limits.append((self._max_cores // cores, f"max_cores = {self._max_cores} with {cores} core(s) per worker"))
        if gpus:
            limits.append((len(self._gpus) // gpus, f"{len(self._gpus)} GPU(s) with {gpus} per worker"))
        return min(limits) if limits else None

    def _idle(self) -> list[_Worker]:
        return [w for w in self._workers if not w.busy and w.alive()]

    def _kill(self, worker: _Worker) -> None:
        """Stop the worker's process group (all MPI ranks too)."""
        popen = worker.popen
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, None)):
            try:
                os.killpg(popen.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                popen.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        popen.wait()
        self._release(worker)

    def _release(self, worker: _Worker) -> None:
        """Forget a worker that ended (its pipes are closed; the pool starts another on demand)."""
        if worker in self._workers:
            self._workers.remove(worker)
        if worker.popen.poll() is not None:
            worker.drain()
        worker.end_task()
        for stream in (worker.popen.stdin, worker.popen.stdout, worker.popen.stderr):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass

    # -- waking the scheduler loop ----------------------------------------------------------------
    def set_wakeup(self, wakeup: Callable[[], None]) -> None:
        """``wakeup()`` makes the scheduler loop call :meth:`states` now: a thread watches the
        stdout of the busy workers and calls it when one wrote (an answer, or output, or it
        ended), at most once per :meth:`states` call, so that a finished task is noticed, and
        the worker given its next task, without waiting for the next poll."""
        self._wakeup = wakeup
        threading.Thread(target=self._watch, name="executorlib-pool-watch", daemon=True).start()

    def _watch(self) -> None:
        while not self._closed:
            pipes = []
            for worker in list(self._busy.values()):
                try:
                    if worker.outcome is None and not worker.eof:
                        pipes.append(worker.popen.stdout.fileno())  # type: ignore[union-attr]
                except (OSError, ValueError, AttributeError):  # closed meanwhile
                    continue
            if not pipes:
                self._kick.wait(0.5)
                self._kick.clear()
                continue
            try:
                ready = select.select(pipes, [], [], 0.05)[0]
            except (OSError, ValueError):  # a pipe closed meanwhile: look again
                ready = []
            if ready and not self._closed and self._wakeup is not None:
                self._kick.clear()
                self._wakeup()
                self._kick.wait(0.05)  # until states() read what is there

    # -- capacity ----------------------------------------------------------------------------------
    def check_resources(self, resources: dict) -> None:
        check_local_resources(resources)
        for key, what in FIXED_RESOURCES.items():
            if key == "openmpi_oversubscribe" and self.resources["cores"] == 1:
                continue  # serial workers start without mpiexec
            if resources.get(key) != self.resources[key]:
                raise ValueError(
                    f"resource_dict[{key!r}] = {resources.get(key)!r} cannot be used with "
                    f"block_allocation=True: the workers of this Executor were started with "
                    f"{key} = {self.resources[key]!r} (from Executor(resource_dict=...)), and a "
                    f"persistent worker cannot change its {what}. Give {key} to the Executor, or "
                    "use block_allocation=False for tasks with other resources."
                )

    def has_capacity(self, resources: dict) -> bool:
        """True when a worker is idle (a task hands over at once); also when no worker is left
        and none may start (restart_limit): submit() then fails the task instead of waiting."""
        with self._lock:
            self._top_up()
            if self._idle():
                return True
            return self._exhausted() and not any(w.alive() for w in self._workers)

    # -- calls sent in memory (the fast path of a temporary cache) -------------------------------
    @property
    def direct(self) -> bool:
        """Serial calls of a temporary cache go to the workers in memory: no task.h5, no
        result.h5, no job.out (nothing would read them after the Executor)."""
        return self.temporary_cache and self.resources["cores"] == 1

    def accepts_call(self, resources: dict) -> bool:
        return self.direct

    def has_outcome(self, key: str) -> bool:
        return key in self._outcomes

    def take_outcome(self, key: str) -> Optional[Outcome]:
        found = self._outcomes.pop(key, None)
        if found is None:
            return None
        payload, code, job_id = found
        import cloudpickle

        try:
            kind, *rest = cloudpickle.loads(payload)  # type: ignore[arg-type]
        except BaseException as error:  # noqa: BLE001 - e.g. a class missing here: the Future's error
            return Outcome(False, error=error)
        if kind == "ok":
            return Outcome(True, value=rest[0])
        if kind == "error":
            return Outcome(False, error=rest[0], traceback=rest[1])
        message, tb = rest
        state = f"FAILED (exit code {code})"
        return Outcome(False, error=JobFailedError(
            f"{self.describe(job_id)} for task {key} could not run the call (state {state}): {message}",
            job_id=job_id, state=state), traceback=tb)

    def _request(self, job: JobSpec) -> bytes:
        """The request line of a call sent in memory (executorlib.worker._serve_call)."""
        import pickle

        import cloudpickle

        call = dict(job.call or {})
        parents = call.pop("parents", None) or {}
        try:
            sent_parents = cloudpickle.dumps(parents) if parents else b""
        except Exception as error:  # noqa: BLE001 - e.g. a value of another Executor's Future
            raise SubmissionError(f"the results of the parent tasks of task {job.key} "
                                  f"({', '.join(parents)}) cannot be sent to its worker: {error!r}") from None
        data = pickle.dumps({**call, "parents": sent_parents, "key": job.key, "folder": str(job.task_dir),
                             "workdir": self._workdir,
                             "function_name": job.function_name, "cwd": job.resources.get("cwd"),
                             "client_cwd": self.home}, protocol=pickle.HIGHEST_PROTOCOL)
        return b"".join((CALL_PREFIX, str(len(data)).encode(), b"\n", data, b"\n"))

    # -- jobs --------------------------------------------------------------------------------------
    def submit(self, job: JobSpec, dependencies: list[str]) -> str:
        with self._lock:
            return self._submit(job)

    def _submit(self, job: JobSpec) -> str:
        direct = job.call is not None and self.direct
        if direct:
            request = self._request(job)
        else:
            folder = str(job.task_dir)
            if "\n" in folder:
                raise SubmissionError(f"the task folder {folder!r} contains a line break, which the "
                                      "workers' protocol cannot carry; use another cache_directory")
            request = f"{folder}\n".encode()
        for attempt in range(2):  # a worker that died while idle is replaced once
            self._top_up()
            idle = self._idle()
            if not idle and any(w.alive() for w in self._workers) and not self._closed:
                # has_capacity() saw an idle worker that resize() retired since (the user's
                # thread): one worker more until this task is done, not a failed task
                self._granted += 1
                try:
                    idle = [self._start_worker()]
                except SubmissionError:
                    idle = []
            if not idle:
                break
            worker = idle[0]
            try:
                _write_all(worker.popen.stdin, request)
            except OSError:  # BrokenPipeError: it ended since it was last seen alive
                worker.popen.wait()
                self._release(worker)
                continue
            worker.busy, worker.outcome = True, None
            worker.start_task(job, direct)
            run_time_max = job.resources.get("run_time_max")
            worker.deadline = time.monotonic() + run_time_max if run_time_max else None
            self._busy[worker.pid] = worker
            self._finished.pop(worker.pid, None)
            self._kick.set()
            return worker.pid
        if self._exhausted():
            raise SubmissionError(
                f"task {job.key} cannot run: the {self._what_workers()} of the block allocation died "
                f"{self._starts - self._granted} time(s) after the first {self._granted} started, and "
                f"restart_limit = {self.restart_limit} allows no more restarts ({self._where_output()})")
        raise SubmissionError(
            f"no worker of the block allocation could take task {job.key}: the workers "
            f"({' '.join(self._command())}) end right after they start; their output went to "
            "this process's stderr"
        )

    def _what_workers(self) -> str:
        return "workers"

    def _where_output(self) -> str:
        return "their output went to this process's stderr"

    def _update(self, worker: _Worker, now: float) -> None:
        """Learn whether the busy ``worker`` finished, died or ran out of time."""
        if worker.outcome is not None:
            return
        for folder, code, payload in worker.read_answers():
            if folder == worker.folder:
                worker.outcome = "COMPLETED" if code == 0 else f"FAILED (exit code {code})"
                if worker.direct and payload is not None:
                    self._outcomes[worker.key] = (payload, code, worker.pid)  # type: ignore[index]
        if worker.outcome is not None:
            if worker.direct:
                if worker.key not in self._outcomes:
                    self._kill(worker)  # an answer without its outcome: retire it
            elif not (worker.task_dir / "result.h5").exists():  # type: ignore[operator]
                self._kill(worker)  # no result: retire it, so that its pid names no other task
            return
        code = worker.popen.poll()
        if code is not None:
            worker.outcome = self._state_of(code)
            self._release(worker)
        elif worker.deadline is not None and now > worker.deadline:
            self._kill(worker)
            worker.outcome = "TIMEOUT"

    @staticmethod
    def _state_of(code: int) -> str:
        return exit_state(code, success="EXITED (the worker ended without answering)")

    def states(self, job_ids: list[str]) -> dict[str, JobStatus]:
        with self._lock:
            return self._states(job_ids)

    def _states(self, job_ids: list[str]) -> dict[str, JobStatus]:
        now = time.monotonic()
        result: dict[str, JobStatus] = {}
        lost = False
        for job_id in job_ids:
            worker = self._busy.get(job_id)
            if worker is None:
                if job_id not in self._finished and not self._is_own(job_id) and _pid_alive(job_id):
                    result[job_id] = JobStatus("RUNNING", active=True, running=True)  # another process's
                continue
            self._update(worker, now)
            if worker.outcome is None:
                result[job_id] = JobStatus("RUNNING", active=True, running=True)
                continue
            self._finished[job_id] = worker.outcome
            del self._busy[job_id]
            worker.busy = False  # free for the next task, if it still lives
            lost |= worker not in self._workers
        if now >= self._idle_read:  # what idle workers print (the init function, say), 20 times a second
            self._idle_read = now + 0.05
            for worker in self._workers:
                if not worker.busy:
                    worker.read_answers()
        if lost or len(self._workers) > self.max_workers:  # replace the dead, retire the extra
            self._top_up()
        self._kick.set()
        return result

    def _is_own(self, job_id: str) -> bool:
        return any(w.pid == job_id for w in self._workers)

    def final_state(self, job_id: str) -> Optional[str]:
        return self._finished.get(job_id)

    def cancel(self, job_ids: list[str]) -> None:
        with self._lock:
            for job_id in job_ids:
                worker = self._busy.pop(job_id, None)
                if worker is None:
                    if not self._is_own(job_id):
                        _kill_foreign(job_id)  # a task started by another Executor or process
                    continue
                self._update(worker, time.monotonic())
                if worker.outcome is None:
                    self._kill(worker)
                    worker.outcome = "CANCELLED"
                self._outcomes.pop(worker.key, None)  # type: ignore[arg-type]  # nobody follows it
                self._finished[job_id] = worker.outcome
                worker.busy = False

    def close(self) -> None:
        """Stop the pool: end of input lets each worker finish and exit; stragglers are killed."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        self._closed = True
        self._outcomes.clear()
        self._kick.set()
        for worker in self._workers:
            try:
                worker.popen.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
        deadline = time.monotonic() + CLOSE_TIMEOUT
        for worker in list(self._workers):
            try:
                worker.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
                self._release(worker)
            except subprocess.TimeoutExpired:
                self._kill(worker)
        self._busy.clear()

    def describe(self, job_id: str) -> str:
        return f"block-allocation worker process {job_id}"

    def __repr__(self) -> str:
        return (f"<WorkerPoolSpawner {len(self._workers)}/{self.max_workers} workers, "
                f"{len(self._busy)} busy, cores={self.resources['cores']}>")
