"""The job entry point: ``python -m executorlib.worker [--mpi] TASK_FOLDER``.

Load the task, put the parents' results in place of their Future placeholders, run it, write the
result (or the error with its traceback) atomically, exit. Every job on a cluster pays this
module's import time, so it imports the task store and nothing heavier.

Exit codes: 0 the function returned; 1 the function raised (the error is stored, and SLURM sees
the job as failed so that ``afterok`` dependents never start); 2 the task could not be set up (its
function or arguments could not be loaded, e.g. a module missing from ``PYTHONPATH``; its ``cwd``
does not exist; a parent's result is missing or unreadable) or its outcome could not be written.

A setup failure is not the call's result: nothing is written to result.h5, so a rerun after the
fix runs the call again. The explanation, with what to fix, goes to ``setup_error.json`` in the
task folder (:meth:`TaskStore.read_setup_error`) and to the job's output.

``python -m executorlib.worker --fork-server FD`` is the fork server of the local backend
(``executorlib.spawners.forkserver``): each of its forked children runs one task as above.

``python -m executorlib.worker --serve [--mpi] [--init INIT_FILE]`` is a persistent worker of a
block allocation (``executorlib.spawners.pool``): it runs ``init_function`` once, then reads one
task folder per line on stdin, runs each exactly as above (its output goes to the task's
``job.out``) and answers ``done <folder> <exit code>`` on stdout, until stdin ends. With
``--stream TOKEN`` (serial workers of a temporary cache) a request may also be a call sent in
memory, ``@call <length>`` and the pickled call with its parents' values: it runs without task or
result file and its pickled outcome goes back in frames of at most PIPE_BUF bytes
(``TOKEN part <n>``), before the answer ``TOKEN done <folder> <exit code>`` (:func:`_serve_call`).
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from executorlib.errors import CacheError, DependencyError, TaskExitError
from executorlib.task import fill_futures

if TYPE_CHECKING:
    from executorlib.store import TaskStore
elif __name__ != "__main__":
    # imported as a library (the fork server preloads what its children need): the store now;
    # run as ``python -m executorlib.worker`` it comes with the first task file (run_task), so
    # that a pool worker fed calls in memory (srun steps) starts without h5py and numpy
    from executorlib.store import TaskStore  # noqa: F401


class _SetupFailed(Exception):
    """The job could not set up the call; ``message`` says what failed and what to fix."""

    def __init__(self, message: str, error: Optional[BaseException] = None):
        super().__init__(message)
        self.message = message
        self.error = error


def _load_call(store: TaskStore, key: str, info: dict, opened: Any = None) -> tuple[Any, tuple, dict]:
    path = store.path(key, "task.h5")
    where = f"on host {socket.gethostname()} with Python {sys.executable}"
    try:
        fn, args, kwargs = store.read_task(key, opened)
    except (ImportError, AttributeError) as error:  # ModuleNotFoundError is an ImportError
        raise _SetupFailed(
            f"the job of task {key} could not load its function {info.get('function_name')!r} "
            f"or arguments from {path}: {type(error).__name__}: {error}. The job imports the "
            f"modules the call refers to by name: make them importable {where} (PYTHONPATH, or "
            f"install the package into the job's environment; modules next to the submitting "
            f"script are found through its directory {info.get('client_cwd')!r}), then submit "
            f"again: nothing was cached, so the call runs again.", error) from error
    except CacheError as error:
        raise _SetupFailed(str(error), error) from error
    except Exception as error:  # noqa: BLE001 - e.g. an argument's own __setstate__ failed
        raise _SetupFailed(
            f"the job of task {key} could not unpickle its function or arguments from {path} "
            f"{where}: {type(error).__name__}: {error}. Nothing was cached: after the fix, "
            f"submit again and the call runs again.", error) from error

    def parent_value(parent_key: str) -> Any:
        if not store.has_result(parent_key):
            raise _SetupFailed(
                f"the result of parent task {parent_key}, an argument of task {key}, is missing "
                f"from the cache {store.directory} (deleted meanwhile?). Submit the parent call "
                f"again, then this one: nothing was cached for it.")
        try:
            outcome = store.read_result(parent_key)
        except Exception as error:  # noqa: BLE001 - damaged, or its module is missing here
            raise _SetupFailed(
                f"the result of parent task {parent_key}, an argument of task {key}, cannot be "
                f"read {where}: {type(error).__name__}: {error}", error) from error
        if not outcome.ok:
            raise _SetupFailed(
                f"parent task {parent_key}, an argument of task {key}, failed: {outcome.error!r}; "
                f"nothing was cached for task {key}.", DependencyError(str(outcome.error)))
        return outcome.value

    return fn, fill_futures(args, parent_value), fill_futures(kwargs, parent_value)


def _enter_cwd(key: str, cwd: str) -> None:
    try:
        os.chdir(cwd)
    except OSError as error:
        what = "does not exist" if isinstance(error, FileNotFoundError) else f"cannot be entered ({error})"
        raise _SetupFailed(
            f"the working directory of task {key}, resource_dict['cwd'] = {cwd!r}, {what} on "
            f"host {socket.gethostname()}. Create it (on the machine the job runs on) or change "
            f"resource_dict['cwd'], then submit again: nothing was cached, so the call runs "
            f"again.", error) from error


def _print_traceback(store: TaskStore, key: str, tb: str) -> None:
    """The traceback of a failed call, for job.out. When the spawner streams the job's output to
    the caller (EXECUTORLIB_STREAMED_OUTPUT=1), it goes to job.out only: the caller gets it as a
    note on the exception already, and would see it twice."""
    if os.environ.get("EXECUTORLIB_STREAMED_OUTPUT") == "1":
        sys.stderr.flush()
        try:
            with open(store.log_path(key), "a") as log:
                log.write(tb if tb.endswith("\n") else tb + "\n")
            return
        except OSError:
            pass
    print(tb, file=sys.stderr)


def _report_setup_failure(store: TaskStore, key: str, failure: _SetupFailed, tb: str) -> None:
    """Say why the call did not run: in the job's output and in setup_error.json (not a result)."""
    print(tb, file=sys.stderr)
    print(f"executorlib: setup failed, nothing was cached: {failure.message}", file=sys.stderr)
    error = failure.error if failure.error is not None else failure
    try:
        store.write_setup_error(key, {"message": failure.message,
                                      "error_type": f"{type(error).__module__}.{type(error).__qualname__}",
                                      "traceback": tb[-20_000:]})
    except Exception:  # noqa: BLE001 - the output above still says it
        traceback.print_exc()


