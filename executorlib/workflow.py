"""Export the submitted calls as a Python Workflow Definition (PWD) JSON file.

``Executor(export_workflow_filename="workflow.json")`` (and the ``export_workflow_filename``
keyword of the classes of :mod:`executorlib.executors`) records every ``submit()`` instead of
running it, as ``plot_dependency_graph`` does: every Future resolves at once with ``None``. At
shutdown the recorded calls are written in the PWD's JSON format (version 0.1.0), which other
workflow engines (aiida, jobflow, pyiron, the PWD's own executorlib loader) read:

- one ``function`` node per call, its ``value`` the function as ``module.qualified_name``;
- one ``input`` node per literal argument (a JSON value: str, int, float, bool, None, and lists
  and dicts of them; numpy arrays as nested lists), named after the parameter;
- one edge per argument into the parameter's port (``targetPort``, the parameter's name: the PWD
  passes arguments by name, so a positional argument is given its parameter's name); a Future
  argument is an edge from the node of the call that produces it (``sourcePort`` ``None``), a part
  of a result (:func:`~executorlib.future_tools.get_item_from_future` with a str key) an edge
  from that port;
- a list, tuple or dict argument that holds Futures becomes a node of the PWD's helper
  ``python_workflow_definition.shared.get_list`` / ``get_dict``;
- one ``output`` node named ``result``, fed by the last call submitted.

What the format cannot hold is a ``ValueError`` at ``submit()``, naming the call and the argument:
a function that cannot be imported by its name (a lambda, a nested function, a
``functools.partial``), ``*args`` or positional-only parameters, a literal that is not JSON, a
part of a result selected by an index or by several keys, and Futures of another Executor.
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any, Callable, Optional

__all__ = ["WorkflowExport", "PWD_VERSION"]

#: the version of the Python Workflow Definition format written
PWD_VERSION = "0.1.0"
_GET_LIST = "python_workflow_definition.shared.get_list"
_GET_DICT = "python_workflow_definition.shared.get_dict"


def _json_value(value: Any) -> tuple[bool, Any]:
    """(True, the JSON form of ``value``) or (False, None) when it has none."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True, value
    if isinstance(value, (list, tuple)):
        items = [_json_value(v) for v in value]
        return (True, [v for _, v in items]) if all(ok for ok, _ in items) else (False, None)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return False, None
        items = {k: _json_value(v) for k, v in value.items()}
        return (True, {k: v for k, (_, v) in items.items()}) if all(ok for ok, _ in items.values()) else (False, None)
    tolist = getattr(value, "tolist", None)  # a numpy array or scalar
    if callable(tolist) and type(value).__module__.startswith("numpy"):
        return _json_value(tolist())
    return False, None


