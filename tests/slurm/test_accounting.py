"""On a cluster with accounting (slurmdbd): a site's submit limit, sacct's final states.

Needs ``bash scripts/start_slurm.sh --accounting`` (scripts/test.sh runs these tests in a second
pass after switching the cluster to accounting); skipped with the reason without accounting, a
failure when ``EXECUTORLIB_REQUIRE_ACCOUNTING=1``.

The submit limit is a QOS of its own, ``MaxSubmitJobsPerUser=2``, added to the user's associations
with sacctmgr and removed at teardown; only this test's jobs ask for it (``resource_dict['qos']``),
so other users of the cluster are not limited. Eight SLURM jobs in all.
"""

from __future__ import annotations

import getpass
import logging
import os
import subprocess
import threading
import time

import pytest

from executorlib import Executor
from executorlib.errors import SubmissionError
from tests.slurm import funcs
from tests.slurm.slurm_tools import job_record, run

pytestmark = [pytest.mark.slurm, pytest.mark.accounting]

REQUIRE_VARIABLE = "EXECUTORLIB_REQUIRE_ACCOUNTING"
QOS = "xl_submit2"
LIMIT = 2
#: sacct gets a job's end from slurmctld asynchronously
SACCT_TIMEOUT = 60.0


def accounting_problem() -> str | None:
    """Why this cluster has no usable accounting, or None."""
    try:
        config = run(["scontrol", "show", "config"], timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"scontrol show config failed: {error}"
    kind = next((line.split("=", 1)[1].strip() for line in config.splitlines()
                 if line.startswith("AccountingStorageType")), "")
    if kind != "accounting_storage/slurmdbd":
        return (f"the cluster runs without accounting (AccountingStorageType={kind or '?'}); start it with "
                "'bash scripts/start_slurm.sh --accounting'")
    done = run(["sacctmgr", "-n", "-P", "show", "cluster", "format=Cluster"], timeout=20)
    if done.returncode != 0 or not done.stdout.strip():
        return f"sacctmgr does not answer: {(done.stderr or done.stdout).strip()}"
    return None


@pytest.fixture(autouse=True)
def _accounting_on() -> None:
    problem = accounting_problem()
    if problem is not None:
        if os.environ.get(REQUIRE_VARIABLE, "") == "1":
            pytest.fail(f"{REQUIRE_VARIABLE}=1 but SLURM accounting is not usable: {problem}", pytrace=False)
        pytest.skip(f"no SLURM accounting: {problem}")


def sacctmgr(*args: str) -> subprocess.CompletedProcess:
    return run(["sacctmgr", "-i", *args], timeout=60)


@pytest.fixture
def limited_qos():
    """A QOS with MaxSubmitJobsPerUser=2, in the user's associations (removed afterwards)."""
    user = getpass.getuser()
    if QOS in run(["sacctmgr", "-n", "-P", "show", "qos", "format=Name"]).stdout.split():
        done = sacctmgr("modify", "qos", "where", f"name={QOS}", "set", f"MaxSubmitJobsPerUser={LIMIT}")
    else:
        done = sacctmgr("add", "qos", QOS, f"MaxSubmitJobsPerUser={LIMIT}")
    assert done.returncode == 0, done.stderr
    done = sacctmgr("modify", "user", "where", f"name={user}", "set", f"qos+={QOS}")
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 30
    while f"QOS={QOS}" not in run(["scontrol", "show", "assoc_mgr", "flags=qos", f"qos={QOS}"]).stdout:
        assert time.monotonic() < deadline, f"slurmctld does not know QOS {QOS} after 30 s"
        time.sleep(0.5)
    try:
        yield QOS
    finally:
        run(["scancel", "--user", user, "--qos", QOS])
        sacctmgr("modify", "user", "where", f"name={user}", "set", f"qos-={QOS}")
        sacctmgr("delete", "qos", QOS)


def queued(user: str, qos: str) -> int:
    """The user's jobs in ``qos`` that count against its submit limit (pending or running)."""
    listing = run(["squeue", "--noheader", "--user", user, "--qos", qos, "--states", "PD,CF,R,S",
                   "--format", "%i"]).stdout
    return len(listing.split())


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """job id -> its final state in accounting, once every job has one."""
    deadline = time.monotonic() + SACCT_TIMEOUT
    while True:
        done = run(["sacct", "-j", ",".join(job_ids), "-n", "-P", "-X", "-o", "JobID,State"])
        states = dict(line.split("|", 1) for line in done.stdout.split() if "|" in line)
        if all(states.get(j, "") not in ("", "PENDING", "RUNNING", "COMPLETING") for j in job_ids):
            return {j: states[j].split()[0] for j in job_ids}
        assert time.monotonic() < deadline, f"sacct has no final state after {SACCT_TIMEOUT} s: {states}"
        time.sleep(1)


def test_a_submit_limit_holds_the_calls_until_the_queue_has_room(slurm_cache, limited_qos, caplog):
    user = getpass.getuser()
    counts: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            counts.append(queued(user, limited_qos))
            stop.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    caplog.set_level(logging.WARNING, logger="executorlib")
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache),
                  resource_dict={"qos": limited_qos}) as exe:
        watcher.start()
        try:
            futures = [exe.submit(funcs.sleep_add, i, 1, 2) for i in range(5)]
            failing = exe.submit(funcs.raise_error, "the call's own failure", 1)
            assert [f.result(timeout=600) for f in futures] == [1, 2, 3, 4, 5]
            with pytest.raises(funcs.SlurmTestError, match="the call's own failure"):
                failing.result(timeout=600)
        finally:
            stop.set()
            watcher.join(10)
    assert counts and max(counts) == LIMIT, counts  # the queue was full, never over the limit
    refused = [r.getMessage() for r in caplog.records if "refused for now" in r.getMessage()]
    assert refused and "QOSMaxSubmitJobPerUserLimit" in refused[0], refused
    completed = [str(job_record(slurm_cache, f)["job_id"]) for f in futures]
    failed = str(job_record(slurm_cache, failing)["job_id"])
    assert len(set(completed + [failed])) == 6  # one job per call: the refusals made none
    states = sacct_states(completed + [failed])
    assert [states[j] for j in completed] == ["COMPLETED"] * 5 and states[failed] == "FAILED", states


