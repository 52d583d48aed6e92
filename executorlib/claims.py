"""The cross-process claim protocol of a task folder: who submits a task's job, and who follows it.

A task folder is in one of these states (``job.json`` and ``result.h5``, see docs/cache.md)::

    absent      no job.json: nobody runs the task; the first process whose claim lands submits it
    claimed     job.json = {"state": "claimed", owner, tag}: a process is about to submit the job
    submitted   job.json = {"state": "submitted", job_id, backend, tag}: the job scheduler has it
    cancelled   job.json = {"state": "cancelled", ...}: a user cancelled the job (cancel_cache_jobs)
    done        result.h5 exists: the call's value or the error it raised (whatever job.json says)

plus a setup failure the job left beside the folder's files (the function could not be imported,
the working directory is missing), which is not a result: the next submission runs it again.

Transitions: absent -> claimed (an exclusive link, atomic also on NFS: one process wins);
claimed -> submitted (the winner records the job id); claimed -> absent (the winner releases the
claim: submission refused, task cancelled); claimed(stale) -> absent (another process renames the
record of a dead owner away: one process wins); submitted -> done (the job writes its result);
submitted -> cancelled; submitted or cancelled -> absent when the job is gone without a result.

A claim names its owner beyond host and pid: the boot id, the process's start time and a lock
file that the owner holds (``flock``) for as long as it lives, so a dead owner is recognised even
when its pid was reused (a client that is PID 1 of a container, restarted as PID 1 again). It
carries a ``tag``, a nonce that the spawner writes into the job's name or comment before the
job scheduler returns its id: a process that finds the stale claim of a client killed between
``sbatch`` and the job record asks ``Spawner.find_tagged`` and attaches to that job instead of
submitting a second one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from executorlib.files import JOB_FILE, temporary_name, write_json

if TYPE_CHECKING:
    from executorlib.store import TaskStore

__all__ = ["ABSENT", "CLAIMED", "SUBMITTED", "CANCELLED", "DONE", "CLAIM_TIMEOUT", "claim", "claim_is_stale",
           "is_own_claim", "folder_state", "read_job", "record_attempts", "release", "write_job", "job_log",
           "owner"]

ABSENT, CLAIMED, SUBMITTED, CANCELLED, DONE = "absent", "claimed", "submitted", "cancelled", "done"

#: a claim by a process on another host, whose owner cannot be checked, is stale after this long
CLAIM_TIMEOUT = 600.0
#: the folder of the owners' lock files, in the cache directory
LOCK_DIR = ".claims"


# -- who this process is ---------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat: the process's start, in clock ticks since boot ('' if unknown)."""
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return ""
    fields = text.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""  # fields after the name start at field 3


_BOOT_ID = _read("/proc/sys/kernel/random/boot_id")
_HOST = socket.gethostname()
_locks: dict[str, tuple[int, str]] = {}  # cache directory -> (fd, lock file) held by this process
_locks_guard = threading.Lock()


def _forget_locks() -> None:  # a forked child is another owner: it must not keep the parent's locks
    for fd, _ in _locks.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _locks.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks)


def _own_lock(directory: Path) -> str:
    """The lock file this process holds for ``directory`` ('' when none can be made: read-only)."""
    with _locks_guard:
        held = _locks.get(str(directory))
        if held is not None:
            return held[1]
        folder = directory / LOCK_DIR
        path = folder / f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.lock"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return ""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return ""
        _locks[str(directory)] = (fd, str(path))
        return str(path)


def owner(directory: Optional[Path] = None) -> dict:
    """The fields that identify this process in a claim record."""
    pid = os.getpid()
    record = {"host": _HOST, "pid": pid, "boot": _BOOT_ID, "start": _start_time(pid), "time": time.time()}
    if directory is not None:
        record["lock"] = _own_lock(directory)
    return record


