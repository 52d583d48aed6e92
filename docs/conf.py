"""Sphinx configuration: markdown pages (MyST), API reference from the docstrings (autodoc).

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (``pip install -e '.[docs]'``).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, os.path.dirname(HERE))  # the repository, for an un-installed checkout

import executorlib  # noqa: E402

project = "executorlib"
author = "executorlib developers"
copyright = "executorlib developers"  # noqa: A001
version = release = executorlib.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "resource_table",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
smartquotes = False  # keep "--option" as written (no en dashes in command lines)
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = f"executorlib {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Up-scale Python functions from a laptop to an HPC cluster with the concurrent.futures Executor API",
    "fixed_sidebar": True,
    "page_width": "1180px",
    "sidebar_width": "230px",
}
