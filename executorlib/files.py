"""File names of a task folder and the atomic-write helpers every cache file goes through.

A leaf module: it imports nothing of executorlib but its errors, so that the task store
(``executorlib.store``) and the result packs (``executorlib.result_index``) both build on it
without importing each other.

Every file is written to a temporary name next to it and renamed into place, so a crash or a full
disk never leaves a partial file under the real name. The temporary name carries the writer's host
and pid (``.<name>.<host>.<pid>.<8 hex>.tmp``), so that a later writer can tell the leftovers of a
dead writer from a live writer's file (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Callable

__all__ = [
    "TASK_FILE", "RESULT_FILE", "COPY_FILE", "JOB_FILE", "LOG_FILE", "SETUP_ERROR_FILE", "INDEX_DIR",
    "MAX_COPY_BYTES", "stamp_of", "temporary_name", "fsync", "write_atomic", "write_json",
    "remove_stale_temporaries", "STALE_TEMPORARY_SECONDS",
]

TASK_FILE = "task.h5"
RESULT_FILE = "result.h5"
COPY_FILE = "result.pkl"
JOB_FILE = "job.json"
LOG_FILE = "job.out"
SETUP_ERROR_FILE = "setup_error.json"
INDEX_DIR = ".index"
#: results whose pickle is at most this big get a result.pkl copy (and may enter result packs)
MAX_COPY_BYTES = 64 * 1024
#: a temporary file of another host (whose pid cannot be tested) untouched this long is a leftover
STALE_TEMPORARY_SECONDS = 3600.0
#: a temporary file of a live pid on this host untouched this long is a leftover too (pid reuse)
_STALE_OWN_HOST_SECONDS = 24 * 3600.0


def stamp_of(info: os.stat_result) -> tuple[int, int, int]:
    """What identifies one version of a result.h5: it is never rewritten in place, only replaced."""
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def temporary_name(path: Path) -> Path:
    """A unique temporary name next to ``path``, naming this host and process."""
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, fill: Callable[[Path], None], exclusive: bool = False,
                 durable: bool = True) -> bool:
    """Write ``path`` through ``fill(tmp_path)`` and a rename; never leaves a partial file.

    With ``exclusive`` an existing ``path`` is kept (``os.link`` fails atomically, also on NFS)
    and False is returned. ``durable`` flushes the data to disk before the rename (task and
    result files); small job records skip it, since a lost record only means a resubmission.
    """
    tmp = temporary_name(path)
    try:
        fill(tmp)
        if durable:
            fsync(tmp)
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
        return True
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def write_json(path: Path, data: dict, exclusive: bool = False) -> bool:
    def fill(tmp: Path) -> None:
        tmp.write_text(json.dumps(data))

    return write_atomic(path, fill, exclusive=exclusive, durable=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists, owned by someone else
        return True
    return True


def _is_stale(name: str, age: float, host: str) -> bool:
    """Whether the temporary file ``name`` (untouched for ``age`` seconds) is a dead writer's."""
    parts = name[:-len(".tmp")].rsplit(".", 2)  # ".<file>.<host>" , pid, hex
    if len(parts) != 3 or not parts[1].isdigit():
        return age > STALE_TEMPORARY_SECONDS  # not a name of ours: only when clearly abandoned
    prefix, pid = parts[0], int(parts[1])
    if prefix.endswith("." + host):
        if pid == os.getpid():
            return False  # this process may be writing it right now
        return not _pid_alive(pid) or age > _STALE_OWN_HOST_SECONDS
    return age > STALE_TEMPORARY_SECONDS


def remove_stale_temporaries(folder: os.PathLike | str) -> list[Path]:
    """Remove the ``.*.tmp`` files a killed writer left in ``folder``; returns what was removed.

    A file is a leftover when its writer ran on this host and that process is dead, or when it
    was not touched for :data:`STALE_TEMPORARY_SECONDS` (writers on other hosts, whose pid cannot
    be tested here). A live writer's file is kept: it still writes it, or renames it soon.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    host = socket.gethostname()
    now = time.time()
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
            if not entry.is_file(follow_symlinks=False) or not _is_stale(name, age, host):
                continue
            os.unlink(entry.path)
        except OSError:
            continue  # vanished meanwhile (renamed into place, or removed by another cleaner)
        removed.append(Path(entry.path))
    return removed
