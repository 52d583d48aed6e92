"""flux's answers → Future outcomes, through the real Executor, scheduler and task store.

flux-core cannot run here, so ``RecordedFlux`` stands at the one place the spawner talks to flux
(``FluxSpawner.run``): it logs every command executorlib sends and answers with text in the form
flux prints it (a job id from ``flux batch``, ``flux jobs`` lines set by the test, nothing from
``flux cancel``). It does not run jobs: where a test needs a job's result, it runs the worker
command of the job script itself, which is what the job would do. Everything on executorlib's side
of the command line is real.
"""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Callable, Optional

import pytest

pytest.importorskip("pysqa")
pytest.importorskip("jinja2")

from executorlib import Executor  # noqa: E402
from executorlib import executor as executor_module  # noqa: E402
from executorlib.errors import JobFailedError, SubmissionError  # noqa: E402
from executorlib.spawners.flux import FluxBatchCommand, FluxSpawner, f58_encode  # noqa: E402
from tests.core.funcs import add_funct  # noqa: E402

FIRST_ID = 4369  # ƒ2JL
CANCELED = "INACTIVE|CANCELED|-128|cancel|"  # a `flux jobs` line of a canceled job


class RecordedFlux(FluxSpawner):
    max_poll_interval = 0.05
    result_grace_period = 0.3

    def __init__(self, pysqa_config_directory=None):
        super().__init__(pysqa_config_directory)
        self.commands: list[list[str]] = []
        self.jobs: dict[int, str] = {}  # job id -> the rest of its `flux jobs` line
        self._next = FIRST_ID
        self._lock = threading.Lock()

    def make_adapter(self):
        return FluxBatchCommand(self)  # the flux command, also where flux's bindings import

    def run(self, command: list[str], cwd: Optional[str] = None) -> tuple[int, str, str]:
        with self._lock:
            self.commands.append(list(command))
            if command[:2] == ["flux", "batch"]:
                job_id, self._next = self._next, self._next + 1
                self.jobs[job_id] = "DEPEND||||"
                return 0, f58_encode(job_id) + "\n", ""
            if command[:2] == ["flux", "jobs"]:
                lines = [f"{f58_encode(int(i))}|{self.jobs[int(i)]}" for i in command[4:] if int(i) in self.jobs]
                unknown = [f"JobID {i} unknown" for i in command[4:] if int(i) not in self.jobs]
                return 0, "\n".join(lines) + "\n", "\n".join(unknown)
            if command[:2] == ["flux", "cancel"]:  # as flux does: the job ends, canceled
                for job_id in command[2:]:
                    if job_id.isdigit() and int(job_id) in self.jobs:
                        self.jobs[int(job_id)] = CANCELED
                return 0, "", ""
            raise AssertionError(f"unexpected flux command {command}")

    def sent(self, verb: str) -> list[list[str]]:
        with self._lock:
            return [c for c in self.commands if c[1] == verb]


@pytest.fixture
def executor(tmp_path, monkeypatch):
    monkeypatch.setitem(executor_module.BACKENDS, "flux_submission", (__name__, "RecordedFlux", True))
    exe = Executor(backend="flux_submission", cache_directory=tmp_path / "cache")
    yield exe
    # shutdown(cancel_futures=True) lets running jobs finish, as concurrent.futures does: jobs that
    # a test left running end now, as they would when the flux instance ends
    flux = flux_of(exe)
    with flux._lock:
        for job_id, line in flux.jobs.items():
            if not line.startswith("INACTIVE"):
                flux.jobs[job_id] = CANCELED
    exe.shutdown(wait=True, cancel_futures=True)


def flux_of(exe: Executor) -> RecordedFlux:
    return exe._spawner  # type: ignore[attr-defined]


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def run_job_script_command(script: Path) -> int:
    """Run the worker line of a job script, as the flux job would."""
    worker_line = script.read_text().splitlines()[-1]
    assert " -m executorlib.worker " in worker_line
    return subprocess.run(worker_line, shell=True, cwd=script.parent).returncode


def script_of(exe: Executor, future) -> Path:
    return Path(exe.cache_directory) / future._executorlib_key / "run_queue.sh"


def test_completed_job_resolves_from_its_result(executor):
    flux = flux_of(executor)
    future = executor.submit(sum, [1, 1])
    wait_until(lambda: flux.sent("batch"))
    flux.jobs[FIRST_ID] = "RUN||||"
    wait_until(future.running)
    assert run_job_script_command(script_of(executor, future)) == 0
    flux.jobs[FIRST_ID] = "INACTIVE|COMPLETED|0||"
    assert future.result(timeout=20) == 2


