"""A run outlives a restart of slurmctld on the real cluster.

The controller is stopped (SIGTERM to the pid in its pid file, as an administrator's restart does)
while a call's job runs, stays down for ~15 s, and is started again with scripts/start_slurm.sh,
which starts it the way it did at first (``slurmctld -i``) and waits until the node answers. While
it is down squeue fails (the loop retries) and sbatch is refused (a call submitted then is held
and submitted once the controller is back). Neither Future fails; the running call runs once.
slurmctld is always started again in a ``finally`` and the node is seen idle before the test ends,
else every later test would fail. Two SLURM jobs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from executorlib import Executor
from tests.slurm import funcs
from tests.slurm.slurm_tools import job_ids_in, job_record, jobs_under, run, wait_job_id

pytestmark = pytest.mark.slurm

START_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "start_slurm.sh"
CTLD_PID_FILE = Path("/run/slurmctld.pid")  # SlurmctldPidFile of scripts/start_slurm.sh
#: how long the controller stays down
OUTAGE = 15.0
#: how long the running call sleeps: it outlives the outage, so the loop sees it again after it
JOB_SECONDS = 25


def controller_pid() -> int:
    """The pid of the local slurmctld (its pid file, checked against /proc)."""
    try:
        pid = int(CTLD_PID_FILE.read_text().strip())
        if Path(f"/proc/{pid}/comm").read_text().strip() == "slurmctld":
            return pid
    except (OSError, ValueError):
        pass
    pytest.skip(f"no local slurmctld with pid file {CTLD_PID_FILE} (a cluster not started by "
                "scripts/start_slurm.sh is left alone)")


def process_gone(pid: int) -> bool:
    """True once ``pid`` ended (a zombie counts: it no longer serves)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] == "Z"


def controller_answers() -> bool:
    try:
        return "is UP" in run(["scontrol", "ping"], timeout=15).stdout
    except subprocess.TimeoutExpired:
        return False


def node_states() -> set[str]:
    try:
        out = run(["sinfo", "--noheader", "--format", "%T"], timeout=15).stdout
    except subprocess.TimeoutExpired:
        return set()
    return {line.strip().lower() for line in out.splitlines() if line.strip()}


def wait_node(accept: set[str], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    states: set[str] = set()
    while time.monotonic() < deadline:
        states = node_states()
        if states and states <= accept:
            return
        time.sleep(1)
    raise AssertionError(f"{what}: the node is {sorted(states) or 'not answering'} after {timeout:.0f} s")


def start_controller() -> None:
    """Start slurmctld the way scripts/start_slurm.sh does (the script itself, idempotent), then
    wait until sinfo answers with the node up."""
    done = subprocess.run(["bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"start_slurm.sh failed:\n{done.stdout}\n{done.stderr}"
    wait_node({"idle", "mixed", "allocated", "completing"}, 120, "after restarting slurmctld")


def test_a_run_outlives_a_restart_of_slurmctld(slurm_cache, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("stopping and starting slurmctld needs root")
    controller_pid()  # skip before any job when this is not our cluster
    counter = tmp_path / "runs.txt"
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        running = exe.submit(funcs.count_run, str(counter), "outlived", JOB_SECONDS)
        job_id = wait_job_id(slurm_cache, running)
        deadline = time.monotonic() + 120
        while not counter.exists() or not counter.read_text().strip():
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.2)
        try:
            pid = controller_pid()
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while not process_gone(pid):
                assert time.monotonic() < deadline, f"slurmctld {pid} did not stop within 60 s"
                time.sleep(0.2)
            assert not controller_answers()
            stopped = time.monotonic()
            held = exe.submit(funcs.add_funct, 1, 2)  # sbatch is refused now: held, not failed
            time.sleep(max(OUTAGE - (time.monotonic() - stopped), 0.0))
            assert not held.done() or held.exception() is None, held.exception()
            assert not running.done() or running.exception() is None, running.exception()
            print(f"slurmctld was down for {time.monotonic() - stopped:.1f} s while job {job_id} ran")
        finally:
            start_controller()
        assert running.result(timeout=180) == "outlived"
        assert held.result(timeout=180) == 3
    assert counter.read_text().split() == [job_id]  # the running call ran once, in its first job
    record = job_record(slurm_cache, running)
    assert record["job_id"] == job_id and "attempts" not in record
    assert len(job_ids_in(slurm_cache) | jobs_under(slurm_cache)) == 2
    wait_node({"idle"}, 120, "after the test")