def _run(fn: Any, args: tuple, kwargs: dict) -> tuple[bool, Any, str]:
    try:
        return True, fn(*args, **kwargs), ""
    except (SystemExit, KeyboardInterrupt) as error:  # must not end the caller's script: a stand-in
        return False, TaskExitError.from_exception(error), traceback.format_exc()
    except BaseException as error:  # noqa: BLE001 - every error of the user's function is a result
        return False, error, traceback.format_exc()


def _with_init_values(fn: Any, args: tuple, kwargs: dict, init_values: dict) -> dict:
    """``kwargs`` plus the init values named like parameters of ``fn`` that the call leaves out
    (an argument given by the call wins)."""
    import inspect

    try:
        signature = inspect.signature(fn)
        given = signature.bind_partial(*args, **kwargs).arguments
    except (TypeError, ValueError):  # no signature (some builtins), or a call that cannot bind
        return kwargs
    fillable = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    extra = {
        name: init_values[name]
        for name, parameter in signature.parameters.items()
        if parameter.kind in fillable and name not in given and name in init_values
    }
    return {**kwargs, **extra} if extra else kwargs


def _load_init(init_file: str) -> tuple[Optional[dict], Optional[tuple[BaseException, str]]]:
    """Run the pickled ``init_function``: (its dict, None) or (None, (error, traceback))."""
    import cloudpickle

    try:
        with open(init_file, "rb") as f:
            init_function = cloudpickle.load(f)
        values = init_function()
        if not isinstance(values, dict):
            raise TypeError(
                f"init_function must return a dict of parameter names to values, "
                f"got {type(values).__name__}")
        return values, None
    except BaseException as error:  # noqa: BLE001 - every task of this worker reports it
        failure = RuntimeError(f"the init_function of this Executor failed in worker process "
                               f"{os.getpid()}: {type(error).__name__}: {error}")
        return None, (failure, traceback.format_exc())


