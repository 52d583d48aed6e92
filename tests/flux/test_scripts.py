"""The job script ``flux batch`` receives, for each resource combination.

Directives follow RFC 36 as flux-batch(1) documents it: ``# flux:`` lines grouped right after the
shebang, shell quoting inside a directive. Times are given in seconds with the ``s`` unit because
``--time-limit`` without a unit means minutes.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from executorlib.resources import merge_resources
from executorlib.spawners.base import JobSpec, worker_command

pytest.importorskip("pysqa")
pytest.importorskip("jinja2")

from executorlib.spawners.flux import FluxSpawner  # noqa: E402

TASK_DIR = Path("/shared/cache/calc_0123456789abcdef")


@pytest.fixture(scope="module")
def spawner() -> FluxSpawner:
    return FluxSpawner()


def job_spec(resources: dict | None = None, name: str = "calc") -> JobSpec:
    merged = merge_resources(None, resources)
    return JobSpec(key=TASK_DIR.name, task_dir=TASK_DIR, function_name=name, resources=merged,
                   command=worker_command(TASK_DIR, merged["cores"]), log_path=TASK_DIR / "job.out")


def render(spawner: FluxSpawner, resources: dict | None = None, dependencies=()) -> str:
    return spawner.render(job_spec(resources), list(dependencies))


def directives(script: str) -> list[str]:
    """The arguments of the ``# flux:`` lines, split as flux splits them (shell quoting)."""
    args = []
    for line in script.splitlines():
        if line.startswith("# flux:"):
            args += shlex.split(line[len("# flux:"):])
    return args


def body(script: str) -> list[str]:
    return [line for line in script.splitlines() if line and not line.startswith("#")]


PYTHON = sys.executable


def test_default_script_exactly(spawner):
    assert render(spawner) == (
        "#!/bin/bash\n"
        "# flux: --job-name=calc\n"
        f"# flux: --cwd={TASK_DIR}\n"
        f"# flux: --output={TASK_DIR}/job.out\n"
        "# flux: --nslots=1\n"
        "# flux: --cores-per-slot=1\n"
        "\n"
        "export OMP_NUM_THREADS=1\n"
        f"{PYTHON} -m executorlib.worker {TASK_DIR}"
    )


def test_mpi_cores_are_slots_and_flux_run_launches_them(spawner):
    script = render(spawner, {"cores": 4, "threads_per_core": 2})
    assert "--nslots=4" in directives(script)
    assert "--cores-per-slot=2" in directives(script)
    assert body(script) == [
        "export OMP_NUM_THREADS=2",
        f"flux run -n 4 -c 2 {PYTHON} -m executorlib.worker --mpi {TASK_DIR}",
    ]


def test_threads_for_one_core_need_no_launcher(spawner):
    script = render(spawner, {"threads_per_core": 3})
    assert "--cores-per-slot=3" in directives(script)
    assert body(script) == ["export OMP_NUM_THREADS=3", f"{PYTHON} -m executorlib.worker {TASK_DIR}"]


def test_gpus_per_core_are_gpus_per_slot(spawner):
    one = render(spawner, {"gpus_per_core": 1})
    assert "--gpus-per-slot=1" in directives(one)
    assert body(one)[-1] == f"{PYTHON} -m executorlib.worker {TASK_DIR}"
    two = render(spawner, {"cores": 2, "gpus_per_core": 2})
    assert "--gpus-per-slot=2" in directives(two)
    assert body(two)[-1] == f"flux run -n 2 -c 1 -g 2 {PYTHON} -m executorlib.worker --mpi {TASK_DIR}"


def test_no_gpu_line_without_gpus(spawner):
    assert not any(arg.startswith("--gpus") for arg in directives(render(spawner)))


def test_run_time_max_is_in_seconds(spawner):
    assert "--time-limit=90s" in directives(render(spawner, {"run_time_max": 90}))
    assert not any(a.startswith("--time-limit") for a in directives(render(spawner)))


def test_partition_is_the_queue_and_account_the_bank(spawner):
    args = directives(render(spawner, {"partition": "pdebug", "account": "my bank"}))
    assert "--queue=pdebug" in args
    assert "--bank=my bank" in args  # quoted in the script, one argument for flux


def test_nodes_and_exclusive(spawner):
    script = render(spawner, {"cores": 4, "num_nodes": 2, "exclusive": True})
    args = directives(script)
    assert "--nodes=2" in args and "--exclusive" in args
    assert body(script)[-1] == f"flux run -n 4 -c 1 -N 2 {PYTHON} -m executorlib.worker --mpi {TASK_DIR}"
    assert "--exclusive" not in directives(render(spawner, {"num_nodes": 1}))


def test_one_afterok_per_parent_in_decimal(spawner):
    script = render(spawner, dependencies=["ƒ2JL", "f7YXq9G", "1234"])
    assert [a for a in directives(script) if a.startswith("--dependency")] == [
        "--dependency=afterok:4369",
        "--dependency=afterok:4294967295",
        "--dependency=afterok:1234",
    ]
    assert script.isascii()


