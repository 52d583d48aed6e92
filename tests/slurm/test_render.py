"""The job script of every resource_dict key, rendered without submitting.

``SlurmSpawner.render`` is what pysqa writes as ``run_queue.sh``. These tests need pysqa and
jinja2 but no cluster, except the ``sbatch --test-only`` checks (marked ``slurm``), which let the
real sbatch validate the rendered options without starting a job.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from executorlib.errors import SubmissionError
from executorlib.resources import merge_resources
from executorlib.spawners.base import JobSpec, worker_command
from tests.slurm.conftest import skip_or_fail
from tests.slurm.slurm_tools import run


@pytest.fixture(scope="module")
def spawner():
    try:
        import jinja2  # noqa: F401
        import pysqa  # noqa: F401
    except ImportError as error:
        skip_or_fail(f"{error.name} is not installed (pip install 'executorlib[slurm]')")
    from executorlib.spawners.slurm import SlurmSpawner

    return SlurmSpawner()


def job_spec(tmp_path: Path, tag: str = "", function_name: str = "my_task", **resources) -> JobSpec:
    """A JobSpec as the scheduler builds it; partition 'debug' unless given (no sinfo call)."""
    resources.setdefault("partition", "debug")
    merged = merge_resources(None, resources)
    task_dir = tmp_path / "my_task_0123"
    return JobSpec(key="my_task_0123", task_dir=task_dir, function_name=function_name,
                   resources=merged, command=worker_command(task_dir, merged["cores"]),
                   log_path=task_dir / "job.out", tag=tag)


def directives(script: str) -> list[str]:
    return [line.split(None, 1)[1] for line in script.splitlines() if line.startswith("#SBATCH")]


def command_line(script: str) -> list[str]:
    """The worker's command line (the last line of the script) as argv."""
    return shlex.split(script.strip().splitlines()[-1])


def test_defaults(spawner, tmp_path):
    script = spawner.render(job_spec(tmp_path), [])
    assert script.startswith("#!/bin/bash\n")
    assert directives(script) == [
        '--job-name="my_task"',
        f"--chdir={tmp_path / 'my_task_0123'}",
        f"--output={tmp_path / 'my_task_0123' / 'job.out'}",
        "--partition=debug",
        "--ntasks=1",
        "--cpus-per-task=1",
    ]
    assert "export OMP_NUM_THREADS=1" in script
    argv = command_line(script)
    assert argv[1:] == ["-m", "executorlib.worker", str(tmp_path / "my_task_0123")]


@pytest.mark.parametrize("resources, expected", [
    ({"cores": 4}, ["--ntasks=4"]),
    ({"threads_per_core": 3}, ["--cpus-per-task=3"]),
    ({"gpus_per_core": 2}, ["--gpus-per-task=2"]),
    ({"run_time_max": 5}, ["--time=0:05"]),
    ({"run_time_max": 180}, ["--time=3:00"]),
    ({"run_time_max": 3725}, ["--time=62:05"]),
    ({"memory_max": 2}, ["--mem=2G"]),
    ({"memory_max": 0.5}, ["--mem=512M"]),
    ({"memory_max": "700M"}, ["--mem=700M"]),
    ({"partition": "long"}, ["--partition=long"]),
    ({"job_name": "relax_step"}, ['--job-name="relax_step"']),
    ({"job_name": "relax step 2"}, ['--job-name="relax step 2"']),
    ({"account": "proj42"}, ["--account=proj42"]),
    ({"qos": "high"}, ["--qos=high"]),
    ({"exclusive": True}, ["--exclusive"]),
    ({"num_nodes": 2}, ["--nodes=2"]),
])
def test_each_key_reaches_the_script(spawner, tmp_path, resources, expected):
    lines = directives(spawner.render(job_spec(tmp_path, **resources), []))
    for directive in expected:
        assert directive in lines, f"{resources} did not render {directive}: {lines}"


