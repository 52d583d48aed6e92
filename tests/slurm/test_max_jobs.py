"""``max_jobs`` on the real cluster: a few SLURM jobs serve many calls.

About ten worker jobs in all: the one-node cluster starts ~2 jobs every 3 s.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from executorlib import Executor
from executorlib import packed_queue as pq
from executorlib.errors import JobFailedError
from tests.slurm import funcs
from tests.slurm.slurm_tools import active, jobs_under, run, scontrol_job

pytestmark = pytest.mark.slurm

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _short_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTORLIB_WORKER_IDLE", "5")


class _QueueWatch(threading.Thread):
    """The most jobs under the cache directory that squeue listed as queued or running at once."""

    def __init__(self, cache: Path):
        super().__init__(daemon=True)
        self.cache = cache
        self.most = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            listing = run(["squeue", "--noheader", "--format", "%i|%T|%Z"]).stdout
            mine = [line for line in listing.splitlines()
                    if "|" in line and line.rsplit("|", 1)[1].startswith(str(self.cache))
                    and active(line.split("|")[1])]
            self.most = max(self.most, len(mine))
            time.sleep(0.3)




def test_many_calls_in_at_most_max_jobs_jobs(slurm_cache: Path) -> None:
    watch = _QueueWatch(slurm_cache)
    watch.start()
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache), max_jobs=2) as exe:
        sums = [exe.submit(funcs.add_funct, i, 1) for i in range(30)]
        chain = exe.submit(funcs.add_funct, 100, 0)
        for _ in range(3):
            chain = exe.submit(funcs.add_funct, chain, 1)
        assert [f.result(timeout=300) for f in sums] == list(range(1, 31))
        assert chain.result(timeout=300) == 103
    watch.stop.set()
    watch.join()
    assert 1 <= watch.most <= 2
    workers = set(pq.served_by(slurm_cache).values())
    assert 1 <= len(workers) <= 4  # 34 calls, a handful of jobs
    for worker in workers:  # the call ids are not jobs; the workers are SLURM jobs of this cache
        assert worker.isdigit()
    assert all(str(w) in jobs_under(slurm_cache) for w in workers)


def test_scancel_of_a_worker_fails_its_call_and_a_new_worker_serves_the_rest(slurm_cache: Path) -> None:
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache), max_jobs=1) as exe:
        slow = exe.submit(funcs.announce_and_sleep, "victim", 120)
        deadline = time.monotonic() + 120
        while slow._executorlib_key not in pq.served_by(slurm_cache) and time.monotonic() < deadline:
            time.sleep(0.2)
        worker = pq.served_by(slurm_cache)[slow._executorlib_key]
        later = [exe.submit(funcs.add_funct, i, 10) for i in range(3)]
        run(["scancel", worker])
        with pytest.raises(JobFailedError, match=rf"CANCELLED.*{worker}|{worker}.*CANCELLED"):
            slow.result(timeout=120)
        assert [f.result(timeout=180) for f in later] == [10, 11, 12]
    served = pq.served_by(slurm_cache)
    assert {served[f._executorlib_key] for f in later} - {worker}  # a new worker served them
    log = (slurm_cache / slow._executorlib_key / "job.out").read_text()
    assert "started victim" in log  # the call's own output file


def test_calls_with_other_resources_get_workers_of_their_own_shape(slurm_cache: Path) -> None:
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache), max_jobs=2) as exe:
        one = exe.submit(funcs.job_environment, 1, resource_dict={"run_time_max": 120})
        two = exe.submit(funcs.job_environment, 2, resource_dict={"threads_per_core": 2, "run_time_max": 120})
        env_one, env_two = one.result(timeout=180), two.result(timeout=180)
    assert (env_one["OMP_NUM_THREADS"], env_two["OMP_NUM_THREADS"]) == ("1", "2")
    assert env_two["SLURM_CPUS_PER_TASK"] == "2"
    assert env_one["SLURM_JOB_ID"] != env_two["SLURM_JOB_ID"]
    # the worker's --time comes from the calls it may serve (120 s + idle + margin: 4 minutes)
    limit = scontrol_job(env_one["SLURM_JOB_ID"]).get("TimeLimit")
    assert limit == "00:04:00", limit


def test_a_later_process_attaches_to_calls_still_served(slurm_cache: Path, tmp_path: Path) -> None:
    marks = tmp_path / "runs.txt"
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(f"""
        import os
        from executorlib import Executor
        from tests.slurm import funcs
        exe = Executor(backend="slurm_submission", cache_directory={str(slurm_cache)!r}, max_jobs=1)
        fs = [exe.submit(funcs.count_run, {str(marks)!r}, i, 3) for i in range(3)]
        fs.append(exe.submit(funcs.add_funct, fs[0], 1))
        exe.shutdown(wait=False)
        os._exit(0)  # gone at once: only the worker job carries on
    """))
    done = subprocess.run([sys.executable, str(script)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, env=dict(__import__("os").environ, EXECUTORLIB_WORKER_IDLE="10"))
    assert done.returncode == 0, done.stderr
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache), max_jobs=1) as exe:
        fs = [exe.submit(funcs.count_run, str(marks), i, 3) for i in range(3)]
        last = exe.submit(funcs.add_funct, fs[0], 1)
        assert [f.result(timeout=300) for f in fs] == [0, 1, 2]
        assert last.result(timeout=120) == 1
    assert len(marks.read_text().splitlines()) == 3  # each call ran once, in the first client's worker
    workers = pq.read_workers(slurm_cache)
    assert len(set(pq.served_by(slurm_cache).values())) <= 2 and len(workers) <= 2


def test_an_mpi_call_runs_as_a_job_step_of_its_worker(slurm_cache: Path) -> None:
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache), max_jobs=1) as exe:
        ranks = exe.submit(funcs.calc, 3, resource_dict={"cores": 2})
        assert ranks.result(timeout=180) == [(3, 2, 0), (3, 2, 1)]
    worker = pq.served_by(slurm_cache)[ranks._executorlib_key]
    assert scontrol_job(worker).get("NumTasks") == "2"  # the worker job holds the call's two ranks


def test_a_script_that_gained_max_jobs_follows_the_jobs_of_its_earlier_run(slurm_cache: Path, tmp_path: Path) -> None:
    marks = tmp_path / "runs.txt"
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(f"""
        import os
        from executorlib import Executor
        from tests.slurm import funcs
        exe = Executor(backend="slurm_submission", cache_directory={str(slurm_cache)!r})
        exe.submit(funcs.count_run, {str(marks)!r}, 5, 6)
        exe.shutdown(wait=False)
        os._exit(0)  # its sbatch job runs on
    """))
    done = subprocess.run([sys.executable, str(script)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache), max_jobs=1) as exe:
        parent = exe.submit(funcs.count_run, str(marks), 5, 6)  # the earlier job, followed
        child = exe.submit(funcs.add_funct, parent, 1)          # a call for a worker, after it
        assert child.result(timeout=180) == 6
        assert parent.result(timeout=10) == 5
    assert len(marks.read_text().splitlines()) == 1  # the parent ran once, in its own job
    assert child._executorlib_key in pq.served_by(slurm_cache)


def test_a_refused_worker_job_fails_its_calls_with_sbatch_s_words(slurm_cache: Path) -> None:
    from executorlib.errors import SubmissionError

    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache), max_jobs=2) as exe:
        bad = exe.submit(funcs.add_funct, 1, 1, resource_dict={"partition": "no_such_partition"})
        with pytest.raises(SubmissionError, match="(?i)invalid partition"):
            bad.result(timeout=60)
        assert exe.submit(funcs.add_funct, 2, 2).result(timeout=180) == 4  # other shapes are served
    assert not list(pq.queue_dir(slurm_cache).glob("*/*.json"))  # no queued call is left to run later


def test_errors_time_limits_and_cancel_of_calls_in_a_worker_job(slurm_cache: Path, tmp_path: Path) -> None:
    from concurrent.futures import CancelledError

    marks = tmp_path / "runs.txt"
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache), max_jobs=1) as exe:
        bad = exe.submit(funcs.raise_error, "broken call")
        child = exe.submit(funcs.count_run, str(marks), bad)
        slow = exe.submit(funcs.announce_and_sleep, "too slow", 60, resource_dict={"run_time_max": 3})
        queued = exe.submit(funcs.count_run, str(marks), "never")
        assert queued.cancel()  # still waiting in the queue (the worker serves one call at a time)
        with pytest.raises(CancelledError):
            queued.result()
        with pytest.raises(funcs.SlurmTestError, match="broken call"):
            bad.result(timeout=180)
        with pytest.raises(funcs.SlurmTestError, match="broken call"):  # the parent's own type
            child.result(timeout=60)
        with pytest.raises(JobFailedError, match="TIMEOUT") as timeout:
            slow.result(timeout=120)
        assert "run_time_max" in str(timeout.value)
        assert exe.submit(funcs.add_funct, 20, 1).result(timeout=120) == 21  # the worker serves on
    assert not marks.exists()  # neither the child of the failed call nor the cancelled one ran
    worker = pq.served_by(slurm_cache)[slow._executorlib_key]
    state = ""
    for _ in range(60):  # the worker outlived the call it killed and ended on its own (idle)
        state = scontrol_job(worker).get("JobState", "")
        if state and not active(state):
            break
        time.sleep(0.5)
    assert state == "COMPLETED", state


def test_a_worker_fits_the_partition_time_limit(slurm_cache: Path) -> None:
    """Three calls of 400 s would ask 21 minutes of one worker; the partition allows 10: the
    worker asks for 10 (more would leave it pending with PartitionTimeLimit) and serves them."""
    partition = run(["sinfo", "-h", "-o", "%P"]).stdout.split()[0].rstrip("*")
    before = run(["sinfo", "-h", "-p", partition, "-o", "%l"]).stdout.strip()
    run(["scontrol", "update", f"PartitionName={partition}", "MaxTime=10"])
    try:
        with Executor(backend="slurm_submission", cache_directory=str(slurm_cache), max_jobs=1,
                      resource_dict={"run_time_max": 400}) as exe:
            # the one job slot is taken by a call of another shape first, so that the worker for
            # the three calls starts when all three wait in its queue
            blocker = exe.submit(funcs.sleep_add, 1, 1, 2, resource_dict={"threads_per_core": 2})
            futures = [exe.submit(funcs.add_funct, i, 100) for i in range(3)]
            assert [f.result(timeout=180) for f in futures] == [100, 101, 102]
            assert blocker.result(timeout=10) == 2
        worker = pq.served_by(slurm_cache)[futures[0]._executorlib_key]
        assert scontrol_job(worker).get("TimeLimit") == "00:10:00"
    finally:
        run(["scontrol", "update", f"PartitionName={partition}",
             f"MaxTime={'UNLIMITED' if before in ('infinite', '') else before}"])
    assert run(["sinfo", "-h", "-p", partition, "-o", "%l"]).stdout.strip() == (before or "infinite")