def test_no_dependency_line_without_parents(spawner):
    assert "--dependency" not in render(spawner)


def test_job_name_is_quoted_for_the_directive(spawner):
    args = directives(render(spawner, {"job_name": "my job #2"}))
    assert "--job-name=my job #2" in args


def test_the_claims_tag_ends_the_job_name(spawner):
    """find_tagged finds a job whose id was never recorded by the end of its name."""
    merged = merge_resources(None, {"job_name": "my job #2"})
    spec = JobSpec(key=TASK_DIR.name, task_dir=TASK_DIR, function_name="calc", resources=merged,
                   command=worker_command(TASK_DIR, 1), log_path=TASK_DIR / "job.out", tag="9e41d7")
    assert "--job-name=my job #2-9e41d7" in directives(spawner.render(spec, []))
    spec = JobSpec(key=TASK_DIR.name, task_dir=TASK_DIR, function_name="calc",
                   resources=merge_resources(None, None), command=worker_command(TASK_DIR, 1), tag="9e41d7")
    assert "--job-name=calc-9e41d7" in directives(spawner.render(spec, []))


def test_directives_are_one_block_after_the_shebang(spawner):
    """RFC 36: a directive after any other non-blank line is an error."""
    script = render(spawner, {"cores": 2, "threads_per_core": 2, "gpus_per_core": 1, "run_time_max": 60,
                              "partition": "q", "account": "a", "num_nodes": 1, "exclusive": True},
                    dependencies=["ƒ2", "ƒ3"])
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    flux_lines = [i for i, line in enumerate(lines) if line.startswith("# flux:")]
    assert flux_lines == list(range(1, len(flux_lines) + 1))
    assert len(flux_lines) == 13  # every option of the built-in template


def test_memory_max_and_qos_are_not_flux_options(spawner):
    """flux has no per-job memory limit or QOS: the built-in script leaves them out."""
    script = render(spawner, {"memory_max": 4, "qos": "high", "slurm_cmd_args": ["--mpi=pmix"]})
    assert script == render(spawner)


def test_user_submission_template_with_its_own_key(spawner):
    template = (
        "#!/bin/bash\n"
        "# flux: --job-name={{ job_name }}\n"
        "# flux: -N {{ num_nodes or 1 }} --nslots={{ cores }}\n"
        "{%- for id in dependency %}\n# flux: --dependency=afterok:{{ id }}{% endfor %}\n"
        "# flux: --setattr=user.project={{ project_code }}\n"
        "{%- if memory_max %}\n# mem={{ memory_max }}{% endif %}\n"
        "module load {{ module_name }}\n"
        "{{ command }}\n"
    )
    script = render(spawner, {"submission_template": template, "project_code": "abc123",
                              "module_name": "mpich", "cores": 2, "memory_max": 8},
                    dependencies=["ƒ2JL"])
    assert script == (
        "#!/bin/bash\n"
        "# flux: --job-name=calc\n"
        "# flux: -N 1 --nslots=2\n"
        "# flux: --dependency=afterok:4369\n"
        "# flux: --setattr=user.project=abc123\n"
        "# mem=8\n"
        "module load mpich\n"
        "export OMP_NUM_THREADS=1\n"
        f"flux run -n 2 -c 1 {PYTHON} -m executorlib.worker --mpi {TASK_DIR}"
    )


def test_broken_user_template_is_a_submission_error(spawner):
    from executorlib.errors import SubmissionError

    with pytest.raises(SubmissionError, match="cannot be rendered"):
        render(spawner, {"submission_template": "{% if %}"})


class TestCheckResources:
    def test_exclusive_needs_nodes(self, spawner):
        with pytest.raises(ValueError, match="num_nodes"):
            spawner.check_resources(merge_resources(None, {"exclusive": True}))

    def test_more_nodes_than_cores(self, spawner):
        with pytest.raises(ValueError, match=r"num_nodes'\] = 3 is more than cores = 2"):
            spawner.check_resources(merge_resources(None, {"num_nodes": 3, "cores": 2}))

    def test_valid_combinations_pass(self, spawner):
        spawner.check_resources(merge_resources(None, {"exclusive": True, "num_nodes": 2, "cores": 2}))
        spawner.check_resources(merge_resources(None, {"cores": 8, "num_nodes": 2}))

    def test_a_user_template_decides_itself(self, spawner):
        spawner.check_resources(merge_resources(None, {"exclusive": True, "submission_template": "{{ command }}"}))

    def test_executor_submit_raises_at_once(self, tmp_path):
        from executorlib import Executor

        with Executor(backend="flux_submission", cache_directory=tmp_path / "cache") as exe:
            with pytest.raises(ValueError, match="num_nodes"):
                exe.submit(sum, [1, 1], resource_dict={"exclusive": True})