def test_failed_job_with_a_stored_error_raises_the_functions_exception(executor):
    flux = flux_of(executor)
    future = executor.submit(add_funct, 1, "a")
    wait_until(lambda: flux.sent("batch"))
    assert run_job_script_command(script_of(executor, future)) == 1  # flux sees the job FAILED
    flux.jobs[FIRST_ID] = "INACTIVE|FAILED|1||"
    with pytest.raises(TypeError):
        future.result(timeout=20)


@pytest.mark.parametrize("line,state", [
    ("INACTIVE|TIMEOUT|143|timeout|resource allocation expired",
     "TIMEOUT (timeout exception: resource allocation expired; exit code 143)"),
    ("INACTIVE|CANCELED|-128|cancel|", "CANCELED (cancel exception)"),
    ("INACTIVE|FAILED|-9|exec|", "FAILED (exec exception; killed by signal 9)"),
    ("INACTIVE|COMPLETED|0||", "COMPLETED"),  # e.g. a submission_template that never ran the task
])
def test_job_that_ended_without_a_result_names_flux_state(executor, line, state):
    flux = flux_of(executor)
    future = executor.submit(sum, [2, 2])
    wait_until(lambda: flux.sent("batch"))
    flux.jobs[FIRST_ID] = line
    error = future.exception(timeout=20)
    assert isinstance(error, JobFailedError)
    assert error.state == state
    assert f"flux job {f58_encode(FIRST_ID)}" in str(error) and state in str(error)


def test_future_arguments_become_afterok_on_the_parents_job(executor):
    flux = flux_of(executor)
    parent = executor.submit(sum, [1, 1])
    child = executor.submit(add_funct, parent, 1)
    wait_until(lambda: len(flux.sent("batch")) == 2)  # the child goes to flux at once
    assert "# flux: --dependency=afterok:4369" in script_of(executor, child).read_text().splitlines()
    assert "--dependency" not in script_of(executor, parent).read_text()
    for future, job_id in ((parent, FIRST_ID), (child, FIRST_ID + 1)):
        assert run_job_script_command(script_of(executor, future)) == 0
        flux.jobs[job_id] = "INACTIVE|COMPLETED|0||"
    assert child.result(timeout=20) == 3


def test_a_failed_parent_fails_and_cancels_its_queued_child(executor):
    flux = flux_of(executor)
    parent = executor.submit(sum, [1, 1])
    child = executor.submit(add_funct, parent, 1)
    wait_until(lambda: len(flux.sent("batch")) == 2)
    flux.jobs[FIRST_ID] = "INACTIVE|TIMEOUT|143|timeout|"
    assert isinstance(parent.exception(timeout=20), JobFailedError)
    assert "TIMEOUT" in str(child.exception(timeout=20))
    wait_until(lambda: ["flux", "cancel", str(FIRST_ID + 1)] in flux.sent("cancel"))


def test_status_of_all_jobs_in_one_flux_jobs_call(executor):
    flux = flux_of(executor)
    futures = [executor.submit(sum, [i, i]) for i in range(1, 4)]
    wait_until(lambda: len(flux.sent("batch")) == 3)
    calls_before = len(flux.sent("jobs"))
    wait_until(lambda: len(flux.sent("jobs")) > calls_before + 2)
    last = flux.sent("jobs")[-1]
    assert sorted(last[4:]) == sorted(str(FIRST_ID + i) for i in range(3))
    for future in futures:
        future.cancel()


def test_running_state_moves_the_future_to_running(executor):
    flux = flux_of(executor)
    future = executor.submit(sum, [3, 3])
    wait_until(lambda: flux.sent("batch"))
    flux.jobs[FIRST_ID] = "SCHED||||"
    time.sleep(0.2)
    assert not future.running() and not future.done()
    flux.jobs[FIRST_ID] = "RUN||||"
    wait_until(future.running)


def test_cancel_of_a_queued_future_runs_flux_cancel(executor):
    flux = flux_of(executor)
    future = executor.submit(sum, [5, 5])
    wait_until(lambda: flux.sent("batch"))
    assert future.cancel()
    wait_until(lambda: flux.sent("cancel") == [["flux", "cancel", str(FIRST_ID)]])
    with pytest.raises(CancelledError):
        future.result(timeout=1)


