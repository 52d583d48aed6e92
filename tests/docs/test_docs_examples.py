"""The ```python blocks of the documentation pages run, page by page, like those of README.md.

The same markers as in README.md apply (see tests/docs/test_readme.py): ``<!-- skip-test -->``
above a block that cannot run here (undefined placeholders, flux, GPUs), ``<!-- slurm -->`` above
a block that needs SLURM. Each page runs in order in its own temp directory; without SLURM only
its unmarked blocks run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.conftest import require_slurm, slurm_problem
from tests.docs.test_readme import LOCAL_TIMEOUT, SLURM_TIMEOUT, _check, extract_blocks, run_blocks

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = [p for p in sorted(DOCS.glob("*.md")) if any(not b.skip for b in extract_blocks(p.read_text()))]


def test_the_examples_of_the_guide_are_tested() -> None:
    assert {"index.md", "quickstart.md", "submission-mode.md"} <= {p.name for p in PAGES}


@pytest.mark.timeout(SLURM_TIMEOUT + 60)
@pytest.mark.parametrize("page", [pytest.param(p, id=p.name) for p in PAGES])
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    blocks = [b for b in extract_blocks(page.read_text()) if not b.skip]
    needs_slurm = any(b.slurm for b in blocks)
    if needs_slurm and slurm_problem() is None:
        _check(run_blocks(page, blocks, tmp_path, SLURM_TIMEOUT), f"the examples of {page.name}")
        return
    local = [b for b in blocks if not b.slurm]
    if local:
        _check(run_blocks(page, local, tmp_path, LOCAL_TIMEOUT), f"the examples of {page.name} without SLURM")
    if needs_slurm:
        require_slurm()  # skips (or fails under EXECUTORLIB_REQUIRE_SLURM=1) after the local blocks ran
