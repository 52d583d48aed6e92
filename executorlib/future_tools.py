"""Futures of parts of a result: :func:`split_future` and :func:`get_item_from_future`.

Both return a :class:`SelectedFuture`: a ``concurrent.futures.Future`` that resolves when its parent
resolves, with ``parent.result()[key]`` (or the parent's exception, or the exception of the
indexing). It can be passed to ``submit()`` of the executors of :mod:`executorlib.executors` like
any Future of the Executor: the dependency is on the parent's task (so on SLURM the job waits for
the parent's job with ``afterok``), and the part is selected where the dependent call runs. No extra
task or job is created for a part.

This module is imported by the jobs (the wrapper :class:`SelectItems` is unpickled there), so it
imports nothing heavy.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable

__all__ = ["SelectedFuture", "BatchedFuture", "split_future", "get_item_from_future", "batched",
           "resolve_selected_futures"]


class SelectedFuture(Future):
    """The Future of ``parent.result()[key]``, made by :func:`get_item_from_future` or
    :func:`split_future`.

    Attributes:
        source: the Future of the whole result (never a :class:`SelectedFuture`: a part of a part
            refers to the root and a longer ``path``).
        path: the keys to apply one after the other to the root's result.
    """

    def __init__(self, parent: Future, key: Hashable):
        super().__init__()
        if isinstance(parent, SelectedFuture):
            self.source: Future = parent.source
            self.path: tuple = parent.path + (key,)
        else:
            self.source = parent
            self.path = (key,)
        parent.add_done_callback(functools.partial(_take_part, self, key))

    def __repr__(self) -> str:
        return f"<SelectedFuture{''.join(f'[{k!r}]' for k in self.path)} of {self.source!r}>"


def _take_part(child: Future, key: Hashable, parent: Future) -> None:
    """Done-callback of the parent: resolve ``child`` with its part (or the failure)."""
    try:
        if parent.cancelled():
            child.cancel()
            return
        error = parent.exception()
        if error is not None:
            child.set_exception(error)
            return
        try:
            value = parent.result()[key]
        except Exception as selection_error:  # noqa: BLE001 - e.g. IndexError, KeyError, TypeError
            child.set_exception(selection_error)
            return
        child.set_result(value)
    except InvalidStateError:  # the user cancelled the part itself: nothing to report
        pass


def get_item_from_future(future: Future, key: Hashable) -> SelectedFuture:
    """A Future of ``future.result()[key]``.

    It resolves when ``future`` resolves. If ``future`` fails, it fails with the same exception;
    if the indexing fails (``KeyError``, ``IndexError``, ...) it fails with that error; if
    ``future`` is cancelled, it is cancelled. Cancelling the returned Future does not cancel
    ``future``.

    Passed as an argument to ``submit()`` of a :mod:`executorlib.executors` executor it is a
    dependency on ``future``'s task, exactly as ``future`` itself would be, and the called function
    receives the item. ``future`` must then come from such an executor (as for any Future argument).

    Example:
        >>> with SingleNodeExecutor() as exe:  # doctest: +SKIP
        ...     f = exe.submit(dict, a=1, b=2)
        ...     print(exe.submit(abs, get_item_from_future(f, "b")).result())
        2
    """
    if not isinstance(future, Future):
        raise TypeError(f"get_item_from_future() needs a Future, got {type(future).__name__}")
    return SelectedFuture(future, key)


def split_future(future: Future, n: int) -> list[SelectedFuture]:
    """``n`` Futures of ``future.result()[0]`` ... ``future.result()[n - 1]``: the parts of a
    function's result that is a tuple or list, e.g. of ``return a, b``.

    Each part behaves as :func:`get_item_from_future` describes (errors of the parent propagate to
    every part; a result with fewer than ``n`` items fails the missing parts with ``IndexError``).

    Example:
        >>> with SingleNodeExecutor() as exe:  # doctest: +SKIP
        ...     a, b = split_future(exe.submit(divmod, 7, 2), n=2)
        ...     print(exe.submit(sum, [a, b]).result())
        4
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"split_future() needs a number of parts n >= 0, got {n!r}")
    return [get_item_from_future(future, i) for i in range(n)]


