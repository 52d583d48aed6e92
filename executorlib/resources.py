"""The resource dictionary: the one list of valid keys, their defaults, merging and validation.

Every backend reads the same keys, so a script moves from the laptop to the cluster by changing
``backend`` only. No key is silently ignored: a key that a backend cannot act on (``partition``
on the local backend, ...) is an error at ``submit()`` when it is given a value other than its
default, naming the backends that honour it (:func:`reject_unhonoured`, used by the spawners).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from numbers import Real
from typing import Any, Callable, Optional

__all__ = ["RESOURCE_KEYS", "CLIENT_KEYS", "ResourceKey", "merge_resources", "validate_resources",
           "reject_unhonoured", "spawner_resources"]


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _non_negative_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _positive_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and value > 0


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _string(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _string_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _bool(value: Any) -> bool:
    return isinstance(value, bool)


def _memory(value: Any) -> bool:
    return _positive_number(value) or (isinstance(value, str) and value.strip() != "")


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_CACHE_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}")


def _cache_key(value: Any) -> bool:
    """A name for a task folder: no path separator, no whitespace, no leading dot (hidden
    files are executorlib's own), at most 200 characters."""
    return isinstance(value, str) and _CACHE_KEY.fullmatch(value) is not None


def _path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) and str(os.fspath(value)).strip() != "" and "\0" not in str(os.fspath(value))


@dataclass(frozen=True)
class ResourceKey:
    """One valid key of ``resource_dict``: its default, its check and what it means."""

    name: str
    default: Any
    check: Callable[[Any], bool]
    allowed: str
    help: str
    #: for the error of a backend that cannot honour the key: which backends do
    honoured_by: str = ""


RESOURCE_KEYS: dict[str, ResourceKey] = {
    k.name: k
    for k in [
        ResourceKey("cores", 1, _positive_int, "an int >= 1",
                    "MPI ranks for the function; cores > 1 runs it under MPI and returns a list with one result per rank"),
        ResourceKey("threads_per_core", 1, _positive_int, "an int >= 1",
                    "threads per rank: --cpus-per-task on SLURM, cores per slot on flux, OMP_NUM_THREADS everywhere"),
        ResourceKey("gpus_per_core", 0, _non_negative_int, "an int >= 0",
                    "GPUs per rank: --gpus-per-task on SLURM, -g on flux; CUDA_VISIBLE_DEVICES per task on the local backend"),
        ResourceKey("cwd", None, _optional(_string), "None or a directory path",
                    "working directory of the function; default: the task's folder in the cache"),
        ResourceKey("run_time_max", None, _optional(_positive_int), "None or an int >= 1 (seconds)",
                    "wall-time limit in seconds (--time on SLURM, rounded up to whole minutes); the local backend kills the task"),
        ResourceKey("memory_max", None, _optional(_memory), "None, a number of GB, or a SLURM memory string like '500M'",
                    "memory limit of the job in GB (--mem on SLURM); not available on the local backend"),
        ResourceKey("partition", None, _optional(_string), "None or a partition name",
                    "SLURM partition / flux queue; default: the cluster's default partition"),
        ResourceKey("account", None, _optional(_string), "None or an account name", "SLURM --account / flux bank"),
        ResourceKey("qos", None, _optional(_string), "None or a QOS name", "SLURM --qos"),
        ResourceKey("exclusive", False, _bool, "True or False", "SLURM --exclusive / flux --exclusive: the node(s) for this job alone"),
        ResourceKey("num_nodes", None, _optional(_positive_int), "None or an int >= 1", "number of nodes (--nodes / -N)"),
        ResourceKey("job_name", None, _optional(_string), "None or a string",
                    "name of the job in the queue; default: the function's name"),
        ResourceKey("slurm_cmd_args", (), _string_list, "a list of strings",
                    "extra arguments for srun when cores > 1, e.g. ['--mpi=pmi2']"),
        ResourceKey("submission_template", None, _optional(_string), "None or a jinja2 template string",
                    "job-script template replacing the built-in one; may use extra resource_dict keys"),
        ResourceKey("openmpi_oversubscribe", False, _bool, "True or False",
                    "pass --oversubscribe to an Open MPI mpiexec on the local backend"),
        ResourceKey("priority", None, _optional(_int), "None or an int",
                    "the job's priority as the job scheduler takes it: SLURM --nice (a higher value runs later; "
                    "a negative one needs an operator), flux --urgency (0 to 31, default 16, a higher value runs sooner)",
                    honoured_by="backend='slurm_submission' (#SBATCH --nice) and 'flux_submission' (--urgency)"),
        ResourceKey("cache_key", None, _optional(_cache_key),
                    "None or a name of letters, digits and _ . + - (not starting with . + -, at most 200 characters)",
                    "the task's key, named by the user instead of computed from the call: the name of its folder "
                    "in the cache, and the cached result that an identical cache_key returns whatever the arguments"),
        ResourceKey("error_log_file", None, _optional(_path), "None or a file path",
                    "a failed call appends its exception and traceback to this file (written by the client, "
                    "on every backend)"),
        ResourceKey("cache_directory", None, _optional(_path), "None or a directory path",
                    "the cache directory of this call instead of the Executor's: its task folder and result "
                    "go there, and a result stored there returns without running again (the original "
                    "executorlib's per-call cache); relative to the working directory at submit()"),
        ResourceKey("max_retries", 2, _non_negative_int, "an int >= 0",
                    "how often a call whose job the cluster lost (node failure, preemption, a requeued job "
                    "that vanished) is submitted again, with a growing pause; the call's own failures "
                    "(an exception, a crash, a time or memory limit, a cancellation) are never retried"),
    ]
}

