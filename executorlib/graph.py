"""Draw the dependency graph of submitted tasks instead of running them.

``Executor(plot_dependency_graph=True)`` records every ``submit()`` here: one node per task
(labelled with the function's name) and one edge per Future argument, from the task that
produces the value to the task that consumes it. Nothing runs and every Future resolves at once
with ``None``. At shutdown the graph is drawn:

- with ``plot_dependency_graph_filename="graph.png"`` (or ``.svg``, ``.pdf``) to that file, by
  the file's extension; ``.dot``/``.gv`` writes the graphviz source and needs no renderer;
- without a filename, inline when running in a Jupyter kernel, else to ``dependency_graph.png``.

Rendering uses graphviz' ``dot`` program when it is on ``PATH``, else networkx + matplotlib
(``pip install 'executorlib[graph]'``).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from executorlib.errors import MissingDependencyError

__all__ = ["DependencyGraph", "DEFAULT_FILENAME"]

#: where the graph goes when no filename is given and no Jupyter kernel is running
DEFAULT_FILENAME = "dependency_graph.png"
_RENDERED_FORMATS = ("png", "svg", "pdf")
_SOURCE_FORMATS = ("dot", "gv")


@dataclass
class _Node:
    key: str
    label: str
    detail: str
    parents: list[str] = field(default_factory=list)


def _short_repr(value: Any, limit: int = 40) -> str:
    from executorlib.task import FutureRef

    if isinstance(value, FutureRef):
        return f"<{value.key.rsplit('_', 1)[0]}>"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not break the drawing
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _call_text(fn_name: str, args: tuple, kwargs: dict) -> str:
    parts = [_short_repr(a) for a in args] + [f"{k}={_short_repr(v)}" for k, v in kwargs.items()]
    return f"{fn_name}({', '.join(parts)})"


def _format_of(filename: str) -> str:
    suffix = Path(filename).suffix.lower().lstrip(".")
    if suffix not in _RENDERED_FORMATS + _SOURCE_FORMATS:
        allowed = ", ".join("." + s for s in _RENDERED_FORMATS + _SOURCE_FORMATS)
        raise ValueError(
            f"plot_dependency_graph_filename={filename!r} has an unsupported extension; "
            f"use one of {allowed}"
        )
    return suffix


def _in_jupyter() -> bool:
    """True inside a Jupyter kernel (a terminal IPython cannot show images inline)."""
    if "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython half-imported
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _dot_program() -> Optional[str]:
    return shutil.which("dot")


def _has_networkx_renderer() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("networkx", "matplotlib"))


def _missing_renderer() -> MissingDependencyError:
    return MissingDependencyError(
        "plot_dependency_graph=True needs a renderer: graphviz' 'dot' program on PATH, or the "
        "packages 'networkx' and 'matplotlib', which are not installed. Install them with: "
        "pip install 'executorlib[graph]' (or write graphviz source with a .dot filename)"
    )


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class DependencyGraph:
    """The tasks submitted to an Executor and the Futures that connect them.

    Args:
        filename: where :meth:`draw` writes the graph; its extension picks the format (``.png``,
            ``.svg``, ``.pdf``, or ``.dot``/``.gv`` for graphviz source). ``None``: inline in a
            Jupyter kernel, else :data:`DEFAULT_FILENAME`.
    """

    def __init__(self, filename: Optional[str | os.PathLike] = None):
        self.filename = None if filename is None else os.fspath(filename)
        self._format = _format_of(self.filename) if self.filename is not None else None
        self._nodes: dict[str, _Node] = {}
        if self._format not in _SOURCE_FORMATS and _dot_program() is None and not _has_networkx_renderer():
            raise _missing_renderer()  # fail at Executor(...), not after every submit

    # -- recording -----------------------------------------------------------------------------
    def add(self, key: str, fn_name: str, args: tuple, kwargs: dict, parents: dict[str, Any]) -> None:
        """Record one submitted call; ``parents`` maps the keys of its Future arguments."""
        if key in self._nodes:  # the same call submitted twice is one task
            return
        for parent_key in parents:
            if parent_key not in self._nodes:  # a Future of another Executor
                self._nodes[parent_key] = _Node(parent_key, parent_key.rsplit("_", 1)[0], parent_key)
        self._nodes[key] = _Node(key, fn_name, _call_text(fn_name, args, kwargs), list(parents))

    @property
    def nodes(self) -> dict[str, str]:
        """Task key -> label (the function's name)."""
        return {key: node.label for key, node in self._nodes.items()}

    @property
    def edges(self) -> list[tuple[str, str]]:
        """(parent key, child key) for every Future argument."""
        return [(parent, node.key) for node in self._nodes.values() for parent in node.parents]

    def __len__(self) -> int:
        return len(self._nodes)

    def __repr__(self) -> str:
        return f"<DependencyGraph {len(self._nodes)} task(s), {len(self.edges)} dependency(ies)>"

    # -- output --------------------------------------------------------------------------------
    def to_dot(self) -> str:
        """The graph in graphviz' DOT language (labels: function names, tooltips: the calls)."""
        ids = {key: f"t{i}" for i, key in enumerate(self._nodes)}
        lines = [
            "digraph dependencies {",
            "  rankdir=TB;",
            '  node [shape=box, style="rounded,filled", fillcolor="#e8f0fe", fontname="Helvetica"];',
        ]
        for key, node in self._nodes.items():
            lines.append(f"  {ids[key]} [label={_quote(node.label)}, tooltip={_quote(node.detail)}];")
        for parent, child in self.edges:
            lines.append(f"  {ids[parent]} -> {ids[child]};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def draw(self) -> Optional[str]:
        """Draw the graph to ``filename``, inline in Jupyter, or to :data:`DEFAULT_FILENAME`.

        Returns the path written, or ``None`` when the graph was displayed inline.
        """
        if self.filename is None and _in_jupyter():
            from IPython.display import SVG, Image, display

            if _dot_program() is not None:
                display(SVG(self._render_dot("svg")))
            else:
                display(Image(self._render_matplotlib("png")))
            return None
        filename = self.filename or DEFAULT_FILENAME
        fmt = self._format or _format_of(filename)
        if fmt in _SOURCE_FORMATS:
            data = self.to_dot().encode()
        elif _dot_program() is not None:
            data = self._render_dot(fmt)
        else:
            data = self._render_matplotlib(fmt)
        Path(filename).write_bytes(data)
        return filename

    def _render_dot(self, fmt: str) -> bytes:
        completed = subprocess.run(
            [_dot_program() or "dot", f"-T{fmt}"], input=self.to_dot().encode(),
            capture_output=True, check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"graphviz 'dot -T{fmt}' failed: {completed.stderr.decode(errors='replace').strip()}")
        return completed.stdout

    def _render_matplotlib(self, fmt: str) -> bytes:
        try:
            import networkx as nx
            from matplotlib.figure import Figure
        except ImportError:
            raise _missing_renderer() from None
        graph = nx.DiGraph()
        for key, node in self._nodes.items():
            graph.add_node(key, layer=0, label=node.label)
        graph.add_edges_from(self.edges)
        for key in nx.topological_sort(graph):  # layer = longest path from a root
            for child in graph.successors(key):
                graph.nodes[child]["layer"] = max(graph.nodes[child]["layer"], graph.nodes[key]["layer"] + 1)
        if len(graph):
            positions = nx.multipartite_layout(graph, subset_key="layer", align="horizontal")
            positions = {k: (x, -y) for k, (x, y) in positions.items()}  # roots on top
        else:
            positions = {}
        layers = max((d["layer"] for _, d in graph.nodes(data=True)), default=0) + 1
        widest = max((sum(1 for _, d in graph.nodes(data=True) if d["layer"] == i) for i in range(layers)), default=1)
        figure = Figure(figsize=(max(4.0, 1.8 * widest), max(3.0, 1.3 * layers)))
        axes = figure.add_subplot()
        axes.set_axis_off()
        nx.draw_networkx_edges(graph, positions, ax=axes, arrows=True, arrowsize=15,
                               node_size=1800, edge_color="#555555")
        nx.draw_networkx_labels(
            graph, positions, ax=axes, labels={k: d["label"] for k, d in graph.nodes(data=True)},
            font_size=9, bbox={"boxstyle": "round,pad=0.4", "facecolor": "#e8f0fe", "edgecolor": "#4a6fa5"},
        )
        axes.margins(0.2)
        buffer = io.BytesIO()
        figure.savefig(buffer, format=fmt, bbox_inches="tight", dpi=120)
        return buffer.getvalue()
