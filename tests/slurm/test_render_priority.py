"""resource_dict['priority'] in the SLURM job script (#SBATCH --nice) and the flux one
(--urgency): rendered only, no cluster needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from executorlib.resources import merge_resources
from executorlib.spawners.base import JobSpec, worker_command

pytest.importorskip("pysqa")
pytest.importorskip("jinja2")

TASK_DIR = Path("/shared/cache/calc_0123")


def job_spec(**resources) -> JobSpec:
    resources.setdefault("partition", "debug")  # no sinfo call
    merged = merge_resources(None, resources)
    return JobSpec(key=TASK_DIR.name, task_dir=TASK_DIR, function_name="calc", resources=merged,
                   command=worker_command(TASK_DIR, merged["cores"]), log_path=TASK_DIR / "job.out")


def sbatch_lines(script: str) -> list[str]:
    return [line.split(None, 1)[1] for line in script.splitlines() if line.startswith("#SBATCH")]


def flux_lines(script: str) -> list[str]:
    return [line[len("# flux:"):].strip() for line in script.splitlines() if line.startswith("# flux:")]


@pytest.mark.parametrize("priority", [0, 5, -3, 1000])
def test_slurm_priority_is_nice(priority):
    from executorlib.spawners.slurm import SlurmSpawner

    assert f"--nice={priority}" in sbatch_lines(SlurmSpawner().render(job_spec(priority=priority), []))


def test_slurm_without_priority_has_no_nice():
    from executorlib.spawners.slurm import SlurmSpawner

    assert not any("--nice" in line for line in sbatch_lines(SlurmSpawner().render(job_spec(), [])))


@pytest.mark.parametrize("priority", [0, 16, 31])
def test_flux_priority_is_urgency(priority):
    from executorlib.spawners.flux import FluxSpawner

    spawner = FluxSpawner()
    spawner.check_resources(merge_resources(None, {"priority": priority}))
    assert f"--urgency={priority}" in flux_lines(spawner.render(job_spec(priority=priority), []))
    assert not any("--urgency" in line for line in flux_lines(spawner.render(job_spec(), [])))


@pytest.mark.parametrize("priority", [-1, 32])
def test_flux_priority_outside_the_urgency_range_is_refused(priority):
    from executorlib.spawners.flux import FluxSpawner

    with pytest.raises(ValueError, match="0 to 31"):
        FluxSpawner().check_resources(merge_resources(None, {"priority": priority}))


@pytest.mark.parametrize("module", ["executorlib.spawners.srun", "executorlib.spawners.flux_allocation"])
def test_the_allocation_backends_refuse_priority(module):
    """A job step / flux run inside an allocation has no priority of its own: an error, not ignored."""
    import importlib

    from executorlib.resources import reject_unhonoured

    spawners = importlib.import_module(module)
    with pytest.raises(ValueError, match=r"priority.*slurm_submission"):
        reject_unhonoured(merge_resources(None, {"priority": 1}), "allocation", spawners.HONOURED,
                          spawners.HONOURED_ELSEWHERE)
