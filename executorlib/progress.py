"""``progress(futures)``: :func:`concurrent.futures.as_completed` with a progress bar.

Long waits for jobs on a cluster are easier to watch with a bar that counts finished tasks::

    from executorlib import Executor, progress

    with Executor(backend="slurm_submission", cache_directory="./cache") as exe:
        futures = [exe.submit(sum, [i, i]) for i in range(100)]
        results = [f.result() for f in progress(futures, desc="sums")]

The bar is drawn by tqdm, an optional dependency: ``pip install 'executorlib[progress]'``. In a
Jupyter kernel with ipywidgets installed the bar is a widget, everywhere else it is text.
"""

from __future__ import annotations

import sys
from concurrent.futures import Future, as_completed
from typing import Any, Iterable, Iterator, Optional

from executorlib.errors import missing_extra

__all__ = ["progress"]


def _tqdm_class() -> Any:
    try:
        from tqdm.std import tqdm
    except ImportError:
        raise missing_extra("tqdm", "progress", "executorlib.progress()") from None
    if "ipykernel" in sys.modules:  # a Jupyter kernel: use the widget when it can be drawn
        try:
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm as notebook_tqdm
        except ImportError:
            return tqdm
        return notebook_tqdm
    return tqdm


def progress(futures: Iterable[Future], timeout: Optional[float] = None, **tqdm_kwargs: Any) -> Iterator[Future]:
    """Yield ``futures`` as they finish (like ``as_completed``) while a tqdm bar counts them.

    Args:
        futures: Futures of any Executor; duplicates are yielded once.
        timeout: seconds to wait in total before ``TimeoutError``, as for ``as_completed``.
        **tqdm_kwargs: passed to ``tqdm`` (``desc``, ``unit``, ``leave``, ``disable``, ...);
            ``total`` defaults to the number of Futures.

    The bar's postfix counts the Futures that finished with an exception or were cancelled.
    Raises :class:`ImportError` naming ``pip install 'executorlib[progress]'`` without tqdm.
    """
    tqdm = _tqdm_class()  # raise the ImportError here, not at the first next()
    unique = list(dict.fromkeys(futures))
    options = {"total": len(unique), "unit": "task"}
    options.update(tqdm_kwargs)
    return _iterate(tqdm, unique, timeout, options)


def _iterate(tqdm: Any, futures: list[Future], timeout: Optional[float], options: dict) -> Iterator[Future]:
    bar = tqdm(**options)
    failed = 0
    try:
        for future in as_completed(futures, timeout=timeout):
            if future.cancelled() or future.exception() is not None:
                failed += 1
                bar.set_postfix(failed=failed, refresh=False)
            bar.update(1)
            yield future
    finally:
        bar.close()
