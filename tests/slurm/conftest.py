"""SLURM test infrastructure.

Tests marked ``slurm`` talk to a real cluster (``bash scripts/start_slurm.sh`` brings up a
one-node one). Without a cluster that answers they are skipped with the reason, unless the
environment sets ``EXECUTORLIB_REQUIRE_SLURM=1`` (CI does): then a missing cluster is a failure.
Tests marked ``slow`` wait for SLURM's own timers (time limits); deselect them with
``-m "not slow"``.

Every test gets its cache in ``tmp_path`` (no spaces in the path, which job scripts cannot use);
at teardown jobs of the test that are still queued or running are cancelled, and the session
reports how many SLURM jobs the tests used.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from tests.slurm.slurm_tools import active, job_ids_in, jobs_under, squeue_states

REQUIRE_VARIABLE = "EXECUTORLIB_REQUIRE_SLURM"
_JOBS_USED: set[str] = set()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: waits for SLURM's own timers (about a minute or more)")


def slurm_required() -> bool:
    return os.environ.get(REQUIRE_VARIABLE, "") == "1"


@functools.lru_cache(maxsize=1)
def cluster_problem() -> Optional[str]:
    """Why the SLURM tests cannot run here, or None when sbatch and sinfo answer."""
    for command in (["sbatch", "--version"], ["sinfo", "--noheader", "--format", "%P|%a"]):
        if shutil.which(command[0]) is None:
            return f"{command[0]} is not on PATH (start a cluster with: bash scripts/start_slurm.sh)"
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=20,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return f"'{' '.join(command)}' did not answer within 20 s (is slurmctld running?)"
        if done.returncode != 0:
            return (f"'{' '.join(command)}' failed with exit code {done.returncode}: "
                    f"{(done.stderr or done.stdout).strip()}")
        if command[0] == "sinfo" and "|up" not in done.stdout:
            return f"sinfo lists no partition that is up: {done.stdout.strip()!r}"
    try:
        import jinja2  # noqa: F401
        import pysqa  # noqa: F401
    except ImportError as error:
        return f"{error.name} is not installed (pip install 'executorlib[slurm]')"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip, or fail when the environment demands SLURM (EXECUTORLIB_REQUIRE_SLURM=1)."""
    if slurm_required():
        pytest.fail(f"{REQUIRE_VARIABLE}=1 but the SLURM tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"no usable SLURM cluster: {reason}")


@pytest.fixture(autouse=True)
def _slurm_available(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("slurm") is not None:
        problem = cluster_problem()
        if problem is not None:
            skip_or_fail(problem)


@pytest.fixture
def slurm_cache(tmp_path: Path):
    """A cache directory for one test; its jobs that are still active are cancelled afterwards."""
    cache = tmp_path / "cache"
    assert " " not in str(cache), f"job scripts cannot use a path with spaces: {cache}"
    yield cache
    ids = job_ids_in(cache) | jobs_under(cache)  # squeue also knows jobs whose record was replaced
    _JOBS_USED.update(ids)
    leftover = [job_id for job_id, (state, _) in squeue_states(ids).items() if active(state)]
    if leftover:
        subprocess.run(["scancel", *leftover], capture_output=True, timeout=60)


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's reporter
    if _JOBS_USED:
        terminalreporter.write_line(f"tests/slurm used {len(_JOBS_USED)} SLURM job(s)")
