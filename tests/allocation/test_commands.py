"""The allocation mode's command lines, allocation parsing and errors (no SLURM, no flux needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from executorlib import Executor
from executorlib.resources import merge_resources
from executorlib.spawners.base import JobSpec
from executorlib.spawners.flux_allocation import (check_flux_resources, flux_instance, flux_job_state,
                                                  flux_run_command, parse_resource_list)
from executorlib.spawners.srun import (Allocation, SrunSpawner, check_step_resources,
                                       current_allocation, parse_cpus_per_node, srun_command,
                                       step_environment, step_state)

TWO_CPUS = Allocation(job_id="42", cpus=2, nodes=1, ntasks=2, source="SLURM_JOB_CPUS_PER_NODE=2", gpus=None)


def resources(**given) -> dict:
    return merge_resources(given, None)


# -- srun ------------------------------------------------------------------------------------------
def test_a_serial_step() -> None:
    assert srun_command(resources()) == ["srun", "--exact", "-n", "1", "--cpus-per-task", "1"]


def test_every_resource_key_on_the_srun_line() -> None:
    command = srun_command(resources(cores=2, threads_per_core=3, gpus_per_core=1, run_time_max=61,
                                     memory_max=2, job_name="fit", cwd="/scratch/run",
                                     num_nodes=1, slurm_cmd_args=["--cpu-bind=cores"]))
    assert command == ["srun", "--exact", "-n", "2", "--cpus-per-task", "3", "--gpus-per-task", "1",
                       "-N", "1", "--time", "2", "--mem", "2G", "--job-name", "fit",
                       "--chdir", "/scratch/run", "--mpi=pmi2", "--cpu-bind=cores"]


def test_run_time_max_is_rounded_up_to_minutes() -> None:
    assert srun_command(resources(run_time_max=60))[-2:] == ["--time", "1"]
    assert srun_command(resources(run_time_max=1))[-2:] == ["--time", "1"]
    assert srun_command(resources(run_time_max=121))[-2:] == ["--time", "3"]


def test_pmi_mode() -> None:
    assert "--mpi=pmix" in srun_command(resources(cores=2), pmi_mode="pmix")
    assert not any(a.startswith("--mpi") for a in srun_command(resources(cores=2), pmi_mode=None))
    assert not any(a.startswith("--mpi") for a in srun_command(resources(cores=1)))
    # slurm_cmd_args choosing the flavour wins over the default
    command = srun_command(resources(cores=2, slurm_cmd_args=["--mpi=pmix_v4"]))
    assert [a for a in command if a.startswith("--mpi")] == ["--mpi=pmix_v4"]


def test_pool_workers_take_stdin_on_rank_0_only() -> None:
    assert srun_command(resources(cores=2), keep_stdin=True)[-1] == "--input=0"


def test_the_step_command_ends_with_the_worker(tmp_path: Path) -> None:
    spawner = SrunSpawner(allocation=TWO_CPUS)
    job = JobSpec(key="k", task_dir=tmp_path, function_name="f", resources=resources(cores=2),
                  command=["python", "-m", "executorlib.worker", "--mpi", str(tmp_path)])
    assert spawner.command(job) == ["srun", "--exact", "-n", "2", "--cpus-per-task", "1", "--mpi=pmi2",
                                    "python", "-m", "executorlib.worker", "--mpi", str(tmp_path)]
    assert spawner.max_cores == 2  # from the allocation


def test_steps_do_not_inherit_the_batch_scripts_memory(monkeypatch) -> None:
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "20000")
    assert "SLURM_MEM_PER_NODE" not in step_environment(resources())
    assert step_environment(resources(threads_per_core=2))["OMP_NUM_THREADS"] == "2"


def test_capacity_counts_cpus() -> None:
    spawner = SrunSpawner(allocation=TWO_CPUS)
    assert spawner.has_capacity(resources(cores=2))
    assert spawner.has_capacity(resources(threads_per_core=2))


# -- the allocation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value, counts", [("2", [2]), ("4(x3),2", [4, 4, 4, 2]), ("36(x2)", [36, 36])])
def test_cpus_per_node(value: str, counts: list[int]) -> None:
    assert parse_cpus_per_node(value) == counts


def test_allocation_from_the_environment() -> None:
    allocation = current_allocation({"SLURM_JOB_ID": "7", "SLURM_JOB_CPUS_PER_NODE": "4(x2)",
                                     "SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS": "8"})
    assert (allocation.job_id, allocation.cpus, allocation.nodes, allocation.ntasks) == ("7", 8, 2, 8)
    assert current_allocation({"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "3"}).cpus == 3
    assert current_allocation({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "5"}).cpus == 5


def test_outside_an_allocation_says_how_to_get_one(monkeypatch) -> None:
    with pytest.raises(ValueError, match=r"SLURM_JOB_ID is not set.*salloc -n 4 python script.py.*sbatch"):
        current_allocation({})
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_JOBID", raising=False)
    for block in (False, True):
        with pytest.raises(ValueError, match="salloc -n 4 python script.py"):
            Executor(backend="slurm_allocation", block_allocation=block)


def test_a_request_larger_than_the_allocation() -> None:
    with pytest.raises(ValueError, match=r"3 CPU\(s\), more than the SLURM allocation 42 \(2 CPU\(s\)"):
        check_step_resources(resources(cores=3), TWO_CPUS)
    with pytest.raises(ValueError, match=r"4 CPU\(s\), more than the SLURM allocation 42"):
        check_step_resources(resources(cores=2, threads_per_core=2), TWO_CPUS)
    with pytest.raises(ValueError, match="num_nodes.*at most 1 node"):
        check_step_resources(resources(num_nodes=2), TWO_CPUS)
    with pytest.raises(ValueError, match="holds no GPUs"):
        check_step_resources(resources(gpus_per_core=1), TWO_CPUS)


@pytest.mark.parametrize("key, value, named", [
    ("partition", "debug", "slurm_submission"), ("account", "a", "slurm_submission"),
    ("qos", "high", "slurm_submission"), ("exclusive", True, "srun --exact"),
    ("openmpi_oversubscribe", True, "backend='local'"),
])
def test_keys_a_step_cannot_honour_are_errors(key: str, value, named: str) -> None:
    with pytest.raises(ValueError, match=rf"resource_dict\['{key}'\].*slurm_allocation.*{named}"):
        check_step_resources(resources(**{key: value}), TWO_CPUS)


def test_pmi_mode_must_be_a_name() -> None:
    with pytest.raises(ValueError, match="pmi_mode"):
        SrunSpawner(allocation=TWO_CPUS, pmi_mode="pmi2 --oops")


# -- what SLURM prints when it ends a step -------------------------------------------------------------
def test_step_states_from_slurms_messages() -> None:
    cancelled = ("srun: Job step aborted: Waiting up to 7 seconds for job step to finish.\n"
                 "slurmstepd-vm: error: *** STEP 179.4 ON vm CANCELLED AT 2026-12-02T19:19:35 ***\n"
                 "srun: error: vm: task 0: Killed\n")
    assert step_state(cancelled, 137) == "CANCELLED (step 179.4, srun exit code 137)"
    timeout = "slurmstepd: error: *** STEP 5.1 ON vm CANCELLED AT 2026-12-02T10:00:00 DUE TO TIME LIMIT ***"
    assert step_state(timeout, 137).startswith("TIMEOUT (step 5.1")
    oom = "slurmstepd: error: Detected 1 oom-kill event(s) in StepId=5.2. Some of your processes may have been killed"
    assert step_state(oom, 137).startswith("OUT_OF_MEMORY")
    killed_for_memory = ("slurmstepd-vm: error: *** STEP 348.0 ON vm CANCELLED AT 2026-12-02T19:57:34 ***\n"
                         "slurmstepd-vm: error: StepId=348.0 exceeded memory limit (673734656 > 209715200), "
                         "being killed\nsrun: error: vm: task 0: Killed\n")
    assert step_state(killed_for_memory, 137) == "OUT_OF_MEMORY (step 348.0, srun exit code 137)"
    assert step_state("Traceback ...", 1) == "FAILED (exit code 1)"


# -- flux ------------------------------------------------------------------------------------------------
FLUX = Allocation(job_id="local:///run/flux/local", cpus=4, nodes=1, ntasks=None,
                  source="flux resource list", gpus=None, kind="flux instance")


def test_flux_run_command() -> None:
    assert flux_run_command(resources()) == ["flux", "run", "-n", "1", "-c", "1"]
    command = flux_run_command(resources(cores=2, threads_per_core=2, gpus_per_core=1, run_time_max=90,
                                         job_name="fit", cwd="/w", exclusive=True, num_nodes=1),
                               pmi_mode="pmix", keep_stdin=True)
    assert command == ["flux", "run", "-n", "2", "-c", "2", "-g", "1", "-N", "1", "--exclusive",
                       "-t", "90s", "--job-name=fit", "--cwd=/w", "-o", "pmi=pmix", "--input=0"]


def test_flux_instance_size() -> None:
    instance = flux_instance({"FLUX_URI": "local:///tmp/f"}, run=lambda command: "1 4 0\n")
    assert (instance.cpus, instance.nodes, instance.gpus) == (4, 1, None)
    assert parse_resource_list("2 96 8", "u").gpus == "8"
    with pytest.raises(ValueError, match="cannot read the size"):
        parse_resource_list("flux-resource: error", "u")


def test_outside_a_flux_instance(monkeypatch) -> None:
    with pytest.raises(ValueError, match=r"FLUX_URI is not set.*flux alloc -n 4 python script.py"):
        flux_instance({})
    monkeypatch.delenv("FLUX_URI", raising=False)
    with pytest.raises(ValueError, match="flux alloc -n 4"):
        Executor(backend="flux_allocation")


def test_flux_resource_errors() -> None:
    with pytest.raises(ValueError, match=r"more than the flux instance .*4 core\(s\)"):
        check_flux_resources(resources(cores=5), FLUX)
    with pytest.raises(ValueError, match=r"memory_max.*slurm_allocation"):
        check_flux_resources(resources(memory_max=1), FLUX)
    with pytest.raises(ValueError, match=r"slurm_cmd_args"):
        check_flux_resources(resources(slurm_cmd_args=["--mpi=pmi2"]), FLUX)
    with pytest.raises(ValueError, match="GPU"):
        check_flux_resources(resources(gpus_per_core=1), FLUX)


def test_flux_job_states() -> None:
    assert flux_job_state("flux-job: job.exception type=cancel severity=0 Canceled by user", 143).startswith("CANCELLED")
    assert flux_job_state("job.exception type=timeout severity=0 resource allocation expired", 142).startswith("TIMEOUT")
    assert flux_job_state("", 2) == "FAILED (exit code 2)"


@pytest.mark.flux
@pytest.mark.skipif(shutil.which("flux") is None,
                    reason="flux-core is not installed here (not installable on this machine); "
                           "run inside 'flux start' where it is")
def test_flux_allocation_in_a_broker(tmp_path: Path) -> None:
    import os

    from tests.allocation import funcs

    if not os.environ.get("FLUX_URI"):
        pytest.skip("flux is installed but this process is not inside a flux instance (flux start ...)")
    with Executor(backend="flux_allocation") as exe:
        assert exe.submit(funcs.add, 1, 2).result(timeout=120) == 3


def test_inside_a_step_the_task_steps_overlap(tmp_path: Path) -> None:
    """``srun python script.py``: the script's own step holds CPUs; the tasks share them."""
    allocation = current_allocation({"SLURM_JOB_ID": "7", "SLURM_JOB_CPUS_PER_NODE": "2", "SLURM_STEP_ID": "0"})
    assert allocation.step == "0"
    job = JobSpec(key="k", task_dir=tmp_path, function_name="f", resources=resources(), command=["w"])
    assert "--overlap" in SrunSpawner(allocation=allocation).command(job)
    assert "--overlap" not in SrunSpawner(allocation=TWO_CPUS).command(job)