#: keys that the Executor acts on itself (the client): they are never handed to a spawner
CLIENT_KEYS = ("cache_key", "error_log_file", "cache_directory", "max_retries")

#: keys of the original executorlib 1.x that this executorlib does not implement yet (name -> why)
NOT_IMPLEMENTED_KEYS: dict[str, str] = {}


def validate_resources(resources: dict, allow_extra: bool = False) -> None:
    """Raise ValueError/TypeError naming the first bad key or value of ``resources``.

    ``allow_extra`` admits keys outside :data:`RESOURCE_KEYS`; it is set when a user
    ``submission_template`` is given, since such a template may consume keys of its own.
    """
    if not isinstance(resources, dict):
        raise TypeError(f"resource_dict must be a dict, got {type(resources).__name__}")
    for name, value in resources.items():
        spec = RESOURCE_KEYS.get(name)
        if spec is None and name in NOT_IMPLEMENTED_KEYS:
            raise NotImplementedError(
                f"resource_dict[{name!r}] (a key of the original executorlib 1.x: "
                f"{NOT_IMPLEMENTED_KEYS[name]}) is not implemented by this executorlib yet. "
                "See docs/migration.md.")
        if spec is None:
            if allow_extra:
                if not isinstance(name, str) or not name.isidentifier():
                    raise ValueError(
                        f"resource_dict key {name!r} cannot be used in a submission_template: "
                        "keys must be valid Python identifiers"
                    )
                continue
            raise ValueError(
                f"resource_dict has an unknown key {name!r}. Valid keys are: "
                f"{', '.join(sorted(RESOURCE_KEYS))}. "
                "(Extra keys are allowed only together with a 'submission_template' that uses them.)"
            )
        if not spec.check(value):
            raise ValueError(
                f"resource_dict[{name!r}] = {value!r} is invalid: expected {spec.allowed}"
            )


def merge_resources(default: Optional[dict], override: Optional[dict]) -> dict:
    """Return the full resource dictionary: built-in defaults < ``default`` < ``override``.

    The dictionary given to ``submit`` wins key by key over the one given to the Executor.
    Both are validated; the result holds every key of :data:`RESOURCE_KEYS`.
    """
    merged = {name: spec.default for name, spec in RESOURCE_KEYS.items()}
    for part in (default or {}), (override or {}):
        if not isinstance(part, dict):
            raise TypeError(f"resource_dict must be a dict, got {type(part).__name__}")
        merged.update(part)
    validate_resources(merged, allow_extra=merged.get("submission_template") is not None)
    merged["slurm_cmd_args"] = list(merged["slurm_cmd_args"])
    return merged


def reject_unhonoured(resources: dict, backend: str, honoured: dict[str, Callable[[Any], bool]],
                      honoured_elsewhere: dict[str, str]) -> None:
    """Raise ValueError for the first key that ``backend`` cannot act on but that was given.

    ``honoured`` maps the keys the backend acts on to a check of the values it can honour (e.g.
    ``num_nodes`` 1 on one machine); every other key of :data:`RESOURCE_KEYS` counts as given when
    its value differs from the default. ``honoured_elsewhere`` says, per key, which backends act
    on it, for the message. Extra keys (for a ``submission_template``) count as given.
    """
    for name, value in resources.items():
        spec = RESOURCE_KEYS.get(name)
        check = honoured.get(name)
        if check is not None:
            if check(value):
                continue
        elif spec is not None and (value == spec.default or (not value and not spec.default)):
            continue  # not given ([] and () alike)
        elsewhere = (honoured_elsewhere.get(name) or (spec.honoured_by if spec is not None else "")
                     or "a submission_template that uses it")
        if spec is None:
            raise ValueError(
                f"resource_dict[{name!r}] = {value!r} is a key for a submission_template, which "
                f"backend={backend!r} does not use (no job script). It is used by {elsewhere}; "
                "drop it for this backend.")
        raise ValueError(
            f"resource_dict[{name!r}] = {value!r} cannot be honoured by backend={backend!r}, which "
            f"would ignore it. It is honoured by {elsewhere}. Drop the key (or give "
            f"{spec.default!r}) for backend={backend!r}.")


def spawner_resources(resources: dict) -> dict:
    """``resources`` without the :data:`CLIENT_KEYS`, which the Executor acts on itself."""
    return {k: v for k, v in resources.items() if k not in CLIENT_KEYS}


def user_keys(resources: dict) -> dict:
    """The keys of ``resources`` that differ from the built-in defaults (for display)."""
    return {
        k: v
        for k, v in resources.items()
        if k not in RESOURCE_KEYS or RESOURCE_KEYS[k].default != v
    }