def test_defaults_omit_optional_directives(spawner, tmp_path):
    text = " ".join(directives(spawner.render(job_spec(tmp_path), [])))
    for option in ("--time", "--mem", "--account", "--qos", "--exclusive", "--nodes",
                   "--gpus-per-task", "--dependency"):
        assert option not in text


def test_threads_per_core_sets_omp_num_threads(spawner, tmp_path):
    script = spawner.render(job_spec(tmp_path, threads_per_core=3), [])
    assert "export OMP_NUM_THREADS=3" in script.splitlines()


def test_cores_run_the_worker_under_srun_with_pmi2(spawner, tmp_path):
    argv = command_line(spawner.render(job_spec(tmp_path, cores=2, threads_per_core=2), []))
    assert argv[:6] == ["srun", "-n", "2", "-c", "2", "--mpi=pmi2"]
    assert argv[7:] == ["-m", "executorlib.worker", "--mpi", str(tmp_path / "my_task_0123")]


def test_slurm_cmd_args_go_to_srun(spawner, tmp_path):
    argv = command_line(spawner.render(
        job_spec(tmp_path, cores=2, slurm_cmd_args=["--mpi=pmix", "--cpu-bind=cores"]), []))
    assert argv[:7] == ["srun", "-n", "2", "-c", "1", "--mpi=pmix", "--cpu-bind=cores"]
    assert "--mpi=pmi2" not in argv


def test_slurm_cmd_args_are_not_dropped_for_one_core(spawner, tmp_path):
    argv = command_line(spawner.render(job_spec(tmp_path, slurm_cmd_args=["--label"]), []))
    assert argv[:6] == ["srun", "-n", "1", "-c", "1", "--label"]
    assert "--mpi" not in " ".join(argv)  # no MPI launch for one core


def test_one_core_without_args_runs_the_worker_directly(spawner, tmp_path):
    argv = command_line(spawner.render(job_spec(tmp_path), []))
    assert "srun" not in argv


def test_cwd_is_left_to_the_worker(spawner, tmp_path):
    """cwd is where the function runs (the worker changes there); the job starts in its task folder."""
    spec = job_spec(tmp_path, cwd=str(tmp_path / "elsewhere"))
    assert spec.resources["cwd"] == str(tmp_path / "elsewhere")  # stored with the task for the worker
    assert f"--chdir={tmp_path / 'my_task_0123'}" in directives(spawner.render(spec, []))


def test_dependencies_become_afterok(spawner, tmp_path):
    lines = directives(spawner.render(job_spec(tmp_path), ["101", "102"]))
    assert "--dependency=afterok:101:102" in lines
    assert "--kill-on-invalid-dep=yes" in lines


def test_partition_given_is_used(spawner, tmp_path):
    spec = job_spec(tmp_path, partition="mine")
    assert "--partition=mine" in directives(spawner.render(spec, []))


USER_TEMPLATE = """\
#!/bin/bash
# name={{job_name}} wd={{working_directory}} partition={{partition}} time={{run_time_max}}
# deps={{dependency|join(',')}} mem={{memory_max}} cores={{cores}} flag={{my_flag}}
{{command}}
"""


def test_user_template_sees_every_variable_and_its_own_keys(spawner, tmp_path):
    spec = job_spec(tmp_path, submission_template=USER_TEMPLATE, my_flag="x", run_time_max=180,
                    memory_max=2, cores=2, job_name="mine")
    script = spawner.render(spec, ["7", "8"])
    lines = script.splitlines()
    assert lines[1] == (f"# name=mine wd={tmp_path / 'my_task_0123'} partition=debug time=180")
    assert lines[2] == "# deps=7,8 mem=2 cores=2 flag=x"
    assert "executorlib.worker" in lines[-1] and lines[-1].startswith("srun -n 2")


def test_extra_keys_need_a_submission_template():
    with pytest.raises(ValueError, match="my_flag"):
        merge_resources(None, {"my_flag": "x"})


def test_broken_user_template_is_a_submission_error(spawner, tmp_path):
    spec = job_spec(tmp_path, submission_template="#!/bin/bash\n{% if %}\n{{command}}\n")
    with pytest.raises(SubmissionError, match="cannot be rendered"):
        spawner.render(spec, [])


