"""Helpers of the SLURM tests: ask the real cluster about jobs, read a task's job record."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, Iterable, Optional

#: the submission template of the seed document, as written
SEED_TEMPLATE = """\
#!/bin/bash
#SBATCH --output=time.out
#SBATCH --job-name={{job_name}}
#SBATCH --chdir={{working_directory}}
#SBATCH --get-user-env=L
#SBATCH --partition={{partition}}
{%- if run_time_max %}
#SBATCH --time={{ [1, run_time_max // 60]|max }}
{%- endif %}
{%- if dependency %}
#SBATCH --dependency=afterok:{{ dependency | join(',') }}
{%- endif %}
{%- if memory_max %}
#SBATCH --mem={{memory_max}}G
{%- endif %}
#SBATCH --cpus-per-task={{cores}}

{{command}}
"""

#: a job must start (and write its job.json) within this many seconds on the test cluster
START_TIMEOUT = 120.0


def run(command: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run a SLURM command and return its CompletedProcess (never raises on a non-zero exit)."""
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def job_record(cache: Path, future: Future) -> Optional[dict]:
    """The job.json of the task behind ``future`` (None before the task is claimed)."""
    path = Path(cache) / future._executorlib_key / "job.json"  # type: ignore[attr-defined]
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def wait_job_id(cache: Path, future: Future, timeout: float = START_TIMEOUT) -> str:
    """The SLURM job id of ``future``'s task, once the scheduler has submitted it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = job_record(cache, future)
        if record is not None and record.get("state") == "submitted":
            return str(record["job_id"])
        if future.done() and future.exception() is not None:
            raise AssertionError(f"the task failed before it had a job: {future.exception()!r}")
        time.sleep(0.05)
    raise AssertionError(f"no job id in job.json after {timeout} s: {job_record(cache, future)}")


def squeue_states(job_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """job id -> (state, reason) for the ids squeue still knows (``--states=all``)."""
    ids = list(job_ids)
    if not ids:
        return {}
    done = run(["squeue", "--noheader", "--states=all", "--format", "%i|%T|%r", "--jobs", ",".join(ids)])
    states = {}
    for line in done.stdout.splitlines():
        job_id, state, reason = line.strip().split("|")
        states[job_id] = (state, reason)
    return states


def scontrol_job(job_id: str) -> dict[str, str]:
    """The fields of ``scontrol show job --oneliner`` (empty when SLURM forgot the job)."""
    done = run(["scontrol", "show", "job", "--oneliner", str(job_id)])
    fields = {}
    for part in done.stdout.split():
        if "=" in part:
            name, value = part.split("=", 1)
            fields.setdefault(name, value)
    return fields


def wait_state(job_id: str, accept: Callable[[str], bool], timeout: float = START_TIMEOUT) -> str:
    """Poll squeue until the job's state satisfies ``accept``; return that state."""
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = squeue_states([job_id]).get(job_id, ("FORGOTTEN", ""))[0]
        if accept(state):
            return state
        time.sleep(0.5)
    raise AssertionError(f"SLURM job {job_id} stayed in state {state} for {timeout} s")


ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED"}


def active(state: str) -> bool:
    return state in ACTIVE


def job_ids_in(cache: Path) -> set[str]:
    """Every job id recorded in the job.json files of a cache directory."""
    ids = set()
    for path in Path(cache).glob("*/job.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("job_id") and "@" not in str(record["job_id"]):  # not a call of a max_jobs worker
            ids.add(str(record["job_id"]))
    return ids


def jobs_under(directory: Path) -> set[str]:
    """Ids of the jobs SLURM knows (any state) whose working directory is below ``directory``."""
    listing = run(["squeue", "--noheader", "--states=all", "--format", "%i|%Z"]).stdout
    return {line.split("|")[0] for line in listing.splitlines()
            if "|" in line and line.split("|", 1)[1].startswith(str(directory))}
