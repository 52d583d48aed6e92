"""max_workers and max_cores bound what runs at once on the local backend.

Each task records its wall-clock start and end; the test checks that at no instant more tasks
(or cores) were alive than allowed. No timing assertion: a slow machine only lowers the overlap.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from executorlib import Executor
from tests.core import funcs


def intervals(directory: Path) -> list[tuple[float, float, int]]:
    out = []
    for path in directory.glob("*.json"):
        data = json.loads(path.read_text())
        cores = 1  # one file per process: under MPI each rank wrote its own
        out.append((data["start"], data["end"], cores))
    return out


def peak(spans: list[tuple[float, float, int]]) -> int:
    """The largest number of cores in use at one instant (an end comes before a start at a tie)."""
    events = sorted([(s, 1, c) for s, e, c in spans] + [(e, 0, -c) for s, e, c in spans])
    level = best = 0
    for _, _, delta in events:
        level += delta
        best = max(best, level)
    return best


@pytest.mark.parametrize("max_workers", [1, 2])
def test_max_workers_bounds_concurrent_tasks(tmp_path, max_workers):
    with Executor(backend="local", max_workers=max_workers) as exe:
        futures = [exe.submit(funcs.timed, str(tmp_path), f"t{i}", 0.3) for i in range(4)]
        assert [f.result() for f in futures] == ["t0", "t1", "t2", "t3"]
    spans = intervals(tmp_path)
    assert len(spans) == 4
    assert peak(spans) <= max_workers


def test_max_cores_bounds_concurrent_cores(tmp_path):
    with Executor(backend="local", max_cores=2) as exe:
        futures = [exe.submit(funcs.timed, str(tmp_path), f"s{i}", 0.3) for i in range(3)]
        assert [f.result() for f in futures] == ["s0", "s1", "s2"]
    assert peak(intervals(tmp_path)) <= 2


@pytest.mark.mpi
def test_an_mpi_task_takes_as_many_slots_as_cores(tmp_path):
    pytest.importorskip("mpi4py")
    from executorlib.spawners.local import find_mpiexec

    if find_mpiexec() is None:
        pytest.skip("no mpiexec")
    with Executor(backend="local", max_cores=2) as exe:
        single = [exe.submit(funcs.timed, str(tmp_path), f"one{i}", 0.3) for i in range(2)]
        double = exe.submit(funcs.timed, str(tmp_path), "two", 0.3, cores=2, resource_dict={"cores": 2})
        assert [f.result() for f in single] == ["one0", "one1"]
        assert double.result() == ["two", "two"]  # one result per rank
    spans = intervals(tmp_path)
    assert len(spans) == 4  # two single tasks + two ranks
    assert peak(spans) <= 2
