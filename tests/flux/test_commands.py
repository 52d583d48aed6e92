"""The flux command lines, and what happens where flux itself is missing.

No test here talks to flux: the commands are built by small methods and compared, and the
submission tests run with an empty PATH, which is exactly the machine without flux-core.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("pysqa")
pytest.importorskip("jinja2")

from executorlib import Executor  # noqa: E402
from executorlib.errors import DependencyError, MissingDependencyError, SubmissionError  # noqa: E402
from executorlib.resources import merge_resources  # noqa: E402
from executorlib.spawners.base import JobSpec, worker_command  # noqa: E402
from executorlib.spawners.flux import (  # noqa: E402
    JOBS_FORMAT,
    MAX_IDS_PER_QUERY,
    FluxSpawner,
    command_failure,
    flux_bindings_available,
)
from tests.core.funcs import add_funct  # noqa: E402


@pytest.fixture
def no_flux_on_path(tmp_path, monkeypatch) -> None:
    """A PATH without flux, whatever this machine has installed."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


class TestCommandLines:
    def test_batch(self):
        assert FluxSpawner.batch_command(Path("/c/k/run_queue.sh")) == ["flux", "batch", "/c/k/run_queue.sh"]

    def test_jobs_asks_for_all_ids_in_one_call_in_decimal(self):
        assert FluxSpawner.jobs_commands(["ƒ2JL", "fNH", "57", "ƒ2JL"]) == [[
            "flux", "jobs", "-n",
            "--format={id.f58}|{state}|{result}|{returncode}|{exception.type}|{exception.note}",
            "4369", "1234", "57",
        ]]
        assert JOBS_FORMAT in FluxSpawner.jobs_command(["ƒ2"])[3]

    def test_jobs_splits_very_long_id_lists(self):
        commands = FluxSpawner.jobs_commands([str(n) for n in range(2 * MAX_IDS_PER_QUERY + 7)])
        assert [len(c) - 4 for c in commands] == [MAX_IDS_PER_QUERY, MAX_IDS_PER_QUERY, 7]

    def test_jobs_skips_ids_that_are_not_flux_ids(self):
        assert FluxSpawner.jobs_commands(["12345@other", "ƒ2"]) == [FluxSpawner.jobs_command(["1"])]
        assert FluxSpawner.jobs_commands([]) == []

    def test_cancel_all_in_one_call(self):
        assert FluxSpawner.cancel_command(["ƒ2JL", "f7YXq9G", "1234"]) == [
            "flux", "cancel", "4369", "4294967295", "1234"]

    def test_mpi_launch(self):
        launch = FluxSpawner().launch_command
        serial = ["python", "-m", "executorlib.worker", "/c/k"]
        worker = ["python", "-m", "executorlib.worker", "--mpi", "/c/k"]
        assert launch(merge_resources(None, {"cores": 1, "threads_per_core": 4}), serial) == serial
        assert launch(merge_resources(None, {"cores": 2}), worker) == ["flux", "run", "-n", "2", "-c", "1", *worker]
        assert launch(merge_resources(None, {"cores": 3, "threads_per_core": 2, "gpus_per_core": 1,
                                             "num_nodes": 3}), worker) == [
            "flux", "run", "-n", "3", "-c", "2", "-g", "1", "-N", "3", *worker]

    def test_tagged_jobs_are_one_listing_of_the_users_jobs_of_every_state(self):
        command = FluxSpawner.tagged_command()
        assert command[:4] == ["flux", "jobs", "-n", "-a"]
        assert "--format={id.f58}|{state}|{name}" in command
        assert any(arg.startswith("--count=") and int(arg.split("=")[1]) > 1000 for arg in command)

    def test_describe_uses_f58(self):
        assert FluxSpawner().describe("4369") == "flux job ƒ2JL"
        assert FluxSpawner().describe("f2JL") == "flux job ƒ2JL"


class TestFailures:
    def test_no_broker_message_has_a_hint(self):
        error = command_failure(["flux", "batch", "run_queue.sh"], 1, "",
                                "flux-batch: ERROR: Unable to connect to Flux: broker socket not found\n")
        assert "failed with exit code 1: flux-batch: ERROR: Unable to connect to Flux" in str(error)
        assert "flux start" in str(error)

    def test_other_failures_quote_flux(self):
        error = command_failure(["flux", "batch", "x"], 1, "", "flux-batch: ERROR: unknown queue: pdebug")
        assert str(error) == "'flux batch x' failed with exit code 1: flux-batch: ERROR: unknown queue: pdebug"

    def test_flux_missing_is_a_submission_error(self, no_flux_on_path):
        with pytest.raises(SubmissionError, match="'flux' was not found on PATH"):
            FluxSpawner().run(["flux", "jobs"])

    @pytest.mark.skipif(flux_bindings_available(), reason="flux's Python bindings import here")
    def test_pysqa_config_directory_needs_the_bindings(self, tmp_path):
        with pytest.raises(MissingDependencyError, match=r"executorlib\[flux\]") as info:
            FluxSpawner(pysqa_config_directory=tmp_path)
        assert "flux-core" in str(info.value) and "import flux.job" in str(info.value)
        assert isinstance(info.value, ImportError)


def _job(task_dir: Path, resources: dict) -> JobSpec:
    merged = merge_resources(None, resources)
    return JobSpec(key=task_dir.name, task_dir=task_dir, function_name="sum", resources=merged,
                   command=worker_command(task_dir, merged["cores"]), log_path=task_dir / "job.out")


def test_submit_writes_the_rendered_script_then_needs_flux(tmp_path, no_flux_on_path):
    spawner = FluxSpawner()
    job = _job(tmp_path / "sum_abc", {"cores": 2, "run_time_max": 60})
    with pytest.raises(SubmissionError, match="flux"):
        spawner.submit(job, ["ƒ2JL"])
    assert (job.task_dir / "run_queue.sh").read_text() == spawner.render(job, ["ƒ2JL"])


def test_executor_without_flux_fails_at_first_submit_without_hanging(tmp_path, no_flux_on_path):
    start = time.monotonic()
    with Executor(backend="flux_submission", cache_directory=tmp_path / "cache") as exe:
        first = exe.submit(sum, [1, 1])
        child = exe.submit(add_funct, first, 1)
        other = exe.submit(sum, [2, 2])
        error = first.exception(timeout=60)
        assert isinstance(error, SubmissionError)
        assert "flux" in str(error) and "not found on PATH" in str(error)
        assert isinstance(child.exception(timeout=60), (DependencyError, SubmissionError))
        assert isinstance(other.exception(timeout=60), SubmissionError)
    assert time.monotonic() - start < 60


def test_a_failed_submission_is_not_cached(tmp_path, no_flux_on_path):
    cache = tmp_path / "cache"
    with Executor(backend="flux_submission", cache_directory=cache) as exe:
        assert isinstance(exe.submit(sum, [1, 1]).exception(timeout=60), SubmissionError)
    for folder in cache.iterdir():
        assert not (folder / "result.h5").exists()
        record = folder / "job.json"
        assert not record.exists() or '"submitted"' not in record.read_text()
