"""A call as data: its key, its Future arguments and its parents.

The key rule (documented in ``docs/cache.md``)::

    key = <function name> + "_" + sha256(pickle(function, args, kwargs))[:32]

where every Future argument is replaced by a reference to its parent's key, so a chain of calls
has stable keys too, and where functions and classes defined in ``__main__`` (a script or a
notebook) are hashed by their code and values only: file names, line numbers, cell ids and kernel
paths never reach the hash. Resources are not part of the key. In an Executor with an
``init_function`` (block allocation), the init function is hashed with the call, since the values
it returns reach the function: ``pickle(function, args, kwargs, init_function)``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import sys
import types
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import cloudpickle

__all__ = ["FutureRef", "Task", "compute_key", "replace_futures"]

KEY_HASH_CHARS = 32


@dataclass(frozen=True)
class FutureRef:
    """Placeholder for a Future argument inside a stored task: the parent's key."""

    key: str


@dataclass(eq=False)
class Task:
    """One submitted call as the scheduler sees it."""

    key: str
    fn_name: str
    resources: dict
    future: Future
    parents: dict[str, Future] = field(default_factory=dict)
    #: the pickled function, args and kwargs (TaskStore.pickle_call in submit(), so that pickling
    #: errors and later mutations of the arguments cannot matter), written to task.h5 by the
    #: scheduler thread; None when the task file is on disk already
    pickled: Optional[dict[str, bytes]] = None

    def __repr__(self) -> str:
        state = self.future._state.lower()  # PENDING, RUNNING, FINISHED, CANCELLED...
        return f"<Task {self.key} {state}>"


def function_name(fn: Callable) -> str:
    """A file-name-safe name for ``fn`` (``<lambda>`` becomes ``lambda``)."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    name = re.sub(r"[^A-Za-z0-9_.-]", "", name) or "function"
    return name[:64]


def replace_futures(obj: Any, key_of: Callable[[Future], str], found: dict[str, Future]) -> Any:
    """Return ``obj`` with each Future (also inside lists, tuples, sets and dicts) replaced by a
    :class:`FutureRef`; the Futures found are added to ``found`` by key."""
    if isinstance(obj, Future):
        key = key_of(obj)
        found[key] = obj
        return FutureRef(key)
    if type(obj) in (list, tuple, set, frozenset):
        items = [replace_futures(o, key_of, found) for o in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        return type(obj)(items)
    if type(obj) is dict:
        items = {k: replace_futures(v, key_of, found) for k, v in obj.items()}
        if all(items[k] is obj[k] for k in obj):
            return obj
        return items
    return obj


def fill_futures(obj: Any, value_of: Callable[[str], Any]) -> Any:
    """Inverse of :func:`replace_futures`: put each parent's result in place of its FutureRef."""
    if isinstance(obj, FutureRef):
        return value_of(obj.key)
    if type(obj) in (list, tuple, set, frozenset):
        return type(obj)(fill_futures(o, value_of) for o in obj)
    if type(obj) is dict:
        return {k: fill_futures(v, value_of) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------------------------------------
# Stable hashing of calls


def _stable_code(*fields: Any) -> None:  # pragma: no cover - never called, only named in pickles
    """Marker named in key pickles in place of a code object (never unpickled)."""


def _stable_class(*fields: Any) -> None:  # pragma: no cover - never called, only named in pickles
    """Marker named in key pickles in place of a class defined in a script (never unpickled)."""


def _stable_set(*fields: Any) -> None:  # pragma: no cover - never called, only named in pickles
    """Marker named in key pickles in place of a set (never unpickled)."""


def _is_importable(obj: Any) -> bool:
    """True when ``obj`` can be found again by its module and qualified name (pickled by name)."""
    module_name = getattr(obj, "__module__", None)
    module = sys.modules.get(module_name) if module_name else None
    if module is None or module_name == "__main__":
        return False
    target: Any = module
    for part in getattr(obj, "__qualname__", "").split("."):
        if part == "<locals>":
            return False
        target = getattr(target, part, None)
    return target is obj


class _KeyPickler(cloudpickle.CloudPickler):
    """cloudpickle, minus everything that changes without the call changing.

    Code objects are reduced to the fields that define behaviour (no file name, no line
    numbers), classes defined in a script lose cloudpickle's per-process tracker id, and sets are
    sorted so that string hash randomisation cannot reorder them.
    """

    def persistent_id(self, obj: Any) -> Any:
        # the C pickler never calls reducer_override for sets (nor dicts, lists, tuples, str),
        # but it asks persistent_id about every object, also inside containers
        if type(obj) in (set, frozenset):
            return _stable_set, type(obj).__name__, tuple(sorted(obj, key=_sort_key))
        return None

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.CodeType):
            return _stable_code, (
                obj.co_name,
                getattr(obj, "co_qualname", obj.co_name),
                obj.co_argcount,
                obj.co_posonlyargcount,
                obj.co_kwonlyargcount,
                obj.co_flags,
                obj.co_code,
                obj.co_consts,
                obj.co_names,
                obj.co_varnames,
                obj.co_freevars,
                obj.co_cellvars,
            )
        if isinstance(obj, type) and not _is_importable(obj):
            members = {
                k: v
                for k, v in vars(obj).items()
                if k not in ("__dict__", "__weakref__", "__doc__")
            }
            return _stable_class, (obj.__qualname__, obj.__bases__, members)
        if isinstance(obj, types.FunctionType) and _is_user_code(obj) and _is_importable(obj):
            # pickled by name, yet its code is the user's own and may change between runs
            return _stable_function, (obj.__module__, obj.__qualname__, obj.__code__,
                                      obj.__defaults__, obj.__kwdefaults__)
        reduced = super().reducer_override(obj)
        if isinstance(obj, types.FunctionType):
            reduced = _without_file(reduced)
        return reduced