class BatchedFuture(Future):
    """The Future of the list of results of ``members`` (in their order), made by :func:`batched`.

    It resolves when every member is done: with the list of their results, with the exception of
    the first member (in order) that failed, or cancelled when a member was cancelled.

    Attributes:
        members: the Futures of the batch, in order.
    """

    def __init__(self, members: list):
        super().__init__()
        self.members: tuple = tuple(members)
        self._lock = threading.Lock()
        self._left = len(self.members)
        if not self.members:
            self.set_result([])
        for member in self.members:
            member.add_done_callback(self._member_done)

    def _member_done(self, _member: Future) -> None:
        with self._lock:
            self._left -= 1
            if self._left:
                return
        try:
            for member in self.members:
                if member.cancelled():
                    self.cancel()
                    return
                error = member.exception()
                if error is not None:
                    self.set_exception(error)
                    return
            self.set_result([member.result() for member in self.members])
        except InvalidStateError:  # the user cancelled the batch itself
            pass

    def __repr__(self) -> str:
        return f"<BatchedFuture of {len(self.members)} Futures, state={self._state.lower()}>"


def batched(futures: Iterable[Future], n: int) -> list[BatchedFuture]:
    """Futures of lists of ``n`` results: the first resolves with the results of ``futures[0:n]``,
    the next with those of ``futures[n:2n]``, ...; the last batch may be shorter.

    A batch resolves when all its Futures are done, with their results in the order of
    ``futures``; it fails with the exception of its first failed Future. Passed to ``submit()``
    of an executorlib Executor, a batch is a dependency on each of its Futures (no extra task or
    job) and the function receives the list of results.

    Example:
        >>> with SingleNodeExecutor() as exe:  # doctest: +SKIP
        ...     futures = [exe.submit(abs, -i) for i in range(5)]
        ...     print([exe.submit(sum, b).result() for b in exe.batched(futures, n=2)])
        [1, 5, 4]
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"batched() needs a batch size n >= 1, got {n!r}")
    futures = list(futures)
    for future in futures:
        if not isinstance(future, Future):
            raise TypeError(f"batched() needs Futures, got {type(future).__name__}")
    return [BatchedFuture(futures[i:i + n]) for i in range(0, len(futures), n)]


# -- submit() support ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Selected:
    """Stands for a :class:`SelectedFuture` argument inside a stored call: the root Future (a
    ``FutureRef`` once stored, the root's result where the call runs) and the keys to apply."""

    source: Any
    path: tuple

    def value(self) -> Any:
        return functools.reduce(lambda value, key: value[key], self.path, self.source)


class SelectItems:
    """The function of a call that has :class:`SelectedFuture` arguments: replaces each
    :class:`Selected` in the arguments by its part, then calls ``fn``. Pickled by reference (this
    module is imported in the job); its ``__name__`` and ``__wrapped__`` are ``fn``'s, so the
    task keeps ``fn``'s name and ``inspect.signature`` sees ``fn``'s parameters."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*_fill_selected(args), **_fill_selected(kwargs))

    def __repr__(self) -> str:
        return f"<SelectItems {self.fn!r}>"


def resolve_selected_futures(fn: Callable, args: tuple, kwargs: dict) -> tuple[Callable, tuple, dict]:
    """Prepare a call for ``Executor.submit``: each :class:`SelectedFuture` argument (also inside
    lists, tuples, sets, dicts and dataclass instances) becomes a :class:`Selected` that holds
    its root Future (which the Executor turns into a dependency), and ``fn`` is wrapped in
    :class:`SelectItems`; each :class:`BatchedFuture` becomes the list of its members. A call
    without such arguments comes back unchanged."""
    found = []

    def leaf(obj: Any) -> Any:
        if isinstance(obj, SelectedFuture):
            found.append(obj)
            source = obj.source
            if isinstance(source, BatchedFuture):  # a part of a batch: of the list of its members
                source = leaf(source)
            return Selected(source, obj.path)
        if isinstance(obj, BatchedFuture):  # the list of its members, each a dependency
            return [leaf(member) for member in obj.members]
        return obj

    from executorlib.task import _map_leaves  # light: no h5py, no pysqa

    args = _map_leaves(args, leaf)
    kwargs = _map_leaves(kwargs, leaf)
    if found:
        fn = SelectItems(fn)
    return fn, args, kwargs


def _fill_selected(obj: Any) -> Any:
    """``obj`` with each :class:`Selected` replaced by its part, also inside lists, tuples,
    namedtuples, sets, dicts and dataclass instances; containers are copied only when something
    in them changed (the walk of :func:`executorlib.task.fill_futures`)."""
    from executorlib.task import _map_leaves  # light: no h5py, no pysqa

    return _map_leaves(obj, lambda leaf: leaf.value() if isinstance(leaf, Selected) else leaf, whole=(Selected,))
