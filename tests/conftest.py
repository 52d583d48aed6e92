"""Fixtures shared by the whole test suite (each folder may add its own conftest.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Tasks run in separate Python processes (local subprocesses, SLURM/flux jobs). Functions defined
# in test helper modules such as ``tests.core.funcs`` are pickled by reference, so the job must be
# able to import them whatever the working directory pytest was started from.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """A cache directory that does not exist yet (the Executor creates it)."""
    return tmp_path / "cache"