def test_submission_template_and_pysqa_config_directory_conflict(tmp_path):
    pytest.importorskip("pysqa")
    from executorlib.spawners.slurm import SlurmSpawner

    config = tmp_path / "pysqa"
    config.mkdir()
    (config / "queue.yaml").write_text(
        "queue_type: SLURM\nqueue_primary: main\nqueues:\n  main: {script: main.sh}\n")
    (config / "main.sh").write_text("#!/bin/bash\n{{command}}\n")
    spawner = SlurmSpawner(pysqa_config_directory=config)
    with pytest.raises(ValueError, match="pysqa_config_directory"):
        spawner.check_resources(merge_resources(None, {"submission_template": USER_TEMPLATE}))


def test_slurm_time_and_memory_units():
    from executorlib.spawners.slurm import slurm_memory, slurm_time

    assert [slurm_time(s) for s in (1, 59, 60, 61, 3600)] == ["0:01", "0:59", "1:00", "1:01", "60:00"]
    assert [slurm_memory(m) for m in (1, 1.5, 0.2, "4000M")] == ["1G", "1536M", "205M", "4000M"]
    assert slurm_memory(1e-6) == "1M"  # never --mem=0, which SLURM reads as the whole node


@pytest.mark.parametrize("resources, match", [
    ({"job_name": 'say "hi"'}, "job_name"),
    ({"job_name": "two\nlines"}, "job_name"),
    ({"partition": "debug\n#SBATCH --exclusive"}, "partition"),
    ({"memory_max": "lots"}, "memory_max"),
    ({"memory_max": "0"}, "memory_max"),
])
def test_values_that_cannot_be_written_to_the_script_are_refused(spawner, resources, match):
    with pytest.raises(ValueError, match=match):
        spawner.check_resources(merge_resources(None, resources))


def test_parse_squeue():
    from executorlib.spawners.slurm import parse_squeue

    states = parse_squeue("12|RUNNING|None\n13|PENDING|DependencyNeverSatisfied\n14|TIMEOUT|TimeLimit\n\n")
    assert states["12"].active and states["12"].running
    assert states["13"].active and not states["13"].running
    assert states["13"].reason == "DependencyNeverSatisfied"
    assert not states["14"].active and states["14"].state == "TIMEOUT"


# -- the claim's tag ends the job name (find_tagged finds a job whose id was never recorded) ------

def test_the_tag_ends_the_job_name(spawner, tmp_path):
    script = spawner.render(job_spec(tmp_path, tag="5f0c2a9e41d7"), [])
    assert directives(script)[0] == '--job-name="my_task-5f0c2a9e41d7"'
    script = spawner.render(job_spec(tmp_path, tag="5f0c2a9e41d7", job_name="mine"), [])
    assert directives(script)[0] == '--job-name="mine-5f0c2a9e41d7"'


def test_a_user_template_gets_the_tagged_job_name(spawner, tmp_path):
    template = "#!/bin/bash\n#SBATCH -J {{ job_name }}\n{{ command }}\n"
    script = spawner.render(job_spec(tmp_path, tag="ab12", submission_template=template), [])
    assert "#SBATCH -J my_task-ab12\n" in script


def test_a_long_name_is_cut_and_the_tag_kept(spawner, tmp_path):
    from executorlib.spawners.batch import tagged_job_name

    name = tagged_job_name("f" * 2000, "ab12", spawner.job_name_limit)
    assert len(name) == spawner.job_name_limit == 1024 and name.endswith("f-ab12")
    assert tagged_job_name("calc", "", 1024) == "calc"


@pytest.mark.parametrize("tag", ['a"b', "a b", "a|b", "x" * 65])
def test_a_tag_that_cannot_end_a_job_name_is_refused(spawner, tmp_path, tag):
    with pytest.raises(SubmissionError, match="cannot end a job name"):
        spawner.render(job_spec(tmp_path, tag=tag), [])