def test_dead_worker_states_name_the_launcher() -> None:
    from executorlib.spawners.flux_allocation import FluxPoolSpawner
    from executorlib.spawners.srun import SrunPoolSpawner

    assert "srun step was killed" in SrunPoolSpawner._state_of(137)
    assert "flux job was killed" in FluxPoolSpawner._state_of(137)
    assert SrunPoolSpawner._state_of(3) == "FAILED (exit code 3)"


def test_flux_task_command_ends_with_the_worker(tmp_path: Path) -> None:
    from executorlib.spawners.flux_allocation import FluxAllocationSpawner

    spawner = FluxAllocationSpawner(allocation=FLUX)
    job = JobSpec(key="k", task_dir=tmp_path, function_name="f", resources=resources(cores=2),
                  command=["python", "-m", "executorlib.worker", "--mpi", str(tmp_path)])
    assert spawner.command(job) == ["flux", "run", "-n", "2", "-c", "1",
                                    "python", "-m", "executorlib.worker", "--mpi", str(tmp_path)]
    assert spawner.max_cores == 4
    with pytest.raises(ValueError, match="more than the flux instance"):
        spawner.check_resources(resources(cores=8))


def test_max_cores_beyond_the_allocation_is_an_error() -> None:
    assert SrunSpawner(allocation=TWO_CPUS, max_cores=1).max_cores == 1
    with pytest.raises(ValueError, match=r"max_cores = 8 exceeds the SLURM allocation 42 \(2 CPU"):
        SrunSpawner(allocation=TWO_CPUS, max_cores=8)


def test_flux_max_cores_beyond_the_instance() -> None:
    from executorlib.spawners.flux_allocation import FluxAllocationSpawner

    with pytest.raises(ValueError, match=r"max_cores = 8 exceeds the flux instance local:///run/flux/local"):
        FluxAllocationSpawner(allocation=FLUX, max_cores=8)
