"""The seed's flux examples against a real flux broker.

flux-core is not installable on the machines this project is tested on, so this file is skipped
there ("flux-core not installed"). Where flux is installed, run it inside a flux instance::

    flux start python -m pytest tests/flux/test_e2e_broker.py

Everything else about the flux backend (scripts, command lines, parsing, outcomes) is tested in
the other files of this folder without a broker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.core.funcs import add_funct, calc

pytestmark = [
    pytest.mark.flux,
    pytest.mark.skipif(shutil.which("flux") is None, reason="flux-core not installed"),
]


def _flux(*args: str) -> str:
    done = subprocess.run(["flux", *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or done.stdout.strip())
    return done.stdout.strip()


@pytest.fixture(scope="module")
def broker() -> dict:
    """The instance's resources; skips when flux is installed but no instance answers."""
    try:
        cores = int(_flux("resource", "list", "-s", "all", "-no", "{ncores}") or 0)
        gpus = int(_flux("resource", "list", "-s", "all", "-no", "{ngpus}") or 0)
    except (RuntimeError, ValueError) as error:
        pytest.skip(f"flux is installed but no flux instance answers ({error}); "
                    "run the tests under 'flux start'")
    return {"cores": cores, "gpus": gpus}


@pytest.fixture
def cache(tmp_path) -> str:
    return str(tmp_path / "cache")


def get_available_gpus():
    """The seed's GPU example."""
    import socket

    from tensorflow.python.client import device_lib

    local_device_protos = device_lib.list_local_devices()
    return [
        (x.name, x.physical_device_desc, socket.gethostname())
        for x in local_device_protos if x.device_type == "GPU"
    ]


def test_sums(broker, cache):
    from executorlib import Executor

    with Executor(backend="flux_submission", cache_directory=cache) as exe:
        future_lst = [exe.submit(sum, [i, i]) for i in range(1, 4)]
        assert [f.result(timeout=600) for f in future_lst] == [2, 4, 6]


def test_add_funct_chain_with_flux_dependencies(broker, cache):
    from executorlib import Executor

    with Executor(backend="flux_submission", cache_directory=cache) as exe:
        future = 0
        for i in range(4, 8):
            future = exe.submit(add_funct, i, future)
        assert future.result(timeout=600) == 22
    scripts = [os.path.join(cache, key, "run_queue.sh") for key in os.listdir(cache)]
    texts = [open(path).read() for path in scripts if os.path.isfile(path)]
    assert len(texts) == 4
    assert sum("--dependency=afterok:" in text for text in texts) == 3  # all but the first


def test_calc_with_two_cores(broker, cache):
    pytest.importorskip("mpi4py")
    if broker["cores"] < 2:
        pytest.skip(f"the flux instance has {broker['cores']} core(s), the example needs 2")
    from executorlib import Executor

    with Executor(backend="flux_submission", cache_directory=cache) as exe:
        fs = exe.submit(calc, 3, resource_dict={"cores": 2})
        assert fs.result(timeout=600) == [(3, 2, 0), (3, 2, 1)]


def test_gpus(broker, cache):
    if broker["gpus"] < 1:
        pytest.skip("the flux instance has no GPUs")
    pytest.importorskip("tensorflow")
    from executorlib import Executor

    with Executor(backend="flux_submission", cache_directory=cache,
                  resource_dict={"gpus_per_core": 1}) as exe:
        fs_1 = exe.submit(get_available_gpus)
        fs_2 = exe.submit(get_available_gpus)
        assert len(fs_1.result(timeout=600)) == 1 and len(fs_2.result(timeout=600)) == 1


def test_results_come_back_from_the_cache(broker, cache):
    from executorlib import Executor

    with Executor(backend="flux_submission", cache_directory=cache) as exe:
        assert exe.submit(sum, [20, 22]).result(timeout=600) == 42
    start = time.monotonic()
    with Executor(backend="flux_submission", cache_directory=cache) as exe:
        future = exe.submit(sum, [20, 22])
        assert future.done() and future.result() == 42
    assert time.monotonic() - start < 30


def test_time_limit_names_flux_timeout(broker, cache):
    from executorlib import Executor
    from executorlib.errors import JobFailedError

    with Executor(backend="flux_submission", cache_directory=cache) as exe:
        future = exe.submit(time.sleep, 120, resource_dict={"run_time_max": 5})
        error = future.exception(timeout=300)
    assert isinstance(error, JobFailedError)
    assert error.state.startswith("TIMEOUT")


def test_cleaning_cache(broker, cache):
    from executorlib import Executor

    with Executor(backend="flux_submission", cache_directory=cache) as exe:
        exe.submit(sum, [1, 1]).result(timeout=600)
    assert os.listdir(cache)
    shutil.rmtree(cache)
    assert not os.path.exists(cache)
