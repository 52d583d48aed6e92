"""Shared helpers of the benchmark scripts: tables, timers, peer runs, SLURM housekeeping.

Imports only the standard library, so that a peer interpreter (another virtual environment with
the original executorlib or submitit) can run the same scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

HERE = Path(__file__).resolve().parent
#: marks the one line of JSON a peer run prints for its parent
PEER_MARK = "@@BENCH-JSON@@ "
#: job names of every SLURM job a benchmark submits start with this (for cleaning up)
JOB_PREFIX = "xlbench"


# -- numbers and tables --------------------------------------------------------------------------
def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` significant digits, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 10 ** digits:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a GitHub-markdown table (readable in a terminal, pasteable into the README)."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print(f"\n### {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    sys.stdout.flush()


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b == 0:
        return None
    return a / b


def median(values: Sequence[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def mean(values: Sequence[float]) -> Optional[float]:
    return statistics.fmean(values) if values else None


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@contextlib.contextmanager
def timer() -> Iterator[dict]:
    """``with timer() as t: ...`` then ``t["seconds"]`` (wall) and ``t["cpu"]`` (this process)."""
    result: dict = {}
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield result
    finally:
        result["seconds"] = time.perf_counter() - wall
        result["cpu"] = time.process_time() - cpu


# -- the machine ---------------------------------------------------------------------------------
def machine_summary() -> str:
    """One line naming the CPU, cores, memory, OS and Python."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        memory = f", {kb / 1024 ** 2:.0f} GiB RAM"
    return (f"{cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def print_header(title: str) -> None:
    print(f"## {title}")
    print(f"machine: {machine_summary()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"load average (1, 5, 15 min) at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    sys.stdout.flush()


@contextlib.contextmanager
def scratch_dir(prefix: str, keep: bool = False, base: Optional[str] = None) -> Iterator[Path]:
    """A temporary directory (mode 700), removed afterwards unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=base))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


# -- peers: the same workload in another interpreter ----------------------------------------------
def which_library() -> str:
    """Which executor library this interpreter imports as ``executorlib``: 'ours', 'original' or ''."""
    try:
        import executorlib  # noqa: F401
    except ImportError:
        return ""
    import executorlib as lib

    if hasattr(lib, "SlurmClusterExecutor") or not hasattr(lib, "BACKENDS") and hasattr(lib, "SingleNodeExecutor"):
        return "original"
    return "ours"


def peer_libraries(peer_python: str) -> list[str]:
    """The peer libraries importable by ``peer_python``: 'executorlib' (original) and/or 'submitit'."""
    probe = (
        "import importlib.util, json, sys\n"
        "found = []\n"
        "if importlib.util.find_spec('executorlib'):\n"
        "    import executorlib\n"
        "    if hasattr(executorlib, 'SlurmClusterExecutor') or hasattr(executorlib, 'SingleNodeExecutor'):\n"
        "        found.append('executorlib')\n"
        "if importlib.util.find_spec('submitit'):\n"
        "    found.append('submitit')\n"
        "print(json.dumps(found))\n"
    )
    done = subprocess.run([peer_python, "-c", probe], capture_output=True, text=True, cwd="/")
    if done.returncode != 0:
        raise SystemExit(f"--peer-python {peer_python} cannot run: {done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peer_version(peer_python: str, library: str) -> str:
    done = subprocess.run(
        [peer_python, "-c", f"import importlib.metadata as m; print(m.version({library!r}))"],
        capture_output=True, text=True, cwd="/")
    return done.stdout.strip() or "?"


def run_peer(peer_python: str, script: str, library: str, args: Sequence[str],
             timeout: float = 3600) -> Optional[Any]:
    """Run ``script --as-peer LIBRARY ARGS`` in ``peer_python``; return the JSON it reports.

    The script is run from ``/`` so that its own folder is the only project path it sees: the peer
    interpreter imports the peer's ``executorlib``, never this repository's.
    """
    command = [peer_python, str(Path(script).resolve()), "--as-peer", library, *args]
    print(f"\n[peer] {' '.join(command)}")
    sys.stdout.flush()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd="/", timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        print(f"[peer] {library}: timed out after {timeout:.0f} s")
        return None
    payload = None
    for line in done.stdout.splitlines():
        if line.startswith(PEER_MARK):
            payload = json.loads(line[len(PEER_MARK):])
        else:
            print(f"[peer {library}] {line}")
    if done.returncode != 0 or payload is None:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        print(f"[peer] {library} failed (exit {done.returncode}):\n{tail}")
    else:
        print(f"[peer] {library} done; load average now: "
              f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    sys.stdout.flush()
    return payload


def report_to_parent(payload: Any) -> None:
    """The peer side of :func:`run_peer`: one marked line of JSON on stdout."""
    print(PEER_MARK + json.dumps(payload))
    sys.stdout.flush()


def kill_descendants() -> None:
    """SIGKILL every process below this one (a peer's worker processes left running)."""
    import signal

    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    todo, found = [os.getpid()], []
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    for pid in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def add_peer_arguments(parser: Any) -> None:
    parser.add_argument("--peer-python", metavar="PATH",
                        help="an interpreter with the original executorlib and/or submitit installed: "
                             "the same workload runs against them side by side")
    parser.add_argument("--as-peer", choices=["executorlib", "submitit"], help=argparse.SUPPRESS)


# -- SLURM ---------------------------------------------------------------------------------------
def slurm_available() -> bool:
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        return False
    try:
        return subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def slurm_partition() -> Optional[str]:
    """The default partition (``sinfo`` marks it with ``*``)."""
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout
    for name in out.split():
        if name.endswith("*"):
            return name.rstrip("*")
    return out.split()[0] if out.split() else None


def slurm_queue_summary() -> str:
    """Who else has jobs in the queue right now (for 'busy or quiet cluster')."""
    out = subprocess.run(["squeue", "-h", "-o", "%T"], capture_output=True, text=True).stdout.split()
    if not out:
        return "quiet (queue empty)"
    counts: dict[str, int] = {}
    for state in out:
        counts[state] = counts.get(state, 0) + 1
    return "busy: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def my_slurm_jobs(name_prefix: str = JOB_PREFIX) -> list[str]:
    """Ids of this user's jobs whose name starts with ``name_prefix``."""
    out = subprocess.run(["squeue", "-h", "-u", getpass.getuser(), "-o", "%i|%j"],
                         capture_output=True, text=True).stdout
    return [line.split("|", 1)[0] for line in out.splitlines()
            if "|" in line and line.split("|", 1)[1].startswith(name_prefix)]


def scancel(job_ids: Sequence[str]) -> None:
    """Cancel these jobs (in chunks; already finished ones are ignored)."""
    ids = [str(j) for j in job_ids]
    for start in range(0, len(ids), 500):
        subprocess.run(["scancel", *ids[start:start + 500]], capture_output=True)


def cancel_leftovers(name_prefix: str = JOB_PREFIX) -> int:
    """Cancel every job of ours still in the queue; returns how many there were."""
    ids = my_slurm_jobs(name_prefix)
    if ids:
        scancel(ids)
    return len(ids)


def wait_for_slurm_idle(name_prefix: str = JOB_PREFIX, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while my_slurm_jobs(name_prefix) and time.monotonic() < deadline:
        time.sleep(1)


def held_template(default_template: str) -> str:
    """A job-script template equal to ``default_template`` plus ``#SBATCH --hold``."""
    lines = default_template.splitlines()
    return "\n".join([lines[0], "#SBATCH --hold", *lines[1:]]) + "\n"