def serve(argv: list[str], use_mpi: bool = False) -> int:
    """The persistent worker of a block allocation (see the module docstring).

    Every rank runs each task under ``--mpi``; rank 0 reads the task folders and answers.
    """
    usage = "usage: python -m executorlib.worker --serve [--mpi] [--init INIT_FILE] [--stream TOKEN]"
    options: dict[str, str] = {}
    rest = list(argv)
    while len(rest) >= 2 and rest[0] in ("--init", "--stream") and rest[0] not in options:
        options[rest[0]] = rest[1]
        rest = rest[2:]
    if rest:
        print(usage, file=sys.stderr)
        return 2
    init_file, token = options.get("--init"), options.get("--stream")
    comm = None
    if use_mpi:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    rank = comm.Get_rank() if comm is not None else 0
    # stdin and stdout carry the protocol; what the init function and the tasks print must not
    # reach it: fd 1 goes to stderr between tasks and to the task's job.out during a task.
    # With --stream TOKEN, fds 1 and 2 stay the spawner's pipes (it shows the output to the
    # caller and writes job.out); an answer is one write of a line that starts with TOKEN.
    requests = os.fdopen(os.dup(0), "rb") if rank == 0 else None
    answers = os.fdopen(os.dup(1), "w") if rank == 0 and token is None else None
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if token is None:
        os.dup2(2, 1)
    home = os.getcwd()
    init_values, init_error = _load_init(init_file) if init_file else (None, None)
    # the pool's index of this worker (spawners/pool.py): fills a parameter executorlib_worker_id;
    # removed from the environment so that processes the tasks start do not inherit it
    worker_id = os.environ.pop("EXECUTORLIB_WORKER_ID", None)
    if worker_id is not None and worker_id.isdigit():
        init_values = {**(init_values or {}), "executorlib_worker_id": int(worker_id)}
    control = comm.Dup() if comm is not None else None  # keeps our messages apart from the user's
    while True:
        folder: Optional[str]
        if rank == 0:
            line = requests.readline()  # type: ignore[union-attr]
            if line.startswith(CALL_PREFIX) and token is not None and control is None:
                # a call sent in memory (the pool's fast path): no task file, no result file
                try:
                    data = requests.read(int(line[len(CALL_PREFIX):]))  # type: ignore[union-attr]
                    requests.readline()  # type: ignore[union-attr]  # the frame's closing newline
                    _serve_call(data, init_values, init_error, home, token)
                except BrokenPipeError:  # the Executor is gone
                    return 0
                continue
            folder = line.decode(errors="surrogateescape").rstrip("\n") or None
            for other in range(1, control.Get_size() if control is not None else 1):
                control.send(folder, dest=other)  # type: ignore[union-attr]
        else:
            folder = _wait_for_message(control)
        if folder is None:
            return 0
        code = _serve_one(folder, comm, init_values, init_error, home, streamed=token is not None)
        try:
            if answers is not None:
                answers.write(f"done {folder} {code}\n")
                answers.flush()
            elif token is not None and rank == 0:
                os.write(1, f"{token} done {folder} {code}\n".encode())
        except BrokenPipeError:  # the Executor is gone
            return 0


def _wait_for_message(control: Any) -> Optional[str]:
    """Receive the next task folder from rank 0 without spinning a core while the pool idles."""
    request = control.irecv(source=0)
    pause = 0.001
    while True:
        done, message = request.test()
        if done:
            return message
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _serve_one(folder: str, comm: Any, init_values: Optional[dict],
               init_error: Optional[tuple[BaseException, str]], home: str, streamed: bool = False) -> int:
    """One task of a persistent worker, in the task's folder, printing to its job.out (or, when
    ``streamed``, to the spawner's pipes, which write job.out)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if streamed:
        try:
            os.chdir(folder)
        except OSError:
            traceback.print_exc()
            return 2
        try:
            return run_task(folder, comm, init_values, init_error)
        finally:
            _flush_and_return(home)
    saved = os.dup(1), os.dup(2)
    try:
        log = os.open(os.path.join(folder, "job.out"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.chdir(folder)
    except OSError:
        traceback.print_exc()
        code = 2
    else:
        code = run_task(folder, comm, init_values, init_error)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        _flush_and_return(home)
    return code


def _flush_and_return(home: str) -> None:
    """After a task of a persistent worker: its output flushed, back to the worker's folder."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.chdir(home)
    except OSError:
        pass