def test_shutdown_cancel_futures_cancels_all_jobs_in_one_call(executor):
    flux = flux_of(executor)
    futures = [executor.submit(sum, [i, 1]) for i in range(3)]
    wait_until(lambda: len(flux.sent("batch")) == 3)
    executor.shutdown(wait=True, cancel_futures=True)
    assert flux.sent("cancel") == [["flux", "cancel", *(str(FIRST_ID + i) for i in range(3))]]
    assert all(f.done() for f in futures)


def test_a_job_flux_forgot_without_a_result_fails_with_unknown_state(executor):
    flux = flux_of(executor)
    future = executor.submit(sum, [7, 7])
    wait_until(lambda: flux.sent("batch"))
    del flux.jobs[FIRST_ID]  # purged from flux's inactive cache: `flux jobs` says "unknown"
    error = future.exception(timeout=20)
    assert isinstance(error, JobFailedError)
    assert "no longer known" in str(error)



class Answering(FluxSpawner):
    """Answers every flux command with one recorded (exit code, stdout, stderr)."""

    def __init__(self, answer: tuple[int, str, str]):
        super().__init__()
        self.answer = answer
        self.commands: list[list[str]] = []

    def run(self, command, cwd=None):
        self.commands.append(command)
        return self.answer


class TestRecordedErrors:
    @pytest.mark.parametrize("stderr", [
        "flux-cancel: ERROR: ƒ2JL: job is inactive",
        "flux-cancel: ERROR: ƒ2JL: unknown job id\nflux-cancel: ERROR: ƒNH: job is inactive",
    ])
    def test_cancel_of_jobs_that_already_ended_is_not_an_error(self, stderr):
        spawner = Answering((1, "", stderr))
        spawner.cancel(["ƒ2JL", "ƒNH"])
        assert spawner.commands == [["flux", "cancel", "4369", "1234"]]

    def test_cancel_without_a_broker_is_an_error(self):
        spawner = Answering((1, "", "flux-cancel: ERROR: Unable to connect to Flux: broker socket not found"))
        with pytest.raises(SubmissionError, match="Unable to connect to Flux"):
            spawner.cancel(["ƒ2JL"])

    def test_cancel_of_nothing_runs_nothing(self):
        spawner = Answering((0, "", ""))
        spawner.cancel([])
        spawner.cancel(["not-a-flux-id"])
        assert spawner.commands == []

    @pytest.mark.parametrize("code", [0, 1])
    def test_jobs_flux_no_longer_knows_are_absent(self, code):
        spawner = Answering((code, "ƒNH|RUN||||\n", "JobID 4369 unknown"))
        states = spawner.states(["ƒ2JL", "fNH"])
        assert list(states) == ["fNH"] and states["fNH"].running

    def test_status_query_without_a_broker_is_an_error(self):
        spawner = Answering((1, "", "flux-jobs: ERROR: Unable to connect to Flux"))
        with pytest.raises(SubmissionError, match="flux start"):
            spawner.states(["ƒ2JL"])

    def test_final_state_asks_flux_once_for_a_job_it_did_not_see_end(self):
        spawner = Answering((0, "ƒ2JL|INACTIVE|FAILED|2||\n", ""))
        assert spawner.final_state("f2JL") == "FAILED (exit code 2)"
        assert spawner.final_state("f2JL") == "FAILED (exit code 2)"
        assert len(spawner.commands) == 1
        assert Answering((0, "ƒ2JL|RUN||||\n", "")).final_state("ƒ2JL") is None

    def test_find_tagged_matches_the_end_of_the_job_name(self):
        spawner = Answering((0, "ƒ2JL|INACTIVE|calc-ab12\nƒNH|RUN|calc-ab12\nf3|SCHED|x|y-cd34\n"
                                "ƒ4|RUN|calcab12\n", ""))
        assert spawner.find_tagged(["ab12", "cd34", "zz99"]) == {"ab12": "ƒNH", "cd34": "f3"}
        assert spawner.commands == [FluxSpawner.tagged_command()]  # one listing for every tag
        assert spawner.find_tagged([]) == {} and len(spawner.commands) == 1

    def test_find_tagged_without_a_broker_is_an_error(self):
        spawner = Answering((1, "", "flux-jobs: ERROR: Unable to connect to Flux"))
        with pytest.raises(SubmissionError, match="flux start"):
            spawner.find_tagged(["ab12"])

    def test_batch_output_without_an_id_is_an_error(self, tmp_path):
        spawner = Answering((0, "\n", ""))
        script = tmp_path / "run_queue.sh"
        script.write_text("#!/bin/bash\n")
        with pytest.raises(SubmissionError, match="printed no job id"):
            spawner.submit_script(script)
        assert Answering((0, "ƒ2JL\n", "")).submit_script(script) == "ƒ2JL"
