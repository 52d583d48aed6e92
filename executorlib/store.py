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
    remove_stale_temporaries,
    stamp_of,
    temporary_name as _temporary_name,
    write_atomic,
    write_json as _write_json,
)

__all__ = ["TaskStore", "FORMAT_VERSION", "Outcome"]

#: 2: every dataset and the attributes carry a crc32 (version 1 files, without, are still read)
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_COPY_HEADER = struct.Struct("<4sQQQI")  # magic, result.h5's inode, size, mtime_ns; crc32 of header + pickle
_COPY_MAGIC = b"XLR2"
_CHECKSUM = "crc32_"  # attribute ``crc32_<dataset>``: zlib.crc32 of the dataset's bytes
_ATTRS_CHECKSUM = "crc32__attrs"  # zlib.crc32 of the other attributes, as canonical JSON
#: the longest name a task folder holds: a temporary name of setup_error.json (see files.temporary_name)
_LONGEST_NAME = len(f".{SETUP_ERROR_FILE}.{'h' * 64}.{'9' * 7}.12345678.tmp")
#: the longest task key (executorlib.task: a function name of at most 64 characters, "_", the hash)
_LONGEST_KEY = 64 + 1 + 32


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


def _attribute(owner: Any, name: bytes) -> Optional[np.ndarray]:
    try:
        attr = h5py.h5a.open(owner, name)
    except Exception:  # noqa: BLE001 - absent
        return None
    value = np.empty(attr.shape, dtype=attr.dtype)
    attr.read(value)
    return value


