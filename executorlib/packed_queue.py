"""The file protocol between an Executor with ``max_jobs`` and its worker jobs.

A few scheduler jobs serve many calls (``Executor(..., max_jobs=K)``). Client and workers share
nothing but the cache directory, so compute nodes need only the shared file system::

    <cache>/.packed/queue/<shape>/<enqueued ns>-<nonce>.json   a call waiting for a worker
    <cache>/.packed/workers/<worker id>.json                   a worker job the client submitted
    <cache>/<key>/packed-<nonce>.taken                         who took the call (O_EXCL: one taker)
    <cache>/<key>/packed-<nonce>.done                          how the call ended (its worker writes it)
    <cache>/<key>/packed-<nonce>.kill                          a request to kill the running call

A *shape* is the part of a call's resources that a job is started with (cores, threads, GPUs,
memory, partition, ...): a worker serves the calls of one shape only. The *nonce* names one
submission of a call (a retried call gets a new one); the call's id in job.json is
``<nonce>@<task folder>``, so that a later process or the cache tools follow it without knowing
the Executor that submitted it.

Taking a call and cancelling it race through the same exclusive create of ``.taken``: whoever
creates it owns the call (a cancel writes ``{"cancelled": true}``). A call is taken only when
every parent has a result; a parent that failed makes its children end as ``DEPENDENCY_FAILED``
without running (the client turns that into the parent's exception).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

from executorlib.files import write_json
from executorlib.resources import RESOURCE_KEYS

__all__ = ["PACKED_DIR", "SHAPE_KEYS", "shape_of", "call_id", "parse_call_id", "new_nonce", "QueueEntry",
           "enqueue", "queued", "take", "shape_resources", "cancel_queued", "request_kill", "kill_requested", "write_done",
           "read_done", "read_taken", "queue_dir", "workers_dir", "DEPENDENCY_FAILED"]

PACKED_DIR = ".packed"
#: resource_dict keys a worker job is started with: calls that differ in one get workers of their own
SHAPE_KEYS = ("cores", "threads_per_core", "gpus_per_core", "memory_max", "partition", "account", "qos",
              "exclusive", "num_nodes", "slurm_cmd_args", "submission_template", "priority")
#: the final state of a call whose parent failed: it never ran
DEPENDENCY_FAILED = "DEPENDENCY_FAILED"


def shape_of(resources: dict) -> str:
    """A short name for the job-level part of ``resources`` (also extra template keys)."""
    text = json.dumps(shape_resources(resources), sort_keys=True, default=repr)
    return f"c{resources.get('cores', 1)}-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def new_nonce(tag: str = "") -> str:
    """A new submission's name: ``<claim tag>.<random>`` (or random alone), no ``-`` or ``@``."""
    random = uuid.uuid4().hex[:12]
    tag = "".join(c for c in tag if c.isalnum())
    return f"{tag}.{random[:6]}" if tag else random


def find_tagged(cache: Path, tags: list[str]) -> dict[str, str]:
    """tag -> call id of the calls in ``cache`` submitted under these claim tags (queued, taken
    or ended), the newest submission of each."""
    wanted = {"".join(c for c in tag if c.isalnum()): tag for tag in tags if tag}
    found: dict[str, tuple[float, str]] = {}

    def note(nonce: str, task_dir: Path, when: float) -> None:
        tag = wanted.get(nonce.split(".", 1)[0]) if "." in nonce else None
        if tag is not None and (tag not in found or when >= found[tag][0]):
            found[tag] = (when, call_id(nonce, task_dir))

    for shape in _listdir(queue_dir(cache)):
        for entry in queued(cache, shape):
            note(entry.nonce, entry.task_dir, entry.enqueued)
    for short in wanted:
        for path in Path(cache).glob(f"*/packed-{short}.*.taken"):
            nonce = path.name[len("packed-"):-len(".taken")]
            try:
                when = path.stat().st_mtime
            except OSError:
                continue
            note(nonce, path.parent.absolute(), when)
    return {tag: job_id for tag, (_, job_id) in found.items()}


def call_id(nonce: str, task_dir: os.PathLike | str) -> str:
    """The id of one submission of a call, as job.json records it."""
    return f"{nonce}@{os.fspath(task_dir)}"


def parse_call_id(job_id: str) -> tuple[str, Path]:
    """(nonce, task folder) of a call id; ValueError for anything else."""
    nonce, sep, folder = str(job_id).partition("@")
    if not sep or not nonce or not folder:
        raise ValueError(f"{job_id!r} is not the id of a call served by worker jobs (<nonce>@<task folder>)")
    return nonce, Path(folder)


