"""The task store: one folder per task key in the cache directory.

Layout of ``<cache_directory>/<key>/``::

    task.h5     the call: pickled function, args, kwargs; resources; parent keys (written once)
    job.json    who runs it: the claim of the submitting process, then the scheduler's job id
    result.h5   the outcome: pickled result, or pickled error + remote traceback; run time
    result.pkl  a copy of a small successful result (see below), for fast reattach
    job.out     what the job printed (scheduler backends), job.sh the script it ran

result.h5 is the record. Opening an HDF5 file costs ~0.4 ms, which 4,000 cached calls pay in a
row when a notebook reattaches, so a job whose pickled result is at most 64 KiB also leaves
result.pkl: a header naming the very result.h5 it copies (inode, size, mtime), a checksum, and
the pickle. It is read only while its header matches result.h5 and its checksum its bytes; a
missing, stale or damaged copy only sends the reader to result.h5.

Every file is written to a temporary name and renamed into place, so a crash or a full disk never
leaves a file that reads as a success, and a file is never rewritten in place. Lookups are by path,
O(1) in the number of tasks. This module is imported by every job (``executorlib.worker``), so it
imports h5py and cloudpickle and nothing else of the package that is heavy.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import stat
import struct
import time
import zlib
import warnings
from pathlib import Path
from typing import Any, Optional

import cloudpickle
import h5py
import numpy as np

from executorlib.errors import CacheCorruptedError, CacheError, RemoteError
from executorlib.files import (  # noqa: F401 - re-exported: other modules import them from here
    COPY_FILE,
    INDEX_DIR,
    JOB_FILE,
    LOG_FILE,
    MAX_COPY_BYTES,
    RESULT_FILE,
    SETUP_ERROR_FILE,
    TASK_FILE,
    fsync as _fsync,
    stamp_of,
    temporary_name as _temporary_name,
    write_atomic,
    write_json as _write_json,
)

__all__ = ["TaskStore", "FORMAT_VERSION", "Outcome"]

FORMAT_VERSION = 1
_COPY_HEADER = struct.Struct("<4sQQQI")  # magic, result.h5's inode, size, mtime_ns; crc32 of the pickle
_COPY_MAGIC = b"XLR1"


class Outcome:
    """What a finished task left: a value, or an exception with its remote traceback.

    (Its run time and end time are in :meth:`TaskStore.read_result_info`.)"""

    __slots__ = ("ok", "value", "error", "traceback")

    def __init__(self, ok: bool, value: Any = None, error: Optional[BaseException] = None,
                 traceback: str = ""):
        self.ok, self.value, self.error, self.traceback = ok, value, error, traceback


def _to_dataset(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


def _from_dataset(dataset: Any) -> np.ndarray:
    """The bytes of a dataset, read straight into one buffer (no second copy of large data)."""
    buffer = np.empty(dataset.shape, dtype=np.uint8)
    if buffer.size:
        dataset.read_direct(buffer)
    return buffer


def _read_output_fast(path: Path) -> Optional[np.ndarray]:
    """The pickled value of a successful result.h5 through h5py's low-level API (~3x faster than
    ``h5py.File``, which matters when thousands of cached calls are resubmitted), or None for
    anything else (an error outcome, another format version, a damaged file): the caller then
    takes the checked path, which explains what is wrong."""
    try:
        fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY)
    except Exception:  # noqa: BLE001
        return None
    try:
        attr = h5py.h5a.open(fid, b"format_version")
        version = np.empty(attr.shape, dtype=attr.dtype)
        attr.read(version)
        if version.size != 1 or int(version.reshape(())) != FORMAT_VERSION:
            return None
        dataset = h5py.h5d.open(fid, b"output")
        buffer = np.empty(dataset.shape, dtype=np.uint8)
        dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, buffer)
        return buffer
    except Exception:  # noqa: BLE001
        return None
    finally:
        fid.close()


def _write_h5(path: Path, datasets: dict[str, bytes], attrs: dict[str, Any], exclusive: bool = False) -> bool:
    def fill(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            for name, data in datasets.items():
                f.create_dataset(name, data=_to_dataset(data))
            for name, value in attrs.items():
                f.attrs[name] = value

    return write_atomic(path, fill, exclusive=exclusive)


class TaskStore:
    """Reads and writes the task folders of one cache directory."""

    def __init__(self, directory: os.PathLike | str, create: bool = True, use_index: bool = True):
        self.directory = Path(directory).expanduser().absolute()
        # packs of small results for fast reattach (executorlib.result_index), imported here
        # because jobs go without them
        self.index: Any = None
        if use_index:
            from executorlib.result_index import ResultIndex

            self.index = ResultIndex(self.directory)
        if create:
            self._create()
        elif not self.directory.is_dir():
            raise CacheError(f"cache directory {self.directory} does not exist")
        self._check_permissions()

    def _create(self) -> None:
        if self.directory.exists() and not self.directory.is_dir():
            raise CacheError(f"cache_directory {self.directory} exists and is not a directory")
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            raise CacheError(f"cannot create cache_directory {self.directory}: {err}") from None

    def _check_permissions(self) -> None:
        info = self.directory.stat()
        # a sticky bit does not help: others may still create the folder of a key not yet computed
        others_write = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if others_write or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
            who = "writable by other users" if others_write else "owned by another user"
            warnings.warn(
                f"cache directory {self.directory} is {who}; the cache holds "
                "pickles, which run code when loaded. Use a directory of your own, restricted "
                f"with: chmod 700 {self.directory}",
                stacklevel=4,
            )

    # -- paths -----------------------------------------------------------------------------------
    def task_dir(self, key: str) -> Path:
        return self.directory / key

    def path(self, key: str, name: str) -> Path:
        return self.directory / key / name

    def log_path(self, key: str) -> Path:
        return self.path(key, LOG_FILE)

    def keys(self) -> list[str]:
        """All task keys in the cache (walks the directory: for tools, never per submit)."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in os.scandir(self.directory) if p.is_dir() and not p.name.startswith("."))

    # -- task ------------------------------------------------------------------------------------
    @staticmethod
    def pickle_call(fn: Any, args: Any, kwargs: Any) -> dict[str, bytes]:
        """The datasets of a task file: the pickled function, args and kwargs."""
        return {"function": cloudpickle.dumps(fn), "args": cloudpickle.dumps(args),
                "kwargs": cloudpickle.dumps(kwargs)}

    def write_task(self, key: str, fn_name: str, pickled: dict[str, bytes], resources: dict,
                   parents: list[str]) -> bool:
        """Store the call (``pickled``: from :meth:`pickle_call`) once; returns False when the
        task file already existed."""
        task_path = self.path(key, TASK_FILE)
        if task_path.exists():
            return False
        task_path.parent.mkdir(mode=0o700, exist_ok=True)
        attrs = {
            "format_version": FORMAT_VERSION,
            "function_name": fn_name,
            "created": time.time(),
            "resources": json.dumps(resources, default=repr),
            "parents": json.dumps(parents),
            "client_cwd": os.getcwd(),
        }
        return _write_h5(task_path, pickled, attrs, exclusive=True)

    def read_task(self, key: str) -> tuple[Any, Any, Any]:
        """Load (function, args, kwargs) of a stored task."""
        path = self.path(key, TASK_FILE)
        with self._open(path) as f:
            return tuple(self._unpickle(path, f, n) for n in ("function", "args", "kwargs"))

    def read_task_info(self, key: str) -> dict:
        """The task's metadata (no unpickling): function name, created, resources, parents."""
        path = self.path(key, TASK_FILE)
        with self._open(path) as f:
            try:
                return {
                    "function_name": str(f.attrs["function_name"]),
                    "created": float(f.attrs["created"]),
                    "resources": json.loads(f.attrs["resources"]),
                    "parents": json.loads(f.attrs["parents"]),
                    "format_version": int(f.attrs["format_version"]),
                    "client_cwd": str(f.attrs.get("client_cwd", "")),
                }
            except KeyError as err:
                raise self._corrupted(path, f"missing {err}") from None

    def has_task(self, key: str) -> bool:
        return self.path(key, TASK_FILE).exists()

    # -- job -------------------------------------------------------------------------------------
    def claim(self, key: str, backend: str) -> bool:
        """Atomically take the right to submit ``key``; False when another process holds it."""
        record = {"state": "claimed", "backend": backend, "host": socket.gethostname(),
                  "pid": os.getpid(), "time": time.time()}
        return _write_json(self.path(key, JOB_FILE), record, exclusive=True)

    def release_stale_claim(self, key: str, expected: Optional[dict] = None) -> bool:
        """Remove a dead submitter's record so that this process may claim the task.

        Renaming is atomic: of several processes that find the same stale record only one wins.
        With ``expected`` (the record judged stale) a record that another process replaced in the
        meantime is put back and False is returned.
        """
        path = self.path(key, JOB_FILE)
        moved = _temporary_name(path)
        try:
            os.rename(path, moved)
        except FileNotFoundError:
            return False
        try:  # only our own temporary name: another process's claim may be in flight as a .tmp
            if expected is None:
                return True
            try:
                current = json.loads(moved.read_text())
            except (ValueError, OSError):
                current = None
            if current is not None and current != expected:
                try:
                    os.link(moved, path)  # put the newer record back, unless yet another exists
                except FileExistsError:
                    pass
                return False
            return True
        finally:
            moved.unlink(missing_ok=True)

    def write_job(self, key: str, backend: str, job_id: str, log: Optional[os.PathLike | str] = None) -> None:
        """Record the job of ``key``; ``log`` is its output file when not the default job.out."""
        record = {"state": "submitted", "backend": backend, "job_id": str(job_id),
                  "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
        if log is not None:
            record["log"] = str(log)
        _write_json(self.path(key, JOB_FILE), record)

    def job_log(self, key: str, record: Optional[dict] = None) -> Path:
        """The output file of the task's job: as recorded at submission, else job.out."""
        record = self.read_job(key) if record is None else record
        logged = (record or {}).get("log")
        return Path(logged) if logged else self.log_path(key)

    def read_job(self, key: str) -> Optional[dict]:
        try:
            return json.loads(self.path(key, JOB_FILE).read_text())
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return None  # a torn record cannot exist (atomic writes); treat junk as absent

    # -- result ----------------------------------------------------------------------------------
    def has_result(self, key: str) -> bool:
        return self.path(key, RESULT_FILE).exists()

    def write_result(self, key: str, value: Any, runtime: float) -> None:
        data = cloudpickle.dumps(value)
        self._write_outcome(key, {"output": data}, {"runtime": runtime})
        if len(data) <= MAX_COPY_BYTES:
            self._write_copy(key, data)
        else:
            self.path(key, COPY_FILE).unlink(missing_ok=True)  # of an earlier, smaller result

    def _write_copy(self, key: str, data: bytes) -> None:
        """result.pkl next to a small result.h5 just written (best effort: it only saves time)."""
        try:
            stamp = stamp_of(os.stat(self.path(key, RESULT_FILE)))
            header = _COPY_HEADER.pack(_COPY_MAGIC, *stamp, zlib.crc32(data))

            def fill(tmp: Path) -> None:
                with open(tmp, "wb") as f:
                    f.write(header)
                    f.write(data)

            write_atomic(self.path(key, COPY_FILE), fill, durable=False)  # checksummed instead
        except OSError:
            pass

    def _read_copy(self, key: str, stamp: tuple) -> Optional[bytes]:
        """The pickle in result.pkl if it copies exactly this result.h5 and is intact, else None."""
        try:
            with open(self.path(key, COPY_FILE), "rb") as f:
                raw = f.read()
        except OSError:
            return None
        if len(raw) < _COPY_HEADER.size:
            return None
        magic, ino, size, mtime_ns, crc = _COPY_HEADER.unpack_from(raw)
        data = raw[_COPY_HEADER.size:]
        if magic != _COPY_MAGIC or (ino, size, mtime_ns) != tuple(stamp) or zlib.crc32(data) != crc:
            return None
        return data

    def write_error(self, key: str, error: BaseException, traceback_text: str, runtime: float) -> None:
        self.path(key, COPY_FILE).unlink(missing_ok=True)  # of an earlier successful result
        try:
            data = cloudpickle.dumps(error)
            cloudpickle.loads(data)
        except Exception:  # an exception that does not survive pickling: keep its type and text
            data = cloudpickle.dumps(RemoteError(_qualified_name(type(error)), str(error)))
        attrs = {"runtime": runtime, "error_type": _qualified_name(type(error)),
                 "error_message": str(error)[:10_000], "traceback": traceback_text}
        self._write_outcome(key, {"error": data}, attrs)

    def _write_outcome(self, key: str, datasets: dict[str, bytes], attrs: dict) -> None:
        attrs = {"format_version": FORMAT_VERSION, "finished": time.time(),
                 "host": socket.gethostname(), **attrs}
        self.task_dir(key).mkdir(mode=0o700, exist_ok=True)
        _write_h5(self.path(key, RESULT_FILE), datasets, attrs)

    def read_result(self, key: str) -> Outcome:
        """The outcome of ``key``: from a result pack or result.pkl when they copy this very
        result.h5, else from result.h5 (FileNotFoundError when there is none)."""
        path = self.path(key, RESULT_FILE)
        stamp = stamp_of(os.stat(path))
        if self.index is not None:
            packed = self.index.get(key, stamp)
            if packed is not None:
                try:
                    return Outcome(True, value=cloudpickle.loads(packed))
                except Exception:  # noqa: BLE001 - a damaged pack: result.h5 decides
                    pass
        data = self._read_copy(key, stamp)
        if data is None:
            data = _read_output_fast(path)
        if data is not None:
            try:
                value = cloudpickle.loads(data)
            except Exception:  # noqa: BLE001 - the checked path below explains it
                pass
            else:
                if self.index is not None:
                    self.index.remember(key, stamp, data)
                return Outcome(True, value=value)
        with self._open(path) as f:
            try:
                if "output" in f:
                    return Outcome(True, value=self._unpickle(path, f, "output"))
                error = self._unpickle(path, f, "error")
            except KeyError as err:
                raise self._corrupted(path, f"missing {err}") from None
            return Outcome(False, error=error, traceback=str(f.attrs.get("traceback", "")))

    def flush_index(self, quiet: Optional[float] = None) -> None:
        """Pack the small results read so far, for the next process (see result_index); with
        ``quiet``, only once no result was read for that many seconds."""
        if self.index is None:
            return
        if quiet is None:
            self.index.flush()
        else:
            self.index.flush_if_quiet(quiet)

    def read_result_info(self, key: str) -> Optional[dict]:
        """Metadata of the outcome without unpickling it, or None when there is none yet."""
        path = self.path(key, RESULT_FILE)
        if not path.exists():
            return None
        with self._open(path) as f:
            attrs = dict(f.attrs)
            return {
                "ok": "output" in f,
                "runtime": float(attrs.get("runtime", 0.0)),
                "finished": float(attrs.get("finished", 0.0)),
                "error_type": str(attrs.get("error_type", "")),
                "error_message": str(attrs.get("error_message", "")),
                "traceback": str(attrs.get("traceback", "")),
            }

    # -- helpers ---------------------------------------------------------------------------------
    def _open(self, path: Path) -> h5py.File:
        try:
            f = h5py.File(path, "r")
        except FileNotFoundError:
            raise
        except OSError as err:
            if not path.exists():
                raise FileNotFoundError(str(path)) from None
            raise self._corrupted(path, str(err)) from None
        try:
            version = int(f.attrs.get("format_version", -1))
        except Exception:
            f.close()
            raise self._corrupted(path, "no format version") from None
        if version != FORMAT_VERSION:
            f.close()
            raise CacheCorruptedError(
                f"cache file {path} has format version {version}, this executorlib reads version "
                f"{FORMAT_VERSION}. Delete the task folder {path.parent} to recompute it."
            )
        return f

    def _unpickle(self, path: Path, f: h5py.File, name: str) -> Any:
        """Load dataset ``name``; a missing, short or non-pickle payload is CacheCorruptedError.

        Errors of the pickled objects themselves (e.g. a module missing here) pass through."""
        try:
            data = _from_dataset(f[name])
        except (KeyError, OSError, ValueError, TypeError, AttributeError) as err:
            raise self._corrupted(path, f"dataset {name!r}: {err}") from None
        try:
            return cloudpickle.loads(data)
        except (pickle.UnpicklingError, EOFError) as err:
            raise self._corrupted(path, f"dataset {name!r} is not a complete pickle: {err}") from None

    @staticmethod
    def _corrupted(path: Path, detail: str) -> CacheCorruptedError:
        return CacheCorruptedError(
            f"cache file {path} is unreadable ({detail}); it was probably cut short by a crash or "
            f"a full disk. Delete the task folder {path.parent} (or run 'python -m executorlib "
            f"clean --key {path.parent.name} {path.parent.parent}') and submit again to recompute it."
        )


def _qualified_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


# -- helpers for the cache tools (executorlib.cache, the CLI) and the scheduler's takeover ---------


def write_cancelled(store: TaskStore, key: str, record: dict) -> None:
    """Mark the job of ``key`` (its ``record`` from job.json) as cancelled by a user."""
    _write_json(store.path(key, JOB_FILE),
                {**record, "state": "cancelled", "cancelled": time.time(),
                 "cancelled_by": f"{socket.gethostname()}:{os.getpid()}"})


def read_task_arguments(store: TaskStore, key: str) -> tuple[Any, Any]:
    """Unpickle only (args, kwargs) of a stored task, not its function (for ``executorlib show``)."""
    path = store.path(key, TASK_FILE)
    with store._open(path) as f:
        return store._unpickle(path, f, "args"), store._unpickle(path, f, "kwargs")


def folder_size(path: os.PathLike | str) -> int:
    """Bytes of the files below ``path`` (0 when it vanished meanwhile)."""
    total = 0
    try:
        entries = list(os.scandir(path))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += folder_size(entry.path)
            else:
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            pass
    return total
