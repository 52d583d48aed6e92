"""resource_dict: one list of keys, defaults < Executor's dict < submit's dict, errors at submit."""

from __future__ import annotations

import os

import pytest

from executorlib import Executor
from executorlib.resources import RESOURCE_KEYS, merge_resources, validate_resources
from tests.core import funcs


def test_submit_wins_key_by_key_over_the_executor_defaults():
    merged = merge_resources({"cores": 2, "threads_per_core": 4}, {"cores": 1})
    assert merged["cores"] == 1 and merged["threads_per_core"] == 4
    assert merged["gpus_per_core"] == RESOURCE_KEYS["gpus_per_core"].default
    assert set(merged) == set(RESOURCE_KEYS)


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(ValueError) as info:
        validate_resources({"core": 2})
    message = str(info.value)
    assert "'core'" in message
    for name in ("cores", "threads_per_core", "run_time_max", "cwd"):
        assert name in message


def test_extra_keys_are_accepted_with_a_submission_template():
    merged = merge_resources(None, {"submission_template": "#!/bin/bash\n{{command}}", "my_flag": "x"})
    assert merged["my_flag"] == "x"
    with pytest.raises(ValueError, match="my-flag"):
        merge_resources(None, {"submission_template": "{{command}}", "my-flag": "x"})


@pytest.mark.parametrize(
    "bad",
    [
        {"cores": 0},
        {"cores": "2"},
        {"cores": 1.5},
        {"cores": True},
        {"threads_per_core": -1},
        {"gpus_per_core": -1},
        {"run_time_max": 0},
        {"run_time_max": "1h"},
        {"cwd": 5},
        {"exclusive": "yes"},
        {"slurm_cmd_args": "--mpi=pmi2"},
    ],
)
def test_invalid_values_are_rejected_naming_key_value_and_what_is_allowed(bad):
    (name, value), = bad.items()
    with pytest.raises(ValueError) as info:
        merge_resources(None, bad)
    message = str(info.value)
    assert repr(name) in message and repr(value) in message and "expected" in message


def test_resource_dict_must_be_a_dict():
    with pytest.raises(TypeError, match="must be a dict"):
        merge_resources(None, [("cores", 1)])


def test_bad_resources_fail_at_submit_and_in_the_constructor_before_anything_runs(tmp_path):
    marker = tmp_path / "ran.txt"
    with pytest.raises(ValueError, match="cores"):
        Executor(backend="local", resource_dict={"cores": 0})
    with pytest.raises(ValueError, match="'memory'"):
        Executor(backend="local", resource_dict={"memory": 4})
    with Executor(backend="local", cache_directory=tmp_path / "cache") as exe:
        with pytest.raises(ValueError, match="cores"):
            exe.submit(funcs.record, str(marker), 1, resource_dict={"cores": -1})
        with pytest.raises(ValueError, match="'cpus'"):
            exe.submit(funcs.record, str(marker), 1, resource_dict={"cpus": 2})
        with pytest.raises(TypeError, match="resource_dict"):
            exe.submit(funcs.record, str(marker), 1, resource_dict="cores=2")
    assert not marker.exists()
    assert not any((tmp_path / "cache").iterdir())


def test_cores_above_max_cores_is_an_error_at_submit():
    with Executor(backend="local", max_cores=1) as exe:
        with pytest.raises(ValueError, match="exceeds max_cores = 1"):
            exe.submit(funcs.echo, resource_dict={"cores": 2})