#: starts a request line of a call sent in memory: ``@call <length>\n<pickle>\n``
CALL_PREFIX = b"@call "
#: the longest write of one answer frame: a pipe takes a write of at most PIPE_BUF (4096) bytes
#: at once, so output of other threads or processes of the task cannot land inside a frame
FRAME_LIMIT = 4096


def _write_frame(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


def _send_outcome(token: str, folder: str, code: int, payload: bytes) -> None:
    """The outcome of a call sent in memory, on stdout: frames ``TOKEN part <n>\n<n bytes>\n``
    (each within one write of at most FRAME_LIMIT bytes), then the answer ``TOKEN done <folder>
    <code>``, in the same write as the last frame: one write for a small outcome (a second small
    write right after the first would wait for the first one's acknowledgement where srun carries
    the output over TCP, ~40 ms)."""
    head = f"{token} part ".encode()
    done = f"{token} done {folder} {code}\n".encode()
    step = max(256, FRAME_LIMIT - len(head) - 8 - len(done))
    starts = range(0, len(payload), step)
    last = len(starts) - 1
    for number, start in enumerate(starts):
        chunk = payload[start:start + step]
        frame = b"".join((head, str(len(chunk)).encode(), b"\n", chunk, b"\n"))
        _write_frame(frame + done if number == last and len(frame) + len(done) <= FRAME_LIMIT else frame)
        if number == last and len(frame) + len(done) <= FRAME_LIMIT:
            return
    _write_frame(done)


def _outcome_payload(key: str, ok: bool, value: Any, tb: str, runtime: float) -> tuple[bytes, int]:
    """The pickled outcome of a call sent in memory, and its exit code (0 value, 1 error): a
    value that cannot be pickled becomes a TypeError, an exception that does not survive
    pickling a RemoteError with its type and text (as TaskStore.write_result/write_error)."""
    import cloudpickle

    if ok:
        try:
            return cloudpickle.dumps(("ok", value, runtime)), 0
        except Exception as error:  # noqa: BLE001 - e.g. a lock
            tb = traceback.format_exc()
            value = TypeError(f"the result of task {key} cannot be stored: {error!r}")
    try:
        data = cloudpickle.dumps(("error", value, tb, runtime))
        cloudpickle.loads(data)
    except Exception:  # noqa: BLE001 - keep its type and text
        from executorlib.errors import RemoteError

        kind = type(value)
        name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        data = cloudpickle.dumps(("error", RemoteError(name, str(value)), tb, runtime))
    return data, 1


def _load_sent_call(request: dict) -> tuple[Any, tuple, dict]:
    """The function and arguments of a call sent in memory, the parents' values in place of
    their FutureRefs (_SetupFailed when they cannot be loaded)."""
    import cloudpickle

    key = request["key"]
    where = f"on host {socket.gethostname()} with Python {sys.executable}"
    try:
        fn = cloudpickle.loads(request["function"])
        args = cloudpickle.loads(request["args"])
        kwargs = cloudpickle.loads(request["kwargs"])
        parents = cloudpickle.loads(request["parents"]) if request.get("parents") else {}
    except (ImportError, AttributeError) as error:
        raise _SetupFailed(
            f"the worker could not load the function {request.get('function_name')!r} of task {key} "
            f"or its arguments: {type(error).__name__}: {error}. The worker imports the modules the "
            f"call refers to by name: make them importable {where} (PYTHONPATH; modules next to the "
            f"submitting script are found through its directory {request.get('client_cwd')!r}).",
            error) from error
    except Exception as error:  # noqa: BLE001 - e.g. an argument's own __setstate__ failed
        raise _SetupFailed(f"the worker could not unpickle the function or arguments of task {key} "
                           f"{where}: {type(error).__name__}: {error}", error) from error

    def parent_value(parent_key: str) -> Any:
        if parent_key not in parents:
            raise _SetupFailed(f"the value of parent task {parent_key}, an argument of task {key}, "
                               "was not sent to the worker")
        return parents[parent_key]

    return fn, fill_futures(args, parent_value), fill_futures(kwargs, parent_value)


def _serve_call(data: bytes, init_values: Optional[dict], init_error: Optional[tuple[BaseException, str]],
                home: str, token: str) -> None:
    """Run one call sent in memory by the pool (``@call``): in this worker's working directory
    below the temporary cache (``.work/<pid>``: no folder per task, no task file), with the
    parents' values it carries; the outcome goes back on stdout
    (:func:`_send_outcome`), nothing to the store. A setup failure answers exit code 2 with the
    message, as a one-shot job's setup_error.json would."""
    import pickle

    import cloudpickle

    sys.stdout.flush()
    sys.stderr.flush()
    request = pickle.loads(data)
    key, folder = request["key"], request["folder"]
    workdir = os.path.join(request["workdir"], str(os.getpid()))  # this worker's, for all its calls
    try:
        try:
            os.makedirs(workdir, mode=0o700, exist_ok=True)
            os.chdir(workdir)
        except OSError as error:
            raise _SetupFailed(f"the working directory of task {key}, {workdir}, cannot be entered: {error}",
                               error) from error
        client_cwd = request.get("client_cwd")
        if client_cwd and client_cwd not in sys.path:
            sys.path.append(client_cwd)  # modules next to the submitting script import
        fn, args, kwargs = _load_sent_call(request)
        if init_values:
            kwargs = _with_init_values(fn, args, kwargs, init_values)
        if request.get("cwd"):
            _enter_cwd(key, request["cwd"])
    except _SetupFailed as failure:
        tb = traceback.format_exc()
        print(tb, file=sys.stderr)
        print(f"executorlib: setup failed: {failure.message}", file=sys.stderr)
        payload, code = cloudpickle.dumps(("setup", failure.message, tb)), 2
    else:
        start = time.time()
        if init_error is not None:
            ok, value, tb = False, init_error[0], init_error[1]
        else:
            ok, value, tb = _run(fn, args, kwargs)
        payload, code = _outcome_payload(key, ok, value, tb, time.time() - start)
        del value
    finally:
        _flush_and_return(home)
    _send_outcome(token, folder, code, payload)


def _quick_exit(code: int) -> None:
    """End a forked child of the fork server as ``multiprocessing`` ends its children: join the
    threads the call left running (as the interpreter does at exit), run the ``atexit``
    handlers, flush stdout/stderr, then ``os._exit`` without the interpreter's teardown of every
    module (~40 ms with h5py and numpy loaded, paid for every call)."""
    import atexit
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except BaseException:  # noqa: BLE001
        pass
    try:
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass
    os._exit(code)


def _whole_lines() -> None:
    """Unbuffered streams (PYTHONUNBUFFERED, set by the spawners so that prints show when they
    happen) write ``print``'s text and its newline separately: the lines of two tasks that print
    at once could be cut into each other. Line buffering keeps each line one write."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and not stream.isatty():
                stream.reconfigure(line_buffering=True, write_through=False)  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _whole_lines()
    use_mpi = "--mpi" in argv
    argv = [a for a in argv if a != "--mpi"]
    if argv[:1] == ["--serve"]:
        return serve(argv[1:], use_mpi)
    if argv[:1] == ["--fork-server"] and len(argv) == 2:  # executorlib.spawners.forkserver
        from executorlib.spawners.forkserver import serve as fork_server

        child_argv = fork_server(int(argv[1]))
        if child_argv is None:  # the server ends
            return 0
        try:
            code = main(child_argv)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:  # noqa: BLE001 - as an uncaught error ends an interpreter
            traceback.print_exc()
            code = 1
        _quick_exit(code)  # a forked child: the job, then its exit
    usage = "usage: python -m executorlib.worker [--mpi] TASK_FOLDER"
    if argv in (["-h"], ["--help"]):
        print(usage)
        return 0
    if len(argv) != 1 or not (Path(argv[0]) / "task.h5").is_file():
        print(usage if len(argv) != 1 else f"{usage}\nno task file {Path(argv[0]).absolute() / 'task.h5'}",
              file=sys.stderr)
        return 2
    comm = None
    if use_mpi:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    return run_task(Path(argv[0]), comm)


def run_task(task_dir: os.PathLike | str, comm: Any = None, init_values: Optional[dict] = None,
             init_error: Optional[tuple[BaseException, str]] = None) -> int:
    """Run the task stored in ``task_dir`` and write its outcome; return the exit code.

    ``comm``: the MPI communicator when every rank runs the task (rank 0 writes the outcome).
    ``init_values``: what the block allocation's ``init_function`` returned; they fill the
    function's parameters that the call does not give. ``init_error``: the init function failed,
    so the task fails with that error instead of running.
    """
    task_dir = Path(task_dir).absolute()
    from executorlib.store import TaskStore

    store = TaskStore(task_dir.parent, create=False, use_index=False)
    key = task_dir.name
    rank = comm.Get_rank() if comm is not None else 0

    if rank == 0:  # a new attempt: an earlier one's setup error and temporaries are stale
        store.clear_setup_error(key)
        store.remove_stale_temporaries(key)
    task_file = None  # task.h5, opened once for its metadata and the call
    try:
        try:
            task_file = store.open_task(key)
            info = store.read_task_info(key, task_file)
        except Exception as error:  # noqa: BLE001 - damaged or unreadable task.h5
            raise _SetupFailed(f"the job of task {key} cannot read its task file: {error}", error) from error
        store.durable = info.get("durable", True)  # as the client wrote the task (temporary cache: no fsync)
        if info["client_cwd"] and info["client_cwd"] not in sys.path:
            sys.path.append(info["client_cwd"])  # modules next to the submitting script import
        fn, args, kwargs = _load_call(store, key, info, task_file)
        task_file.close()
        task_file = None
        if init_values:
            kwargs = _with_init_values(fn, args, kwargs, init_values)
        if info["resources"].get("cwd"):
            _enter_cwd(key, info["resources"]["cwd"])
    except _SetupFailed as failure:
        if rank == 0:
            _report_setup_failure(store, key, failure, traceback.format_exc())
        return 2
    finally:
        if task_file is not None:
            try:
                task_file.close()
            except Exception:  # noqa: BLE001
                pass
    load_error = init_error

    start = time.time()
    if load_error is not None:
        ok, value, tb = False, load_error[0], load_error[1]
    else:
        ok, value, tb = _run(fn, args, kwargs)
    runtime = time.time() - start

    if comm is not None:
        import cloudpickle

        try:
            payload = cloudpickle.dumps((ok, value, tb))
        except Exception as error:  # noqa: BLE001 - an unpicklable value becomes the error
            payload = cloudpickle.dumps((False, TypeError(f"rank {rank}: result cannot be pickled: {error}"), ""))
        gathered = comm.gather(payload, root=0)
        if rank != 0:
            return 0 if ok else 1
        outcomes = [cloudpickle.loads(p) for p in gathered]
        failed = [(r, o) for r, o in enumerate(outcomes) if not o[0]]
        if failed:
            failed_rank, (ok, value, tb) = failed[0]
            tb = f"(MPI rank {failed_rank} of {len(outcomes)})\n{tb}"
        else:
            ok, value = True, [o[1] for o in outcomes]

    try:
        if ok:
            try:
                store.write_result(key, value, runtime)
            except OSError:
                raise
            except Exception as error:  # noqa: BLE001 - e.g. a result that cannot be pickled
                ok, tb = False, traceback.format_exc()
                value = TypeError(f"the result of task {key} cannot be stored: {error!r}")
        if not ok:
            if tb:
                _print_traceback(store, key, tb)
            store.write_error(key, value, tb, runtime)
    except Exception:  # noqa: BLE001 - no file that reads as success is left behind
        traceback.print_exc()
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
