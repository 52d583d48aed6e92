"""Every notebook in notebooks/ runs from top to bottom in a fresh Jupyter kernel.

A notebook whose metadata says ``{"executorlib": {"requires": "slurm"}}`` runs only where a SLURM
cluster answers (skipped with the reason elsewhere, a failure under EXECUTORLIB_REQUIRE_SLURM=1).
The kernel's working directory is a copy of notebooks/ in a temp directory (as when a user opens
them, without touching the checkout or a concurrent run). Cell tags:

- ``restart-kernel-before``: the kernel is restarted before this cell, as a user would (the
  reattach demonstration of the SLURM notebook);
- ``expect-image``: the cell must display an image (the inline dependency graph).

Notebooks are stored without outputs, and must leave their folder as they found it (each one
removes its own cache directory at the end).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.docs.conftest import require_slurm

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 600
IMAGE_TYPES = ("image/png", "image/svg+xml")


def _requires(path: Path) -> str:
    import json

    return json.loads(path.read_text()).get("metadata", {}).get("executorlib", {}).get("requires", "")


def _listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def execute_notebook(path: Path):
    """Run the notebook in a kernel started in its folder; return the executed notebook."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from jupyter_core.utils import run_sync

    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    with client.setup_kernel(env=dict(os.environ, MPLBACKEND="Agg")):
        for index, cell in enumerate(notebook.cells):
            if "restart-kernel-before" in cell.metadata.get("tags", []):
                run_sync(client.km.restart_kernel)(now=True)
                run_sync(client.kc.wait_for_ready)(timeout=120)
            client.execute_cell(cell, index)
    return notebook


def _notebook_param(path: Path):
    marks = [pytest.mark.slurm] if _requires(path) == "slurm" else []
    return pytest.param(path, id=path.name, marks=marks)


def test_there_are_notebooks() -> None:
    names = [p.name for p in NOTEBOOKS]
    assert "1-local.ipynb" in names and "2-hpc-submission-slurm.ipynb" in names, names


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name) for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    import json

    cells = json.loads(path.read_text())["cells"]
    dirty = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and (c["outputs"] or c["execution_count"])]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("path", [_notebook_param(p) for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    if _requires(path) == "slurm":
        require_slurm()
    folder = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, folder, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    before = _listing(folder)
    executed = execute_notebook(folder / path.name)
    leftovers = _listing(folder) - before
    assert not leftovers, f"{path.name} left {sorted(leftovers)} in its folder; its last cells must clean up"
    for index, cell in enumerate(executed.cells):
        if "expect-image" in cell.metadata.get("tags", []):
            kinds = {kind for output in cell.get("outputs", []) for kind in output.get("data", {})}
            assert kinds & set(IMAGE_TYPES), f"cell {index} of {path.name} displayed no image: {sorted(kinds)}"
