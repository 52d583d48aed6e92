"""The cluster's failures are retried on the real cluster, the call's own never.

A site without SLURM's own requeue (``JobRequeue=0``) is emulated with ``#SBATCH --no-requeue`` in a
submission_template; the node failure is ``scontrol update nodename=<node> state=down`` while the
job runs. The node is always resumed (and seen up again) before the test ends, else every later
test would wait for it. Five SLURM jobs at most.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from executorlib import Executor
from tests.slurm import funcs
from tests.slurm.slurm_tools import job_ids_in, job_record, jobs_under, run, scontrol_job, wait_job_id, wait_state

pytestmark = pytest.mark.slurm

TEMPLATE = Path(__file__).resolve().parents[2] / "executorlib" / "templates" / "slurm.sh.j2"


def no_requeue_template() -> str:
    """The built-in job script with ``#SBATCH --no-requeue`` (a site with JobRequeue=0)."""
    lines = TEMPLATE.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("#SBATCH --output")) + 1
    return "\n".join(lines[:at] + ["#SBATCH --no-requeue"] + lines[at:]) + "\n"


def node_state(node: str) -> str:
    return run(["sinfo", "--noheader", "--nodes", node, "--format", "%T"]).stdout.strip().lower()


def resume(node: str, timeout: float = 60.0) -> None:
    """Resume ``node`` and wait until sinfo shows it up (idle, mixed or allocated)."""
    run(["scontrol", "update", f"nodename={node}", "state=resume"])
    deadline = time.monotonic() + timeout
    while True:
        state = node_state(node)
        if state.rstrip("*~#") in ("idle", "mixed", "allocated", "completing"):
            return
        assert time.monotonic() < deadline, f"node {node} is still {state!r} after state=resume"
        time.sleep(1)


def test_a_job_lost_with_its_node_is_submitted_again(slurm_cache, tmp_path):
    counter = tmp_path / "runs.txt"
    resources = {"submission_template": no_requeue_template()}
    node = None
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        future = exe.submit(funcs.count_run, str(counter), "survived", 20, resource_dict=resources)
        child = exe.submit(funcs.add_funct, future, "!")  # held by SLURM on the lost job (afterok)
        first = wait_job_id(slurm_cache, future)
        assert scontrol_job(first).get("Requeue") == "0"
        deadline = time.monotonic() + 120
        while not counter.exists() or not counter.read_text().strip():
            assert time.monotonic() < deadline, "the first job never ran"
            time.sleep(0.5)
        node = scontrol_job(first)["BatchHost"]
        try:
            down = run(["scontrol", "update", f"nodename={node}", "state=down", "reason=executorlib_test"])
            if down.returncode != 0:
                pytest.skip(f"cannot set node {node} down here: {down.stderr.strip()}")
            final = wait_state(first, lambda s: s not in ("RUNNING", "COMPLETING"), timeout=60)
            print(f"job {first} ended {final}: {scontrol_job(first).get('Reason')}")
        finally:
            resume(node)
        assert future.result(timeout=300) == "survived"
        assert child.result(timeout=120) == "survived!"
    runs = counter.read_text().split()
    assert len(runs) == 2 and runs[0] == first and runs[1] != first, runs  # one retry: two jobs
    record = job_record(slurm_cache, future)
    assert [a["job_id"] for a in record["attempts"]] == [first]
    assert record["job_id"] == runs[1]
    assert record["attempts"][0]["state"].startswith(("FAILED", "NODE_FAIL")), record["attempts"]
    assert node_state(node).rstrip("*~#") in ("idle", "mixed", "allocated", "completing")


def test_a_function_that_raises_runs_exactly_once(slurm_cache):
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        future = exe.submit(funcs.raise_error, "not the cluster's fault")
        with pytest.raises(funcs.SlurmTestError, match="not the cluster's fault"):
            future.result(timeout=120)
        time.sleep(1)  # a resubmission, if any, would come at once
    assert len(job_ids_in(slurm_cache) | jobs_under(slurm_cache)) == 1
    assert "attempts" not in (job_record(slurm_cache, future) or {})