def test_final_status_comes_from_sacct_once_scontrol_forgot_the_job(monkeypatch, tmp_path):
    """SLURM forgets an ended job after MinJobAge (300 s here): emulated by an scontrol that
    answers "Invalid job id", as it then does; sacct still knows the job."""
    import executorlib.spawners.slurm as slurm

    job_ids = {}
    for name, script in (("ok", "true"), ("fails", "exit 3")):
        done = run(["sbatch", "--parsable", "--job-name", f"xl-acct-{name}", "--output", "/dev/null",
                    "--chdir", str(tmp_path), "--wrap", script])
        assert done.returncode == 0, done.stderr
        job_ids[name] = done.stdout.strip().split(";")[0]
    states = sacct_states(list(job_ids.values()))
    assert states == {job_ids["ok"]: "COMPLETED", job_ids["fails"]: "FAILED"}

    real = slurm.run_command
    asked = []

    def forgetful(command, cwd=None, what=""):
        asked.append(command[0])
        if command[0] == "scontrol":
            raise SubmissionError(f"'{' '.join(command)}' failed with exit code 1: "
                                  "slurm_load_jobs error: Invalid job id specified")
        return real(command, cwd=cwd, what=what)

    monkeypatch.setattr(slurm, "run_command", forgetful)
    spawner = slurm.SlurmSpawner()
    ok, fails = spawner.final_status(job_ids["ok"]), spawner.final_status(job_ids["fails"])
    assert asked == ["scontrol", "sacct", "scontrol", "sacct"]
    assert (ok.state, ok.active, ok.cluster_failure) == ("COMPLETED", False, False)
    assert (fails.state, fails.reason, fails.cluster_failure) == ("FAILED", "NonZeroExitCode", False)
    assert spawner.final_state(job_ids["fails"]) == "FAILED"