def _stable_function(*fields: Any) -> None:  # pragma: no cover - never called, only named in pickles
    """Marker named in key pickles in place of a function of the user's own modules."""


@functools.lru_cache(maxsize=1)
def _installed_roots() -> tuple[str, ...]:
    """Folders holding the standard library and installed packages."""
    import sysconfig

    roots = {sysconfig.get_paths().get(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= {p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    return tuple(os.path.join(os.path.realpath(r), "") for r in roots if r)


@functools.lru_cache(maxsize=1024)
def _module_is_user_code(module_name: str) -> bool:
    path = getattr(sys.modules.get(module_name), "__file__", None)
    if not path or module_name.split(".")[0] == "executorlib":
        return False  # a built-in or namespace module
    return not os.path.realpath(path).startswith(_installed_roots())


def _is_user_code(fn: types.FunctionType) -> bool:
    """True for functions of the user's own modules (next to the script, or installed editable),
    False for the standard library and installed packages, which are keyed by name."""
    return _module_is_user_code(fn.__module__ or "")


def _without_file(reduced: Any) -> Any:
    """Drop ``__file__`` from the module globals cloudpickle stores with a function by value
    (``(_make_function, (code, base_globals, ...), ...)``): a script's path is not its code."""
    if not (isinstance(reduced, tuple) and len(reduced) > 1 and isinstance(reduced[1], tuple)):
        return reduced
    newargs = tuple(
        {k: v for k, v in a.items() if k != "__file__"} if isinstance(a, dict) and "__file__" in a else a
        for a in reduced[1]
    )
    return (reduced[0], newargs, *reduced[2:])


def _sort_key(item: Any) -> bytes:
    buffer = io.BytesIO()
    _KeyPickler(buffer, protocol=5).dump(item)
    return buffer.getvalue()


class _HashWriter:
    """File-like sink that hashes instead of storing (no copy of large arguments)."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)


def compute_key(fn: Callable, args: tuple, kwargs: dict, name: Optional[str] = None,
                extra: Any = None) -> str:
    """The cache key of ``fn(*args, **kwargs)``; Futures must already be FutureRefs.

    ``extra``: something else the result depends on, hashed like an argument (the
    ``init_function`` of a block allocation); ``None`` leaves the key as without it.
    """
    sink = _HashWriter()

    def hash_buffer(buffer: Any) -> bool:
        sink.hash.update(buffer.raw())
        return False  # keep the out-of-band buffer out of the stream, we hashed it already

    pickler = _KeyPickler(sink, protocol=5, buffer_callback=hash_buffer)
    if extra is None:
        pickler.dump((fn, args, sorted(kwargs.items())))
    else:
        pickler.dump((fn, args, sorted(kwargs.items()), extra))
    return f"{name or function_name(fn)}_{sink.hash.hexdigest()[:KEY_HASH_CHARS]}"