def is_call_id(job_id: object) -> bool:
    """Whether ``job_id`` names a call served by worker jobs (else a scheduler's own job id)."""
    return "@" in str(job_id)


def queue_dir(cache: Path, shape: Optional[str] = None) -> Path:
    base = Path(cache) / PACKED_DIR / "queue"
    return base if shape is None else base / shape


def workers_dir(cache: Path) -> Path:
    return Path(cache) / PACKED_DIR / "workers"


def _state_file(task_dir: Path, nonce: str, kind: str) -> Path:
    return Path(task_dir) / f"packed-{nonce}.{kind}"


class QueueEntry:
    """One queued call, as a worker reads it."""

    __slots__ = ("path", "key", "nonce", "task_dir", "parents", "run_time_max", "command", "fork", "enqueued",
                 "resources")

    def __init__(self, path: Path, data: dict):
        self.path = path
        self.key: str = data["key"]
        self.nonce: str = data["nonce"]
        self.task_dir = Path(data["task_dir"])
        self.parents: list[str] = list(data.get("parents", ()))
        self.run_time_max: Optional[int] = data.get("run_time_max")
        self.command: list[str] = list(data.get("command", ()))
        self.fork: bool = bool(data.get("fork", False))
        self.enqueued: float = float(data.get("enqueued", 0.0))
        self.resources: dict = dict(data.get("resources") or {})


def shape_resources(resources: dict) -> dict:
    """The job-level part of ``resources``: what a worker job of its shape is started with."""
    return {k: v for k, v in resources.items() if k in SHAPE_KEYS or k not in RESOURCE_KEYS}


def enqueue(cache: Path, shape: str, key: str, nonce: str, task_dir: Path, parents: list[str],
            run_time_max: Optional[int], command: list[str], fork: bool,
            resources: Optional[dict] = None) -> Path:
    """Put a call into its shape's queue (an atomic rename: a worker never sees half an entry).
    ``resources``: the shape's job-level resources, so that any later client can start workers
    for calls it did not submit itself."""
    folder = queue_dir(cache, shape)
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    path = folder / f"{time.time_ns():020d}-{nonce}.json"
    write_json(path, {"key": key, "nonce": nonce, "task_dir": os.fspath(task_dir), "parents": list(parents),
                      "run_time_max": run_time_max, "command": list(command), "fork": fork, "enqueued": now,
                      "resources": resources or {}})
    return path


def queued_names(cache: Path, shape: str) -> list[str]:
    """The file names of a shape's queue entries, oldest first."""
    return sorted(name for name in _listdir(queue_dir(cache, shape))
                  if name.endswith(".json") and not name.startswith("."))