def test_match_tagged_reads_the_name_suffix_only():
    from executorlib.spawners.batch import match_tagged
    from executorlib.spawners.slurm import parse_tagged

    listing = parse_tagged("7|COMPLETED|calc-ab12\n8|RUNNING|calc-ab12\n9|PENDING|x|y-cd34\n"
                           "10|RUNNING|calcab12\n11|RUNNING|ab12-calc\n12|FAILED|ef56\n\n")
    assert listing[2] == ("9", True, "x|y-cd34") and listing[0][1] is False
    found = match_tagged(listing, ["ab12", "cd34", "ef56", "zz99", ""])
    assert found == {"ab12": "8", "cd34": "9", "ef56": "12"}  # an active job wins over an ended one


# -- the real sbatch validates the rendered options (no job starts: --test-only) ------------------

def sbatch_test_only(spawner, tmp_path, tag: str = "", function_name: str = "my_task", **resources) -> str:
    spec = job_spec(tmp_path, tag=tag, function_name=function_name, **resources)
    spec.task_dir.mkdir(parents=True, exist_ok=True)
    script = spec.task_dir / "run_queue.sh"
    script.write_text(spawner.render(spec, []))
    done = run(["sbatch", "--test-only", str(script)])
    return f"rc={done.returncode} {done.stdout}{done.stderr}"


@pytest.mark.slurm
def test_sbatch_accepts_the_rendered_options(spawner, tmp_path):
    answer = sbatch_test_only(spawner, tmp_path, cores=2, run_time_max=90, memory_max=0.5,
                              job_name="checked", account="any", qos="normal", num_nodes=1)
    assert answer.startswith("rc=0") and "using 2 processors" in answer, answer
    answer = sbatch_test_only(spawner, tmp_path, threads_per_core=2)
    assert answer.startswith("rc=0") and "using 2 processors" in answer, answer
    node_cpus = max(int(n) for n in run(["sinfo", "--noheader", "--format", "%c"]).stdout.split())
    answer = sbatch_test_only(spawner, tmp_path, exclusive=True)
    assert answer.startswith("rc=0"), answer
    assert re.search(r"using (\d+) processors", answer).group(1) == str(node_cpus), answer


@pytest.mark.slurm
def test_sbatch_accepts_the_tagged_and_cut_job_name(spawner, tmp_path):
    answer = sbatch_test_only(spawner, tmp_path, tag="5f0c2a9e41d7", function_name="g" * 2000)
    assert answer.startswith("rc=0"), answer


@pytest.mark.slurm
def test_sbatch_sees_gpus_per_core(spawner, tmp_path):
    """The test cluster has no GPUs: sbatch refuses, which shows the option reached it."""
    answer = sbatch_test_only(spawner, tmp_path, gpus_per_core=1)
    assert answer.startswith("rc=1") and "gres" in answer.lower(), answer


def test_a_missing_pysqa_names_the_extra_to_install(tmp_path, monkeypatch):
    import importlib.util

    from executorlib import Executor
    from executorlib.errors import MissingDependencyError

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pysqa" else real_find_spec(name, *a))
    with pytest.raises(MissingDependencyError, match=r"'pysqa'.*pip install 'executorlib\[submission\]'"):
        Executor(backend="slurm_submission", cache_directory=tmp_path / "cache")


def test_cached_calls_do_not_import_pysqa(tmp_path):
    """pysqa (and pandas with it) is imported at the first submission only."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import operator, sys
        from executorlib import Executor
        from executorlib.resources import merge_resources
        from executorlib.store import TaskStore
        from executorlib.task import compute_key
        store = TaskStore({str(tmp_path / 'cache')!r})  # add(1, 2) as a finished job leaves it
        key = compute_key(operator.add, (1, 2), {{}}, name="add")
        store.write_task(key, "add", store.pickle_call(operator.add, (1, 2), {{}}), merge_resources({{}}, None), [])
        store.write_result(key, 3, runtime=0.0)
        with Executor(backend="slurm_submission", cache_directory=store.directory) as exe:
            assert exe.submit(operator.add, 1, 2).result() == 3
        print("pysqa" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