def _plain(value: Any) -> Any:
    """An attribute value as JSON can hold it (h5py returns numpy scalars and arrays)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def _attrs_checksum(attrs: Any) -> int:
    """crc32 of every attribute but itself (the datasets' checksums included: they also say
    which datasets the file holds)."""
    plain = {str(k): _plain(v) for k, v in attrs.items() if str(k) != _ATTRS_CHECKSUM}
    return zlib.crc32(json.dumps(plain, sort_keys=True, default=repr).encode())


def _read_output_fast(path: Path) -> Optional[np.ndarray]:
    """The pickled value of a successful result.h5 through h5py's low-level API (~3x faster than
    ``h5py.File``, which matters when thousands of cached calls are resubmitted), or None for
    anything else (an error outcome, another format version, a checksum that does not match):
    the caller then takes the checked path, which explains what is wrong."""
    try:
        fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY)
    except Exception:  # noqa: BLE001
        return None
    try:
        version = _attribute(fid, b"format_version")
        expected = _attribute(fid, f"{_CHECKSUM}output".encode())
        if version is None or version.size != 1 or int(version.reshape(())) != FORMAT_VERSION:
            return None
        if expected is None or expected.size != 1:
            return None
        dataset = h5py.h5d.open(fid, b"output")
        buffer = np.empty(dataset.shape, dtype=np.uint8)
        dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, buffer)
        if zlib.crc32(buffer) != int(expected.reshape(())):
            return None
        return buffer
    except Exception:  # noqa: BLE001
        return None
    finally:
        fid.close()


def _write_h5(path: Path, datasets: dict[str, bytes], attrs: dict[str, Any], exclusive: bool = False,
              durable: bool = True) -> bool:
    """An HDF5 file of byte datasets and attributes, each dataset with its crc32 (computed from
    the bytes in memory: no second copy) and one crc32 over the attributes."""
    def fill(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            for name, data in datasets.items():
                f.create_dataset(name, data=_to_dataset(data))
            for name, value in attrs.items():
                f.attrs[name] = value
            for name, data in datasets.items():
                f.attrs[f"{_CHECKSUM}{name}"] = zlib.crc32(data)
            f.attrs[_ATTRS_CHECKSUM] = _attrs_checksum(f.attrs)  # as read back: what readers see

    return write_atomic(path, fill, exclusive=exclusive, durable=durable)


def _is_temporary_cache(directory: Path) -> bool:
    """Whether ``directory`` is the temporary cache an Executor without ``cache_directory``
    made (``tempfile.mkdtemp(prefix="executorlib-")``): removed at shutdown, it has no later
    reader, so its files need no fsync."""
    import re
    import tempfile

    try:
        tmp = Path(tempfile.gettempdir()).absolute()
    except OSError:
        return False
    return directory.parent == tmp and re.fullmatch(r"executorlib-[a-z0-9_]{8}", directory.name) is not None


class TaskStore:
    """Reads and writes the task folders of one cache directory."""

    def __init__(self, directory: os.PathLike | str, create: bool = True, use_index: bool = True,
                 durable: Optional[bool] = None):
        self.directory = Path(directory).expanduser().absolute()
        _check_path_length(self.directory)
        # durable: task.h5 and result.h5 are fsync'ed before their rename (docs/cache.md,
        # "Durability"). Only the temporary cache of an Executor without cache_directory goes
        # without: nothing reads it after the process. The task file records the choice, so
        # that the job writes the result the same way.
        if durable is None:
            durable = not (create and not use_index and _is_temporary_cache(self.directory))
        self.durable = durable
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
        try:
            task_path.parent.mkdir(mode=0o700)
        except FileExistsError:  # an earlier attempt's folder: a killed writer may have left temporaries
            remove_stale_temporaries(task_path.parent)
        attrs = {
            "format_version": FORMAT_VERSION,
            "function_name": fn_name,
            "created": time.time(),
            "resources": json.dumps(resources, default=repr),
            "parents": json.dumps(parents),
            "client_cwd": os.getcwd(),
        }
        if not self.durable:
            attrs["durable"] = 0  # absent (older files): durable
        return _write_h5(task_path, pickled, attrs, exclusive=True, durable=self.durable)

    def open_task(self, key: str) -> h5py.File:
        """The checked, open task.h5 of ``key``, for several reads in one open (the job's);
        the caller closes it."""
        return self._open(self.path(key, TASK_FILE))

    def read_task(self, key: str, opened: Optional[h5py.File] = None) -> tuple[Any, Any, Any]:
        """Load (function, args, kwargs) of a stored task (from ``opened``: :meth:`open_task`)."""
        path = self.path(key, TASK_FILE)
        if opened is not None:
            return tuple(self._unpickle(path, opened, n) for n in ("function", "args", "kwargs"))
        with self._open(path) as f:
            return tuple(self._unpickle(path, f, n) for n in ("function", "args", "kwargs"))

    def read_task_info(self, key: str, opened: Optional[h5py.File] = None) -> dict:
        """The task's metadata (no unpickling): function name, created, resources, parents
        (from ``opened``: :meth:`open_task`)."""
        path = self.path(key, TASK_FILE)
        if opened is not None:
            return self._task_info(path, opened)
        with self._open(path) as f:
            return self._task_info(path, f)

    def _task_info(self, path: Path, f: h5py.File) -> dict:
        attrs = f.attrs
        try:
            return {
                "function_name": str(attrs["function_name"]),
                "created": float(attrs["created"]),
                "resources": json.loads(attrs["resources"]),
                "parents": json.loads(attrs["parents"]),
                "format_version": int(attrs["format_version"]),
                "client_cwd": str(attrs.get("client_cwd", "")),
                "durable": bool(int(attrs.get("durable", 1))),
            }
        except (KeyError, ValueError, TypeError) as err:
            raise self._corrupted(path, f"attributes: {err!r}") from None

    def has_task(self, key: str) -> bool:
        return self.path(key, TASK_FILE).exists()

    def remove_stale_temporaries(self, key: str) -> list[Path]:
        """Remove the temporary files that killed writers left in the folder of ``key`` (a
        live writer's are kept, see :func:`executorlib.files.remove_stale_temporaries`);
        returns the paths removed."""
        return remove_stale_temporaries(self.task_dir(key))

    # -- setup errors ----------------------------------------------------------------------------
    def write_setup_error(self, key: str, record: dict) -> None:
        """Leave why the job of ``key`` could not even start the call (setup_error.json), in
        place of a result: a rerun after the fix runs again. ``record`` holds at least
        ``message`` (what failed and what to fix)."""
        record = {"time": time.time(), "host": socket.gethostname(), "pid": os.getpid(), **record}
        _write_json(self.path(key, SETUP_ERROR_FILE), record)

    def read_setup_error(self, key: str, since: Optional[float] = None) -> Optional[dict]:
        """The setup error the last job of ``key`` left (see :meth:`write_setup_error`), or None.

        Keys: ``message`` (what failed and what to fix, ready to show), ``error_type``,
        ``traceback``, ``time``, ``host``, ``pid``. With ``since`` (a time.time() value, e.g.
        when the job was submitted) an older record is ignored."""
        try:
            record = json.loads(self.path(key, SETUP_ERROR_FILE).read_text())
        except (OSError, ValueError):
            return None  # absent, or junk: written atomically, so not ours
        if not isinstance(record, dict) or not isinstance(record.get("message"), str):
            return None
        if since is not None and float(record.get("time", 0.0)) < since:
            return None
        return record

    def clear_setup_error(self, key: str) -> None:
        """Forget the setup error of an earlier attempt (a new attempt starts, or a result is in)."""
        try:
            os.unlink(self.path(key, SETUP_ERROR_FILE))
        except OSError:
            pass

    # -- job (the claim protocol lives in executorlib.claims; these delegate to it) ----------------
    def claim(self, key: str, backend: str) -> bool:
        """Atomically take the right to submit ``key``; False when another process holds it."""
        from executorlib.claims import claim

        return claim(self, key, backend) is not None

    def release_stale_claim(self, key: str, expected: Optional[dict] = None) -> bool:
        """Remove a (dead submitter's) record so that this process may claim the task."""
        from executorlib.claims import release

        return release(self, key, expected)

    def write_job(self, key: str, backend: str, job_id: str, log: Optional[os.PathLike | str] = None,
                  tag: str = "") -> None:
        """Record the job of ``key``; ``log`` is its output file when not the default job.out."""
        from executorlib.claims import write_job

        write_job(self, key, backend, job_id, log, tag)

    def job_log(self, key: str, record: Optional[dict] = None) -> Path:
        """The output file of the task's job: as recorded at submission, else job.out."""
        from executorlib.claims import job_log

        return job_log(self, key, record)

    def read_job(self, key: str) -> Optional[dict]:
        from executorlib.claims import read_job

        return read_job(self, key)

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
            crc = zlib.crc32(data, zlib.crc32(_COPY_HEADER.pack(_COPY_MAGIC, *stamp, 0)))
            header = _COPY_HEADER.pack(_COPY_MAGIC, *stamp, crc)

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
        data = memoryview(raw)[_COPY_HEADER.size:]
        if magic != _COPY_MAGIC or (ino, size, mtime_ns) != tuple(stamp):
            return None
        if zlib.crc32(data, zlib.crc32(_COPY_HEADER.pack(magic, ino, size, mtime_ns, 0))) != crc:
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
                 "error_message": str(error)[:10_000],
                 "traceback": _fit_attribute(traceback_text)}
        self._write_outcome(key, {"error": data}, attrs)

    def _write_outcome(self, key: str, datasets: dict[str, bytes], attrs: dict) -> None:
        attrs = {"format_version": FORMAT_VERSION, "finished": time.time(),
                 "host": socket.gethostname(), **attrs}
        self.task_dir(key).mkdir(mode=0o700, exist_ok=True)
        remove_stale_temporaries(self.task_dir(key))  # of an attempt killed while writing
        _write_h5(self.path(key, RESULT_FILE), datasets, attrs, durable=self.durable)
        self.clear_setup_error(key)

    def read_result(self, key: str) -> Outcome:
        """The outcome of ``key``: from a result pack or result.pkl when they copy this very
        result.h5, else from result.h5 (FileNotFoundError when there is none)."""
        path = self.path(key, RESULT_FILE)
        stamp = stamp_of(os.stat(path))
        # every copy is checked against its checksum first: a damaged one only sends us on to
        # result.h5; an error while unpickling intact bytes is the object's own and is raised
        if self.index is not None:
            packed = self.index.get(key, stamp)
            if packed is not None:
                return Outcome(True, value=_loads(packed, path, "the packed result"))
        data = self._read_copy(key, stamp)
        if data is None:
            data = _read_output_fast(path)
        if data is not None:
            value = _loads(data, path, "dataset 'output'")
            if self.index is not None:
                self.index.remember(key, stamp, data)
            return Outcome(True, value=value)
        with self._open(path) as f:
            if self._holds_output(path, f):
                return Outcome(True, value=self._unpickle(path, f, "output"))
            error = self._unpickle(path, f, "error")
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
                "ok": self._holds_output(path, f),
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
        if version not in _READABLE_VERSIONS:
            try:
                has_version = "format_version" in f.attrs
            except Exception:  # noqa: BLE001
                has_version = False
            f.close()
            if not has_version:
                raise self._corrupted(path, "it has no format version")
            raise CacheCorruptedError(
                f"cache file {path} has format version {version}, this executorlib reads versions "
                f"{', '.join(map(str, _READABLE_VERSIONS))} (a newer executorlib wrote it, or it "
                f"is damaged). {self._remedy(path)}"
            )
        try:
            expected = f.attrs.get(_ATTRS_CHECKSUM)
            if expected is None and version >= 2:
                raise self._corrupted(path, f"its attribute {_ATTRS_CHECKSUM!r} is missing")
            if expected is not None and int(expected) != _attrs_checksum(f.attrs):
                raise self._damaged(path, "its attributes")
        except CacheCorruptedError:
            f.close()
            raise
        except Exception as err:  # noqa: BLE001 - h5py on damaged metadata
            f.close()
            raise self._corrupted(path, f"attributes: {err}") from None
        return f

    def _holds_output(self, path: Path, f: h5py.File) -> bool:
        """Whether result.h5 holds a value (else an error): its checked attributes say so."""
        try:
            if f"{_CHECKSUM}output" in f.attrs or f"{_CHECKSUM}error" in f.attrs:
                return f"{_CHECKSUM}output" in f.attrs
            return "output" in f  # a version 1 file
        except Exception as err:  # noqa: BLE001 - h5py on damaged metadata
            raise self._corrupted(path, f"its table of datasets: {err}") from None

    def _unpickle(self, path: Path, f: h5py.File, name: str) -> Any:
        """Load dataset ``name`` after checking its crc32; a missing or damaged dataset is a
        CacheCorruptedError.

        Errors of the pickled objects themselves (their ``__setstate__``, a module missing here)
        pass through as themselves, with a note naming the file."""
        try:
            data = _from_dataset(f[name])
            expected = f.attrs.get(f"{_CHECKSUM}{name}")
            version = int(f.attrs.get("format_version", -1))
        except Exception as err:  # noqa: BLE001 - h5py on damaged metadata raises many kinds
            raise self._corrupted(path, f"dataset {name!r}: {err}") from None
        if expected is None and version >= 2:
            raise self._corrupted(path, f"the checksum of dataset {name!r} is missing")
        if expected is not None:
            if zlib.crc32(data) != int(expected):
                raise self._damaged(path, f"dataset {name!r}")
            return _loads(data, path, name)
        try:  # a version 1 file, without checksums: a pickle cut short is the damage we can see
            return cloudpickle.loads(data)
        except (pickle.UnpicklingError, EOFError) as err:
            raise self._corrupted(path, f"dataset {name!r} is not a complete pickle: {err}") from None

    @staticmethod
    def _damaged(path: Path, what: str) -> CacheCorruptedError:
        return CacheCorruptedError(
            f"cache file {path} is damaged: the checksum of {what} does not match the bytes on "
            f"disk (changed after it was written: a disk, file system or copy error). "
            f"{TaskStore._remedy(path)}"
        )

    @staticmethod
    def _corrupted(path: Path, detail: str) -> CacheCorruptedError:
        return CacheCorruptedError(
            f"cache file {path} is unreadable ({detail}): it was damaged after it was written (a "
            f"disk, file system or copy error), or not written by executorlib. "
            f"{TaskStore._remedy(path)}"
        )

    @staticmethod
    def _remedy(path: Path) -> str:
        return (f"Delete the task folder {path.parent} (or run 'python -m executorlib clean --key "
                f"{path.parent.name} {path.parent.parent}') and submit again to recompute it.")


def _loads(data: Any, path: Path, what: str) -> Any:
    """Unpickle intact bytes: what goes wrong now is the pickled object's own doing (its
    ``__setstate__`` or ``__reduce__``, a module missing or changed here), never damage, so the
    exception passes through as itself, with a note that says where it came from."""
    try:
        return cloudpickle.loads(data)
    except BaseException as error:
        if isinstance(error, Exception) and hasattr(error, "add_note"):
            error.add_note(f"(raised while unpickling {what} of {path}; the file is intact, its "
                           f"checksum matches: the error comes from the pickled object or from a "
                           f"module that is missing or different in this Python environment)")
        raise


def _fit_attribute(text: str, limit: int = 48 * 1024) -> str:
    """``text`` cut (from the front: the end of a traceback says most) to fit an HDF5 attribute,
    which holds at most 64 KiB."""
    data = text.encode(errors="replace")
    if len(data) <= limit:
        return text
    return "...(cut)...\n" + data[-limit:].decode(errors="ignore")


def _check_path_length(directory: Path) -> None:
    """ValueError (naming the path, its length and the limit) when the files of a task folder
    below ``directory`` would have names longer than the file system allows."""
    encoded = os.fsencode(directory)
    existing = directory
    while existing != existing.parent:  # the limits are those of the file system already there
        try:
            if existing.exists():
                break
        except OSError:  # e.g. ENAMETOOLONG itself
            pass
        existing = existing.parent
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
        path_max = os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    for part in directory.parts:
        if len(os.fsencode(part)) > name_max:
            raise ValueError(
                f"cache_directory {str(directory)!r} has a component of {len(os.fsencode(part))} "
                f"bytes ({part[:40]!r}...); this file system allows at most {name_max} bytes per "
                f"name. Use a shorter cache_directory.")
    longest = len(encoded) + 1 + _LONGEST_KEY + 1 + _LONGEST_NAME
    if longest >= path_max:
        raise ValueError(
            f"cache_directory {str(directory)!r} is {len(encoded)} bytes long: the files of its "
            f"task folders would reach {longest} bytes, and this file system allows paths of at "
            f"most {path_max - 1} bytes. Use a cache_directory of at most "
            f"{path_max - 1 - (longest - len(encoded))} bytes.")


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
