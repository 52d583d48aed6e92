"""The job entry point: ``python -m executorlib.worker [--mpi] TASK_FOLDER``.

Load the task, put the parents' results in place of their Future placeholders, run it, write the
result (or the error with its traceback) atomically, exit. Every job on a cluster pays this
module's import time, so it imports the task store and nothing heavier.

Exit codes: 0 the function returned; 1 the function raised (the error is stored, and SLURM sees
the job as failed so that ``afterok`` dependents never start); 2 the task could not be loaded or
its outcome could not be written.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from executorlib.errors import DependencyError
from executorlib.store import TaskStore
from executorlib.task import fill_futures


class _ParentFailed(DependencyError):
    """A parent's result is missing or an error; stored as a plain DependencyError."""


def _load_call(store: TaskStore, key: str) -> tuple[Any, tuple, dict]:
    fn, args, kwargs = store.read_task(key)

    def parent_value(parent_key: str) -> Any:
        if not store.has_result(parent_key):
            raise _ParentFailed(f"the result of parent task {parent_key} is missing from the cache")
        outcome = store.read_result(parent_key)
        if not outcome.ok:
            raise _ParentFailed(f"parent task {parent_key} failed: {outcome.error!r}")
        return outcome.value

    return fn, fill_futures(args, parent_value), fill_futures(kwargs, parent_value)


def _run(fn: Any, args: tuple, kwargs: dict) -> tuple[bool, Any, str]:
    try:
        return True, fn(*args, **kwargs), ""
    except BaseException as error:  # noqa: BLE001 - every error of the user's function is a result
        return False, error, traceback.format_exc()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    use_mpi = "--mpi" in argv
    argv = [a for a in argv if a != "--mpi"]
    usage = "usage: python -m executorlib.worker [--mpi] TASK_FOLDER"
    if argv in (["-h"], ["--help"]):
        print(usage)
        return 0
    if len(argv) != 1 or not (Path(argv[0]) / "task.h5").is_file():
        print(usage if len(argv) != 1 else f"{usage}\nno task file {Path(argv[0]).absolute() / 'task.h5'}",
              file=sys.stderr)
        return 2
    task_dir = Path(argv[0]).absolute()
    store = TaskStore(task_dir.parent, create=False)
    key = task_dir.name

    comm = None
    if use_mpi:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    rank = comm.Get_rank() if comm is not None else 0

    try:
        info = store.read_task_info(key)
        if info["client_cwd"] and info["client_cwd"] not in sys.path:
            sys.path.append(info["client_cwd"])  # modules next to the submitting script import
        fn, args, kwargs = _load_call(store, key)
        if info["resources"].get("cwd"):
            os.chdir(info["resources"]["cwd"])
    except _ParentFailed as error:
        fn = None
        load_error: tuple | None = (DependencyError(str(error)), traceback.format_exc())
    except Exception as error:  # noqa: BLE001
        if rank == 0:
            traceback.print_exc()
            try:
                store.write_error(key, error, traceback.format_exc(), 0.0)
            except Exception:
                traceback.print_exc()
        return 2
    else:
        load_error = None

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
                print(tb, file=sys.stderr)
            store.write_error(key, value, tb, runtime)
    except Exception:  # noqa: BLE001 - no file that reads as success is left behind
        traceback.print_exc()
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