def test_resources_reach_the_task(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    with Executor(backend="local", resource_dict={"threads_per_core": 2}) as exe:
        default = exe.submit(funcs.get_env, "OMP_NUM_THREADS")
        # the submit dict wins for threads_per_core (another tag: resources are not in the key)
        override = exe.submit(funcs.get_env, "OMP_NUM_THREADS", 1, resource_dict={"threads_per_core": 3})
        cwd = exe.submit(funcs.get_cwd, resource_dict={"cwd": str(workdir)})
        assert default.result() == "2"
        assert override.result() == "3"
        assert os.path.samefile(cwd.result(), workdir)


# -- no key is silently ignored --------------------------------------------------------------------

@pytest.mark.parametrize("block_allocation", [False, True], ids=["local", "block_allocation"])
@pytest.mark.parametrize(
    "key, value, honoured_by",
    [
        ("partition", "short", "slurm_submission"),
        ("account", "proj", "slurm_submission"),
        ("qos", "high", "slurm_submission"),
        ("memory_max", 4, "slurm_submission"),
        ("exclusive", True, "flux_submission"),
        ("num_nodes", 2, "slurm_submission"),
        ("slurm_cmd_args", ["--mpi=pmix"], "slurm_submission"),
        ("submission_template", "#!/bin/bash\n{{command}}", "slurm_submission"),
    ],
)
def test_the_local_backends_reject_keys_they_would_ignore_naming_who_honours_them(
        key, value, honoured_by, block_allocation):
    with pytest.raises(ValueError) as info:
        Executor(backend="local", block_allocation=block_allocation, max_workers=1,
                 resource_dict={key: value})
    message = str(info.value)
    assert repr(key) in message and repr(value) in message and honoured_by in message
    with Executor(backend="local", block_allocation=block_allocation, max_workers=1) as exe:
        with pytest.raises(ValueError, match=honoured_by):
            exe.submit(funcs.echo, 1, resource_dict={key: value})


def test_the_local_backend_accepts_what_it_honours():
    with Executor(backend="local", resource_dict={"num_nodes": 1, "job_name": "mine", "exclusive": False,
                                                    "slurm_cmd_args": [], "partition": None}) as exe:
        assert exe.submit(funcs.add_funct, 1, 1).result(timeout=60) == 2


# -- gpus_per_core on the local backend ------------------------------------------------------------

def gpu_env_when_both_started(directory: str, tag: str, others: int, timeout: float = 30.0) -> str:
    """Record this task's CUDA_VISIBLE_DEVICES, then wait until ``others`` more tasks did: the
    tasks run at the same time, or this times out."""
    import time
    from pathlib import Path

    value = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
    Path(directory, tag).write_text(value)
    deadline = time.monotonic() + timeout
    while len(list(Path(directory).iterdir())) < others + 1:
        if time.monotonic() > deadline:
            raise TimeoutError("the other GPU tasks did not run at the same time")
        time.sleep(0.02)
    return value


def test_a_gpu_request_without_visible_gpus_is_an_error_naming_the_backends_that_honour_it(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with Executor(backend="local") as exe:
        with pytest.raises(ValueError) as info:
            exe.submit(funcs.echo, 1, resource_dict={"gpus_per_core": 1})
    message = str(info.value)
    assert "'gpus_per_core'" in message and "0 GPU(s)" in message
    assert "slurm_submission" in message and "flux_submission" in message
    with pytest.raises(ValueError, match="0 GPU"):
        Executor(backend="local", block_allocation=True, resource_dict={"gpus_per_core": 1})


def test_each_local_task_gets_gpus_of_its_own_through_cuda_visible_devices(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # what this process may use
    with Executor(backend="local", max_workers=4) as exe:
        together = [exe.submit(gpu_env_when_both_started, str(tmp_path), f"t{i}", 1,
                               resource_dict={"gpus_per_core": 1}) for i in range(2)]
        assert sorted(f.result(timeout=60) for f in together) == ["3", "5"]
        both = exe.submit(funcs.get_env, "CUDA_VISIBLE_DEVICES", "two", resource_dict={"gpus_per_core": 2})
        assert both.result(timeout=60) == "3,5"
        with pytest.raises(ValueError, match="asks for 3 GPU"):
            exe.submit(funcs.echo, resource_dict={"gpus_per_core": 3})
        # a task that asks for no GPU keeps this process's view
        assert exe.submit(funcs.get_env, "CUDA_VISIBLE_DEVICES", "none").result(timeout=60) == "3,5"


def test_block_allocation_workers_get_gpus_of_their_own(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ValueError, match="max_workers <= 2"):
        Executor(backend="local", block_allocation=True, max_workers=3, resource_dict={"gpus_per_core": 1})
    with Executor(backend="local", block_allocation=True, max_workers=2,
                  resource_dict={"gpus_per_core": 1}) as exe:
        together = [exe.submit(gpu_env_when_both_started, str(tmp_path), f"w{i}", 1) for i in range(2)]
        assert sorted(f.result(timeout=60) for f in together) == ["0", "1"]
