"""cores > 1 on the local backend runs real MPI ranks through mpiexec."""

from __future__ import annotations

import pytest

from executorlib import Executor
from tests.core import funcs

pytestmark = pytest.mark.mpi


@pytest.fixture(autouse=True)
def _need_mpi():
    pytest.importorskip("mpi4py")
    from executorlib.spawners.local import find_mpiexec

    if find_mpiexec() is None:
        pytest.skip("no mpiexec (pip install 'executorlib[mpi]' mpich)")


def test_seed_example_calc_with_two_cores():
    with Executor(backend="local") as exe:
        fs = exe.submit(funcs.calc, 3, resource_dict={"cores": 2})
        assert fs.result() == [(3, 2, 0), (3, 2, 1)]


def test_mpi_task_from_the_executor_default_and_serial_override():
    with Executor(backend="local", resource_dict={"cores": 2}) as exe:
        parallel = exe.submit(funcs.calc, 1)
        # a serial task (cores=1) runs without MPI, so mpi4py sees a world of one
        serial = exe.submit(funcs.calc, 2, resource_dict={"cores": 1})
        assert parallel.result() == [(1, 2, 0), (1, 2, 1)]
        assert serial.result() == (2, 1, 0)


def test_an_error_on_one_rank_is_raised_with_its_rank():
    with Executor(backend="local") as exe:
        future = exe.submit(funcs.mpi_rank_raises, 1, resource_dict={"cores": 2})
        with pytest.raises(ValueError, match="rank 1 failed on purpose") as info:
            future.result()
    assert "MPI rank 1 of 2" in "\n".join(getattr(info.value, "__notes__", []))
