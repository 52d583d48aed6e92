"""``max_jobs`` on flux, to the command boundary (no flux broker runs here): the worker job's
script, its id spelling, and the calls' MPI launcher. The same worker protocol runs for real in
tests/core/test_max_jobs.py (local processes) and tests/slurm/test_max_jobs.py (SLURM)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from executorlib import packed_queue as pq
from executorlib.resources import merge_resources
from executorlib.spawners.base import worker_command

pytest.importorskip("pysqa")
pytest.importorskip("jinja2")

from executorlib.spawners.flux import FluxSpawner  # noqa: E402
from executorlib.spawners.packed import PackedSpawner  # noqa: E402
from executorlib.spawners.slurm import SlurmSpawner  # noqa: E402


def _queue_one(spawner: PackedSpawner, cache: Path, resources: dict) -> None:
    """Queue a call as submit() does, without starting a worker (no scheduler here)."""
    merged = merge_resources(None, resources)
    shape = pq.shape_of(merged)
    task_dir = cache / "calc_0123"
    task_dir.mkdir(parents=True, exist_ok=True)
    command = spawner.inner.launch_command(merged, worker_command(task_dir, merged["cores"]))
    pq.enqueue(cache, shape, task_dir.name, "n1", task_dir, [], merged["run_time_max"], command, merged["cores"] == 1)
    spawner._shapes[shape] = {k: v for k, v in merged.items() if k in pq.SHAPE_KEYS}
    return shape


def _worker_script(inner, tmp_path: Path, resources: dict) -> tuple[str, list]:
    spawner = PackedSpawner(inner, 2, tmp_path)
    shape = _queue_one(spawner, tmp_path, resources)
    entries = list(pq.queued(tmp_path, shape))
    spec = spawner.worker_spec(shape, entries)
    return inner.render(spec, []), entries


def _command_line(script: str) -> list[str]:
    lines = [line for line in script.splitlines() if "executorlib.packed_worker" in line]
    assert len(lines) == 1, script
    return shlex.split(lines[0])


def test_flux_worker_job_runs_the_worker_itself_and_names_itself_by_flux_job_id(tmp_path):
    script, entries = _worker_script(FluxSpawner(), tmp_path, {"cores": 2, "run_time_max": 60})
    command = _command_line(script)
    assert command[:3] == [sys.executable, "-m", "executorlib.packed_worker"]  # no `flux run` around it
    assert command[command.index("--worker-id-env") + 1] == "FLUX_JOB_ID"
    assert "# flux: --nslots=2" in script  # the job holds the cores of its calls' shape
    # each MPI call is launched inside the job, as a flux run of its own
    assert entries[0].command[:3] == ["flux", "run", "-n"] and not entries[0].fork
    # the worker's walltime: the call's 60 s + idle time + margin, as a flux time limit in seconds
    idle = int(PackedSpawner(FluxSpawner(), 1, tmp_path).idle)
    assert f"# flux: --time-limit={60 + 60 + idle}s" in script
    assert command[command.index("--walltime") + 1] == str(60 + 60 + idle)


def test_flux_ids_have_one_spelling():
    assert FluxSpawner.canonical_job_id("ƒ2JL") == FluxSpawner.canonical_job_id("4369") == "4369"


def test_slurm_worker_job_script(tmp_path):
    script, entries = _worker_script(SlurmSpawner(), tmp_path, {"threads_per_core": 2})
    command = _command_line(script)
    assert command[command.index("--worker-id-env") + 1] == "SLURM_JOB_ID"
    assert "#SBATCH --cpus-per-task=2" in script
    assert "#SBATCH --time" not in script  # a call without run_time_max: the partition's limit
    assert "export OMP_NUM_THREADS=2" in script
    assert entries[0].fork  # one core, no launcher: the worker forks the call


def test_sinfo_time_limits_are_read():
    from executorlib.spawners.slurm import parse_slurm_duration

    assert parse_slurm_duration("infinite") is None and parse_slurm_duration("UNLIMITED") is None
    assert parse_slurm_duration("30") == 1800  # minutes
    assert parse_slurm_duration("30:00") == 1800
    assert parse_slurm_duration("2:00:00") == 7200
    assert parse_slurm_duration("1-00:30") == 86400 + 1800  # days-hours:minutes
    assert parse_slurm_duration("1-12:00:00") == 129600
    assert parse_slurm_duration("soon") is None


def test_a_worker_never_asks_for_more_than_its_partition_allows(tmp_path):
    inner = SlurmSpawner()
    inner.partition_time_limit = lambda partition: 600  # sinfo: MaxTime 10 minutes
    script, _ = _worker_script(inner, tmp_path, {"run_time_max": 400})
    spawner = PackedSpawner(inner, 2, tmp_path)
    for i in range(2):  # two more calls of the same shape: the sum would be 1,200 s and more
        _queue_one(spawner, tmp_path, {"run_time_max": 400})
    shape = next(iter(spawner._shapes))
    spec = spawner.worker_spec(shape, list(pq.queued(tmp_path, shape)))
    assert spec.resources["run_time_max"] == 600
    assert "#SBATCH --time=10" in inner.render(spec, [])
