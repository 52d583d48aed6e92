"""resource_dict keys as a running job sees them, and a pysqa configuration directory."""

from __future__ import annotations

import pytest

from executorlib import Executor
from executorlib.errors import SubmissionError
from tests.slurm import funcs
from tests.slurm.slurm_tools import job_record, run, scontrol_job, wait_job_id


pytestmark = pytest.mark.slurm


def default_partition() -> str:
    names = run(["sinfo", "--noheader", "--format", "%P"]).stdout.split()
    return next(name.rstrip("*") for name in names if name.endswith("*"))


def test_job_sees_cwd_threads_job_name_partition_and_srun_args(slurm_cache, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    partition = default_partition()
    resources = {"cwd": str(workdir), "threads_per_core": 2, "job_name": "xl env check",
                 "partition": partition, "slurm_cmd_args": ["--label"]}
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache)) as exe:
        future = exe.submit(funcs.job_environment, resource_dict=resources)
        env = future.result(timeout=180)
    assert env["cwd"] == str(workdir)
    assert env["OMP_NUM_THREADS"] == "2" and env["SLURM_CPUS_PER_TASK"] == "2"
    # the claim's tag ends the name, so that a later process finds a job whose id was never recorded
    tag = job_record(slurm_cache, future)["tag"]
    assert env["SLURM_JOB_NAME"] == f"xl env check-{tag}" and env["SLURM_JOB_PARTITION"] == partition
    assert env["SLURM_JOB_ID"] == wait_job_id(slurm_cache, future)
    output = (slurm_cache / future._executorlib_key / "job.out").read_text()
    assert "0: environment checked" in output  # srun --label prefixed the task's output


QUEUE_YAML = """\
queue_type: SLURM
queue_primary: express
queues:
  express: {cores_min: 1, cores_max: 4, run_time_max: 600, script: express.sh}
"""

QUEUE_TEMPLATE = """\
#!/bin/bash
#SBATCH --output=pysqa.out
#SBATCH --job-name={{job_name}}
#SBATCH --chdir={{working_directory}}
#SBATCH --ntasks={{cores}}
{%- if run_time_max %}
#SBATCH --time={{ [1, run_time_max // 60]|max }}
{%- endif %}
{%- if dependency_list %}
#SBATCH --dependency=afterok:{{ dependency_list | join(':') }}
{%- endif %}
# the express queue of test_pysqa_config_directory
{{command}}
"""


def test_pysqa_config_directory(slurm_cache, tmp_path):
    """A queue.yaml whose queue name is not a SLURM partition: the template decides everything."""
    config = tmp_path / "pysqa_config"
    config.mkdir()
    (config / "queue.yaml").write_text(QUEUE_YAML)
    (config / "express.sh").write_text(QUEUE_TEMPLATE)
    with Executor(backend="slurm_submission", cache_directory=str(slurm_cache),
                  pysqa_config_directory=str(config)) as exe:
        first = exe.submit(funcs.sleep_add, 1, 2, 2, resource_dict={"run_time_max": 120})
        second = exe.submit(funcs.add_funct, 10, first)
        second_id = wait_job_id(slurm_cache, second)
        assert scontrol_job(second_id)["Dependency"].startswith(f"afterok:{wait_job_id(slurm_cache, first)}")
        assert second.result(timeout=180) == 13
        wrong = exe.submit(sum, [1, 1], resource_dict={"partition": "not_a_queue"})
        with pytest.raises(SubmissionError, match="not_a_queue.*express"):
            wrong.result(timeout=60)
    for future in (first, second):
        task_dir = slurm_cache / future._executorlib_key
        assert "# the express queue of test_pysqa_config_directory" in (task_dir / "run_queue.sh").read_text()
        assert (task_dir / "pysqa.out").exists()
    assert "#SBATCH --time=2\n" in (slurm_cache / first._executorlib_key / "run_queue.sh").read_text()