class WorkflowExport:
    """The calls submitted to an Executor as a PWD graph; :meth:`write` saves it.

    Args:
        filename: the JSON file :meth:`write` writes.
    """

    def __init__(self, filename: str | os.PathLike):
        self.filename = os.fspath(filename)
        if not self.filename or os.path.isdir(self.filename):
            raise ValueError(f"export_workflow_filename={filename!r} must name a file")
        self.nodes: list[dict] = []
        self.edges: list[dict] = []
        self._by_key: dict[str, int] = {}  # task key -> id of its function node
        self._inputs: dict[tuple[str, str], int] = {}  # (name, JSON text) -> id of its input node
        self._input_names: set[str] = set()
        self._last: Optional[int] = None

    # -- recording -----------------------------------------------------------------------------
    def add(self, key: str, fn: Callable, args: tuple, kwargs: dict) -> None:
        """Record one call (``args``/``kwargs`` with ``FutureRef`` / ``Selected`` in place of
        Futures, as ``Executor.submit`` has them); ValueError when the format cannot hold it.
        Nothing is recorded when it raises."""
        if key in self._by_key:  # the same call submitted twice is one node
            return
        from executorlib.future_tools import SelectItems

        if isinstance(fn, SelectItems):  # a call with parts of results: the user's function
            fn = fn.fn
        target = _function_name(fn)
        ports = _ports(fn, target, args, kwargs)
        nodes, edges, inputs = len(self.nodes), len(self.edges), dict(self._inputs)
        names = set(self._input_names)
        try:
            node = self._node({"type": "function", "value": target})
            for port, value in ports.items():
                self._connect(node, port, value, target)
        except BaseException:  # leave the graph as it was
            del self.nodes[nodes:], self.edges[edges:]
            self._inputs, self._input_names = inputs, names
            raise
        self._by_key[key] = node
        self._last = node

    def _node(self, fields: dict) -> int:
        node = len(self.nodes)
        self.nodes.append({"id": node, **fields})
        return node

    def _edge(self, target: int, port: Optional[str], source: int, source_port: Optional[str] = None) -> None:
        self.edges.append({"target": target, "targetPort": port, "source": source, "sourcePort": source_port})

    def _connect(self, target: int, port: str, value: Any, call: str) -> None:
        from executorlib.future_tools import Selected
        from executorlib.task import FutureRef

        if isinstance(value, FutureRef):
            self._edge(target, port, self._source(value.key, call, port))
            return
        if isinstance(value, Selected):
            path = value.path
            if len(path) != 1 or not isinstance(path[0], str) or not isinstance(value.source, FutureRef):
                raise ValueError(
                    f"export_workflow_filename: the argument {port!r} of {call}(...) is a part of a result "
                    f"selected by {list(path)!r}; the Python Workflow Definition can name one str key of a "
                    "result (get_item_from_future(future, 'key')), not an index or a path")
            self._edge(target, port, self._source(value.source.key, call, port), path[0])
            return
        if _holds_futures(value):
            if isinstance(value, dict):
                if not all(isinstance(k, str) for k in value):
                    raise ValueError(f"export_workflow_filename: the dict argument {port!r} of {call}(...) "
                                     "holds Futures and has keys that are not str")
                helper, items = _GET_DICT, dict(value)
            else:
                helper, items = _GET_LIST, {str(i): v for i, v in enumerate(value)}
            node = self._node({"type": "function", "value": helper})
            for name, item in items.items():
                self._connect(node, name, item, helper)
            self._edge(target, port, node)
            return
        ok, data = _json_value(value)
        if not ok:
            raise ValueError(
                f"export_workflow_filename: the argument {port!r} = {value!r:.80} of {call}(...) is not a "
                "JSON value (str, int, float, bool, None, lists and dicts of them, numpy arrays); the "
                "Python Workflow Definition stores inputs as JSON")
        text = json.dumps(data, sort_keys=True)
        node = self._inputs.get((port, text))
        if node is None:
            name, n = port, 0
            while name in self._input_names:
                n += 1
                name = f"{port}_{n}"
            node = self._node({"type": "input", "name": name, "value": data})
            self._inputs[(port, text)] = node
            self._input_names.add(name)
        self._edge(target, port, node)

    def _source(self, key: str, call: str, port: str) -> int:
        node = self._by_key.get(key)
        if node is None:
            raise ValueError(
                f"export_workflow_filename: the argument {port!r} of {call}(...) is a Future of a call "
                "that this Executor did not record (another Executor's, or from the cache): the "
                "workflow would miss the call that produces it")
        return node

    # -- output --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The workflow in the PWD's JSON structure."""
        nodes = [dict(n) for n in self.nodes]
        edges = [dict(e) for e in self.edges]
        if self._last is not None:
            output = len(nodes)
            nodes.append({"id": output, "type": "output", "name": "result"})
            edges.append({"target": output, "targetPort": None, "source": self._last, "sourcePort": None})
        return {"version": PWD_VERSION, "nodes": nodes, "edges": edges}

    def write(self) -> str:
        """Write the JSON file; returns its path."""
        with open(self.filename, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")
        return self.filename

    def __len__(self) -> int:
        return len(self._by_key)


def _holds_futures(value: Any) -> bool:
    from executorlib.future_tools import Selected
    from executorlib.task import FutureRef

    if isinstance(value, (FutureRef, Selected)):
        return True
    if type(value) in (list, tuple):
        return any(_holds_futures(v) for v in value)
    if type(value) is dict:
        return any(_holds_futures(v) for v in value.values())
    return False


def _function_name(fn: Callable) -> str:
    """``module.qualified_name`` of ``fn``, checked to name ``fn`` itself."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname or not inspect.isroutine(fn) and not inspect.isclass(fn):
        raise ValueError(
            f"export_workflow_filename: {fn!r} cannot be written as module.function: the Python Workflow "
            "Definition names each function by its import path, so use a function defined at the top "
            "level of a module (not a lambda, a nested function or a functools.partial)")
    return f"{module}.{qualname}"


def _ports(fn: Callable, name: str, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Parameter name -> argument of the call, as the PWD passes them (by name)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        if args:
            raise ValueError(f"export_workflow_filename: {name} has no signature to name its positional "
                             "arguments by; pass them by keyword") from None
        return dict(kwargs)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as error:
        raise ValueError(f"export_workflow_filename: {name}(...) does not accept these arguments: {error}") from None
    ports: dict[str, Any] = {}
    for parameter_name, value in bound.arguments.items():
        kind = signature.parameters[parameter_name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            ports.update(value)
        elif kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            raise ValueError(
                f"export_workflow_filename: {name}(...) gets {parameter_name!r} as a positional-only or "
                "*args argument; the Python Workflow Definition passes every argument by name")
        else:
            ports[parameter_name] = value
    return ports