# -- judging a claim -------------------------------------------------------------------------------
def _lock_state(path: str) -> Optional[bool]:
    """True when the owner's lock is held (alive), False when free (dead), None when unknown."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None  # moved cache or removed lock: judge by pid
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def is_own_claim(record: Optional[dict]) -> bool:
    """True when ``record`` is a claim of this very process (not of a predecessor with its pid)."""
    if not record or record.get("host") != _HOST:
        return False
    try:
        pid = int(record["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    if pid != os.getpid() or (record.get("boot") or _BOOT_ID) != _BOOT_ID:
        return False
    lock = record.get("lock")
    if lock and any(lock == held for _, held in _locks.values()):
        return True
    start = record.get("start")
    return bool(start) and start == _start_time(pid)


def claim_is_stale(record: dict) -> bool:
    """True when the process that wrote the claim ``record`` is gone (its claim may be taken over).

    On this host: another boot, a released owner lock, no process with that pid, or a process with
    that pid that started at another time (a reused pid; also this process's own predecessor) make
    a claim stale. A claim from another host is stale after :data:`CLAIM_TIMEOUT` seconds.
    """
    if record.get("host") != _HOST:
        try:
            return time.time() - float(record.get("time", 0)) > CLAIM_TIMEOUT
        except (TypeError, ValueError):
            return True
    boot = record.get("boot")
    if boot and _BOOT_ID and boot != _BOOT_ID:
        return True  # the machine rebooted since
    if is_own_claim(record):
        return False
    lock = record.get("lock")
    if lock:
        held = _lock_state(lock)
        if held is not None:
            return not held
    try:
        pid = int(record["pid"])
    except (KeyError, TypeError, ValueError):
        return True
    if pid == os.getpid():
        return True  # our pid, but not our claim: a predecessor with the same pid (is_own_claim)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    start = record.get("start")
    if start and _start_time(pid) not in ("", start):
        return True  # the pid was reused by a later process
    return False


# -- the records -----------------------------------------------------------------------------------
def _path(store: "TaskStore", key: str) -> Path:
    return store.path(key, JOB_FILE)


def read_job(store: "TaskStore", key: str) -> Optional[dict]:
    """The task's job.json, or None when there is none (or junk: atomic writes never tear one)."""
    try:
        return json.loads(_path(store, key).read_text())
    except FileNotFoundError:
        return None
    except (ValueError, OSError):
        return None


def claim(store: "TaskStore", key: str, backend: str, holder: str = "") -> Optional[dict]:
    """Atomically take the right to submit ``key``: the claim record written, or None when
    another process holds the task. ``holder`` names the claimant within the process (a
    scheduler). OSError (a full or read-only disk) passes to the caller."""
    record = {"state": CLAIMED, "backend": backend, "tag": uuid.uuid4().hex[:16], "holder": holder,
              **owner(store.directory)}
    return record if write_json(_path(store, key), record, exclusive=True) else None


def release(store: "TaskStore", key: str, expected: Optional[dict] = None) -> bool:
    """Remove the task's record (a claim of ours, or one judged stale) so that it may be claimed.

    Renaming is atomic: of several processes that find the same stale record only one wins.
    With ``expected`` (the record judged stale) a record that another process replaced in the
    meantime is put back and False is returned.
    """
    path = _path(store, key)
    moved = temporary_name(path)
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


def discard_junk(store: "TaskStore", key: str) -> bool:
    """Rename away a job.json that does not parse (damaged on disk: records are written atomically,
    so junk is never a write in flight); True when one was removed."""
    path = _path(store, key)
    try:
        json.loads(path.read_text())
        return False
    except FileNotFoundError:
        return False
    except (ValueError, OSError):
        pass
    return release(store, key)


def write_job(store: "TaskStore", key: str, backend: str, job_id: str,
              log: Optional[os.PathLike | str] = None, tag: str = "",
              attempts: Optional[list] = None) -> None:
    """Record the job of ``key``; ``log`` is its output file when not the default job.out;
    ``attempts`` are the earlier jobs of the call that the cluster lost (see record_attempts)."""
    record = {"state": SUBMITTED, "backend": backend, "job_id": str(job_id), "tag": tag, **owner()}
    if log is not None:
        record["log"] = str(log)
    if attempts:
        record["attempts"] = [dict(a) for a in attempts]
    write_json(_path(store, key), record)


def record_attempts(store: "TaskStore", key: str, attempts: list) -> None:
    """Add to the task's record the jobs of the call that the cluster lost so far, each
    ``{"job_id", "state", "reason", "time"}`` (kept by :func:`write_job` of the next job)."""
    record = read_job(store, key)
    if record is None:
        return
    record["attempts"] = [dict(a) for a in attempts]
    write_json(_path(store, key), record)


def job_log(store: "TaskStore", key: str, record: Optional[dict] = None) -> Path:
    """The output file of the task's job: as recorded at submission, else job.out."""
    record = read_job(store, key) if record is None else record
    logged = (record or {}).get("log")
    return Path(logged) if logged else store.log_path(key)


def folder_state(store: "TaskStore", key: str, record: Optional[dict] = None) -> str:
    """The state of the task folder (one of the module's states); a claim whatever its owner."""
    if store.has_result(key):
        return DONE
    record = read_job(store, key) if record is None else record
    if record is None:
        return ABSENT
    state = record.get("state")
    return state if state in (CLAIMED, SUBMITTED, CANCELLED) else ABSENT
