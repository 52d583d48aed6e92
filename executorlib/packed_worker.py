"""A worker job of ``Executor(..., max_jobs=K)``: serves the queued calls of one resource shape.

``python -m executorlib.packed_worker --cache DIR --shape SHAPE [--idle S] [--walltime S]``

The job takes the oldest runnable call of its shape from the cache directory (every parent has a
result; see :mod:`executorlib.packed_queue`), runs it, records how it ended, and takes the next,
until nothing runnable is left for ``--idle`` seconds or its walltime would not cover the next
call's ``run_time_max``. A call runs exactly as a one-shot job runs it (``executorlib.worker``),
in a forked child (one core: a fork costs milliseconds, the imports are paid once per job) or
through its MPI launcher (``srun``/``flux run`` as a job step): a call that crashes ends only
itself, its output goes to its own ``job.out``, and a cancel or its ``run_time_max`` kills only
it. The job needs no network: the shared file system carries everything.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

from executorlib import packed_queue as pq

__all__ = ["main", "serve"]

#: seconds kept free at the end of the walltime (the result write, the job's own end)
WALLTIME_MARGIN = 30.0
#: the longest pause between two looks into the queue while idle
MAX_IDLE_POLL = 1.0


def _worker_id(given: Optional[str], source: str = "") -> str:
    """The id the client knows this job by: given, the scheduler's job id (``source``, an
    environment variable), or the process id (the local backend's job id)."""
    if given:
        return given
    if source and source != "PID":
        value = os.environ.get(source)
        if not value:
            raise SystemExit(f"executorlib worker: ${source} is not set: this job cannot name itself")
        return value
    return str(os.getpid())


class _Parents:
    """Whether the parents of a call have results, and whether they succeeded (read once)."""

    def __init__(self, store):
        self.store = store
        self._ok: dict[str, bool] = {}

    def state(self, keys: list[str]) -> str:
        """'ready', 'blocked' (a parent has no result yet) or 'failed' (a parent failed)."""
        for key in keys:
            if key not in self._ok:
                if not self.store.has_result(key):
                    return "blocked"
                try:
                    info = self.store.read_result_info(key)
                except Exception:  # noqa: BLE001 - unreadable: the call's own job reports it
                    info = {"ok": True}
                if info is None:
                    return "blocked"
                self._ok[key] = bool(info["ok"])
            if not self._ok[key]:
                return "failed"
        return "ready"


def _pick(cache: Path, shape: str, worker_id: str, parents: _Parents, deadline: Optional[float]):
    for entry in pq.queued(cache, shape):
        if deadline is not None:
            need = entry.run_time_max
            if need is None or time.time() + need + WALLTIME_MARGIN > deadline:
                continue  # a worker with a fresh walltime will take it
        state = parents.state(entry.parents)
        if state == "blocked":
            continue
        if not pq.take(entry, worker_id):
            continue
        if state == "failed":
            pq.write_done(entry.task_dir, entry.nonce, pq.DEPENDENCY_FAILED, None, None,
                          "a parent call failed: this call did not run")
            continue
        return entry
    return None


def _die_with_parent() -> None:
    """In a call's process: end with SIGKILL when the worker ends (Linux), so that a call never
    outlives its worker and finishes after its client was told that it failed. Best effort."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _run_forked(entry: pq.QueueEntry, log_fd: int) -> int:
    """Run the call in a forked child; its pid."""
    from executorlib.worker import _quick_exit, run_task  # loaded by serve(): the child pays nothing

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: the call's own output file, working directory and exit
        code = 1
        try:
            os.setpgid(0, 0)
            _die_with_parent()
            if os.getppid() != parent:  # the worker died before prctl took effect
                os._exit(1)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.chdir(entry.task_dir)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = run_task(entry.task_dir)
        except BaseException:  # noqa: BLE001 - as an uncaught error ends an interpreter
            traceback.print_exc()
            code = 2
        _quick_exit(code)  # threads joined, atexit run, streams flushed, then os._exit: never returns
    return pid


def _exit_watch(pid: int) -> Optional[int]:
    """A file descriptor that becomes readable when ``pid`` ends (Linux pidfd), or None."""
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None


def _run(entry: pq.QueueEntry, store) -> None:
    """Run one taken call to its end and record how it ended."""
    task_dir = entry.task_dir
    if pq.kill_requested(task_dir, entry.nonce):
        pq.write_done(task_dir, entry.nonce, "CANCELLED", None, None, "cancelled before it started")
        return
    log_path = store.log_path(entry.key)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    process: Optional[subprocess.Popen] = None
    try:
        if entry.fork:
            pid = _run_forked(entry, log_fd)
        else:
            process = subprocess.Popen(entry.command, stdout=log_fd, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, cwd=task_dir, start_new_session=True,
                                       preexec_fn=_die_with_parent)
            pid = process.pid
    finally:
        os.close(log_fd)
    start = time.monotonic()
    why = ""
    pause = 0.002
    next_kill_check = start + 0.25
    watch = _exit_watch(pid)
    while True:
        if process is not None:
            code = process.poll()
            status = None if code is None else code
        else:
            done_pid, raw = os.waitpid(pid, os.WNOHANG)
            status = None if done_pid == 0 else raw
        if status is not None:
            break
        if watch is not None:  # woken the moment the call ends; else every 0.25 s at most
            select.select([watch], [], [], min(0.25, max(next_kill_check - time.monotonic(), 0.0)))
        now = time.monotonic()
        if not why and entry.run_time_max and now - start > entry.run_time_max:
            why = "TIMEOUT"
        elif not why and now >= next_kill_check:
            next_kill_check = now + 0.25
            if pq.kill_requested(task_dir, entry.nonce):
                why = "CANCELLED"
        if why:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if watch is None:
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
    if watch is not None:
        os.close(watch)
    if process is not None:  # Popen's code: negative for a signal
        code, sig = (None, -status) if status < 0 else (status, None)
    else:
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    if why:
        state, detail = why, ("killed after run_time_max = %s s" % entry.run_time_max if why == "TIMEOUT"
                              else "cancelled while it ran")
    elif code == 0:
        state, detail = "COMPLETED", ""
    else:
        state = "FAILED"
        detail = f"exit code {code}" if sig is None else f"killed by signal {sig} ({signal.Signals(sig).name})"
    pq.write_done(task_dir, entry.nonce, state, code, sig, detail)


def _warm_up(folder: Path) -> None:
    """Run one trivial call through the task store here, so that every forked call starts from a
    process whose HDF5 and pickling paths are already set up (a call then costs ~8 ms, not ~12)."""
    import gc
    import shutil
    import tempfile

    from executorlib.store import TaskStore
    from executorlib.worker import run_task

    try:
        folder.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".warm-", dir=folder))
    except OSError:
        return
    try:
        store = TaskStore(scratch, use_index=False)
        store.durable = False
        store.write_task("warm", "int", TaskStore.pickle_call(int, (), {}), {}, [])
        with open(os.devnull, "w") as sink:
            saved = sys.stdout
            sys.stdout = sink
            try:
                run_task(scratch / "warm")
            finally:
                sys.stdout = saved
        store.read_result("warm")
    except Exception:  # noqa: BLE001 - only speed is at stake
        pass
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    gc.freeze()  # the forked calls do not copy the pages of objects that live on


def serve(cache: Path, shape: str, idle: float, walltime: Optional[float], worker_id: Optional[str] = None,
          id_source: str = "") -> int:
    """Serve calls until none is runnable for ``idle`` seconds; the number of calls served."""
    from executorlib.store import TaskStore
    from executorlib.worker import run_task  # noqa: F401 - loaded once here, not in every forked call

    store = TaskStore(cache, create=False, use_index=False)
    me = _worker_id(worker_id, id_source)
    _warm_up(pq.workers_dir(cache))
    started = time.time()
    deadline = started + walltime if walltime else None
    served = 0
    parents = _Parents(store)  # a result, once written, only changes when the cache is cleaned
    last_call_end = time.time()
    idle_since = time.monotonic()
    pause = 0.01
    talk = id_source not in ("", "PID")  # a scheduler job's log; a local worker stays quiet
    if talk:
        print(f"executorlib worker {me} on {socket.gethostname()}: serving shape {shape} of {cache}", flush=True)
    while True:
        if deadline is not None and time.time() > deadline - WALLTIME_MARGIN:
            break
        entry = _pick(cache, shape, me, parents, deadline)
        if entry is not None:
            _run(entry, store)
            last_call_end = time.time()
            served += 1
            idle_since = time.monotonic()
            pause = 0.01
            continue
        if time.monotonic() - idle_since > idle:
            break
        if pq.quiet_since(cache, shape) >= last_call_end:  # the client has nothing more: end now
            break
        time.sleep(pause)
        pause = min(pause * 1.5, MAX_IDLE_POLL)
    if talk:
        print(f"executorlib worker {me}: served {served} call(s), then none was runnable for {idle:g} s",
              flush=True)
    return served


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m executorlib.packed_worker",
                                     description="serve queued calls of one resource shape from an executorlib cache")
    parser.add_argument("--cache", required=True, help="the cache directory")
    parser.add_argument("--shape", required=True, help="the resource shape whose calls this job serves")
    parser.add_argument("--idle", type=float, default=10.0, help="end after this many seconds without a runnable call")
    parser.add_argument("--walltime", type=float, default=None, help="the job's time limit in seconds")
    parser.add_argument("--worker-id", default=None, help="the id the client knows this job by")
    parser.add_argument("--worker-id-env", default="PID",
                        help="the environment variable holding this job's id (SLURM_JOB_ID, FLUX_JOB_ID), or PID")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # scancel: end, the current call with it
    serve(Path(args.cache), args.shape, args.idle, args.walltime, args.worker_id, args.worker_id_env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
