"""The documentation: the resource table matches the code, and the site builds with warnings as errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from executorlib.resources import RESOURCE_KEYS

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = REPO_ROOT / "docs"


def _resource_table_module():
    spec = importlib.util.spec_from_file_location("resource_table", DOCS / "_ext" / "resource_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resource_table_has_one_row_per_resource_key() -> None:
    module = _resource_table_module()
    assert module.check_coverage(RESOURCE_KEYS) == []
    assert list(module.BACKEND_NOTES) == list(RESOURCE_KEYS), "keep the rows in the order of RESOURCE_KEYS"


def test_resource_table_reports_a_key_without_row() -> None:
    module = _resource_table_module()
    problems = module.check_coverage({**RESOURCE_KEYS, "new_key": None})
    assert problems == ["resource key 'new_key' has no row in docs/_ext/resource_table.py BACKEND_NOTES"]


@pytest.mark.timeout(300)
def test_docs_build_without_warnings(tmp_path: Path) -> None:
    pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("myst_parser", reason="the docs extra is not installed: pip install -e '.[docs]'")
    out = tmp_path / "html"
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        capture_output=True, text=True, timeout=280, cwd=REPO_ROOT,
    )
    assert done.returncode == 0, f"sphinx-build failed:\n{done.stdout}\n{done.stderr}"
    page = (out / "resources.html").read_text()
    for key in RESOURCE_KEYS:  # the generated table has a row for every key
        assert f'id="resource-{key.replace("_", "-")}"' in page, key
    assert (out / "api.html").read_text().count("executorlib.cache.clean_cache") >= 1
