"""A call as data: its Future arguments, its parents, and (from :mod:`executorlib.keys`) its key.

The key rule is documented in :mod:`executorlib.keys` and ``docs/cache.md``; it is computed after
:func:`replace_futures` has put a :class:`FutureRef` (the parent's key) in place of every Future
argument, so a chain of calls has stable keys before anything ran.
"""

from __future__ import annotations

import copy
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from executorlib.keys import KEY_HASH_CHARS, compute_key, function_name

__all__ = ["KEY_HASH_CHARS", "FutureRef", "Task", "compute_key", "fill_futures", "function_name",
           "replace_futures"]


def __getattr__(name: str) -> Any:
    # the key code is imported by clients only: jobs import this module for fill_futures
    if name in ("KEY_HASH_CHARS", "compute_key", "function_name"):
        from executorlib import keys

        return getattr(keys, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    #: resource_dict["max_retries"]: how often a job the cluster lost is submitted again (a
    #: task made outside Executor.submit() is never resubmitted)
    max_retries: int = 0

    def __repr__(self) -> str:
        state = self.future._state.lower()  # PENDING, RUNNING, FINISHED, CANCELLED...
        return f"<Task {self.key} {state}>"


def replace_futures(obj: Any, key_of: Callable[[Future], str], found: dict[str, Future]) -> Any:
    """Return ``obj`` with each Future replaced by a :class:`FutureRef`, also inside lists,
    tuples, namedtuples, sets, dicts and dataclass instances; the Futures found are added to
    ``found`` by key. Containers without a Future are returned as they are (no copy)."""
    return _map_leaves(obj, lambda leaf: _future_to_ref(leaf, key_of, found))


def fill_futures(obj: Any, value_of: Callable[[str], Any]) -> Any:
    """Inverse of :func:`replace_futures`: put each parent's result in place of its FutureRef."""
    return _map_leaves(obj, lambda leaf: value_of(leaf.key) if isinstance(leaf, FutureRef) else leaf)


def _future_to_ref(leaf: Any, key_of: Callable[[Future], str], found: dict[str, Future]) -> Any:
    if isinstance(leaf, Future):
        key = key_of(leaf)
        found[key] = leaf
        return FutureRef(key)
    return leaf


def _map_leaves(obj: Any, leaf: Callable[[Any], Any], path: frozenset = frozenset(), whole: tuple = ()) -> Any:
    """``obj`` with ``leaf`` applied to everything that is not a container we look into; a
    container comes back as the same object when nothing in it changed. ``path``: the ids of the
    containers being mapped, so that a structure that holds itself is not followed forever.
    ``whole``: types whose instances go to ``leaf`` whole, even when they are containers."""
    kind = type(obj)
    if kind in _LEAF_TYPES or (whole and isinstance(obj, whole)):
        return leaf(obj)
    if kind in (list, tuple, set, frozenset, dict) or isinstance(obj, tuple) or hasattr(kind, "__dataclass_fields__"):
        if id(obj) in path:
            return obj
        path = path | {id(obj)}
    if kind in (list, tuple, set, frozenset):
        items = [_map_leaves(o, leaf, path, whole) for o in obj]
        return obj if _same(items, obj) else kind(items)
    if kind is dict:
        values = [_map_leaves(v, leaf, path, whole) for v in obj.values()]
        return obj if _same(values, obj.values()) else dict(zip(obj.keys(), values))
    if isinstance(obj, tuple) and hasattr(kind, "_fields") and hasattr(kind, "_make"):  # a namedtuple
        items = [_map_leaves(o, leaf, path, whole) for o in obj]
        return obj if _same(items, obj) else kind._make(items)
    fields = getattr(kind, "__dataclass_fields__", None)
    if fields is not None and not isinstance(obj, type):  # a dataclass instance
        return _map_dataclass(obj, fields, leaf, path, whole)
    return leaf(obj)


def _map_dataclass(obj: Any, fields: dict, leaf: Callable[[Any], Any], path: frozenset, whole: tuple = ()) -> Any:
    changed = {}
    for name in fields:
        value = getattr(obj, name, _MISSING)
        if value is not _MISSING:
            new = _map_leaves(value, leaf, path, whole)
            if new is not value:
                changed[name] = new
    if not changed:
        return obj
    clone = copy.copy(obj)
    for name, value in changed.items():
        object.__setattr__(clone, name, value)  # also for frozen dataclasses
    return clone


def _same(new: Any, old: Any) -> bool:
    return all(a is b for a, b in zip(new, old))


_MISSING = object()
_LEAF_TYPES = frozenset({FutureRef, Future, int, float, str, bytes, bool, type(None)})
