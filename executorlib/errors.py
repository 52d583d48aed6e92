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
    "TaskExitError",
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
    """The job scheduler refused to take a task (sbatch or flux failed).

    ``transient`` is True for a refusal that passes by itself (the user's queue is full for the
    site's limits, the scheduler daemon did not answer in time): the adapter sets it from its
    scheduler's words, and the scheduler loop then holds the call and submits it again later
    instead of failing its Future.
    """

    def __init__(self, message: str = "", transient: bool = False):
        super().__init__(message)
        self.transient = transient

    def __reduce__(self):
        return type(self), (str(self), self.transient), self.__dict__


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


class TaskExitError(ExecutorlibError):
    """A task ended the Python process it ran in: ``sys.exit()``, ``exit()``, ``SystemExit`` or
    ``KeyboardInterrupt`` inside the function.

    It stands in for that exception, so that ``result()`` never ends the caller's script or
    notebook cell. ``code`` is the exit code the task gave (``None`` for a bare ``sys.exit()``,
    or a string / other object when the task passed one); ``exit_type`` names the original
    exception class.
    """

    def __init__(self, code: object = None, exit_type: str = "SystemExit", message: str | None = None):
        if message is None:
            message = (f"the task ended its process with sys.exit({code!r}) (exit code {code!r}) "
                       "instead of returning a value" if exit_type == "SystemExit" else
                       f"the task was interrupted by {exit_type} instead of returning a value")
        super().__init__(message)
        self.code = code
        self.exit_type = exit_type

    @classmethod
    def from_exception(cls, error: BaseException) -> "TaskExitError":
        """The stand-in for a ``SystemExit``/``KeyboardInterrupt`` raised by a task."""
        code = error.code if isinstance(error, SystemExit) else None
        converted = cls(code, type(error).__name__)
        converted.__cause__ = error
        return converted

    def __reduce__(self):  # stored by the worker: keep the code, the type and the message
        return type(self), (self.code, self.exit_type, str(self)), self.__dict__


class MissingDependencyError(ImportError):
    """An optional dependency of the chosen backend is not installed."""


def missing_extra(package: str, extra: str, purpose: str) -> MissingDependencyError:
    """The ImportError that names the ``pip install`` command which fixes it."""
    return MissingDependencyError(
        f"{purpose} needs the package '{package}', which is not installed. "
        f"Install it with: pip install 'executorlib[{extra}]'"
    )
