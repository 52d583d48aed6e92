"""``executorlib.api``: the names of the original executorlib 1.x's ``executorlib.api`` module that
this executorlib provides (see ``docs/migration.md`` for what is not here yet), among them
:class:`~executorlib.executors.TestClusterExecutor`, the cluster executors' file-based path run
with local processes.

Importing it imports :mod:`executorlib.executor` (the scheduler and the cache, with h5py), not
pysqa, mpi4py or flux.
"""

from __future__ import annotations

import sys
from typing import Optional

from executorlib.executors import (
    FluxClusterExecutor,
    FluxJobExecutor,
    SingleNodeExecutor,
    SlurmClusterExecutor,
    SlurmJobExecutor,
    TestClusterExecutor,
)
from executorlib.future_tools import get_item_from_future, split_future

__all__ = [
    "FluxClusterExecutor",
    "FluxJobExecutor",
    "SingleNodeExecutor",
    "SlurmClusterExecutor",
    "SlurmJobExecutor",
    "TestClusterExecutor",
    "cloudpickle_register",
    "get_item_from_future",
    "split_future",
]


def cloudpickle_register(ind: int = 2) -> Optional[str]:
    """Have cloudpickle pickle the functions and classes of a calling module by value.

    cloudpickle pickles a function of an importable module by reference (module and name), so
    the job must be able to import that module. This registers the module of the frame ``ind``
    levels up the call stack (``0``: this function, ``1``: its caller, ``2`` (default): the
    caller's caller, as in the original, where a library function calls it on behalf of the
    user's module) with ``cloudpickle.register_pickle_by_value``, so that its functions travel
    with the call instead. A frame without a module (an interactive session) or a module that
    cloudpickle refuses to register (``__main__``, which it pickles by value anyway) is left
    alone, as in the original.

    Args:
        ind: how many frames up the call stack the module to register is.

    Returns:
        The name of the module registered, or ``None`` when nothing was registered.
    """
    import cloudpickle

    try:
        frame = sys._getframe(ind)
    except ValueError:  # the call stack is not that deep
        return None
    module = sys.modules.get(frame.f_globals.get("__name__", ""))
    if module is None:
        return None
    try:
        cloudpickle.register_pickle_by_value(module)
    except ValueError:
        return None
    return module.__name__
