"""Helpers of the documentation tests: is there a SLURM cluster to run the SLURM examples on?

Examples that need SLURM are skipped with the reason when no cluster answers, unless the
environment sets ``EXECUTORLIB_REQUIRE_SLURM=1`` (CI does): then a missing cluster is a failure.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from typing import Optional

import pytest

REQUIRE_VARIABLE = "EXECUTORLIB_REQUIRE_SLURM"


@functools.lru_cache(maxsize=1)
def slurm_problem() -> Optional[str]:
    """Why SLURM examples cannot run here, or None when sbatch and sinfo answer."""
    for command in (["sbatch", "--version"], ["sinfo", "--noheader", "--format", "%P|%a"]):
        if shutil.which(command[0]) is None:
            return f"{command[0]} is not on PATH (start a cluster with: bash scripts/start_slurm.sh)"
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return f"'{' '.join(command)}' did not answer within 20 s"
        if done.returncode != 0:
            return f"'{' '.join(command)}' failed: {(done.stderr or done.stdout).strip()}"
        if command[0] == "sinfo" and "|up" not in done.stdout:
            return f"sinfo lists no partition that is up: {done.stdout.strip()!r}"
    try:
        import jinja2  # noqa: F401
        import pysqa  # noqa: F401
    except ImportError as error:
        return f"{error.name} is not installed (pip install 'executorlib[submission]')"
    return None


def require_slurm() -> None:
    """Skip the calling test without SLURM, or fail when EXECUTORLIB_REQUIRE_SLURM=1."""
    problem = slurm_problem()
    if problem is None:
        return
    if os.environ.get(REQUIRE_VARIABLE, "") == "1":
        pytest.fail(f"{REQUIRE_VARIABLE}=1 but SLURM cannot be used: {problem}", pytrace=False)
    pytest.skip(f"no usable SLURM cluster: {problem}")
