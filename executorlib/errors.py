"""Exceptions a user of executorlib may catch."""

from __future__ import annotations

__all__ = [
    "ExecutorlibError",
    "CacheError",
    "CacheCorruptedError",
    "DependencyError",
    "JobFailedError",
    "SubmissionError",
    "RemoteError",
    "MissingDependencyError",
]


class ExecutorlibError(Exception):
    """Base class of the errors raised by executorlib itself."""


class CacheError(ExecutorlibError):
    """The cache directory cannot be used as asked."""


class CacheCorruptedError(CacheError):
    """A file in the cache is unreadable (truncated by a crash, a full disk, or not ours)."""


class DependencyError(ExecutorlibError):
    """A task could not run because a task it depends on failed or was cancelled."""


class JobFailedError(ExecutorlibError):
    """The job of a task ended without writing a result (killed, timed out, out of memory, ...)."""

    def __init__(self, message: str, job_id: str | None = None, state: str | None = None):
        super().__init__(message)
        self.job_id = job_id
        self.state = state

    def __reduce__(self):
        return type(self), (str(self), self.job_id, self.state), self.__dict__


class SubmissionError(ExecutorlibError):
    """The job scheduler refused to take a task (sbatch or flux failed)."""


class RemoteError(ExecutorlibError):
    """Stands in for an exception raised in a job that could not be pickled back.

    ``remote_type`` is the qualified name of the original exception class.
    """

    def __init__(self, remote_type: str, message: str):
        super().__init__(f"{remote_type}: {message}")
        self.remote_type = remote_type
        self.message = message

    def __reduce__(self):  # pickled by the worker: keep both constructor arguments
        return type(self), (self.remote_type, self.message), self.__dict__


class MissingDependencyError(ImportError):
    """An optional dependency of the chosen backend is not installed."""


def missing_extra(package: str, extra: str, purpose: str) -> MissingDependencyError:
    """The ImportError that names the ``pip install`` command which fixes it."""
    return MissingDependencyError(
        f"{purpose} needs the package '{package}', which is not installed. "
        f"Install it with: pip install 'executorlib[{extra}]'"
    )