def read_entry(path: Path) -> Optional[QueueEntry]:
    """The entry at ``path``; None when it was taken and removed meanwhile."""
    try:
        return QueueEntry(path, json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # gone (or damaged: never a half entry, see enqueue)


def queued(cache: Path, shape: str) -> Iterator[QueueEntry]:
    """The calls waiting in a shape's queue, oldest first (entries taken meanwhile are skipped)."""
    folder = queue_dir(cache, shape)
    for name in queued_names(cache, shape):
        entry = read_entry(folder / name)
        if entry is not None:
            yield entry


def queued_nonces(cache: Path) -> set[str]:
    """The nonces of every call waiting in any queue of ``cache`` (one listing per shape)."""
    nonces = set()
    base = queue_dir(cache)
    for shape in _listdir(base):
        for name in _listdir(base / shape):
            if name.endswith(".json") and not name.startswith("."):
                nonces.add(name[:-len(".json")].rpartition("-")[2])
    return nonces


def _create_exclusive(path: Path, data: dict) -> bool:
    """Create ``path`` with ``data`` unless it exists (one winner, also on NFS: link)."""
    return write_json(path, data, exclusive=True)


def take(entry: QueueEntry, worker_id: str) -> bool:
    """Own ``entry`` for worker ``worker_id``; False when another worker or a cancel was first,
    or when the call's folder is gone (its cache entry was removed: the entry is dropped)."""
    try:
        won = _create_exclusive(_state_file(entry.task_dir, entry.nonce, "taken"),
                                {"worker": worker_id, "host": socket.gethostname(), "pid": os.getpid(),
                                 "time": time.time()})
    except FileNotFoundError:
        won = False
    except OSError:  # e.g. a full disk: leave the call queued for a later look
        return False
    try:
        os.unlink(entry.path)
    except FileNotFoundError:
        pass
    return won


def cancel_queued(task_dir: Path, nonce: str) -> bool:
    """Cancel a call no worker took yet; False when a worker took it first (kill it instead)."""
    won = _create_exclusive(_state_file(task_dir, nonce, "taken"), {"cancelled": True, "time": time.time()})
    if won:
        write_done(task_dir, nonce, "CANCELLED", None, None)
    return won


def withdraw(job_id: str) -> bool:
    """Take a call back from the worker jobs (an Executor without max_jobs submits it as a job
    of its own): a queued call is cancelled, a running one is killed by its worker. True when it
    was still queued."""
    try:
        nonce, task_dir = parse_call_id(job_id)
    except ValueError:
        return False
    if read_done(task_dir, nonce) is not None:
        return False
    try:
        if cancel_queued(task_dir, nonce):
            base = queue_dir(task_dir.parent)
            for shape in _listdir(base):
                for name in _listdir(base / shape):
                    if name.endswith(f"-{nonce}.json"):
                        (base / shape / name).unlink(missing_ok=True)
            return True
        request_kill(task_dir, nonce)
    except OSError:
        pass
    return False


def request_kill(task_dir: Path, nonce: str) -> None:
    write_json(_state_file(task_dir, nonce, "kill"), {"time": time.time()})


def kill_requested(task_dir: Path, nonce: str) -> bool:
    return _state_file(task_dir, nonce, "kill").exists()


def write_done(task_dir: Path, nonce: str, state: str, exit_code: Optional[int], signal_number: Optional[int],
               detail: str = "") -> None:
    write_json(_state_file(task_dir, nonce, "done"),
               {"state": state, "exit_code": exit_code, "signal": signal_number, "detail": detail,
                "time": time.time()})


def _read(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_done(task_dir: Path, nonce: str) -> Optional[dict]:
    return _read(_state_file(task_dir, nonce, "done"))


def read_taken(task_dir: Path, nonce: str) -> Optional[dict]:
    return _read(_state_file(task_dir, nonce, "taken"))


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def mark_quiet(cache: Path, shape: str) -> None:
    """Tell the idle workers of ``shape`` that their client has nothing more for them now."""
    folder = queue_dir(cache, shape)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / ".quiet", {"time": time.time()})


def quiet_since(cache: Path, shape: str) -> float:
    """When a client last said it has nothing more for ``shape`` (0: never)."""
    try:
        return os.stat(queue_dir(cache, shape) / ".quiet").st_mtime
    except OSError:
        return 0.0


def served_by(cache: Path) -> dict[str, str]:
    """key -> the worker job that took (the latest submission of) each call of ``cache``."""
    found: dict[str, tuple[float, str]] = {}
    for path in Path(cache).glob("*/packed-*.taken"):
        record = _read(path)
        if record and record.get("worker"):
            when = float(record.get("time", 0.0))
            if path.parent.name not in found or when >= found[path.parent.name][0]:
                found[path.parent.name] = (when, str(record["worker"]))
    return {key: worker for key, (_, worker) in found.items()}


def write_worker(cache: Path, worker_id: str, record: dict[str, Any]) -> None:
    folder = workers_dir(cache)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / f"{worker_id}.json", record)


def read_workers(cache: Path) -> dict[str, dict]:
    """worker id -> its record, for the worker jobs submitted into this cache."""
    found = {}
    for name in _listdir(workers_dir(cache)):
        if name.endswith(".json") and not name.startswith("."):
            record = _read(workers_dir(cache) / name)
            if record is not None:
                found[name[:-len(".json")]] = record
    return found


def forget_worker(cache: Path, worker_id: str) -> None:
    try:
        os.unlink(workers_dir(cache) / f"{worker_id}.json")
    except FileNotFoundError:
        pass


def sweep(cache: Path, grace: float, now: float) -> int:
    """Remove what max_jobs left behind in ``cache``: queue entries of calls whose folder is gone
    (cleaned), and the folders of worker jobs that no record names any more and that have not
    changed for ``grace`` seconds. Returns how many were removed."""
    import shutil

    removed = 0
    base = queue_dir(cache)
    for shape in _listdir(base):
        for entry in queued(cache, shape):
            if not entry.task_dir.is_dir():
                try:
                    os.unlink(entry.path)
                    removed += 1
                except OSError:
                    pass
    named = {os.path.dirname(str(record.get("log", ""))) for record in read_workers(cache).values()}
    folder = workers_dir(cache)
    for name in _listdir(folder):
        path = folder / name
        if not name.startswith("worker-") or str(path) in named or not path.is_dir():
            continue
        try:
            newest = max([os.stat(path).st_mtime] + [os.stat(path / f).st_mtime for f in _listdir(path)])
        except OSError:
            continue
        if now - newest >= grace:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed
